-- bench/topics/room.lua — the luaws side of bench/topics/run.
-- /sub subscribes to "room"; every message on /pub is published to "room"
-- (locally, or through Redis when luaws runs with --redis).
local ws = require "luaws"

local publisher = {
  on_message = function(_, message) ws.publish("room", message) end,
}
local subscriber = {
  on_open = function(socket) socket:subscribe("room") end,
}

return function(request)
  if not ws.upgrade_request(request) then return { status = 404, body = "ws only\n" } end
  if request.uri == "/pub" then return { listener = publisher } end
  return { listener = subscriber }
end
