-- bots_spec: luaws.after / every / sleep, timer handles, and timer ownership.
-- Each text message is a command; the replies let a spec observe timers in
-- order, without sleeping on its side. State shared between sockets lives in
-- `state`, so one socket can report on another's timers.
local ws = require "luaws"

local state = {
  ticks = {},          -- socket id -> ticks of its owned timer
  timers = {},         -- socket id -> its owned timer
  closed = {},         -- socket id -> true once on_close ran
  active_at_close = {},-- socket id -> timer:is_active() as on_close saw it
  sleepers = 0, released = false,
  orphan = nil, orphan_ticks = 0,
}

local function words(s)
  local t = {}
  for w in s:gmatch("%S+") do t[#t + 1] = w end
  return t
end

-- Waits (inside an event) until cond() holds; false after about 5 s.
local function wait_until(cond)
  for _ = 1, 1000 do
    if cond() then return true end
    ws.sleep(5)
  end
  return false
end

local commands = {}

-- after MS TAG: TAG arrives once, MS ms later
function commands.after(socket, w)
  ws.after(tonumber(w[2]), function() socket:send(w[3]) end)
end

-- order: three after timers started in the opposite order of their delays,
-- and a direct send; they must arrive in time order
function commands.order(socket)
  ws.after(60, function() socket:send("sixty") end)
  ws.after(20, function() socket:send("twenty") end)
  ws.after(0, function() socket:send("zero") end)
  socket:send("now")
end

-- every MS: "tick N" every MS ms until cancelled
function commands.every(socket, w)
  local n = 0
  socket.data.every = ws.every(tonumber(w[2]), function()
    n = n + 1
    socket:send("tick " .. n)
  end)
  socket:send("every started active=" .. tostring(socket.data.every:is_active()))
end

-- cancel: cancels the every timer; "later" is sent 150 ms after, so any tick
-- that still fired would arrive before it
function commands.cancel(socket)
  local t = socket.data.every
  local was = t:cancel()
  socket:send("cancel " .. tostring(was) .. " active=" .. tostring(t:is_active())
    .. " again=" .. tostring(t:cancel()))
  ws.after(150, function() socket:send("later") end)
end

-- a timer that cancels itself from its own callback on the 3rd tick
function commands.selfcancel(socket)
  local n, t = 0, nil
  t = ws.every(10, function()
    n = n + 1
    socket:send("self " .. n)
    if n == 3 then socket:send("self cancel " .. tostring(t:cancel()) .. " active=" .. tostring(t:is_active())) end
  end)
  ws.after(150, function() socket:send("self done") end)
end

-- once: an after timer's handle before and after it fired
function commands.once(socket)
  local t
  t = ws.after(10, function()
    socket:send("fired active=" .. tostring(t:is_active()))
    socket:send("after firing: cancel=" .. tostring(t:cancel()) .. " active=" .. tostring(t:is_active()))
  end)
  socket:send("pending active=" .. tostring(t:is_active()))
end

-- a cancelled after timer never fires
function commands.cancelafter(socket)
  local t = ws.after(30, function() socket:send("MUST NOT FIRE") end)
  socket:send("cancelled " .. tostring(t:cancel()))
  ws.after(100, function() socket:send("cancelafter done") end)
end

-- errors in timer arguments and in a callback
function commands.bad(socket)
  local r = {}
  for _, case in ipairs {
    { "every0", function() return ws.every(0, function() end) end },
    { "after-1", function() return ws.after(-1, function() end) end },
    { "nofn", function() return ws.after(10) end },
    { "sleep-1", function() return ws.sleep(-1) end },
  } do
    local ok = pcall(case[2])
    r[#r + 1] = case[1] .. "=" .. (ok and "accepted" or "error")
  end
  socket:send(table.concat(r, " "))
end

-- a timer callback that raises: the socket's error (on_error, 1011)
function commands.boom(socket)
  ws.after(0, function() error("bots timer boom") end)
end

-- sleep MS: this socket's event waits; its later messages wait with it
function commands.sleep(socket, w)
  ws.sleep(tonumber(w[2]))
  socket:send("slept " .. w[2])
end

-- timersleep: luaws.sleep inside a timer callback
function commands.timersleep(socket)
  ws.after(0, function()
    ws.sleep(20)
    socket:send("slept in timer")
  end)
  socket:send("timer started")
end

-- gc: a full collection (a timer whose handle nobody keeps must survive it)
function commands.gc(socket)
  collectgarbage("collect")
  collectgarbage("collect")
  socket:send("gc done")
end

-- hold: sleeps until another socket says "release"
function commands.hold(socket)
  state.sleepers = state.sleepers + 1
  state.released = false
  local ok = wait_until(function() return state.released end)
  state.sleepers = state.sleepers - 1
  socket:send(ok and "released" or "gave up waiting")
end

function commands.release(socket)
  socket:send("sleepers " .. state.sleepers)
  state.released = true
end

-- own: a 10 ms timer owned by this socket, counting in state.ticks[id]
function commands.own(socket)
  state.ticks[socket.id] = 0
  state.timers[socket.id] = ws.every(10, function()
    state.ticks[socket.id] = state.ticks[socket.id] + 1
  end)
  socket:send("owned " .. socket.id)
end

-- orphan: a timer started inside this socket's timer callback belongs to no one
function commands.orphan(socket)
  ws.after(0, function()
    if state.orphan then state.orphan:cancel() end
    state.orphan_ticks = 0
    state.orphan = ws.every(10, function() state.orphan_ticks = state.orphan_ticks + 1 end)
    socket:send("orphan started")
  end)
end

-- report ID: once ID's owned timer has ended, are its ticks frozen, and does
-- the orphan go on?
function commands.report(socket, w)
  local id = tonumber(w[2])
  local t = state.timers[id]
  local ended = wait_until(function() return not t:is_active() end)
  local c1, o1 = state.ticks[id], state.orphan_ticks
  ws.sleep(100)
  local c2, o2 = state.ticks[id], state.orphan_ticks
  socket:send(string.format("report ended=%s closed=%s frozen=%s cancel=%s orphan_grew=%s orphan_active=%s",
    tostring(ended), tostring(state.closed[id] == true), tostring(c1 == c2), tostring(t:cancel()),
    tostring(o2 > o1), tostring(state.orphan and state.orphan:is_active())))
end

-- afterclose ID: once on_close of ID ran, do its owned timer's ticks stop?
function commands.afterclose(socket, w)
  local id = tonumber(w[2])
  local seen = wait_until(function() return state.closed[id] end)
  local c1 = state.ticks[id]
  ws.sleep(200)
  local c2 = state.ticks[id]
  socket:send(string.format("afterclose closed=%s active_at_close=%s ticks_after_close=%d",
    tostring(seen), tostring(state.active_at_close[id]), c2 - c1))
end

function commands.stoporphan(socket)
  socket:send("stoporphan " .. tostring(state.orphan and state.orphan:cancel()))
  state.orphan = nil
end

-- The handler is not an event: luaws.sleep raises there.
return function(request)
  if request.uri == "/sleep-in-handler" then
    local ok, err = pcall(ws.sleep, 10)
    return { status = 200, body = "sleep in handler: " .. (ok and "returned" or "error: " .. tostring(err)) }
  end
  if not ws.upgrade_request(request) then return { status = 404, body = "timers: WebSocket only\n" } end
  return { listener = {
    on_open = function(socket) socket:send("timers " .. socket.id) end,
    on_message = function(socket, message)
      local w = words(message)
      local cmd = commands[w[1]]
      if cmd then cmd(socket, w) else socket:send("echo " .. message) end
    end,
    on_error = function(socket, err) ws.log("warn", "bots-timers on_error", socket.id, err) end,
    on_close = function(socket)
      state.closed[socket.id] = true
      local t = state.timers[socket.id]
      if t then state.active_at_close[socket.id] = t:is_active() end
    end,
  } }
end
