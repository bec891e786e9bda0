-- bots_spec: the server that `luaws client` talks to. It greets, echoes, and
-- on request pings the client, sends binary, or closes; it logs what it gets.
local ws = require "luaws"

return {
  on_open = function(socket) socket:send("hello client") end,
  on_message = function(socket, message)
    ws.log("info", "bots-cli message", type(message) == "string" and message or ("binary " .. #message))
    if message == "pingme" then socket:ping("srv-ping")
    elseif message == "closeme" then socket:close(4001, "server says bye")
    elseif message == "binme" then socket:send(ws.buffer("\0\1\255"))
    else socket:send(message) end
  end,
  on_pong = function(socket, data)
    ws.log("info", "bots-cli pong " .. data:string())
    socket:send("pong seen " .. data:string())
  end,
  on_close = function(socket, code, reason)
    ws.log("info", "bots-cli close " .. code .. " " .. reason)
  end,
}
