-- bots_spec: the handler behind --static. Plain requests get "handler URI";
-- upgrades get an echo listener that greets with the path.
local ws = require "luaws"

return function(request)
  if ws.upgrade_request(request) then
    return { listener = {
      on_open = function(socket) socket:send("handler ws " .. request.uri) end,
      on_message = function(socket, message) socket:send(message) end,
    } }
  end
  return { status = 200, headers = { ["x-from"] = "handler" },
           body = "handler " .. request.method .. " " .. request.uri }
end
