-- limits_spec.lua — the "Hardening" limits, each with its flag (small values
-- so that the tests are quick), its log line and its status or close code, and
-- that the other connections are served meanwhile; then bad input (truncated
-- frames, disconnects mid-frame and mid-handshake, lying lengths, connection
-- storms) and runaway scripts.
--
-- The subject is spec/scripts/limits_echo.lua: it logs "spec-event open|
-- message|error|close ID ..." for every event, so the tests wait for events in
-- the server log. Nothing sleeps to wait for an event: waits poll for the
-- effect (a log line, a frame, a closed socket, /proc) and time out only as a
-- failure guard. Tests about a timeout use a small one and wait for its effect.
local H = require "spec.support.helpers"
local server = require "spec.support.server"
local wsc = require "spec.support.wsclient"
local socket = require "socket"

local SCRIPT = "spec/scripts/limits_echo.lua"

local function start(args, opts)
  opts = opts or {}
  opts.script = opts.script or SCRIPT
  opts.args = args
  return H.start(opts)
end

-- A WebSocket whose server-side id we know (c.id). A ping that comes before
-- the id (a slow server, under valgrind, with a short --ping-interval) is not
-- answered; c.pings counts them.
local function open(srv, path, opts)
  local c = H.open(srv, path or "/", opts)
  c.pings = 0
  c:send_text("!id")
  local reply, kind = H.read(c)
  while kind == "ping" do
    c.pings = c.pings + 1
    reply, kind = H.read(c)
  end
  c.id = assert(reply:match("^id (%d+)$"), "bad id reply: " .. reply)
  return c
end

-- A fresh connection still gets its messages echoed.
local function assert_serves(srv, text)
  text = text or "still serving"
  local c = open(srv)
  c:send_text(text)
  assert.equal(text, (H.read(c)))
  c:close(1000)
end

-- The script's event lines for one connection: "spec-event NAME ID rest".
local function event_pattern(name, id) return "spec%-event " .. name .. " " .. id .. " (.*)$" end
local function events(srv, name, id) return srv:grep(event_pattern(name, id)) end
local function wait_event(srv, name, id, opts)
  local _, rest = srv:wait_log(event_pattern(name, id), opts)
  return rest
end
-- Waits for on_close of id; returns its code and reason.
local function wait_close(srv, id)
  local rest = wait_event(srv, "close", id)
  local code, reason = rest:match("^(%d+) ?(.*)$")
  return tonumber(code), reason
end
-- Waits until the server freed connection id (debug log), so that every
-- event it will ever have has run.
local function wait_freed(srv, id) srv:wait_log("conn " .. id .. " freed", { plain = false }) end

-- Polls f() until it returns a true value; errors after the guard timeout.
local function wait_until(f, what, timeout)
  local deadline = socket.gettime() + (timeout or server.TIMEOUT)
  while true do
    local v = f()
    if v then return v end
    if socket.gettime() > deadline then
      error("timed out waiting for " .. (type(what) == "function" and what() or what), 2)
    end
    socket.sleep(0.01)
  end
end

-- Waits until every connection the server accepted was freed (debug log).
local function wait_no_conns(srv)
  local conns, freed
  wait_until(function()
    conns = #srv:grep("conn %d+ connected from")
    freed = #srv:grep("conn %d+ freed")
    return conns == freed
  end, function() return string.format("all connections freed (%d accepted, %d freed)", conns, freed) end, 30)
end

local function fd_count(pid)
  local h = io.popen("ls /proc/" .. pid .. "/fd 2>/dev/null | wc -l")
  local n = tonumber(h:read("l"))
  h:close()
  return n
end

