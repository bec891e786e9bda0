-- limits_echo.lua — the subject of spec/limits_spec.lua, spec/shutdown_spec.lua
-- and bench/soak: an echo server that logs every event, so that a spec can
-- wait for them in the server log (no sleeps), plus commands that misbehave
-- on purpose.
--
-- Every event logs one line at info level:
--   "spec-event open ID PATH"
--   "spec-event message ID LEN"
--   "spec-event error ID <message>"
--   "spec-event close ID CODE <reason>"
-- and, when the environment variable LUAWS_SPEC_EVENTS names a file, appends
-- the same line to that file (flushed at once: it must survive the process).
--
-- Text messages starting with "!" are commands:
--   !id                 replies "id ID"
--   !spin               runs forever (`while true do end`)
--   !spin_pcall         runs forever inside pcall (a timeout must still win)
--   !alloc              allocates without bound (strings kept in a table)
--   !flood N SIZE       N synchronous sends of SIZE bytes ("%08d" counter +
--                       filler), then "flood_done N" (the client need not read)
--   !burst N SIZE       the same with asynchronous sends, all queued at once
--   !close CODE         socket:close(CODE)
-- anything else is echoed in kind (text as text, binary as binary).
-- Paths: /spin-open has an on_open that never returns; plain HTTP requests to
-- /spin, /spin_pcall and /alloc misbehave in the handler; other plain HTTP
-- requests get 200 "body N" (N = body length) or "no body".
local ws = require "luaws"

local events_file = os.getenv("LUAWS_SPEC_EVENTS")

local function event(fmt, ...)
  local line = "spec-event " .. string.format(fmt, ...)
  ws.log("info", line)
  if events_file then
    local f = io.open(events_file, "a")
    if f then f:write(line, "\n"); f:close() end
  end
end

local function words(s)
  local t = {}
  for w in s:gmatch("%S+") do t[#t + 1] = w end
  return t
end

local function payload(i, size)
  local head = string.format("%08d", i)
  if size <= 8 then return head:sub(1, size) end
  return head .. string.rep("f", size - 8)
end

local commands = {}

function commands.id(s) s:send("id " .. tostring(s.id)) end

function commands.spin()
  local n = 0
  while true do n = n + 1 end
end

function commands.spin_pcall()
  while true do pcall(function() while true do end end) end
end

function commands.alloc()
  local keep = {}
  local chunk = string.rep("x", 64 * 1024)
  local i = 0
  while true do
    i = i + 1
    keep[i] = chunk .. i    -- a new 64 KiB string each time
  end
end

function commands.flood(s, n, size)
  n, size = tonumber(n), tonumber(size)
  for i = 1, n do
    local ok, err = s:send(payload(i, size))
    if not ok then event("flood-failed %s %d %s", s.id, i, tostring(err)); return end
  end
  s:send("flood_done " .. n)
end

function commands.burst(s, n, size)
  n, size = tonumber(n), tonumber(size)
  for i = 1, n do
    local ok, err = s:send(payload(i, size), nil, function(e)
      event("burst-failed %s %d %s", s.id, i, tostring(e))
    end)
    if not ok then event("burst-refused %s %d %s", s.id, i, tostring(err)); return end
  end
  s:send("burst_done " .. n, nil, function() end)
  event("burst-queued %s %d", s.id, n)
end

function commands.close(s, code) s:close(tonumber(code)) end

local listener = {
  on_open = function(s)
    event("open %s %s", s.id, s.request.uri)
  end,
  on_message = function(s, m)
    event("message %s %d", s.id, #m)
    if type(m) == "string" and m:sub(1, 1) == "!" then
      local w = words(m:sub(2))
      local f = commands[w[1]]
      if not f then s:send("unknown command " .. tostring(w[1])); return end
      return f(s, table.unpack(w, 2))
    end
    s:send(m)
  end,
  on_error = function(s, err)
    event("error %s %s", s.id, (tostring(err):gsub("\n.*", "")))
  end,
  on_close = function(s, code, reason)
    event("close %s %s %s", s.id, tostring(code), tostring(reason))
  end,
}

-- /spin-open: on_open never returns.
local spin_open = {}
for k, v in pairs(listener) do spin_open[k] = v end
spin_open.on_open = function(s)
  event("open %s %s", s.id, s.request.uri)
  commands.spin()
end

return function(req)
  if not ws.upgrade_request(req) then
    -- plain HTTP: /spin and /alloc misbehave in the handler itself
    if req.uri == "/spin" then commands.spin() end
    if req.uri == "/spin_pcall" then commands.spin_pcall() end
    if req.uri == "/alloc" then commands.alloc() end
    local body = req.body and ("body " .. #req.body) or "no body"
    return { status = 200, headers = { ["Content-Type"] = "text/plain" }, body = body }
  end
  if req.uri == "/spin-open" then return { listener = spin_open } end
  return { listener = listener }
end
