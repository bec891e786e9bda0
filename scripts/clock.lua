-- A clock: every connected socket gets the time (UTC, ISO 8601) when it
-- connects and then on every tick, once a second.
--
--   luaws scripts/clock.lua
--   CLOCK_INTERVAL_MS=100 luaws scripts/clock.lua     (a faster clock)
--
-- One global timer publishes to the "clock" topic; sockets just subscribe.
-- A timer started at load time belongs to this version of the script: a hot
-- reload ends it once the new version (with its own timer) has loaded.
local ws = require "luaws"

local INTERVAL = tonumber(os.getenv("CLOCK_INTERVAL_MS")) or 1000

local function now() return os.date("!%Y-%m-%dT%H:%M:%SZ") end

ws.every(INTERVAL, function()
  if ws.subscribers("clock") > 0 then ws.publish("clock", now()) end
end)

return function(request)
  if not ws.upgrade_request(request) then return ws.console(request) end
  return {
    listener = {
      on_open = function(socket)
        socket:send(now())
        socket:subscribe("clock")
      end,
      -- Unsubscribing is automatic when the socket closes.
    },
  }
end
