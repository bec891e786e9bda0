-- topics_room.lua — the script of spec/topics_spec.lua.
--
-- GET /sub/TOPIC   subscribes to TOPIC on open (/sub: to nothing) and greets
--                  "hello id=ID new=true|false"
-- GET /pub         greets "hello id=ID", subscribes to nothing
--
-- Every socket takes these text commands (one reply each, in order):
--   sub T          -> "sub T true|false|nil"      socket:subscribe(T)
--   unsub T        -> "unsub T true|false"        socket:unsubscribe(T)
--   topics         -> "topics A,B,..."            socket:topics(), sorted
--   count T        -> "count T N"                 luaws.subscribers(T)
--   pub T MSG      -> "pub T RESULT"              luaws.publish(T, MSG) as text
--   pubhex T HEX   -> "pub T RESULT"              luaws.publish(T, luaws.buffer(bytes))
--   pubraw T HEX   -> "pub T RESULT" or "err ..." luaws.publish(T, bytes) as text (may be bad UTF-8)
--   close          -> the socket closes (1000)
--   announce       -> "announce": on_close will publish "left ID" to every
--                     topic this socket had subscribed to through the script
--   version        -> "version V" (V is VERSION below; the reload spec rewrites it)
-- A binary message "T\n<bytes>" publishes <bytes> to T as binary.
-- RESULT is tostring of publish's result: a count, or "true" when handed to Redis.
--
-- on_close logs "topics-left id=ID code=C topics=N counts=T:n,... late=R"
-- for every topic the socket had subscribed to through this script: by then
-- the socket must have left them (topics() empty, subscribers() without it),
-- and late= is what subscribe() says on the closed socket ("nil,closed").
local ws = require "luaws"
local VERSION = "v1"

local function unhex(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

local function sorted_topics(socket)
  local t = socket:topics()
  table.sort(t)
  return table.concat(t, ",")
end

local function remember(socket, topic)
  socket.data.seen = socket.data.seen or {}
  socket.data.seen[topic] = true
end

local function command(socket, m)
  local verb, rest = m:match("^(%S+) ?(.*)$")
  if verb == "sub" then
    remember(socket, rest)
    return "sub " .. rest .. " " .. tostring((socket:subscribe(rest)))
  elseif verb == "unsub" then
    return "unsub " .. rest .. " " .. tostring(socket:unsubscribe(rest))
  elseif verb == "topics" then
    return "topics " .. sorted_topics(socket)
  elseif verb == "count" then
    return "count " .. rest .. " " .. ws.subscribers(rest)
  elseif verb == "pub" then
    local topic, msg = rest:match("^(%S*) (.*)$")
    return "pub " .. topic .. " " .. tostring(ws.publish(topic, msg))
  elseif verb == "pubhex" then
    local topic, hex = rest:match("^(%S*) (%x*)$")
    return "pub " .. topic .. " " .. tostring(ws.publish(topic, ws.buffer(unhex(hex))))
  elseif verb == "pubraw" then
    local topic, hex = rest:match("^(%S*) (%x*)$")
    local ok, r = pcall(ws.publish, topic, unhex(hex))
    if not ok then return "err " .. tostring(r) end
    return "pub " .. topic .. " " .. tostring(r)
  elseif verb == "announce" then
    socket.data.announce = true
    return "announce"
  elseif verb == "version" then
    return "version " .. VERSION
  elseif verb == "close" then
    socket:close(1000, "asked")
    return nil
  end
  return "unknown " .. m
end

return function(request)
  if not ws.upgrade_request(request) then return { status = 404, body = "no" } end
  local topic = request.uri:match("^/sub/([^?]+)")
  local path = request.uri:match("^[^?]*")
  if not topic and path ~= "/sub" and path ~= "/pub" then return { status = 404, body = "no" } end
  return {
    listener = {
      on_open = function(socket)
        if topic then
          remember(socket, topic)
          socket:send("hello id=" .. socket.id .. " new=" .. tostring(socket:subscribe(topic)))
        else
          socket:send("hello id=" .. socket.id)
        end
      end,
      on_message = function(socket, m)
        if type(m) ~= "string" then
          local s = m:string()
          local t, bytes = s:match("^([^\n]*)\n(.*)$")
          socket:send("pub " .. t .. " " .. tostring(ws.publish(t, ws.buffer(bytes))))
          return
        end
        local reply = command(socket, m)
        if reply then socket:send(reply) end
      end,
      on_close = function(socket, code)
        local counts, announced = {}, {}
        for t in pairs(socket.data.seen or {}) do
          if socket.data.announce then announced[#announced + 1] = t .. ":" .. tostring(ws.publish(t, "left " .. socket.id)) end
          counts[#counts + 1] = t .. ":" .. ws.subscribers(t)
        end
        table.sort(counts)
        table.sort(announced)
        local late, err = socket:subscribe("late")
        ws.log("info", "topics-left id=" .. socket.id, "code=" .. tostring(code),
          "topics=" .. #socket:topics(), "counts=" .. table.concat(counts, ","),
          "late=" .. tostring(late) .. "," .. tostring(err),
          socket.data.announce and ("announced=" .. table.concat(announced, ",")) or "")
      end,
    },
  }
end
