-- The Ring echo example, as in API.md: greets, echoes text and binary in
-- kind, closes (1000) on "exit".
local ws = require "luaws"

return function(request)
  assert(ws.upgrade_request(request))
  return {
    listener = {
      on_open = function(socket)
        socket:send("I will echo your messages")
      end,
      on_message = function(socket, message)
        if message == "exit" then socket:close() else socket:send(message) end
      end,
    },
  }
end
