-- bots_spec: the target of luaws.connect. It greets with what it saw of the
-- request (JSON), picks "chat" or "superchat" when offered, echoes text with
-- a prefix and binary as is, and logs its closes.
local ws = require "luaws"

return function(request)
  if not ws.upgrade_request(request) then return { status = 404, body = "target: WebSocket only\n" } end
  if request.uri == "/refuse" then return { status = 403, body = "not for you\n" } end
  local chosen
  for _, p in ipairs(ws.request_protocols(request)) do
    if p == "chat" or p == "superchat" then chosen = p break end
  end
  return {
    protocol = chosen,
    headers = { ["x-target"] = "bots" },
    listener = {
      on_open = function(socket)
        socket:send_json {
          hello = "target", protocol = socket.protocol or ws.json.null, headers = request.headers,
          uri = request.uri, query = request.query_string or ws.json.null,
        }
      end,
      on_message = function(socket, message)
        if message == "close-me" then socket:close(4002, "target bye")
        elseif type(message) == "string" then socket:send("target echo: " .. message)
        else socket:send(message) end
      end,
      on_close = function(socket, code, reason)
        ws.log("info", "bots-target close", socket.id, code, reason)
      end,
    },
  }
end
