-- safety_spec.lua — issue 20: memory safety when events interleave. One
-- test per reproduction of the issue (items 1a-7), then the "also close
-- these" cases that can be seen from outside.
--
-- Each test starts its own server on spec/scripts/safety.lua with the options
-- the reproduction needs, triggers the bug, waits for the script's
-- "safety ..." log lines (never a sleep in the spec), then checks that the
-- server still serves a fresh connection and, in srv:stop(), that it never
-- died and the log holds no AddressSanitizer / UBSan report. They are meant
-- for ./luaws-asan (make test SANITIZE=1) but also check outcomes (codes,
-- log lines) that the plain build gets wrong.
--
-- Ordering without sleeping: a fresh connection to /barrier?MS sleeps MS ms
-- on the server before it answers, so its answer comes after every timer the
-- server armed earlier for less than MS ms (a close timeout, a sleep), which
-- is when a use-after-free through such a timer would show.
local H = require "spec.support.helpers"
local server = require "spec.support.server"
local wsc = require "spec.support.wsclient"
local socket = require "socket"

local SCRIPT = "spec/scripts/safety.lua"

local function start(args, opts)
  opts = opts or {}
  opts.script = SCRIPT
  opts.args = args or {}
  return H.start(opts)
end

-- A fresh connection, answered after the server slept ms: the server is
-- alive, serves, and every timer it armed for less than ms has fired.
local function barrier(srv, ms)
  ms = ms or 0
  local c, err = wsc.connect(srv.host, srv.port, { path = "/barrier?" .. ms })
  local msg, kind
  if c and c.status == 101 then msg, kind = c:read_message({ auto_pong = true }) end
  if msg ~= "done " .. ms then
    error(string.format("barrier: a fresh connection is not served (%s)\n--- log:\n%s",
      tostring(err or (c and c.status ~= 101 and c.status) or kind or msg), srv:log()), 2)
  end
  c:close(1000)
end

-- The next message on c (pings answered), or an error with the server log.
local function read(srv, c)
  local data, kind = c:read_message({ auto_pong = true })
  if not data then
    error(string.format("no message from the server (%s)\n--- log:\n%s", tostring(kind), srv:log()), 2)
  end
  return data, kind
end

