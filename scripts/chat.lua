-- A chat room on topics.
--
--   luaws scripts/chat.lua                  every worker of the machine shares the rooms
--   ws://HOST:PORT/?room=lobby&name=ann     name and room are optional: without a
--                                           name, the first message is the name
--
-- Everyone in a room gets "ann: text" for every message, and "* ann joined" /
-- "* ann left" notices; "/who" lists the room. Plain HTTP gets the browser
-- console, to try it out.
--
-- Where its state lives:
--   socket.data     a member's name and room (moves with the socket on reload)
--   luaws.state     this worker's members (sockets: they cannot be stored),
--                   kept across hot reloads
--   luaws.store     every worker's member names, for /who; each entry expires
--                   unless its worker refreshes it, so a worker that dies
--                   leaves no ghosts for longer than NAME_TTL
local ws = require "luaws"

local NAME_TTL = 60   -- seconds (luaws.store's ttl); refreshed every NAME_TTL / 3
local names = ws.store("chat")              -- "room\0member key" -> name
local members = ws.state.chat_members or {} -- socket -> true, this worker's
ws.state.chat_members = members
-- Socket ids are unique on one machine only: with --store redis:// several
-- machines share the names, so a member's key also names its worker.
ws.state.chat_worker = ws.state.chat_worker or string.format("%016x", math.random(0))

-- A usable name or room: trimmed, valid UTF-8, no control characters, 1..32 characters.
local function clean(s)
  s = s and s:match("^%s*(.-)%s*$")
  if not s or s == "" or not utf8.len(s) or utf8.len(s) > 32 or s:find("%c") then return nil end
  return s
end

local function key(socket) return socket.data.room .. "\0" .. ws.state.chat_worker .. "." .. socket.id end

local function join(socket, name)
  socket.data.name = name
  members[socket] = true
  names:set(key(socket), name, NAME_TTL)
  socket:subscribe(socket.data.topic)
  ws.publish(socket.data.topic, "* " .. name .. " joined", { except = socket })   -- not to ourselves
  local others = ws.subscribers(socket.data.topic) - 1
  socket:send(string.format("* welcome to %s, %s (%d other%s here)", socket.data.room, name,
    others, others == 1 and "" or "s"))
end

local function who(socket)
  local list = {}
  for _, k in ipairs(names:keys(socket.data.room .. "\0")) do list[#list + 1] = names:get(k) end
  table.sort(list)
  socket:send("* here: " .. table.concat(list, ", "))
end

-- Started at load, so a reload replaces it (the old version's ends): it
-- keeps this worker's names alive, for the members of every version.
ws.every(NAME_TTL * 1000 // 3, function()   -- ms
  for socket in pairs(members) do names:set(key(socket), socket.data.name, NAME_TTL) end
end)

local listener = {
  on_open = function(socket)
    local q = socket.request.query   -- "name=J%C3%BCrgen&room=a+b" -> {name = "Jürgen", room = "a b"}
    socket.data.room = clean(q.room) or "lobby"
    socket.data.topic = "chat/" .. socket.data.room
    local name = clean(q.name)
    if name then join(socket, name) else socket:send("* your name?") end
  end,

  on_message = function(socket, message)
    if type(message) ~= "string" then
      socket:send("* text messages only, please")
    elseif not socket.data.name then
      local name = clean(message)
      if name then join(socket, name) else socket:send("* a name is 1 to 32 characters; your name?") end
    elseif message == "/who" then
      who(socket)
    else
      ws.publish(socket.data.topic, socket.data.name .. ": " .. message)
    end
  end,

  on_close = function(socket)
    -- Closed sockets get no messages, so the leaver does not see this.
    if socket.data.name then
      members[socket] = nil
      names:delete(key(socket))
      ws.publish(socket.data.topic, "* " .. socket.data.name .. " left")
    end
  end,
}

return function(request)
  if not ws.upgrade_request(request) then return ws.console(request) end
  return { listener = listener }
end
