-- WebSocket echo for nginx + lua-nginx-module, using lua-resty-websocket.
-- On Debian 12 that library is packaged as lua-nginx-websocket and installed
-- as nginx.websocket.server (upstream name: resty.websocket.server).
local ok, server = pcall(require, "resty.websocket.server")
if not ok then
    server = require "nginx.websocket.server"
end

local wb, err = server:new{
    timeout = 60000,                       -- ms; an idle benchmark connection waits
    max_payload_len = 64 * 1024 * 1024,
}
if not wb then
    ngx.log(ngx.ERR, "websocket handshake failed: ", err)
    return ngx.exit(400)
end

while true do
    local data, typ, rerr = wb:recv_frame()
    if not data then
        if not (rerr and rerr:find("timeout", 1, true)) then
            break
        end
    elseif typ == "text" then
        local _, serr = wb:send_text(data)
        if serr then break end
    elseif typ == "binary" then
        local _, serr = wb:send_binary(data)
        if serr then break end
    elseif typ == "ping" then
        wb:send_pong(data)
    elseif typ == "close" then
        -- data is the close reason, rerr the status code
        wb:send_close(tonumber(rerr) or 1000, "")
        break
    end
end