-- Reads until the server's close frame or the end of the connection;
-- returns the close code (nil when the TCP connection just ended).
local function drain(c)
  while true do
    local data, kind = c:read_message({ auto_pong = true })
    if not data then c:shutdown(); return nil, kind end
    if kind == "close" then
      c:send_close(#data >= 2 and string.unpack(">I2", data) or 1000)
      c:shutdown()
      return #data >= 2 and string.unpack(">I2", data) or 1005
    end
  end
end

local function count(srv, pattern) return #srv:grep(pattern) end

-- The ASAN_OPTIONS the caller gave, with leak detection on.
local function leak_env()
  local cur = os.getenv("ASAN_OPTIONS")
  return { ASAN_OPTIONS = (cur and cur ~= "" and (cur .. ":") or "") .. "detect_leaks=1" }
end

-- A plain TCP listener that accepts and never answers.
local function silent_listener()
  local l = assert(socket.bind("127.0.0.1", 0))
  local _, port = l:getsockname()
  l:settimeout(server.TIMEOUT)
  return l, tonumber(port)
end

describe("memory safety (issue 20)", function()
  local srv
  after_each(function()
    if srv then srv:stop { quiet = true } end
    srv = nil
  end)

  describe("1. use-after-free of the conn through task->owner", function()
    it("1a: an outbound socket closed before it opened, whose on_close sleeps", function()
      srv = start()
      local mark = srv:mark()
      local resp = assert(wsc.http(srv.host, srv.port, { path = "/1a" }))
      assert.equal(200, resp.status)
      srv:wait_log("safety 1a on_close sleeping", { after = mark })
      srv:wait_log("safety 1a on_close done", { after = mark })
      barrier(srv, 0)
      assert.equal(1, count(srv, "safety 1a on_close sleeping"))
      srv:stop()
    end)

    it("1b: the ping timeout cuts a socket whose on_message, on_error and on_close sleep", function()
      srv = start { "--ping-interval", "200" }
      local c = H.open(srv, "/1b")
      c:send_text("one message, then silence")
      srv:wait_log("safety 1b on_message sleeping")
      -- The client answers nothing: ping, then cut after as long again.
      srv:wait_log("no answer to ping")
      srv:wait_log("safety 1b on_error done")
      srv:wait_log("safety 1b on_close done")
      srv:wait_log("safety 1b on_message done")
      barrier(srv, 100)
      assert.equal(1, count(srv, "safety 1b on_close sleeping"))
      assert.equal(1, count(srv, "safety 1b on_error sleeping"))
      assert.truthy(srv:grep("safety 1b on_close sleeping 1006")[1])
      c:shutdown()
      srv:stop()
    end)

    it("1c: SIGHUP while on_message sleeps, with an on_reload that sleeps; the peer leaves meanwhile", function()
      srv = start()
      local c = H.open(srv, "/1c")
      c:send_text("sleep")
      srv:wait_log("safety 1c on_message sleeping")
      local mark = srv:mark()
      srv:signal("HUP")
      srv:wait_log("safety 1c on_reload sleeping", { after = mark })
      c:shutdown()
      srv:wait_log("safety 1c on_close")
      srv:wait_log("safety 1c on_message done")
      srv:wait_log("safety 1c on_reload done")
      barrier(srv, 100)
      assert.equal(1, count(srv, "safety 1c on_close"))
      srv:stop()
    end)
  end)

  describe("2. ws_abort re-entered inside ws_close / ws_fail", function()
    local ARGS = { "--deflate", "off", "--high-water", "10000", "--max-backpressure", "10000",
                   "--close-timeout", "300" }

    it("ws_close: the close frame itself passes --max-backpressure", function()
      srv = start(ARGS)
      local c = H.open(srv, "/2")
      c:send_text("go")
      -- Either the close handshake (4000) or the connection cut (1008).
      drain(c)
      srv:wait_log("safety 2 on_message done")
      srv:wait_log("safety 2 on_close")
      -- Past the close timeout that ws_close armed.
      barrier(srv, 500)
      local closes = srv:grep("safety 2 on_close")
      assert.equal(1, #closes, table.concat(closes, "\n"))
      local code = tonumber(closes[1]:match("on_close %d+ (%d+)"))
      assert.truthy(code == 1008 or code == 4000, closes[1])
      srv:stop()
    end)

    it("ws_fail: a reserved opcode right behind a message whose reply fills the queue", function()
      srv = start(ARGS)
      local c = H.open(srv, "/2fail")
      c:send_raw(wsc.encode_frame { opcode = 1, payload = "go" } .. wsc.encode_frame { opcode = 3, payload = "" })
      drain(c)
      srv:wait_log("safety 2fail on_close")
      barrier(srv, 500)
      assert.equal(1, count(srv, "safety 2fail on_close"))
      assert.truthy(count(srv, "safety 2fail on_error") >= 1)
      srv:stop()
    end)
  end)

  describe("3. luaws.connect given up before name resolution finished", function()
    it(":close() before resolution, from a timer callback, 10 times", function()
      srv = start()
      local c = H.open(srv, "/3")
      c:send_text("go 10")
      local msg = read(srv, c)
      assert.equal("closed 10", msg)
      assert.equal(0, count(srv, "safety 3 opened anyway"))
      for _, line in ipairs(srv:grep("safety 3 on_close")) do
        assert.truthy(line:match(" 1000$"), line)
      end
      c:close(1000)
      barrier(srv, 0)
      srv:stop()
    end)

    it("the handshake timeout passes while resolving, and while the server stays silent", function()
      srv = start { "--handshake-timeout", "200" }
      local l, port = silent_listener()
      finally(function() l:close() end)
      local c = H.open(srv, "/3t")
      -- A server that accepts and never answers.
      c:send_text("silent " .. port)
      local peer = assert(l:accept())
      finally(function() peer:close() end)
      assert.equal("closed silent 1006", (read(srv, c)))
      srv:wait_log("safety 3t on_error silent")
      -- The timeout passes before the resolver's answer is delivered.
      c:send_text("resolving " .. port)
      assert.equal("closed resolving 1006", (read(srv, c)))
      srv:wait_log("safety 3t on_error resolving")
      assert.equal(0, count(srv, "safety 3t opened anyway"))
      c:close(1000)
      barrier(srv, 0)
      srv:stop()
    end)
  end)

  it("4. allocations on the main Lua thread under --script-memory fail as catchable errors", function()
    srv = start({ "--script-memory", "8000000", "--script-timeout", "300" },
                { env = { SAFETY_SCRIPT_MEMORY = "8000000" } })
    local c = H.open(srv, "/4")
    c:send_text("go")
    local msg = read(srv, c)
    assert.truthy(msg:match("^done ok=%d+ err=%d+ first=%d+$"), msg .. "\n--- log:\n" .. srv:log())
    srv:wait_log("safety 4 done")
    assert.same({}, srv:grep("Lua panic"))
    c:close(1000)
    -- Later events get their own --script-timeout (300 ms): an event that
    -- runs a while, later than 300 ms after the last one (the barrier), must
    -- not be stopped by a deadline left over from before (h->depth stuck).
    local w = H.open(srv, "/work")
    w:send_text("work 300000")
    assert.equal("worked 300000", (read(srv, w)))
    w:close(1000)
    barrier(srv, 400)
    local w2 = H.open(srv, "/work")
    w2:send_text("work 300000")
    assert.equal("worked 300000", (read(srv, w2)))
    w2:close(1000)
    assert.same({}, srv:grep("script timeout"))
    srv:stop()
  end)

  it("5. a script cannot resume an event's coroutine", function()
    srv = start()
    local a = H.open(srv, "/5")
    local b = H.open(srv, "/5")
    a:send_text("stash")
    srv:wait_log("safety 5 stashed, sleeping")
    b:send_text("resume")
    local reply = read(srv, b)
    local ok, r1, r2 = reply:match("^resume (%S+) (%S+) (.*)$")
    assert.truthy(ok, reply)
    -- Refused: coroutine.resume returned false, err, or raised.
    assert.is_false(ok == "true" and r1 == "true", "the script resumed an event's coroutine: " .. reply)
    local err = ok == "true" and r2 or r1
    assert.truthy(err ~= "nil" and #err > 0, "no error message: " .. reply)
    -- The event itself runs its two sleeps to the end.
    assert.equal("stash done", (read(srv, a)))
    assert.equal(1, count(srv, "safety 5 first sleep over"))
    -- Outlast any sleep timer armed while the coroutine was resumed by hand.
    barrier(srv, 400)
    a:close(1000); b:close(1000)
    barrier(srv, 0)
    srv:stop()
  end)

  it("6. a publish from on_close that aborts 3000 subscribers runs no on_close inside another", function()
    local N = 3000
    srv = start { "--deflate", "off", "--high-water", "1000", "--max-backpressure", "1000",
                  "--log-level", "info" }
    local c = H.open(srv, "/6", { timeout = 30 })
    c:send_text("open " .. N)
    assert.equal("ready " .. N, (read(srv, c)))
    c:send_text("publish")
    local reply = read(srv, c)
    assert.truthy(reply:match("^published "), reply)
    local line = srv:wait_log("safety 6 all closed", { timeout = 30 })
    assert.equal(tostring(N), line:match("all closed (%d+)"), line)
    assert.equal("1", line:match("max_depth=(%d+)"), "on_close ran inside another on_close: " .. line)
    c:close(1000)
    barrier(srv, 0)
    srv:stop()
  end)

  it("7. a 700-byte subprotocol gives a complete 101 (or a clear refusal)", function()
    srv = start { "--close-timeout", "300" }
    local proto = "p" .. string.rep("0123456789", 70):sub(2)
    assert.equal(700, #proto)
    local c, err = wsc.connect(srv.host, srv.port, { path = "/7", protocols = { proto } })
    assert(c, "no complete response head (no blank line after the headers): " .. tostring(err))
    if c.status == 101 then
      assert.is_true(c.accept_ok)
      assert.equal(proto, c.headers["sec-websocket-protocol"])
      assert.equal("hi", (read(srv, c)))
      assert.equal(1000, (c:expect_close()))
    else
      assert.truthy(c.status >= 400, "status " .. tostring(c.status))
      assert.truthy(srv:grep("subprotocol")[1], "no error in the log about the subprotocol")
      c:shutdown()
    end
    barrier(srv, 0)
    srv:stop()
  end)

  describe("also", function()
    it("a timer started in on_close belongs to no socket and fires", function()
      srv = start()
      local c = H.open(srv, "/t")
      c:close(1000)
      local _, id = srv:wait_log("safety t on_close (%d+) 1000")
      -- The timer (100 ms) was armed before the barrier's sleep (200 ms).
      barrier(srv, 200)
      assert.equal(1, count(srv, "safety t fired " .. id), "the timer started in on_close never fired")
      srv:stop()
    end)

    it("a timer started in an on_close that runs from the free path fires", function()
      -- 1b's way to the free path: the ping timeout cuts a socket whose
      -- on_message sleeps; its deferred on_close then runs as it is freed.
      srv = start { "--ping-interval", "200" }
      local c = H.open(srv, "/tfree")
      c:send_text("one message, then silence")
      local _, id = srv:wait_log("safety tfree on_message sleeping (%d+)")
      srv:wait_log("no answer to ping")
      srv:wait_log("safety tfree on_close " .. id .. " 1006")
      srv:wait_log("safety tfree fired " .. id)
      srv:wait_log("safety tfree on_message done " .. id)
      c:shutdown()
      barrier(srv, 0)
      srv:stop()
    end)

    it("tasks still sleeping at shutdown are freed (no leak report)", function()
      srv = start({ "--close-timeout", "200", "--shutdown-timeout", "1000" }, { env = leak_env() })
      local c = H.open(srv, "/sleep")
      c:send_text("sleep")
      local _, id = srv:wait_log("safety sleep sleeping (%d+)")
      -- SIGTERM: the close times out (the client never answers), the
      -- server exits with the event still asleep; LeakSanitizer runs at exit.
      local _, _, log = srv:stop { keep_clients = true }
      c:shutdown()
      assert.truthy(log:find("safety sleep on_close " .. id, 1, true), log)
    end)

    it("an outbound socket still waiting for its 101 at SIGTERM gets on_close with 1001", function()
      srv = start { "--close-timeout", "300", "--shutdown-timeout", "1000" }
      local l, port = silent_listener()
      finally(function() l:close() end)
      local c = H.open(srv, "/out")
      c:send_text("connect " .. port)
      assert.equal("connecting", (read(srv, c)))
      local peer = assert(l:accept())
      finally(function() peer:close() end)
      c:close(1000)
      local _, _, log = srv:stop()
      local code = log:match("safety out on_close (%d+)")
      assert.truthy(code, "on_close did not run\n" .. log)
      assert.equal("1001", code)
    end)
  end)
end)
