-- bench/store/bench.lua — one round per message "round N": N ops of each
-- kind, timed with os.clock (the worker's CPU time: the loop is CPU-bound).
-- Answers "table_get OPS table_incr OPS store_get OPS store_incr OPS".
local ws = require "luaws"
local s = ws.store("bench")

local function rate(n, fn)
  local t0 = os.clock()
  fn(n)
  return string.format("%.0f", n / (os.clock() - t0))
end

return {
  on_message = function(sock, m)
    local n = tonumber(m:match("^round (%d+)$"))
    if not n then return end
    local t = { counter = 0 }
    s:set("counter", 0)
    local sink
    local out = {
      "table_get", rate(n, function(k) for _ = 1, k do sink = t.counter end end),
      "table_incr", rate(n, function(k) for _ = 1, k do t.counter = t.counter + 1 end end),
      "store_get", rate(n, function(k) for _ = 1, k do sink = s:get("counter") end end),
      "store_incr", rate(n, function(k) for _ = 1, k do s:incr("counter") end end),
    }
    assert(s:get("counter") == n and sink ~= nil)
    sock:send(table.concat(out, " "))
  end,
}
