-- safety.lua — the subject of spec/safety_spec.lua (issue 20: memory safety
-- when events interleave). One path per reproduction; every listener writes
-- "safety <item> ..." log lines that the spec waits for, so nothing sleeps in
-- the spec itself.
--
-- Paths:
--   /barrier?MS   on_open sleeps MS ms, then sends "done MS": a fresh
--                 connection that proves the server still serves, and whose
--                 reply comes after every timer armed earlier for less
--                 than MS ms (libuv runs timers in order of due time)
--   /work         on_message "work N": N loop iterations, then "worked N"
--   /1b /1c /2 /2fail /3 /3t /4 /5 /6 /6sub /7 /t /tfree /sleep /out   see below
--   plain HTTP /1a   the handler of item 1a; anything else: 404
local ws = require "luaws"

local function log(...) ws.log("info", "safety", ...) end

-- Busy-waits ms of CPU time without returning to the loop (os.clock counts
-- this process's CPU time, which a spinning loop advances at wall speed).
local function spin(ms)
  local stop = os.clock() + ms / 1000
  while os.clock() < stop do end
end

local function query_number(req, default)
  return tonumber(req.query_string or "") or default
end

-- Item 1a: an outbound socket closed before it opened, whose on_close sleeps.
local function item_1a(req)
  local up = ws.connect("ws://127.0.0.1:" .. req.server_port .. "/", {
    on_close = function(s, code)
      log("1a on_close sleeping", code)
      ws.sleep(200)
      log("1a on_close done")
    end,
  })
  up:close()
  return { body = "ok\n" }
end

local listeners = {}

listeners["/barrier"] = function(req)
  local ms = query_number(req, 0)
  return { on_open = function(s)
    ws.sleep(ms)
    s:send("done " .. ms)
  end }
end

listeners["/work"] = function()
  return { on_message = function(s, msg)
    local n = tonumber(msg:match("^work (%d+)$")) or 0
    local x = 0
    for i = 1, n do x = x + i % 7 end
    s:send("worked " .. n)
  end }
end

-- Item 1b: an event sleeps while the ping timeout tears the socket down, and
-- on_error / on_close sleep as well.
listeners["/1b"] = function()
  return {
    on_message = function(s)
      log("1b on_message sleeping")
      ws.sleep(1000)
      log("1b on_message done")
    end,
    on_error = function(s, err)
      log("1b on_error sleeping", err)
      ws.sleep(300)
      log("1b on_error done")
    end,
    on_close = function(s, code)
      log("1b on_close sleeping", code)
      ws.sleep(300)
      log("1b on_close done")
    end,
  }
end

-- Item 1c: SIGHUP while on_message sleeps; on_reload sleeps too.
listeners["/1c"] = function()
  return {
    on_message = function(s)
      log("1c on_message sleeping")
      ws.sleep(300)
      log("1c on_message done")
    end,
    on_reload = function(s)
      log("1c on_reload sleeping")
      ws.sleep(800)
      log("1c on_reload done")
    end,
    on_close = function(s, code) log("1c on_close", code) end,
  }
end

-- Item 2: the close frame itself passes --max-backpressure (10000 in the spec).
listeners["/2"] = function()
  return {
    on_message = function(s)
      for _ = 1, 99 do s:send(string.rep("x", 98)) end
      s:close(4000, string.rep("r", 120))
      log("2 on_message done")
    end,
    on_close = function(s, code) log("2 on_close", s.id, code) end,
  }
end

-- Item 2, ws_fail: the reply (99 x 98 + 88 bytes) fills the queue to just
-- under the cap; the reserved opcode that follows in the same read makes
-- ws_fail send a close frame that passes it.
listeners["/2fail"] = function()
  return {
    on_message = function(s)
      for _ = 1, 99 do s:send(string.rep("x", 98)) end
      s:send(string.rep("y", 88))
      log("2fail on_message done")
    end,
    on_error = function(s, err) log("2fail on_error", s.id, err) end,
    on_close = function(s, code) log("2fail on_close", s.id, code) end,
  }
end

-- Item 3: luaws.connect, then close before name resolution finished. The
-- connect and close run in a timer callback (the timers phase of the loop);
-- the spin lets the resolver thread finish, so its answer is delivered in
-- the poll phase of the same loop iteration, before the closed handle's
-- close callback runs.
listeners["/3"] = function(req)
  local url = "ws://127.0.0.1:" .. req.server_port .. "/"
  return { on_message = function(s, msg)
    local n = tonumber(msg:match("^go (%d+)$"))
    local closed, i = 0, 0
    local function one()
      i = i + 1
      local up = ws.connect(url, {
        on_open = function() log("3 opened anyway") end,
        on_close = function(_, code)
          closed = closed + 1
          log("3 on_close", closed, code)
          if closed == n and s:is_open() then s:send("closed " .. closed) end
        end,
      })
      spin(20)
      up:close()
      if i < n then ws.after(1, one) end
    end
    ws.after(1, one)
  end }
end

-- Item 3, handshake timeout: the --handshake-timeout (200 ms in the spec)
-- passes while the name is still being resolved: the connect happens in an
-- event (the poll phase), the spin outlasts the timeout, so the next loop
-- iteration runs the housekeeping timer (which gives up on the socket)
-- before it delivers the resolver's answer. "silent PORT" connects to a
-- listener that accepts and never answers (an ordinary handshake timeout).
listeners["/3t"] = function()
  return { on_message = function(s, msg)
    local how, port = msg:match("^(%a+) (%d+)$")
    local up = ws.connect("ws://127.0.0.1:" .. port .. "/", {
      on_open = function() log("3t opened anyway", how) end,
      on_error = function(_, err) log("3t on_error", how, err) end,
      on_close = function(_, code, reason)
        log("3t on_close", how, code, reason)
        if s:is_open() then s:send("closed " .. how .. " " .. code) end
      end,
    })
    if how == "resolving" then spin(400) end
    log("3t connecting", how, tostring(up))
  end }
end

-- Item 4: allocations made on behalf of Lua under --script-memory. The
-- state is filled so that exactly F bytes are left under the cap, and
-- luaws.connect is tried, for F = 512, 576, 640, ... until it succeeds, then
-- 4 bytes apart over the last 64: near the success threshold, the Lua half
-- of connect fits and what the C half allocates on the main Lua thread
-- (attach_socket) does not. That must be an error the script can catch (or
-- be allowed past the cap), not a "Lua panic".
listeners["/4"] = function()
  local LIMIT = tonumber(os.getenv("SAFETY_SCRIPT_MEMORY") or "") or 8000000
  return { on_message = function(s)
    local function used() return math.floor(collectgarbage("count") * 1024) end
    local fill, fine, tail
    local tries, ok_n, err_n, last_err, exact = 0, 0, 0, nil, 0
    -- Leaves exactly `free` bytes under the cap: long strings of at most
    -- 1000 bytes cost their length + 25 bytes (string.rep builds them in a
    -- C buffer, no garbage); linked-list nodes avoid table resizes.
    local function leave(free)
      fine, tail = nil, nil
      collectgarbage("collect")
      local rem = LIMIT - used() - free
      while rem > 1000 do
        fine = { fine, string.rep("z", 900) }
        rem = LIMIT - used() - free
      end
      if rem > 26 then tail = string.rep("t", rem - 25) end
      if LIMIT - used() == free then exact = exact + 1 end
    end
    local function try(free)
      -- A wait between tries: --script-timeout applies to each stretch.
      ws.sleep(0)
      tries = tries + 1
      leave(free)
      local ok, r = pcall(ws.connect, "ws://127.0.0.1:1/", {})
      if ok then ok_n = ok_n + 1 else err_n = err_n + 1; last_err = tostring(r) end
      return ok
    end
    -- Coarse fill, once: to about 16 KB under the cap.
    collectgarbage("collect")
    pcall(function()
      while LIMIT - used() > 16384 do fill = { fill, string.rep("x", 1000) } end
    end)
    local first
    for free = 512, 12000, 64 do
      if try(free) then first = free break end
    end
    if first then
      for free = math.max(512, first - 64), first, 4 do try(free) end
    end
    fill, fine, tail = nil, nil, nil
    collectgarbage("collect")
    log("4 done", "tries=" .. tries, "exact=" .. exact, "ok=" .. ok_n, "err=" .. err_n,
        "first_ok=" .. tostring(first), "last_err=" .. tostring(last_err))
    s:send("done ok=" .. ok_n .. " err=" .. err_n .. " first=" .. tostring(first))
  end }
end

-- Item 5: an event's coroutine resumed by the script itself.
local stash
listeners["/5"] = function()
  return { on_message = function(s, msg)
    if msg == "stash" then
      stash = coroutine.running()
      log("5 stashed, sleeping")
      ws.sleep(300)
      log("5 first sleep over")
      ws.sleep(300)
      log("5 stash done")
      s:send("stash done")
    elseif msg == "resume" then
      local ok, r1, r2 = pcall(coroutine.resume, stash)
      log("5 resume", tostring(ok), tostring(r1), tostring(r2))
      s:send(string.format("resume %s %s %s", tostring(ok), tostring(r1), tostring(r2)))
    end
  end }
end

-- Item 6: chat.lua's pattern: on_close publishes; the message (2000 bytes)
-- is over --max-backpressure (1000 in the spec), so every subscriber it
-- reaches is aborted. The subscribers are the server sides of outbound
-- connections this worker opens to itself (/6sub). The nesting depth of
-- on_close is what the spec checks: one on_close must never run inside
-- another.
local BIG = string.rep("b", 2000)
local sub_closed, depth, max_depth, nsubs = 0, 0, 0, 0
listeners["/6sub"] = function()
  return {
    on_open = function(s) s:subscribe("room6") end,
    on_close = function(s)
      depth = depth + 1
      if depth > max_depth then max_depth = depth end
      sub_closed = sub_closed + 1
      ws.publish("room6", BIG)
      depth = depth - 1
      if sub_closed == nsubs then log("6 all closed", sub_closed, "max_depth=" .. max_depth) end
    end,
  }
end
listeners["/6"] = function(req)
  local url = "ws://127.0.0.1:" .. req.server_port .. "/6sub"
  return { on_message = function(s, msg)
    local n = tonumber(msg:match("^open (%d+)$"))
    if n then
      nsubs = n
      local started, opened = 0, 0
      local function open_one()
        started = started + 1
        ws.connect(url, {
          on_open = function()
            opened = opened + 1
            if started < n then open_one() end
            if opened == n then s:send("ready " .. ws.subscribers("room6")) end
          end,
          on_error = function(_, err) log("6 connect failed", err) end,
        }, { deflate = false })
      end
      for _ = 1, math.min(64, n) do open_one() end
    elseif msg == "publish" then
      local sent = ws.publish("room6", BIG)
      s:send("published " .. tostring(sent) .. " max_depth=" .. max_depth .. " closed=" .. sub_closed)
    end
  end }
end

-- Item 7: the handler picks a very long subprotocol.
listeners["/7"] = function(req)
  local chosen
  for _, p in ipairs(ws.request_protocols(req)) do
    if #p > 500 then chosen = p end
  end
  return { protocol = chosen, listener = {
    on_open = function(s)
      s:send("hi")
      s:close(1000)
    end,
  } }
end

-- A timer started in on_close: it belongs to no socket and fires.
listeners["/t"] = function()
  return { on_close = function(s, code)
    local id = s.id
    ws.after(100, function() log("t fired", id) end)
    log("t on_close", id, code)
  end }
end

-- The same, on the free path: the ping timeout (--ping-interval) cuts the
-- socket while on_message sleeps, so on_close runs as the conn is freed.
listeners["/tfree"] = function()
  return {
    on_message = function(s)
      log("tfree on_message sleeping", s.id)
      ws.sleep(600)
      log("tfree on_message done", s.id)
    end,
    on_close = function(s, code)
      local id = s.id
      ws.after(100, function() log("tfree fired", id) end)
      log("tfree on_close", id, code)
    end,
  }
end

-- An event still sleeping at shutdown.
listeners["/sleep"] = function()
  return {
    on_message = function(s)
      log("sleep sleeping", s.id)
      ws.sleep(3000)
      log("sleep woke", s.id)
    end,
    on_close = function(s, code) log("sleep on_close", s.id, code) end,
  }
end

-- An outbound socket still connecting (no 101 yet) at shutdown.
listeners["/out"] = function()
  return { on_message = function(s, msg)
    local port = msg:match("^connect (%d+)$")
    ws.connect("ws://127.0.0.1:" .. port .. "/", {
      on_error = function(_, err) log("out on_error", err) end,
      on_close = function(_, code, reason) log("out on_close", code, reason) end,
    })
    s:send("connecting")
  end }
end

return function(req)
  if not ws.upgrade_request(req) then
    if req.uri == "/1a" then return item_1a(req) end
    return { status = 404, body = "no such path\n" }
  end
  local make = listeners[req.uri]
  if not make then return { status = 404, body = "no such path\n" } end
  local r = make(req)
  if r.listener then return r end
  return { listener = r }
end
