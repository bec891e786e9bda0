-- bench/soak/echo.lua — the soak test's subject: greets with "hello ID",
-- echoes text and binary in kind. Plain HTTP gets 200 "ok" (the soak uses
-- it as a liveness probe).
local ws = require "luaws"

local listener = {
  on_open = function(s) s:send("hello " .. s.id) end,
  on_message = function(s, m) s:send(m) end,
}

return function(req)
  if not ws.upgrade_request(req) then
    return { status = 200, body = "ok\n" }
  end
  return { listener = listener }
end
