-- shutdown_spec.lua — graceful shutdown on SIGTERM/SIGINT: stop accepting,
-- close every WebSocket with 1001, run on_close for each, deliver what was
-- queued, exit 0; bounded by --shutdown-timeout (and --close-timeout) for
-- peers that never answer.
--
-- The subject is spec/scripts/limits_echo.lua with LUAWS_SPEC_EVENTS set: it
-- appends "spec-event ..." lines to that file, which outlives the server.
-- Waits poll for effects (log lines, frames, the process exiting) and time out
-- only as failure guards.
local H = require "spec.support.helpers"
local server = require "spec.support.server"
local wsc = require "spec.support.wsclient"
local socket = require "socket"

local SCRIPT = "spec/scripts/limits_echo.lua"

-- Starts the subject; srv.events_file is where its on_close lines go.
local function start(args, opts)
  opts = opts or {}
  local dir = server.tmpdir()
  opts.script = SCRIPT
  opts.args = args
  opts.env = { LUAWS_SPEC_EVENTS = dir .. "/events" }
  local srv = H.start(opts)
  srv.events_file = dir .. "/events"
  srv.events_dir = dir
  return srv
end

local function file_events(srv, name, id)
  local out = {}
  local text = server.read_file(srv.events_file) or ""
  local pat = "^spec%-event " .. name:gsub("%-", "%%-") .. " " .. (id or "%d+") .. " (.*)$"
  for line in text:gmatch("[^\n]+") do
    local rest = line:match(pat)
    if rest then out[#out + 1] = rest end
  end
  return out
end

local function cleanup(srv)
  if srv and srv.events_dir then os.execute("rm -rf " .. server.quote(srv.events_dir)) end
end

local function open(srv, path, opts)
  local c = H.open(srv, path or "/", opts)
  c:send_text("!id")
  local reply = H.read(c)
  c.id = assert(reply:match("^id (%d+)$"), "bad id reply: " .. reply)
  return c
end

-- Waits for the process to exit (guard timeout); returns how, code, seconds.
local function wait_exit(srv, t0, timeout)
  local how, code = srv:wait_exit(timeout or server.TIMEOUT)
  assert(how, "the server did not exit after the signal\n--- log:\n" .. srv:log())
  return how, code, socket.gettime() - t0
end

local function assert_clean_log(srv)
  local log = srv:log()
  assert.falsy(log:find("AddressSanitizer", 1, true), log)
  assert.falsy(log:find("runtime error:", 1, true), log)
end

describe("graceful shutdown", function()
  local srv
  after_each(function()
    if srv then
      srv:stop({ quiet = true })
      cleanup(srv)
      srv = nil
    end
  end)

  for _, sig in ipairs { { "TERM", 15 }, { "INT", 2 } } do
    it("SIG" .. sig[1] .. ": every open socket gets 1001, on_close runs once for each, exit 0", function()
      srv = start {}
      local clients = {}
      for i = 1, 5 do clients[i] = open(srv) end
      local t0 = socket.gettime()
      srv:signal(sig[1])
      for _, c in ipairs(clients) do
        local code, reason, tcp_closed = c:expect_close()
        assert.equal(1001, code)
        assert.equal("server shutting down", reason)
        assert.is_true(tcp_closed)
      end
      local how, code = wait_exit(srv, t0)
      assert.equal("exit", how)
      assert.equal(0, code)
      for _, c in ipairs(clients) do
        local closes = file_events(srv, "close", c.id)
        assert.equal(1, #closes, "on_close for " .. c.id)
        assert.equal("1001 server shutting down", closes[1])
      end
      assert.truthy(srv:log():find("signal " .. sig[2] .. ": shutting down (5 connections open)", 1, true))
      assert.truthy(srv:log():find("luaws stopped", 1, true))
      assert_clean_log(srv)
    end)
  end

  it("with no connection open, exits 0 at once", function()
    srv = start {}
    local t0 = socket.gettime()
    srv:signal("TERM")
    local how, code, secs = wait_exit(srv, t0)
    assert.equal("exit", how)
    assert.equal(0, code)
    assert.truthy(secs < 2, "took " .. secs .. " s")
  end)

  it("delivers every message queued before the signal (20 MB the client had not read yet)", function()
    srv = start {}
    local c = open(srv)
    local mark = srv:mark()
    c:send_text("!burst 200 100000")
    srv:wait_log("spec%-event burst%-queued " .. c.id .. " 200", { after = mark })
    local t0 = socket.gettime()
    srv:signal("TERM")
    srv:wait_log("shutting down", { after = mark, plain = true })
    -- only now do we start reading
    for i = 1, 200 do
      local data, kind = H.read(c)
      assert.equal("text", kind)
      assert.equal(100000, #data, "message " .. i)
      assert.equal(string.format("%08d", i), data:sub(1, 8))
    end
    assert.equal("burst_done 200", (H.read(c)))
    local code = c:expect_close()
    assert.equal(1001, code)
    local how, ecode = wait_exit(srv, t0)
    assert.equal("exit", how)
    assert.equal(0, ecode)
    assert.equal(0, #file_events(srv, "burst-failed"))
  end)

  it("answers every message it accepted before the signal", function()
    srv = start {}
    local c = open(srv)
    local mark = srv:mark()
    for i = 1, 200 do c:send_text("m" .. i) end
    -- accepted: the script has seen all 200
    srv:wait_log("spec%-event message " .. c.id .. " ", { after = mark, count = 200 })
    local t0 = socket.gettime()
    srv:signal("TERM")
    for i = 1, 200 do assert.equal("m" .. i, (H.read(c))) end
    assert.equal(1001, (c:expect_close()))
    local how, code = wait_exit(srv, t0)
    assert.equal("exit", how)
    assert.equal(0, code)
  end)

  it("a synchronous send waiting on a slow reader: what was sent arrives in order, then 1001", function()
    srv = start { "--high-water", "65536" }
    local c = open(srv)
    local mark = srv:mark()
    c:send_text("!flood 2000 10000")    -- 20 MB; we do not read yet: the event waits
    srv:wait_log("conn " .. c.id .. " send text 10000 bytes", { after = mark, plain = true, count = 20 })
    local t0 = socket.gettime()
    srv:signal("TERM")
    srv:wait_log("shutting down", { after = mark, plain = true })
    local n = 0
    local code
    while true do
      local data, kind = c:read_message()
      assert(data, "read: " .. tostring(kind))
      if kind == "close" then
        code = #data >= 2 and string.unpack(">I2", data)
        c:send_close(code)
        break
      end
      n = n + 1
      if data:sub(1, 11) == "flood_done " then break end
      assert.equal(string.format("%08d", n), data:sub(1, 8))
    end
    if code == nil then code = c:expect_close() end
    assert.equal(1001, code)
    c:shutdown()
    local how, ecode = wait_exit(srv, t0)
    assert.equal("exit", how)
    assert.equal(0, ecode)
    -- the flood learnt that the socket closed under it, at the first send
    -- that did not make it; everything before that was delivered
    local failed = file_events(srv, "flood-failed", c.id)
    assert.equal(1, #failed, "the flood was not waiting when the signal came")
    local at = tonumber(failed[1]:match("^(%d+)"))
    assert.equal(at - 1, n, "sent before the close: " .. (at - 1) .. ", received: " .. n)
    assert.equal(1, #file_events(srv, "close", c.id))
  end)

  it("a client that never answers the close is cut after --shutdown-timeout (on_close 1006), exit 0", function()
    srv = start { "--shutdown-timeout", "300", "--close-timeout", "20000" }
    local mute = open(srv)          -- reads nothing, answers nothing
    local polite = open(srv)
    local t0 = socket.gettime()
    srv:signal("TERM")
    assert.equal(1001, (polite:expect_close()))
    local how, code, secs = wait_exit(srv, t0)
    assert.equal("exit", how)
    assert.equal(0, code)
    assert.truthy(secs >= 0.25, "exited after " .. secs .. " s, before the timeout")
    assert.truthy(secs < 3, "exited after " .. secs .. " s")
    assert.truthy(srv:log():find("shutdown: 1 connections still open after 300 ms (--shutdown-timeout), closing them",
      1, true), srv:log())
    assert.same({ "1006 " }, file_events(srv, "close", mute.id))
    assert.same({ "1001 server shutting down" }, file_events(srv, "close", polite.id))
    -- the close frame had been sent to it all the same
    local data, kind = mute:read_message()
    assert.equal("close", kind)
    assert.equal(1001, string.unpack(">I2", data))
    mute:shutdown()
  end)

  it("... or after --close-timeout when that comes first", function()
    srv = start { "--shutdown-timeout", "20000", "--close-timeout", "300" }
    local mute = open(srv)
    local t0 = socket.gettime()
    srv:signal("TERM")
    local how, code, secs = wait_exit(srv, t0)
    assert.equal("exit", how)
    assert.equal(0, code)
    assert.truthy(secs >= 0.25 and secs < 3, "exited after " .. secs .. " s")
    assert.truthy(srv:log():find("conn " .. mute.id .. ": no close frame from the peer in time", 1, true), srv:log())
    assert.same({ "1006 " }, file_events(srv, "close", mute.id))
    mute:shutdown()
  end)

  it("stops accepting at once; other sockets are still closed properly meanwhile", function()
    srv = start { "--shutdown-timeout", "5000", "--close-timeout", "20000" }
    local mute = open(srv)
    local mark = srv:mark()
    local t0 = socket.gettime()
    srv:signal("TERM")
    srv:wait_log("shutting down", { after = mark, plain = true })
    local c, err = wsc.tcp(srv.host, srv.port, { timeout = 1 })
    if c then
      -- the port may still take the SYN if the kernel had it queued; then
      -- nothing may answer on it
      local r = c:read_response()
      c:shutdown()
      assert.is_nil(r, "a new connection was served during shutdown")
    else
      assert.truthy(err:find("refused", 1, true), err)
    end
    -- the mute client finally answers: the server is done at once
    local code = mute:expect_close()
    assert.equal(1001, code)
    local how, ecode, secs = wait_exit(srv, t0)
    assert.equal("exit", how)
    assert.equal(0, ecode)
    assert.truthy(secs < 3, "took " .. secs .. " s")
  end)

  it("plain HTTP connections (keep-alive idle, half a request) do not hold it up", function()
    srv = start { "--shutdown-timeout", "5000" }
    local idle = assert(wsc.tcp(srv.host, srv.port))
    assert.equal(200, assert(idle:request { path = "/", headers = { Host = "x" } }).status)
    local half = assert(wsc.tcp(srv.host, srv.port))
    half:send_raw("GET / HTTP/1.1\r\nHost: x\r\n")
    local ws = open(srv)
    local t0 = socket.gettime()
    srv:signal("TERM")
    assert.is_true((idle:tcp_closed()))
    idle:shutdown()
    local r = half:read_response()
    assert.truthy(r == nil or r.status >= 400)
    half:shutdown()
    assert.equal(1001, (ws:expect_close()))
    local how, code, secs = wait_exit(srv, t0)
    assert.equal("exit", how)
    assert.equal(0, code)
    assert.truthy(secs < 3, "took " .. secs .. " s")
  end)

  it("a second signal exits at once", function()
    srv = start { "--shutdown-timeout", "20000", "--close-timeout", "20000" }
    local mute = open(srv)
    local mark = srv:mark()
    local t0 = socket.gettime()
    srv:signal("TERM")
    srv:wait_log("shutting down", { after = mark, plain = true })
    srv:signal("TERM")
    local how, code, secs = wait_exit(srv, t0)
    assert.equal("exit", how)
    assert.equal(0, code)
    assert.truthy(secs < 3, "took " .. secs .. " s")
    assert.truthy(srv:log():find("second signal: exiting now", 1, true))
    assert_clean_log(srv)
    mute:shutdown()
  end)

  it("with --workers 2: sockets in every worker get 1001, on_close runs, the master exits 0", function()
    srv = start({}, { workers = 2 })
    local clients = {}
    for i = 1, 12 do clients[i] = open(srv) end
    local t0 = socket.gettime()
    srv:signal("TERM")
    for _, c in ipairs(clients) do
      assert.equal(1001, (c:expect_close()))
    end
    local how, code = wait_exit(srv, t0, 10)
    assert.equal("exit", how)
    assert.equal(0, code)
    for _, c in ipairs(clients) do
      assert.same({ "1001 server shutting down" }, file_events(srv, "close", c.id))
    end
    assert_clean_log(srv)
  end)
end)
