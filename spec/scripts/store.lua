-- The subject of spec/store_spec.lua: one text command per message.
local ws = require "luaws"
local core = require "luaws.core"
local V = "v1"
local s = ws.store("spec")

local commands = {}
function commands.pid() return tostring(core.pid()) end
function commands.version() return V end
-- incr N: the counter N times, one incr each
function commands.incr(n)
  for _ = 1, tonumber(n) do s:incr("counter") end
  return "done " .. core.pid()
end
function commands.get(k) return tostring(s:get(k)) end
function commands.set(k, v) s:set(k, v) return "ok" end
function commands.incr1(k) return tostring(s:incr(k)) end
-- hang K: an update that never returns (until the worker is killed)
function commands.hang(k)
  ws.log("info", "store update hanging in pid " .. core.pid())
  s:update(k, function(old) while true do end end)
end
-- fill: 10 kB values until the store is full; "full N <error>"
function commands.fill()
  local fill = ws.store("fill")
  for i = 1, 100000 do
    local ok, err = pcall(fill.set, fill, "k" .. i, string.rep("x", 10000))
    if not ok then return "full " .. i .. " " .. tostring(err) end
  end
  return "never full"
end
function commands.mem() return string.format("%.0f", collectgarbage("count")) end

return {
  on_message = function(socket, m)
    local name, a, b = m:match("^(%S+) ?(%S*) ?(.*)$")
    socket:send(commands[name](a, b))
  end,
}
