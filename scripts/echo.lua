-- The Ring echo bot: greets, echoes every text and binary message in kind,
-- and closes on "exit". A browser opening / gets the luaws console to try
-- it; other plain HTTP requests get a note on how to connect.
local ws = require "luaws"

return function(request)
  if not ws.upgrade_request(request) then
    if request.uri == "/" and request.method == "GET" then return ws.console(request) end
    local url = (request.scheme == "https" and "wss://" or "ws://") .. (request.headers.host or "127.0.0.1:8080")
    return {
      status = 200,
      headers = { ["content-type"] = "text/plain; charset=utf-8" },
      body = "luaws echo bot: open a WebSocket to " .. url .. request.uri
        .. "\n(for example: /usr/bin/python3 -m websockets " .. url .. "/)\n",
    }
  end
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
