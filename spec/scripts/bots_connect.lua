-- bots_spec: drives luaws.connect from a client's commands and reports every
-- event of the outbound socket back to that client as a text line:
--   go URL [nodeflate] [protos=a,b] [hdr=name:value ...] [closenow]
--                                                           opens the outbound socket
--   send TEXT | sendbin HEX | big N | close CODE REASON     act on it
--   summary                                                 counts of its events
--   badurl URL                                              ws.connect raising
local ws = require "luaws"

local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
local function unhex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end

local function go(socket, args)
  local url = args:match("^(%S+)")
  local opts = { headers = {} }
  for word in args:gmatch("%S+") do
    if word == "nodeflate" then opts.deflate = false end
    local protos = word:match("^protos=(.*)$")
    if protos then
      opts.protocols = {}
      for p in protos:gmatch("[^,]+") do opts.protocols[#opts.protocols + 1] = p end
    end
    local name, value = word:match("^hdr=([^:]+):(.*)$")
    if name then opts.headers[name] = value end
  end
  local counts = { open = 0, error = 0, close = 0 }
  local up
  up = ws.connect(url, {
    on_open = function(u)
      counts.open = counts.open + 1
      socket:send("up open protocol=" .. tostring(u.protocol) .. " is_open=" .. tostring(u:is_open())
        .. " same=" .. tostring(u == up))
    end,
    on_message = function(u, message)
      if type(message) == "string" then socket:send("up text " .. message)
      else socket:send("up binary " .. hex(message:string())) end
    end,
    on_error = function(u, err)
      counts.error = counts.error + 1
      socket:send("up error " .. tostring(err))
    end,
    on_close = function(u, code, reason)
      counts.close = counts.close + 1
      socket:send("up close " .. code .. " " .. reason)
    end,
  }, opts)
  socket.data.up, socket.data.counts = up, counts
  socket:send("connecting is_open=" .. tostring(up:is_open()))
  if args:find("%f[%S]closenow%f[%s\0]") then
    -- change of mind before the connection is open
    local ok, err = up:close(4000, "changed my mind")
    socket:send("early close " .. tostring(ok) .. " " .. tostring(err))
  end
end

return {
  on_message = function(socket, message)
    local cmd, rest = message:match("^(%S+)%s*(.*)$")
    local up = socket.data.up
    if cmd == "go" then go(socket, rest)
    elseif cmd == "send" then socket:send("sent " .. tostring(up:send(rest)))
    elseif cmd == "sendbin" then socket:send("sent " .. tostring(up:send(ws.buffer(unhex(rest)))))
    elseif cmd == "big" then socket:send("sent " .. tostring(up:send(string.rep("z", tonumber(rest)))))
    elseif cmd == "close" then
      local code, reason = rest:match("^(%d+)%s*(.*)$")
      socket:send("closing " .. tostring(up:close(tonumber(code), reason)))
    elseif cmd == "summary" then
      -- the outbound socket's events so far, 100 ms from now: an event that
      -- came late (a second on_close, say) would show in the counts
      ws.sleep(100)
      local n = socket.data.counts
      socket:send(string.format("up summary open=%d error=%d close=%d", n.open, n.error, n.close))
    elseif cmd == "badurl" then
      local ok, err = pcall(ws.connect, rest, {})
      socket:send("badurl " .. (ok and "accepted" or "error " .. tostring(err)))
    else
      socket:send("unknown command " .. message)
    end
  end,
  on_close = function(socket)
    local up = socket.data.up
    if up and up:is_open() then up:close(1001) end
  end,
}
