-- bench/broadcast/shootout.lua — the luaws side of bench/broadcast/run: the
-- websocket-shootout's broadcast server. Every client is subscribed to one
-- topic; {"type":"broadcast","payload":P} from a client is published to all
-- of them as {"type":"broadcast","payload":P}, then the sender gets
-- {"type":"broadcastResult","payload":P}.
local ws = require "luaws"
local json = ws.json

return {
  on_open = function(socket) socket:subscribe("all") end,
  on_message = function(socket, message)
    local ok, msg = pcall(json.decode, message)
    if not ok or type(msg) ~= "table" then return end
    if msg.type == "broadcast" then
      ws.publish("all", json.encode { type = "broadcast", payload = msg.payload })
      socket:send(json.encode { type = "broadcastResult", payload = msg.payload })
    end
  end,
}
