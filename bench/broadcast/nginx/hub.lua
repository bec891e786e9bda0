-- bench/broadcast/nginx/hub.lua — one nginx worker's broadcast hub for
-- bench/broadcast/nginx/shootout.lua (module state lives as long as the
-- worker's Lua VM). A published message gets the next number; every
-- connection's pusher thread sends what it has not sent yet and then waits on
-- the semaphore, which publish posts once per waiting thread. This is the
-- usual lua-nginx-module pattern for one worker: a shared dict would be needed
-- across workers, and there each connection would have to poll it.
local semaphore = require "ngx.semaphore"

local KEEP = 65536          -- messages kept for connections that lag behind

local M = { last = 0, msgs = {}, sema = semaphore.new(0) }

function M.publish(message)
  local last = M.last + 1
  M.msgs[last] = message
  M.msgs[last - KEEP] = nil
  M.last = last
  local waiting = -M.sema:count()       -- a negative count is the number of waiters
  if waiting > 0 then M.sema:post(waiting) end
end

return M
