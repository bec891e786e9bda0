-- bench/broadcast/nginx/shootout.lua — the nginx + lua-resty-websocket side of
-- bench/broadcast/run: the websocket-shootout's broadcast server.
-- {"type":"broadcast","payload":P} is published to every connection of the
-- worker (hub.lua) as {"type":"broadcast","payload":P}, and the sender gets
-- {"type":"broadcastResult","payload":P} after it.
--
-- A cosocket may be read by one light thread while another writes, but two
-- writers at once fail ("socket busy writing"), so this request's thread only
-- reads, and one pusher thread per connection does all the writing: the
-- broadcasts it has not sent yet, then this connection's own replies.
local ok, server = pcall(require, "resty.websocket.server")
if not ok then
  server = require "nginx.websocket.server"
end
local cjson = require "cjson.safe"
local hub = require "hub"

-- Before the handshake, whose flush yields: what is published from now on is ours.
local seen = hub.last
local wb, err = server:new { timeout = 60000, max_payload_len = 65536 }
if not wb then
  ngx.log(ngx.ERR, "websocket handshake failed: ", err)
  return ngx.exit(400)
end

local replies = {}
local closed = false

local function pusher()
  local msgs, sema = hub.msgs, hub.sema
  while true do
    while seen < hub.last do
      seen = seen + 1
      local m = msgs[seen]
      if not m then
        ngx.log(ngx.WARN, "a client fell more than the hub keeps behind; closing it")
        closed = true
        return
      end
      local _, serr = wb:send_text(m)
      if serr then closed = true return end
    end
    if #replies > 0 then
      local mine = replies
      replies = {}
      for i = 1, #mine do
        local _, serr = wb:send_text(mine[i])
        if serr then closed = true return end
      end
    elseif closed then
      return
    else
      sema:wait(10)                     -- woken by publish; the timeout only rechecks
    end
  end
end

local th = ngx.thread.spawn(pusher)
while not closed do
  local data, typ, rerr = wb:recv_frame()
  if not data then
    if not (rerr and rerr:find("timeout", 1, true)) then break end
  elseif typ == "text" then
    local msg = cjson.decode(data)
    if type(msg) == "table" and msg.type == "broadcast" then
      hub.publish(cjson.encode { type = "broadcast", payload = msg.payload })
      -- publish woke every waiting pusher, this connection's included
      replies[#replies + 1] = cjson.encode { type = "broadcastResult", payload = msg.payload }
    end
  elseif typ == "close" then
    break
  end
end
closed = true
ngx.thread.kill(th)
return ngx.exit(ngx.OK)
