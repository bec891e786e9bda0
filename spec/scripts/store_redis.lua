-- The subject of spec/store_redis_spec.lua (luaws --store redis://...): one
-- text command per message, answered with one message; a store error is
-- answered "error <message>" and the socket stays open.
local ws = require "luaws"
local core = require "luaws.core"
local s = ws.store("spec")

local function show(v)
  if type(v) == "number" then return math.type(v) .. " " .. tostring(v) end
  if type(v) == "table" then return "table " .. ws.json.encode(v) end
  return type(v) .. " " .. tostring(v)
end

local commands = {}
function commands.pid() return tostring(core.pid()) end
function commands.echo(a, b) return "echo " .. a .. (b ~= "" and " " .. b or "") end
function commands.get(k) return show(s:get(k)) end
function commands.seti(k, v) return show(s:set(k, math.tointeger(tonumber(v)))) end
function commands.setf(k, v) return show(s:set(k, tonumber(v) + 0.0)) end
function commands.sets(k, v) return show(s:set(k, v)) end
function commands.setb(k, v) return show(s:set(k, v == "true")) end
function commands.sett(k, v) return show(s:set(k, ws.json.decode(v))) end
-- setttl K MS: a string that expires after MS milliseconds
function commands.setttl(k, ms) return show(s:set(k, "soon gone", tonumber(ms) / 1000)) end
function commands.add(k, v) return show(s:add(k, v)) end
function commands.addttl(k, ms) return show(s:add(k, "added", tonumber(ms) / 1000)) end
function commands.delete(k) return show(s:delete(k)) end
function commands.incr(k, n) return show(s:incr(k, n ~= "" and tonumber(n) or nil)) end
function commands.incrinit(k, init) return show(s:incr(k, 1, math.tointeger(tonumber(init)))) end
function commands.keys(prefix) return table.concat(s:keys(prefix ~= "" and prefix or nil), ",") end
-- many K N: N incr of K, one after the other
function commands.many(k, n)
  for _ = 1, tonumber(n) do s:incr(k) end
  return "done " .. core.pid()
end
-- append K ITEM: ITEM appended to the JSON list at K, through update
function commands.append(k, item)
  local new = s:update(k, function(old)
    old = old or {}
    old[#old + 1] = item
    return old
  end)
  return "len " .. #new
end
function commands.appendmany(k, n)
  for i = 1, tonumber(n) do commands.append(k, core.pid() .. "-" .. i) end
  return "done " .. core.pid()
end
function commands.upd_incr(k) return show(s:update(k, function(old) return (old or 0) + 1 end)) end
function commands.upd_delete(k) return show(s:update(k, function() return nil end)) end
function commands.upd_nested(k) return show(s:update(k, function() return s:get("x") end)) end
function commands.upd_sleep(k) return show(s:update(k, function() ws.sleep(1) return 1 end)) end
function commands.len(k) return tostring(#(s:get(k) or {})) end
-- later K: the get runs in a timer callback
function commands.later(k, _, socket)
  ws.after(0, function() socket:send("later " .. show(s:get(k))) end)
  return "scheduled"
end

return {
  on_message = function(socket, m)
    local name, a, b = m:match("^(%S+) ?(%S*) ?(.*)$")
    local ok, r = pcall(commands[name], a, b, socket)
    socket:send(ok and r or "error " .. tostring(r))
  end,
}
