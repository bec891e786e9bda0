-- A feed bridge: one upstream WebSocket shared by every local client. What
-- the upstream sends is published to the local clients; what a local client
-- sends goes upstream. The upstream connection reconnects on its own, with
-- backoff, and a hot reload hands it to the new code instead of opening a
-- second one.
--
--   luaws --port 8081 scripts/bridge.lua                     (upstream: ws://127.0.0.1:8080/)
--   BRIDGE_URL=ws://127.0.0.1:9000/feed luaws --port 8081 scripts/bridge.lua
local ws = require "luaws"

local URL = os.getenv("BRIDGE_URL") or "ws://127.0.0.1:8080/"

local upstream = ws.connect(URL, {
  on_open = function(up)
    -- up.data survives reconnects and reloads: the object stays the same.
    up.data.opens = (up.data.opens or 0) + 1
    ws.log("info", "bridge: upstream " .. URL .. " open (connection " .. up.data.opens .. ")")
    ws.publish("feed", "* upstream connected")
  end,
  on_message = function(up, message)
    ws.publish("feed", message)
  end,
  on_close = function(up, code)
    ws.publish("feed", "* upstream lost (" .. code .. "), reconnecting")
  end,
}, { reconnect = { min = 500, max = 10000 } })

return function(request)
  if not ws.upgrade_request(request) then return ws.console(request) end
  return {
    listener = {
      on_open = function(socket) socket:subscribe("feed") end,
      on_message = function(socket, message)
        local ok, err = upstream:send(message)
        if not ok then socket:send("* not sent: " .. tostring(err)) end
      end,
    },
  }
end