-- Reads from c until the peer closes TCP (EOF or reset); returns the
-- messages read meanwhile (kind, data) and the error that ended it. A close
-- frame is answered (as a client does), so the server closes TCP at once
-- rather than after its close timeout.
local function read_until_closed(c)
  local got = {}
  while true do
    local data, kind = c:read_message()
    if not data then return got, kind end
    got[#got + 1] = { kind, data }
    if kind == "close" then c:send_frame { opcode = wsc.OP.close, payload = data } end
  end
end

local function is_closed_err(err) return err == "closed" or (err and err:find("reset")) ~= nil end

---------------------------------------------------------------------------
describe("--handshake-timeout", function()
  local srv
  lazy_setup(function() srv = start { "--handshake-timeout", "300" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("a request that never completes gets 408, then TCP is closed (log line)", function()
    local mark = srv:mark()
    local c = assert(wsc.tcp(srv.host, srv.port))
    c:send_raw("GET / HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\n")
    local r = assert(c:read_response())
    assert.equal(408, r.status)
    assert.equal("close", (r.headers.connection or ""):lower())
    assert.is_true((c:tcp_closed()))
    c:shutdown()
    srv:wait_log("no complete request within 300 ms, answering 408", { after = mark, plain = true })
  end)

  it("slowloris: trickling header bytes does not extend the deadline; others are served", function()
    local other = open(srv)
    local mark = srv:mark()
    local c = assert(wsc.tcp(srv.host, srv.port))
    local t0 = socket.gettime()
    assert(c:send_raw("GET / HTTP/1.1\r\n"))
    -- One header byte every 20 ms, forever, until the server gives up on us.
    local trickle = string.rep("X-Slow: aaaaaaaaaaaaaaaaaaaaaaa\r\n", 100)
    local i, served = 0, false
    while #srv:grep("answering 408", { after = mark, plain = true }) == 0 do
      i = i + 1
      assert(i <= #trickle, "server never timed the request out")
      if not c:send_raw(trickle:sub(i, i)) then break end
      if not served then   -- meanwhile another connection is served
        other:send_text("during slowloris")
        assert.equal("during slowloris", (H.read(other)))
        served = true
      end
      socket.sleep(0.02)
    end
    local elapsed = socket.gettime() - t0
    local r = assert(c:read_response())
    assert.equal(408, r.status)
    c:shutdown()
    assert.truthy(elapsed < 3, "408 only after " .. elapsed .. " s")
    assert.truthy(i > 5, "the server answered before the trickle even started (" .. i .. " bytes)")
    -- the WebSocket, open far longer than the handshake timeout, is fine
    other:send_text("after slowloris")
    assert.equal("after slowloris", (H.read(other)))
    other:close(1000)
  end)

  it("does not apply to an open WebSocket (it outlives a 408 of a later connection)", function()
    local ws = open(srv)
    local mark = srv:mark()
    local c = assert(wsc.tcp(srv.host, srv.port))
    c:send_raw("GET / HTTP/1.1\r\n")
    assert.equal(408, assert(c:read_response()).status)
    c:shutdown()
    srv:wait_log("answering 408", { after = mark, plain = true })
    ws:send_text("alive")
    assert.equal("alive", (H.read(ws)))
    ws:close(1000)
  end)

  it("a keep-alive connection gets a fresh deadline per request", function()
    local c = assert(wsc.tcp(srv.host, srv.port))
    for i = 1, 3 do
      local r = assert(c:request { path = "/", headers = { Host = "x" } })
      assert.equal(200, r.status, "request " .. i)
    end
    -- and when it then idles, it is timed out too
    local r = assert(c:read_response())
    assert.equal(408, r.status)
    c:shutdown()
  end)
end)

---------------------------------------------------------------------------
describe("--max-header", function()
  local srv
  lazy_setup(function() srv = start { "--max-header", "512" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("a header block over the limit gets 431 and TCP is closed (log line); others go on", function()
    local other = open(srv)
    local mark = srv:mark()
    local c = assert(wsc.tcp(srv.host, srv.port))
    local r = assert(c:request { path = "/", headers = { Host = "x", ["X-Big"] = string.rep("a", 600) } })
    assert.equal(431, r.status)
    assert.is_true((c:tcp_closed()))
    c:shutdown()
    srv:wait_log("bad HTTP request from [%d.:]+, answering 431", { after = mark })
    other:send_text("unaffected")
    assert.equal("unaffected", (H.read(other)))
    other:close(1000)
  end)

  it("also when the oversized block arrives a few bytes at a time", function()
    local c = assert(wsc.tcp(srv.host, srv.port))
    local req = "GET / HTTP/1.1\r\nHost: x\r\n" .. string.rep("X-Pad: 0123456789\r\n", 40) .. "\r\n"
    c:send_raw(req, { chop = 7 })
    local r = assert(c:read_response())
    assert.equal(431, r.status)
    c:shutdown()
  end)

  it("an upgrade request over the limit is refused before the script sees it", function()
    local mark = srv:mark()
    local c = assert(wsc.connect(srv.host, srv.port, { headers = { ["X-Big"] = string.rep("b", 600) } }))
    assert.equal(431, c.status)
    c:shutdown()
    assert.equal(0, #srv:grep("spec%-event open", { after = mark }))
  end)

  it("a request under the limit is served, and so are WebSockets", function()
    local r = assert(wsc.http(srv.host, srv.port, { path = "/", headers = { Host = "x", ["X-Small"] = "ok" } }))
    assert.equal(200, r.status)
    assert_serves(srv)
  end)
end)

---------------------------------------------------------------------------
describe("--max-body", function()
  local srv
  lazy_setup(function() srv = start { "--max-body", "100" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("a Content-Length body over the limit gets 413 (log line); others go on", function()
    local other = open(srv)
    local mark = srv:mark()
    local r = assert(wsc.http(srv.host, srv.port,
      { method = "POST", path = "/", headers = { Host = "x" }, body = string.rep("b", 101) }))
    assert.equal(413, r.status)
    srv:wait_log("bad HTTP request from [%d.:]+, answering 413", { after = mark })
    other:send_text("unaffected")
    assert.equal("unaffected", (H.read(other)))
    other:close(1000)
  end)

  it("a huge announced length is refused at once, without waiting for the body", function()
    local c = assert(wsc.tcp(srv.host, srv.port))
    c:send_raw("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\nabc")
    local r = assert(c:read_response())
    assert.equal(413, r.status)
    assert.is_true((c:tcp_closed()))
    c:shutdown()
  end)

  it("a chunked body over the limit gets 413", function()
    local c = assert(wsc.tcp(srv.host, srv.port))
    local chunk = string.rep("c", 60)
    c:send_raw("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "3c\r\n" .. chunk .. "\r\n" .. "3c\r\n" .. chunk .. "\r\n" .. "0\r\n\r\n")
    local r = assert(c:read_response())
    assert.equal(413, r.status)
    c:shutdown()
  end)

  it("a body at the limit reaches the handler", function()
    local r = assert(wsc.http(srv.host, srv.port,
      { method = "POST", path = "/", headers = { Host = "x" }, body = string.rep("b", 100) }))
    assert.equal(200, r.status)
    assert.equal("body 100", r.body)
    assert_serves(srv)
  end)
end)

---------------------------------------------------------------------------
describe("--max-connections", function()
  local srv
  lazy_setup(function() srv = start { "--max-connections", "3" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("beyond N, a connection gets 503 and is closed; the N open ones go on", function()
    local a, b, c = open(srv), open(srv), open(srv)
    local mark = srv:mark()
    -- the server answers at once, before reading a request (reading ours
    -- first could race with its close and turn into a reset)
    local d = assert(wsc.tcp(srv.host, srv.port))
    local r = assert(d:read_response())
    assert.equal(503, r.status)
    assert.equal("1", r.headers["retry-after"])
    assert.is_true((d:tcp_closed()))
    d:shutdown()
    srv:wait_log("refused: 3 connections open (--max-connections)", { after = mark, plain = true })
    for _, x in ipairs { a, b, c } do
      x:send_text("still " .. x.id)
      assert.equal("still " .. x.id, (H.read(x)))
    end
    -- an upgrade attempt gets no WebSocket (a 503, or the reset of its request)
    local e1 = wsc.connect(srv.host, srv.port)
    assert.truthy(e1 == nil or e1.status == 503, "status " .. tostring(e1 and e1.status))
    if e1 then e1:shutdown() end
    assert.equal(0, #srv:grep("spec%-event open", { after = mark }))
    -- once one closes (and is freed), there is room again
    a:close(1000)
    wait_freed(srv, a.id)
    local e = open(srv)
    e:send_text("room again")
    assert.equal("room again", (H.read(e)))
    for _, x in ipairs { b, c, e } do x:close(1000) end
  end)

  it("refused connections leave no trace: the count comes back down", function()
    local held = { open(srv), open(srv), open(srv) }
    for _ = 1, 20 do
      local d = assert(wsc.tcp(srv.host, srv.port))
      local r = assert(d:read_response())
      assert.equal(503, r.status)
      d:shutdown()
    end
    for _, x in ipairs(held) do x:close(1000); wait_freed(srv, x.id) end
    -- all three slots are free again
    local again = { open(srv), open(srv), open(srv) }
    for _, x in ipairs(again) do x:close(1000) end
  end)
end)

---------------------------------------------------------------------------
describe("--max-message", function()
  local srv
  lazy_setup(function() srv = start { "--max-message", "1000" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("a message of exactly the limit is echoed", function()
    local c = open(srv)
    local m = H.text(1000)
    c:send_text(m)
    assert.equal(m, (H.read(c)))
    c:close(1000)
  end)

  it("one byte more closes with 1009; on_error and on_close(1009) run; others go on", function()
    local other = open(srv)
    local c = open(srv)
    local mark = srv:mark()
    c:send_text(H.text(1001))
    local code, _, tcp_closed, info = c:expect_close()
    assert.equal(1009, code)
    assert.is_true(tcp_closed)
    assert.equal(0, #info.skipped)
    srv:wait_log("conn " .. c.id .. ": message over the size limit, closing with 1009", { after = mark, plain = true })
    assert.equal("message over the size limit", wait_event(srv, "error", c.id))
    assert.equal(1009, (wait_close(srv, c.id)))
    wait_freed(srv, c.id)
    assert.equal(1, #events(srv, "close", c.id))
    other:send_text("unaffected")
    assert.equal("unaffected", (H.read(other)))
    other:close(1000)
  end)

  it("judges a fragmented message by its total size", function()
    local c = open(srv)
    c:send_fragmented("binary", { string.rep("x", 600), string.rep("y", 600) })
    assert.equal(1009, (c:expect_close()))
  end)

  it("refuses on the frame header alone (a 1 GB length, no payload sent)", function()
    local c = open(srv)
    c:send_raw(string.char(0x82, 0x80 | 127) .. string.pack(">I8", 1 << 30) .. "\1\2\3\4")
    assert.equal(1009, (c:expect_close()))
  end)

  describe("with permessage-deflate", function()
    local function deflated(n)
      -- raw deflate of n 'a's, sync-flushed, without the 00 00 ff ff tail
      local h = io.popen(string.format([[python3 -c 'import zlib,sys
c = zlib.compressobj(9, zlib.DEFLATED, -15)
d = c.compress(b"a" * %d) + c.flush(zlib.Z_SYNC_FLUSH)
assert d.endswith(b"\x00\x00\xff\xff")
sys.stdout.write(d[:-4].hex())']], n))
      local hex = h:read("a")
      h:close()
      assert(hex and #hex > 0, "python3 zlib failed")
      return H.unhex(hex)
    end
    local function open_deflate()
      local c = open(srv, "/", { headers = { ["Sec-WebSocket-Extensions"] = "permessage-deflate" } })
      assert.truthy((c.headers["sec-websocket-extensions"] or ""):find("permessage-deflate", 1, true),
        "no permessage-deflate negotiated")
      return c
    end

    it("a compressed message whose inflated size is within the limit is echoed", function()
      local c = open_deflate()
      c:send_frame { opcode = 1, payload = deflated(50), rsv1 = true }
      assert.equal(string.rep("a", 50), (H.read(c)))
      c:close(1000)
    end)

    it("a small compressed frame inflating past the limit closes with 1009 (zip bomb)", function()
      local c = open_deflate()
      local bomb = deflated(10 * 1000 * 1000)
      assert.truthy(#bomb < 20000, "bomb is " .. #bomb .. " bytes")
      local mark = srv:mark()
      c:send_frame { opcode = 1, payload = bomb, rsv1 = true }
      assert.equal(1009, (c:expect_close()))
      srv:wait_log("inflated message over the size limit, closing with 1009", { after = mark, plain = true })
      assert.equal(1009, (wait_close(srv, c.id)))
      assert_serves(srv)
    end)
  end)
end)

---------------------------------------------------------------------------
describe("--ping-interval", function()
  local srv
  lazy_setup(function() srv = start { "--ping-interval", "150" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("an idle socket gets a ping; silent after as long again, it is closed (on_error, on_close 1006)", function()
    local mark = srv:mark()
    local c = open(srv)
    if c.pings == 0 then
      local data, kind = c:read_message()
      assert.equal("ping", kind)
      assert.equal("luaws", data)
    end
    -- we do not answer: the server gives up on us and cuts TCP (a slow
    -- server may have pinged once more, if its first ping beat our "!id")
    local got, err = read_until_closed(c)
    for _, m in ipairs(got) do assert.equal("ping", m[1]) end
    assert.truthy(is_closed_err(err), tostring(err))
    c:shutdown()
    srv:wait_log("conn " .. c.id .. ": no answer to ping (--ping-interval), peer presumed dead, closing with 1006",
      { after = mark, plain = true })
    assert.truthy(wait_event(srv, "error", c.id):find("no answer to ping", 1, true))
    assert.equal(1006, (wait_close(srv, c.id)))
    wait_freed(srv, c.id)
    assert.equal(1, #events(srv, "close", c.id))
  end)

  it("a socket that answers the pings stays open, and so do the others", function()
    local alive = open(srv)
    local silent = open(srv)
    -- answer three pings on one socket while the silent one is closed
    local pings = 0
    while pings < 3 do
      local data, kind = alive:read_message()
      assert(data, "alive: " .. tostring(kind))
      if kind == "ping" then alive:pong(data); pings = pings + 1 end
    end
    assert.equal(1006, (wait_close(srv, silent.id)))
    silent:shutdown()
    alive:send_text("still open")
    assert.equal("still open", (H.read(alive, { auto_pong = true })))
    assert.equal(0, #events(srv, "close", alive.id))
    alive:close(1000)
  end)

  it("a client busy reading a long synchronous flood, answering every ping, is not cut", function()
    -- its own server: a longer interval, so that a loaded machine cannot
    -- stall the reader for two of them; the flood lasts several
    local slow = start { "--ping-interval", "400" }
    local c = open(slow)
    local n, size = 400, 100000     -- 40 MB through the 256 KiB high-water window
    c:send_text(string.format("!flood %d %d", n, size))
    local got, pings = 0, 0
    local t0 = socket.gettime()
    while true do
      local data, kind = c:read_message()
      if not data then slow:stop() end
      assert(data, string.format("connection lost after %d of %d messages (%d pings answered): %s",
        got, n, pings, tostring(kind)))
      if kind == "ping" then
        pings = pings + 1
        c:pong(data)
      else
        if data == "flood_done " .. n then break end
        got = got + 1
        assert.equal(string.format("%08d", got), data:sub(1, 8))
        socket.sleep(0.008)    -- a slowish reader: the flood lasts many ping intervals
      end
    end
    local secs = socket.gettime() - t0
    assert.equal(n, got)
    assert.equal(0, #events(slow, "close", c.id))
    c:close(1000)
    slow:stop()
    assert.truthy(secs > 1.6, "the flood took only " .. secs .. " s")
  end)

  it("a socket is pinged before it is given up on, even when the loop was busy for long", function()
    -- another socket's runaway event blocks the loop for 1 s (> 2 intervals)
    local busy = start { "--ping-interval", "150", "--script-timeout", "1000" }
    local idle = open(busy)
    local spinner = open(busy)
    spinner:send_text("!spin")
    assert.equal(1011, (spinner:expect_close()))
    -- the idle socket must now get a ping (and a chance to answer it),
    -- not be cut as if it had ignored one
    local data, kind = "luaws", "ping"
    if idle.pings == 0 then data, kind = idle:read_message() end
    local cut = #busy:grep("conn " .. idle.id .. ": no answer to ping", { plain = true }) > 0
    busy:stop()
    assert.equal("ping", kind, "no ping before the cut (" .. tostring(data) .. ", " .. tostring(kind) ..
      (cut and "; the server logged 'no answer to ping' without sending one)" or ")"))
  end)

  it("any traffic counts as life: a chatty client that never sees a ping is kept", function()
    local c = open(srv)
    local silent = open(srv)
    local mark = srv:mark()
    -- chatter until the silent socket was pinged and given up on (two
    -- intervals at least); we must be left alone meanwhile
    local n = 0
    while #events(srv, "close", silent.id) == 0 do
      n = n + 1
      assert(n < 1000, "the silent socket was never closed")
      c:send_text("tick " .. n)
      local data, kind = H.read(c)
      assert.equal("text", kind, "got a " .. tostring(kind) .. " although we were never idle")
      assert.equal("tick " .. n, data)
      socket.sleep(0.02)   -- the pace of the chatter, not a wait for an event
    end
    silent:shutdown()
    assert.equal(0, #srv:grep("conn " .. c.id .. ": no answer to ping", { after = mark, plain = true }))
    c:send_text("still here")
    assert.equal("still here", (H.read(c)))
    c:close(1000)
  end)
end)

---------------------------------------------------------------------------
describe("--max-backpressure", function()
  local srv
  lazy_setup(function()
    srv = start { "--max-backpressure", "300000", "--high-water", "65536" }
  end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("async sends beyond it close the socket (1008): on_error says why, on_close gets 1008, a close frame follows the queue", function()
    local other = open(srv)
    local c = open(srv)
    local mark = srv:mark()
    c:send_text("!burst 100 100000")   -- 10 MB queued at once; we do not read
    srv:wait_log("conn " .. c.id .. ": send queue over the --max-backpressure limit (slow reader), closing with 1008",
      { after = mark, plain = true })
    assert.truthy(wait_event(srv, "error", c.id):find("--max-backpressure", 1, true))
    assert.equal(1008, (wait_close(srv, c.id)))
    -- the client sees what made it out, then a close frame with 1008 (it
    -- follows the queue: the cap counts the data, not the close frame)
    local got, err = read_until_closed(c)
    assert.truthy(is_closed_err(err), tostring(err))
    local last = table.remove(got)
    assert.equal("close", last[1])
    assert.equal(1008, last[2]:byte(1) * 256 + last[2]:byte(2))
    for i, m in ipairs(got) do
      assert.equal("text", m[1])
      assert.equal(string.format("%08d", i), m[2]:sub(1, 8))
    end
    c:shutdown()
    wait_freed(srv, c.id)
    assert.equal(1, #events(srv, "close", c.id))
    other:send_text("unaffected")
    assert.equal("unaffected", (H.read(other)))
    other:close(1000)
  end)

  it("synchronous sends wait under --high-water instead: nothing lost, others served meanwhile", function()
    local other = open(srv)
    local c = open(srv)
    local mark = srv:mark()
    local n, size = 300, 10000     -- 3 MB, ten times the cap, through a 64 KiB window
    c:send_text(string.format("!flood %d %d", n, size))
    -- while the flood waits for us, the other socket is served
    other:send_text("meanwhile")
    assert.equal("meanwhile", (H.read(other)))
    for i = 1, n do
      local data = H.read(c)
      assert.equal(size, #data)
      assert.equal(string.format("%08d", i), data:sub(1, 8))
    end
    assert.equal("flood_done " .. n, (H.read(c)))
    assert.equal(0, #srv:grep("flood%-failed", { after = mark }))
    assert.equal(0, #srv:grep("max%-backpressure", { after = mark }))
    c:close(1000)
    other:close(1000)
  end)
end)

---------------------------------------------------------------------------
describe("--origin", function()
  local srv
  lazy_setup(function()
    srv = start { "--origin", "https://good.example", "--origin", "http://also.example:8080" }
  end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("an upgrade from another Origin gets 403 (log line) and never reaches the script; others go on", function()
    local other = open(srv)
    local mark = srv:mark()
    local c = assert(wsc.connect(srv.host, srv.port, { headers = { Origin = "https://evil.example" } }))
    assert.equal(403, c.status)
    assert.is_true((c:tcp_closed()))
    c:shutdown()
    srv:wait_log("refused WebSocket handshake from [%d.:]+: Origin not in the %-%-origin allowlist %(403%)",
      { after = mark })
    assert.equal(0, #srv:grep("spec%-event open", { after = mark }))
    other:send_text("unaffected")
    assert.equal("unaffected", (H.read(other)))
    other:close(1000)
  end)

  it("lookalikes are refused too", function()
    for _, o in ipairs { "https://good.example.evil", "http://good.example", "https://good.example:443",
                         "null" } do
      local c = assert(wsc.connect(srv.host, srv.port, { headers = { Origin = o } }))
      assert.equal(403, c.status, "Origin " .. o)
      c:shutdown()
    end
  end)

  it("each allowed Origin passes, and so does a request without Origin", function()
    for _, o in ipairs { "https://good.example", "http://also.example:8080" } do
      local c = open(srv, "/", { headers = { Origin = o } })
      c:send_text("hi")
      assert.equal("hi", (H.read(c)))
      c:close(1000)
    end
    assert_serves(srv)
  end)

  it("plain HTTP is not subject to it", function()
    local r = assert(wsc.http(srv.host, srv.port, { path = "/", headers = { Host = "x", Origin = "https://evil.example" } }))
    assert.equal(200, r.status)
  end)
end)

---------------------------------------------------------------------------
describe("--script-timeout", function()
  local srv
  lazy_setup(function() srv = start { "--script-timeout", "200" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("an event that runs forever errors (on_error), closes 1011; others are served after", function()
    local other = open(srv)
    local c = open(srv)
    local mark = srv:mark()
    c:send_text("!spin")
    local code, _, tcp_closed = c:expect_close()
    assert.equal(1011, code)
    assert.is_true(tcp_closed)
    srv:wait_log("conn " .. c.id .. ": error in on_message: script timeout: ran for over 200 ms (--script-timeout)",
      { after = mark, plain = true })
    assert.equal("script timeout: ran for over 200 ms (--script-timeout)", wait_event(srv, "error", c.id))
    assert.equal(1011, (wait_close(srv, c.id)))
    other:send_text("after the runaway")
    assert.equal("after the runaway", (H.read(other)))
    other:close(1000)
  end)

  it("on_open running forever: 1011 too", function()
    local c = H.open(srv, "/spin-open")
    local code = c:expect_close()
    assert.equal(1011, code)
    assert_serves(srv)
  end)

  it("a handler running forever: 500, and the server goes on", function()
    local mark = srv:mark()
    local r = assert(wsc.http(srv.host, srv.port, { path = "/spin", headers = { Host = "x" } }))
    assert.equal(500, r.status)
    srv:wait_log("handler error: .*script timeout", { after = mark })
    assert_serves(srv)
  end)
end)

---------------------------------------------------------------------------
-- A runaway that wraps its loop in pcall catches the timeout error and goes
-- on; the limit must hold all the same. (Own server: if it does not hold, the
-- server is stuck for good and is killed at teardown.)
describe("--script-timeout against pcall", function()
  local srv
  before_each(function() srv = start { "--script-timeout", "200" } end)
  after_each(function() if srv then srv:stop({ quiet = true }) end end)

  it("a runaway that catches errors with pcall is still stopped (1011)", function()
    local c = open(srv)
    c:send_text("!spin_pcall")
    local code, err = c:expect_close()
    assert.equal(1011, code, "no close: " .. tostring(err))
  end)

  it("a handler that catches errors with pcall is still stopped (500)", function()
    local c = assert(wsc.tcp(srv.host, srv.port))
    local r, err = c:request { path = "/spin_pcall", headers = { Host = "x" } }
    c:shutdown()
    assert.truthy(r, "no response: " .. tostring(err))
    assert.equal(500, r.status)
  end)
end)

---------------------------------------------------------------------------
describe("--script-memory", function()
  local srv
  lazy_setup(function() srv = start { "--script-memory", "16000000" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("unbounded allocation in an event errors 'not enough memory', closes 1011; others go on", function()
    local other = open(srv)
    for round = 1, 2 do   -- twice: the memory of the first runaway was given back
      local c = open(srv)
      local mark = srv:mark()
      c:send_text("!alloc")
      local code = c:expect_close()
      assert.equal(1011, code, "round " .. round)
      srv:wait_log("conn " .. c.id .. ": error in on_message: not enough memory (--script-memory)",
        { after = mark, plain = true })
      assert.equal("not enough memory (--script-memory)", wait_event(srv, "error", c.id))
      assert.equal(1011, (wait_close(srv, c.id)))
      other:send_text("round " .. round)
      assert.equal("round " .. round, (H.read(other)))
    end
    other:close(1000)
    assert_serves(srv)
  end)

  it("unbounded allocation in the handler: 500", function()
    local r = assert(wsc.http(srv.host, srv.port, { path = "/alloc", headers = { Host = "x" } }))
    assert.equal(500, r.status)
    assert_serves(srv)
  end)
end)

---------------------------------------------------------------------------
describe("bad input", function()
  local srv
  lazy_setup(function() srv = start { "--close-timeout", "2000" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  -- A masked text frame "hello, world" in each length encoding, as bytes.
  local function frames()
    local p = "hello, world"
    return {
      ["7-bit"] = wsc.encode_frame { opcode = 1, payload = p, mask = "\1\2\3\4" },
      ["16-bit"] = wsc.encode_frame { opcode = 2, payload = string.rep(p, 11), mask = "\1\2\3\4" },
      ["64-bit"] = wsc.encode_frame { opcode = 2, payload = string.rep("z", 70000), mask = "\1\2\3\4" },
    }
  end

  it("a frame cut short at every byte of its header, then a disconnect: on_close 1006 exactly once", function()
    local ids = {}
    for form, f in pairs(frames()) do
      local cuts = {}
      for n = 1, math.min(#f - 1, 16) do cuts[#cuts + 1] = n end
      cuts[#cuts + 1] = #f - 1   -- all but the last payload byte
      for _, n in ipairs(cuts) do
        local c = open(srv)
        assert(c:send_raw(f:sub(1, n)))
        c:shutdown()
        ids[#ids + 1] = { c.id, form .. " cut at " .. n }
      end
    end
    for _, x in ipairs(ids) do
      local code = wait_close(srv, x[1])
      assert.equal(1006, code, x[2])
      wait_freed(srv, x[1])
      assert.equal(1, #events(srv, "close", x[1]), x[2])
      assert.equal(0, #events(srv, "message", x[1]) - 1, x[2] .. ": a cut frame was delivered")
    end
    assert_serves(srv)
  end)

  it("a disconnect in the middle of a fragmented message: 1006 once, nothing delivered", function()
    local c = open(srv)
    assert(c:send_frame { opcode = 1, payload = "first half ", fin = false })
    assert(c:send_frame { opcode = 0, payload = "second ", fin = false })
    c:shutdown()
    assert.equal(1006, (wait_close(srv, c.id)))
    wait_freed(srv, c.id)
    assert.equal(1, #events(srv, "close", c.id))
    assert.equal(1, #events(srv, "message", c.id))   -- only the "!id"
  end)

  it("a disconnect while the script waits in a synchronous send (flood): 1006 once", function()
    local c = open(srv)
    local mark = srv:mark()
    c:send_text("!flood 1000 10000")
    srv:wait_log("conn " .. c.id .. " send text 10000 bytes", { after = mark, plain = true })
    -- unread data in our buffer: closing resets the connection
    c:shutdown()
    assert.equal(1006, (wait_close(srv, c.id)))
    wait_freed(srv, c.id)
    assert.equal(1, #events(srv, "close", c.id))
    assert_serves(srv)
  end)

  it("a disconnect in the middle of the handshake: no events, the connection is freed", function()
    local mark = srv:mark()
    local req = wsc.format_request { path = "/", headers = {
      Host = "x", Upgrade = "websocket", Connection = "Upgrade",
      ["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ==", ["Sec-WebSocket-Version"] = "13" } }
    for _, n in ipairs { 1, 10, 40, #req - 2, #req - 1 } do
      local c = assert(wsc.tcp(srv.host, srv.port))
      c:send_raw(req:sub(1, n))
      c:shutdown()
    end
    -- five connections in, five freed, and the script saw none of them
    srv:wait_log("conn %d+ freed", { after = mark, count = 5 })
    assert.equal(0, #srv:grep("spec%-event", { after = mark }))
    assert_serves(srv)
  end)

  it("a 64-bit length with the top bit set: 1002 exactly (on_error, on_close 1002)", function()
    local c = open(srv)
    c:send_raw(string.char(0x82, 0x80 | 127) .. "\128\0\0\0\0\0\0\5" .. "\1\2\3\4" .. "abcde")
    local code, _, tcp_closed = c:expect_close()
    assert.equal(1002, code)
    assert.is_true(tcp_closed)
    assert.truthy(wait_event(srv, "error", c.id):find("most significant bit", 1, true))
    assert.equal(1002, (wait_close(srv, c.id)))
  end)

  it("an unmasked client frame: 1002", function()
    local c = open(srv)
    c:send_frame { opcode = 1, payload = "naked", mask = false }
    assert.equal(1002, (c:expect_close()))
    assert.equal(1002, (wait_close(srv, c.id)))
    assert.equal(0, #events(srv, "message", c.id) - 1)
  end)

  it("a close frame with a 1-byte payload: 1002", function()
    local c = open(srv)
    c:send_frame { opcode = 8, payload = "\3" }
    assert.equal(1002, (c:expect_close()))
    assert.equal(1002, (wait_close(srv, c.id)))
  end)

  it("frames sent in the same packet as the upgrade request are not lost", function()
    local c = assert(wsc.tcp(srv.host, srv.port))
    local key = "dGhlIHNhbXBsZSBub25jZQ=="
    local req = wsc.format_request { path = "/", headers = {
      Host = "x", Upgrade = "websocket", Connection = "Upgrade",
      ["Sec-WebSocket-Key"] = key, ["Sec-WebSocket-Version"] = "13" } }
    c:send_raw(req .. wsc.encode_frame { opcode = 1, payload = "early bird" })
    local r = assert(c:read_response())
    assert.equal(101, r.status)
    assert.equal("early bird", (H.read(c)))
    c:close(1000)
  end)

  it("2,000 connections opened and dropped at once, twice: the server answers after, fds back to baseline", function()
    assert_serves(srv)
    wait_no_conns(srv)
    local base = fd_count(srv.pid)
    local key = "dGhlIHNhbXBsZSBub25jZQ=="
    local upgrade = wsc.format_request { path = "/", headers = {
      Host = "x", Upgrade = "websocket", Connection = "Upgrade",
      ["Sec-WebSocket-Key"] = key, ["Sec-WebSocket-Version"] = "13" } }
    local N = 2000
    for round = 1, 2 do
      local mark = srv:mark()
      local conns = {}
      for i = 1, N do
        local c, err = wsc.tcp(srv.host, srv.port)
        assert(c, "round " .. round .. ", connect " .. i .. ": " .. tostring(err))
        local kind = i % 4
        if kind == 1 then c:send_raw(upgrade:sub(1, 30))                      -- half a handshake
        elseif kind == 2 then c:send_raw(upgrade)                             -- upgraded, never read
        elseif kind == 3 then                                                  -- upgraded, half a frame
          c:send_raw(upgrade .. wsc.encode_frame { opcode = 1, payload = "cut" }:sub(1, 5))
        end                                                                    -- kind 0: bare TCP
        conns[i] = c
      end
      for _, c in ipairs(conns) do c:shutdown() end
      conns = nil
      -- the N/2 upgraded sockets opened, and each was closed exactly once
      local o, c
      wait_until(function()
        o = #srv:grep("spec%-event open", { after = mark })
        c = #srv:grep("spec%-event close", { after = mark })
        return o == N / 2 and c == N / 2
      end, function() return string.format("round %d: %d on_open and %d on_close, want %d each", round, o, c, N / 2) end, 30)
      local closes_1006 = #srv:grep("spec%-event close %d+ 1006 ", { after = mark })
      assert.equal(N / 2, closes_1006)
      local now
      wait_until(function() now = fd_count(srv.pid); return now <= base end,
        function() return string.format("round %d: the fd count to return to %d (now %d)", round, base, now) end, 30)
      assert_serves(srv)
      wait_no_conns(srv)
      assert.equal(base, fd_count(srv.pid))
    end
  end)
end)
