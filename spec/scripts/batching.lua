-- batching.lua — the script of spec/batching_spec.lua.
--
-- GET /sub     a member: subscribed to "room", and in the script's member
--              list (for sends from other sockets and from timers)
-- GET /ctl     a controller; its text commands, each answered "done CMD"
--              once every message is handed to the core:
--   burst N    in this event: N rounds of publish("room", "p<i>") then
--              member:send("s<i>") to every member
--   later N    the same from a luaws.after(0) timer (no socket's event)
--   twice N    burst N, then later N (the timer fires in the next loop
--              iteration: while a fan-out wider than one pass is being sent)
--   big N SIZE N rounds of a SIZE-byte publish then a SIZE-byte send; each
--              message starts with its round number (%08d) and its kind
--   pubs N SIZE N SIZE-byte publishes only (publish never waits: a member
--              that does not read meets --max-backpressure)
local ws = require "luaws"

local members = {}   -- socket -> true

local function rounds(n, size, publish_only)
  for i = 1, n do
    local p, s = "p" .. i, "s" .. i
    if size then
      p = string.format("%08dp", i) .. string.rep("x", size - 9)
      s = string.format("%08ds", i) .. string.rep("y", size - 9)
    end
    ws.publish("room", p)
    if not publish_only then
      for m in pairs(members) do m:send(s) end
    end
  end
end

local member = {
  on_open = function(socket)
    socket:subscribe("room")
    members[socket] = true
    socket:send("joined")
  end,
  on_close = function(socket) members[socket] = nil end,
}

local controller = {
  on_message = function(socket, msg)
    local verb, n, size = msg:match("^(%a+) (%d+) ?(%d*)$")
    n, size = tonumber(n), tonumber(size)
    if verb == "burst" then
      rounds(n)
      socket:send("done " .. msg)
    elseif verb == "later" or verb == "twice" then
      if verb == "twice" then rounds(n) end
      ws.after(0, function()
        rounds(n)
        socket:send("done " .. msg)
      end)
    elseif verb == "big" or verb == "pubs" then
      rounds(n, size, verb == "pubs")
      socket:send("done " .. msg)
    end
  end,
}

return function(request)
  if request.uri == "/sub" then return { listener = member } end
  if request.uri == "/ctl" then return { listener = controller } end
  return { status = 404, body = "no\n" }
end
