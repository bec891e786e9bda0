-- topics_spec.lua — socket:subscribe/unsubscribe/topics, luaws.publish and
-- luaws.subscribers (README "Topics"), locally and through Redis.
--
-- spec/scripts/topics_room.lua serves /sub/TOPIC (subscribes on open), /pub,
-- and text commands on every socket ("sub T", "pub T MSG", "count T", ...).
-- spec/scripts/topics_clients.py holds hundreds or thousands of subscribers
-- in one asyncio process and checks that each got each message exactly once.
-- The Redis specs start their own redis-server on a free loopback port.
-- Nothing here sleeps for a fixed time: every wait is on a log line, a reply,
-- a client's report, or a condition polled with a guard timeout.
-- TOPICS_LOG_LEVEL=debug runs the Redis specs' servers at debug level.
local cjson = require "cjson"
local socket = require "socket"
local server = require "spec.support.server"
local H = require "spec.support.helpers"

local SCRIPT = "spec/scripts/topics_room.lua"
local PY = "/usr/bin/python3"
local CLIENTS = server.ROOT .. "/spec/scripts/topics_clients.py"
local quote = server.quote

local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end

-- One command, one reply (commands of topics_room.lua).
local function say(c, cmd)
  c:send_text(cmd)
  local data, kind = H.read(c, { auto_pong = true })
  assert.equal("text", kind)
  return data
end

-- say() until the answer is want: another worker's subscriber count
-- reaches this one a moment after the subscribe (bounded by the timeout).
local function say_until(c, cmd, want)
  local deadline = require("socket").gettime() + require("spec.support.server").TIMEOUT
  local got
  repeat got = say(c, cmd) until got == want or require("socket").gettime() > deadline
  return got
end

-- A connection to srv at path, greeted; returns it and its socket id.
local function open(srv, path)
  local c = H.open(srv, path)
  local greeting = H.read(c)
  local id = tonumber(greeting:match("^hello id=(%d+)"))
  assert(id, "bad greeting: " .. greeting)
  c.id = id
  return c
end

-- Worker number (as in the log's [wN] tag) of a socket id: ids are
-- worker + 1 + workers * n.
local function worker_of(id, workers) return (id - 1) % workers + 1 end

---------------------------------------------------------------------------
-- The Python client process: one JSON line per stage.
---------------------------------------------------------------------------
local Clients = {}
Clients.__index = Clients

-- opts: urls = {...}, n, expect = {{"t"|"b", bytes}, ...}, order, workers, timeout
local function clients(opts)
  local args = { PY, CLIENTS, "-n", tostring(opts.n), "--workers", tostring(opts.workers or 1),
                 "--order", opts.order or "exact", "--timeout", tostring(opts.timeout or 60) }
  for _, u in ipairs(opts.urls) do args[#args + 1] = "--url"; args[#args + 1] = u end
  for _, m in ipairs(opts.expect or {}) do args[#args + 1] = "--expect"; args[#args + 1] = m[1] .. ":" .. hex(m[2]) end
  local q = {}
  for i, a in ipairs(args) do q[i] = quote(a) end
  local cmd = "timeout -s KILL " .. math.floor((opts.timeout or 60) * 3 + 30) .. " " .. table.concat(q, " ") .. " 2>&1"
  return setmetatable({ h = assert(io.popen(cmd, "r")), cmd = cmd }, Clients)
end

-- Blocks until the client prints its next stage; it must be `stage`.
function Clients:stage(stage)
  local line = self.h:read("l")
  local ok, r = pcall(cjson.decode, line or "")
  if not line or not ok or r.stage ~= stage then
    local rest = self.h:read("a") or ""
    self.h:close(); self.closed = true
    error(string.format("topics_clients.py: expected stage %q, got:\n%s\n%s\n--- command: %s",
      stage, tostring(line), rest, self.cmd), 2)
  end
  return r
end

function Clients:finish()
  if self.closed then return end
  self.closed = true
  local rest = self.h:read("a")
  local ok, how, code = self.h:close()
  assert(ok, string.format("topics_clients.py exited %s %s:\n%s", how, code, rest))
end

---------------------------------------------------------------------------
-- Redis
---------------------------------------------------------------------------
local free_port, closefds = server.free_port, server.closefds
local start_redis, stop_redis = server.start_redis, server.stop_redis

local function redis_cli(port, ...)
  local q = { "redis-cli", "-h", "127.0.0.1", "-p", tostring(port) }
  for _, a in ipairs { ... } do q[#q + 1] = quote(a) end
  local h = assert(io.popen(table.concat(q, " ") .. " 2>&1"))
  local out = h:read("a")
  h:close()
  return out
end

-- Poll Redis until `channel` has n subscriber connections (one per worker
-- with a subscriber). A message published within one round trip of a topic's
-- first subscription may be missed (README), so specs publish after this.
local function wait_numsub(port, channel, n)
  local deadline = socket.gettime() + server.TIMEOUT
  local out
  while true do
    out = redis_cli(port, "pubsub", "numsub", channel)
    if tonumber(out:match("\n(%d+)")) == n then return end
    assert(socket.gettime() < deadline, "PUBSUB NUMSUB " .. channel .. " never reached " .. n .. ": " .. out)
    socket.sleep(server.POLL)
  end
end

local function redis_available()
  return os.execute("command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1")
end

---------------------------------------------------------------------------
describe("topics", function()
  local srv, conns
  before_each(function() conns = {} end)
  after_each(function()
    for _, c in ipairs(conns) do c:shutdown() end
    if srv then srv:stop(); srv = nil end
  end)
  local function keep(c) conns[#conns + 1] = c; return c end

  it("publish reaches every subscriber once, text and binary; the publisher gets a count", function()
    srv = H.start { script = SCRIPT }
    local a, b, c = keep(open(srv, "/sub/room")), keep(open(srv, "/sub/room")), keep(open(srv, "/sub/other"))
    local p = keep(open(srv, "/pub"))
    assert.equal("count room 2", say(p, "count room"))
    assert.equal("pub room 2", say(p, "pub room héllo ✓"))
    local bin = "\0\1\2\255\254" .. H.bytes(300, 7)
    assert.equal("pub room 2", say(p, "pubhex room " .. hex(bin)))
    -- a binary frame "TOPIC\n<bytes>" publishes <bytes> as binary
    p:send_binary("room\n\128\0binary-frame")
    assert.equal("pub room 2", H.read(p))
    assert.equal("pub room 2", say(p, "pub room "))          -- empty text
    assert.equal("pub room 2", say(p, "pubhex room "))       -- empty binary
    local big = H.text(70000)
    assert.equal("pub room 2", say(p, "pub room " .. big))
    for _, s in ipairs { a, b } do
      local d, k = H.read(s); assert.equal("text", k); assert.equal("héllo ✓", d)
      d, k = H.read(s); assert.equal("binary", k); assert.equal(bin, d)
      d, k = H.read(s); assert.equal("binary", k); assert.equal("\128\0binary-frame", d)
      d, k = H.read(s); assert.equal("text", k); assert.equal("", d)
      d, k = H.read(s); assert.equal("binary", k); assert.equal("", d)
      d, k = H.read(s); assert.equal("text", k); assert.equal(big, d)
      -- nothing else was queued before this reply
      assert.equal("count room 2", say(s, "count room"))
    end
    -- the other topic got nothing
    assert.equal("count other 1", say(c, "count other"))
    assert.equal("pub other 1", say(p, "pub other only-other"))
    assert.equal("only-other", H.read(c))
    assert.equal("count room 2", say(a, "count room"))
  end)

  it("publish to a topic nobody holds returns 0; text that is not UTF-8 is an error", function()
    srv = H.start { script = SCRIPT }
    local s = keep(open(srv, "/sub/room"))
    local p = keep(open(srv, "/pub"))
    assert.equal("pub nobody 0", say(p, "pub nobody hi"))
    assert.equal("count nobody 0", say(p, "count nobody"))
    local r = say(p, "pubraw room " .. hex("bad \255\254 utf8"))
    assert.truthy(r:find("^err .*not valid UTF%-8"), r)
    -- valid UTF-8 through the same path still goes, and nothing went before it
    assert.equal("pub room 1", say(p, "pubraw room " .. hex("fine ✓")))
    assert.equal("fine ✓", H.read(s))
    assert.equal("topics room", say(s, "topics"))
  end)

  it("a publisher that subscribes gets its own message, before publish returns", function()
    srv = H.start { script = SCRIPT }
    local s = keep(open(srv, "/sub/room"))
    s:send_text("pub room me")
    assert.equal("me", H.read(s))
    assert.equal("pub room 1", H.read(s))
  end)

  it("subscribe, unsubscribe and topics(): true only when it changes something", function()
    srv = H.start { script = SCRIPT }
    local s = keep(open(srv, "/sub"))
    assert.equal("topics ", say(s, "topics"))
    assert.equal("sub b true", say(s, "sub b"))
    assert.equal("sub a true", say(s, "sub a"))
    assert.equal("sub c/with spaces true", say(s, "sub c/with spaces"))
    assert.equal("sub a false", say(s, "sub a"))
    assert.equal("topics a,b,c/with spaces", say(s, "topics"))
    assert.equal("count a 1", say(s, "count a"))
    assert.equal("unsub b true", say(s, "unsub b"))
    assert.equal("unsub b false", say(s, "unsub b"))
    assert.equal("unsub never false", say(s, "unsub never"))
    assert.equal("topics a,c/with spaces", say(s, "topics"))
    assert.equal("count b 0", say(s, "count b"))
    -- a second socket on the same topic; the greeting says subscribe returned true
    local t = H.open(srv, "/sub/a"); keep(t)
    assert.truthy(H.read(t):match("^hello id=%d+ new=true$"))
    assert.equal("count a 2", say(s, "count a"))
    assert.equal("topics a", say(t, "topics"))
    -- subscribe again after unsubscribing
    assert.equal("sub b true", say(s, "sub b"))
    assert.equal("pub b 1", say(t, "pub b back"))
    assert.equal("back", H.read(s))
  end)

  it("unsubscribe stops delivery and lowers subscribers()", function()
    srv = H.start { script = SCRIPT }
    local a, b, c = keep(open(srv, "/sub/room")), keep(open(srv, "/sub/room")), keep(open(srv, "/sub/room"))
    local p = keep(open(srv, "/pub"))
    assert.equal("count room 3", say(p, "count room"))
    assert.equal("unsub room true", say(b, "unsub room"))
    assert.equal("count room 2", say(p, "count room"))
    assert.equal("pub room 2", say(p, "pub room one"))
    assert.equal("pub room 2", say(p, "pub room two"))
    for _, s in ipairs { a, c } do
      assert.equal("one", H.read(s)); assert.equal("two", H.read(s))
    end
    -- b's next message is the reply to its command: nothing was delivered to it
    assert.equal("topics ", say(b, "topics"))
    assert.equal("unsub room true", say(a, "unsub room"))
    assert.equal("unsub room true", say(c, "unsub room"))
    assert.equal("count room 0", say(p, "count room"))
    assert.equal("pub room 0", say(p, "pub room three"))
    for _, s in ipairs { a, b, c } do assert.equal("topics ", say(s, "topics")) end
  end)

  it("a socket leaves its topics when it closes, before on_close runs: clean close, server close, abrupt", function()
    srv = H.start { script = SCRIPT }
    local stay = keep(open(srv, "/sub/room"))
    local p = keep(open(srv, "/pub"))
    local function joined()
      local s = keep(open(srv, "/sub/room"))
      assert.equal("sub second true", say(s, "sub second"))
      return s
    end
    local a, b, c = joined(), joined(), joined()
    assert.equal("count room 4", say(p, "count room"))
    assert.equal("count second 3", say(p, "count second"))

    -- client-initiated close handshake
    assert.equal(1000, (a:close(1000, "bye")))
    local line = srv:wait_log("topics%-left id=" .. a.id .. " ")
    assert.truthy(line:find("topics=0 counts=room:3,second:2 late=nil,closed", 1, true), line)
    assert.equal("pub room 3", say(p, "pub room after-a"))

    -- the server closes it
    b:send_text("close")
    assert.equal(1000, (b:expect_close()))
    line = srv:wait_log("topics%-left id=" .. b.id .. " ")
    assert.truthy(line:find("topics=0 counts=room:2,second:1", 1, true), line)
    assert.equal("pub room 2", say(p, "pub room after-b"))

    -- TCP dropped without a close frame
    c:shutdown()
    line = srv:wait_log("topics%-left id=" .. c.id .. " ")
    assert.truthy(line:find("code=1006 topics=0 counts=room:1,second:0", 1, true), line)
    assert.equal("count room 1", say(p, "count room"))
    assert.equal("count second 0", say(p, "count second"))
    assert.equal("pub second 0", say(p, "pub second nobody"))
    assert.equal("pub room 1", say(p, "pub room last"))
    assert.equal("after-a", H.read(stay))
    assert.equal("after-b", H.read(stay))
    assert.equal("last", H.read(stay))
  end)

  it("on_close can tell the room: a leaving socket's publish reaches the others, not itself", function()
    srv = H.start { script = SCRIPT }
    local a, b, c = keep(open(srv, "/sub/room")), keep(open(srv, "/sub/room")), keep(open(srv, "/sub/room"))
    assert.equal("sub side true", say(b, "sub side"))
    assert.equal("sub side true", say(c, "sub side"))
    assert.equal("announce", say(b, "announce"))
    b:shutdown()
    local line = srv:wait_log("topics%-left id=" .. b.id .. " ")
    assert.truthy(line:find("announced=room:2,side:1", 1, true), line)
    assert.equal("left " .. b.id, H.read(a))
    local first, second = H.read(c), H.read(c)
    assert.same({ "left " .. b.id, "left " .. b.id }, { first, second })
    assert.equal("count room 2", say(a, "count room"))
    assert.equal("count late 0", say(a, "count late"))
  end)

  it("a hot reload keeps every socket's topics", function()
    local src = server.read_file(server.ROOT .. "/" .. SCRIPT)
    srv = H.start { source = src }
    local a, b = keep(open(srv, "/sub/room")), keep(open(srv, "/sub/room"))
    assert.equal("sub other true", say(b, "sub other"))
    assert.equal("version v1", say(a, "version"))
    local mark = srv:mark()
    local tmp = srv.script .. ".new"
    server.write_file(tmp, (src:gsub('local VERSION = "v1"', 'local VERSION = "v2"')))
    assert(os.rename(tmp, srv.script))
    srv:wait_log("reloaded %(file changed%) .- 2 connections moved", { after = mark })
    assert.equal("version v2", say(a, "version"))
    assert.equal("topics other,room", say(b, "topics"))
    assert.equal("count room 2", say(a, "count room"))
    a:send_text("pub room after-reload")
    assert.equal("after-reload", H.read(a))   -- its own copy comes before the reply
    assert.equal("pub room 2", H.read(a))
    assert.equal("after-reload", H.read(b))
    local p = keep(open(srv, "/pub"))
    assert.equal("pub other 1", say(p, "pub other new-code"))
    assert.equal("new-code", H.read(b))
  end)

  it("topic names are byte strings: empty, with NUL, with spaces, many per socket", function()
    srv = H.start { script = SCRIPT }
    local s = keep(open(srv, "/sub"))
    local p = keep(open(srv, "/pub"))
    assert.equal("sub  true", say(s, "sub "))
    assert.equal("sub x\0y true", say(s, "sub x\0y"))
    assert.equal("sub x true", say(s, "sub x"))
    assert.equal("topics ,x,x\0y", say(s, "topics"))
    assert.equal("count x\0y 1", say(p, "count x\0y"))
    assert.equal("count x\0 0", say(p, "count x\0"))
    assert.equal("pub x\0y 1", say(p, "pub x\0y zero"))
    assert.equal("pub  1", say(p, "pub  empty-name"))
    assert.equal("pub x 1", say(p, "pub x plain"))
    assert.equal("zero", H.read(s))
    assert.equal("empty-name", H.read(s))
    assert.equal("plain", H.read(s))
    for i = 1, 50 do assert.equal("sub t" .. i .. " true", say(s, "sub t" .. i)) end
    for i = 50, 1, -1 do assert.equal("pub t" .. i .. " 1", say(p, "pub t" .. i .. " n" .. i)) end
    for i = 50, 1, -1 do assert.equal("n" .. i, H.read(s)) end
    for i = 1, 50, 2 do assert.equal("unsub t" .. i .. " true", say(s, "unsub t" .. i)) end
    local t = { "", "x", "x\0y" }
    for i = 2, 50, 2 do t[#t + 1] = "t" .. i end
    table.sort(t)
    assert.equal("topics " .. table.concat(t, ","), say(s, "topics"))
  end)

  it("a socket the server is closing gets no more messages", function()
    srv = H.start { script = SCRIPT }
    local a, b = keep(open(srv, "/sub/room")), keep(open(srv, "/sub/room"))
    local p = keep(open(srv, "/pub"))
    b:send_text("close")
    local _, k = H.read(b)
    assert.equal("close", k)
    -- b has not answered its close frame yet
    assert.equal("pub room 1", say(p, "pub room after-close"))
    assert.equal("after-close", H.read(a))
    -- b answers; the next thing it sees is the end of TCP: no data after the close frame
    b:send_close(1000, "")
    local closed, why = b:tcp_closed()
    assert.is_true(closed, tostring(why))
    srv:wait_log("topics%-left id=" .. b.id .. " code=1000 topics=0 counts=room:1")
    assert.equal("count room 1", say(p, "count room"))
  end)

  it("a subscriber that does not read is closed with 1008 and leaves the topic; the others get everything", function()
    srv = H.start { script = SCRIPT, args = { "--max-backpressure", "300000" }, log_level = "info" }
    local fast, slow = keep(open(srv, "/sub/room")), keep(open(srv, "/sub/room"))
    local p = keep(open(srv, "/pub"))
    local body = H.text(65000)
    local dropped
    for i = 1, 200 do
      local n = tonumber(say(p, "pub room " .. i .. " " .. body):match("(%d+)$"))
      assert.equal(tostring(i), H.read(fast):match("^%d+"))
      if n == 1 and not dropped then dropped = i end
      if dropped then assert.equal(1, n) end
    end
    assert(dropped, "the slow reader was never dropped")
    srv:wait_log("conn " .. slow.id .. ": send queue over the %-%-max%-backpressure limit")
    srv:wait_log("topics%-left id=" .. slow.id .. " code=1008 topics=0 counts=room:1")
    assert.equal("count room 1", say(p, "count room"))
  end)

  it("without --redis topics span the machine: --workers 2 publishes to both workers' sockets, and counts them", function()
    srv = H.start { script = SCRIPT, workers = 2 }
    local subs, per = {}, { 0, 0 }
    while per[1] < 3 or per[2] < 3 do
      assert(#subs < 400, "the kernel put every connection on one worker")
      local c = keep(open(srv, "/sub/room"))
      subs[#subs + 1] = c
      per[worker_of(c.id, 2)] = per[worker_of(c.id, 2)] + 1
    end
    local p = keep(open(srv, "/pub"))
    local all = "count room " .. (per[1] + per[2])
    assert.equal(all, say_until(p, "count room", all))
    -- Handed to the main process's broker, which gives it to both workers.
    assert.equal("pub room true", say(p, "pub room everyone"))
    for _, c in ipairs(subs) do assert.equal("everyone", H.read(c), "socket " .. c.id) end
  end)

  it("fans out to 1,000 subscribers: each gets each message exactly once, in order", function()
    srv = H.start { script = SCRIPT, log_level = "info" }
    local N = 1000
    local bin = {}
    for i = 0, 255 do bin[#bin + 1] = string.char(i) end
    local msgs = {
      { "t", "m-1" },
      { "t", "ünïcødé ✓ m-2" },
      { "b", table.concat(bin) },
      { "t", H.text(3000) },              -- compressed once for deflate subscribers
      { "t", "" },
      { "b", H.bytes(20000, 99) },
      { "t", "m-7" },
    }
    local cl = clients { urls = { "ws://127.0.0.1:" .. srv.port .. "/sub/room" }, n = N, expect = msgs }
    local ready = cl:stage("ready")
    assert.equal(N, ready.n)
    local p = keep(open(srv, "/pub"))
    assert.equal("count room " .. N, say(p, "count room"))
    for _, m in ipairs(msgs) do
      local cmd = m[1] == "t" and ("pub room " .. m[2]) or ("pubhex room " .. hex(m[2]))
      assert.equal("pub room " .. N, say(p, cmd))
    end
    cl:stage("all")
    assert.equal("pub room " .. N, say(p, "pub room end"))
    local r = cl:stage("result")
    assert.same({ ok = N, bad = 0, distinct = 1 }, { ok = r.ok, bad = r.bad, distinct = r.distinct },
      cjson.encode(r.bad_samples))
    cl:finish()   -- the clients closed every connection
    srv:wait_log("topics%-left id=", { count = N, timeout = 30 })
    assert.equal("count room 0", say(p, "count room"))
    assert.equal("pub room 0", say(p, "pub room gone"))
    assert.same({}, srv:grep("topics%-left id=%d+ code=%d+ topics=[1-9]"))
  end)
end)

---------------------------------------------------------------------------
describe("topics through Redis", function()
  if not redis_available() then
    pending("redis-server / redis-cli not installed")
    return
  end
  local redis, port, srvs, conns
  before_each(function() srvs, conns = {}, {} end)
  after_each(function()
    for _, c in ipairs(conns) do c:shutdown() end
    for _, s in ipairs(srvs) do s:stop() end
    stop_redis(redis)
    redis = nil
  end)
  local function keep(c) conns[#conns + 1] = c; return c end
  local function luaws(workers, db)
    local args = { "--redis", "redis://127.0.0.1:" .. port .. (db and ("/" .. db) or "") }
    local s = H.start { script = SCRIPT, workers = workers, log_level = os.getenv("TOPICS_LOG_LEVEL") or "info", args = args }
    srvs[#srvs + 1] = s
    return s
  end
  -- Both workers of a process report "redis: connected" (after mark).
  local function connected(s, workers, mark)
    for w = 1, workers do
      local tag = workers > 1 and ("%[w" .. w .. "%] ") or "  "   -- one worker: no tag
      s:wait_log(tag .. "redis: connected to 127%.0%.0%.1:" .. port, { after = mark })
    end
  end

  it("two processes with two workers each share a room: every client gets every message once, in one order", function()
    port = free_port()
    redis = start_redis(port)
    -- B selects database 5: pub/sub ignores databases, so they still share the room
    local A, B = luaws(2), luaws(2, 5)
    connected(A, 2); connected(B, 2)
    local N = 400
    local msgs = {}
    for i = 1, 4 do
      msgs[#msgs + 1] = { "t", "A-" .. i }
      msgs[#msgs + 1] = { "t", "B-" .. i }
    end
    msgs[#msgs + 1] = { "b", "\255\0A-5" }
    msgs[#msgs + 1] = { "b", "\255\0B-5" }
    msgs[#msgs + 1] = { "t", "A-6 " .. H.text(5000) }
    local cl = clients {
      urls = { "ws://127.0.0.1:" .. A.port .. "/sub/room", "ws://127.0.0.1:" .. B.port .. "/sub/room" },
      n = N, expect = msgs, order = "source", workers = 2 }
    local ready = cl:stage("ready")
    for _, g in ipairs { "0/w1", "0/w2", "1/w1", "1/w2" } do
      assert.truthy((ready.groups[g] or 0) > 0, "no client on " .. g .. ": " .. cjson.encode(ready.groups))
    end
    -- the log's worker tags agree
    for i, s in ipairs { A, B } do
      for w = 1, 2 do
        assert.equal(math.tointeger(ready.groups[(i - 1) .. "/w" .. w]),
          #s:grep("%[w" .. w .. "%] conn %d+ open [%d.:]+ /sub/room"))
      end
    end
    -- every worker of both processes holds a Redis subscription
    wait_numsub(port, "luaws:room", 4)
    local pa, pb = keep(open(A, "/pub")), keep(open(B, "/pub"))
    -- subscribers() counts this machine (this process's workers), not Redis's
    local ca = "count room " .. math.tointeger(ready.groups["0/w1"] + ready.groups["0/w2"])
    assert.equal(ca, say_until(pa, "count room", ca))
    local cb = "count room " .. math.tointeger(ready.groups["1/w1"] + ready.groups["1/w2"])
    assert.equal(cb, say_until(pb, "count room", cb))
    for _, m in ipairs(msgs) do
      local p = m[2]:find("A-", 1, true) and pa or pb
      local cmd = m[1] == "t" and ("pub room " .. m[2]) or ("pubhex room " .. hex(m[2]))
      assert.equal("pub room true", say(p, cmd))
    end
    cl:stage("all")
    assert.equal("pub room true", say(pa, "pub room end"))
    local r = cl:stage("result")
    assert.same({ ok = N, bad = 0, distinct = 1 }, { ok = r.ok, bad = r.bad, distinct = r.distinct },
      cjson.encode(r.bad_samples))
    cl:finish()
    -- the last subscriber of each worker gone: Redis sees the unsubscribes
    A:wait_log("topics%-left id=", { count = ready.groups["0/w1"] + ready.groups["0/w2"], timeout = 20 })
    B:wait_log("topics%-left id=", { count = ready.groups["1/w1"] + ready.groups["1/w2"], timeout = 20 })
    wait_numsub(port, "luaws:room", 0)
    assert.equal("pub room true", say(pa, "pub room nobody"))
  end)

  it("a backend publishes with redis-cli: 't' text, 'b' binary, anything else whole as text", function()
    port = free_port()
    redis = start_redis(port)
    local A = luaws(1)
    connected(A, 1)
    local s = keep(open(A, "/sub/room"))
    wait_numsub(port, "luaws:room", 1)
    assert.truthy(redis_cli(port, "publish", "luaws:room", "tfrom backend"):match("^1"))
    assert.truthy(redis_cli(port, "publish", "luaws:room", "bbytes"):match("^1"))
    assert.truthy(redis_cli(port, "publish", "luaws:room", "plain"):match("^1"))
    local d, k = H.read(s); assert.same({ "text", "from backend" }, { k, d })
    d, k = H.read(s); assert.same({ "binary", "bytes" }, { k, d })
    d, k = H.read(s); assert.same({ "text", "plain" }, { k, d })
    -- our own publishes carry the kind byte on the wire
    local mon = server.start {
      command = closefds { "redis-cli", "-h", "127.0.0.1", "-p", tostring(port), "--raw", "subscribe", "luaws:room" },
      ready = "^subscribe$" }
    srvs[#srvs + 1] = mon
    wait_numsub(port, "luaws:room", 2)
    local p = keep(open(A, "/pub"))
    assert.equal("pub room true", say(p, "pub room via-lua"))
    assert.equal("via-lua", H.read(s))
    mon:wait_log("^tvia%-lua$")
    assert.equal("pub room true", say(p, "pubhex room 00ff"))
    assert.equal("\0\255", H.read(s))
    mon:wait_log("^b\0\255$")
  end)

  it("a stalled Redis: past 32 MiB unacknowledged, publish delivers locally; the rest arrives once Redis moves", function()
    port = free_port()
    redis = start_redis(port)
    local A = luaws(1)
    connected(A, 1)
    local s = keep(open(A, "/sub/room"))
    local p = keep(open(A, "/pub"))
    wait_numsub(port, "luaws:room", 1)
    redis:signal("STOP")
    local big = H.text(1000000)
    local via, direct = 0, 0
    for i = 1, 40 do
      local r = say(p, "pub room " .. i .. " " .. big):match("%S+$")
      if r == "true" then
        assert.equal(0, direct, "handed to Redis again after falling back")
        via = via + 1
      else
        assert.equal("1", r); direct = direct + 1
      end
    end
    A:wait_log("redis: %d+ bytes of publishes not yet acknowledged, delivering locally only")
    assert.truthy(via >= 30 and via <= 33, "handed to Redis: " .. via)
    -- the local ones first (Redis is stopped), then the queued ones: each once
    local seen = {}
    for _ = 1, direct do seen[#seen + 1] = tonumber(H.read(s):match("^%d+")) end
    redis:signal("CONT")
    for _ = 1, via do seen[#seen + 1] = tonumber(H.read(s):match("^%d+")) end
    local want = {}
    for i = via + 1, 40 do want[#want + 1] = i end
    for i = 1, via do want[#want + 1] = i end
    assert.same(want, seen)
    local r = say(p, "pub room end")
    assert.truthy(r == "pub room true" or r == "pub room 1", r)
    assert.equal("end", H.read(s))
  end)

  it("Redis restarted mid-test: local delivery while it is down, messages flow again once it is back", function()
    port = free_port()
    redis = start_redis(port)
    local A, B = luaws(2), luaws(2)
    connected(A, 2); connected(B, 2)
    -- subscribers on both workers of both processes (the kernel spreads them)
    local subs = {}
    for _, s in ipairs { A, B } do
      local per = { 0, 0 }
      while per[1] < 4 or per[2] < 4 do
        assert(#subs < 400, "the kernel put every connection on one worker")
        local c = keep(open(s, "/sub/room"))
        c.srv = s
        subs[#subs + 1] = c
        per[worker_of(c.id, 2)] = per[worker_of(c.id, 2)] + 1
      end
    end
    local pa, pb = keep(open(A, "/pub")), keep(open(B, "/pub"))
    wait_numsub(port, "luaws:room", 4)
    assert.equal("pub room true", say(pa, "pub room before"))
    for _, c in ipairs(subs) do assert.equal("before", H.read(c)) end

    -- kill Redis; every worker notices
    local ma, mb = A:mark(), B:mark()
    redis:signal("KILL")
    assert(redis:wait_exit(), "redis-server did not die")
    stop_redis(redis, { quiet = true })
    redis = nil
    for _, s in ipairs { { A, ma }, { B, mb } } do
      for w = 1, 2 do
        s[1]:wait_log("%[w" .. w .. "%] redis: connection lost %(.+%), reconnecting in %d+ ms", { after = s[2] })
      end
    end
    -- while it is down publish goes to this machine's workers only (the
    -- main process's broker)
    assert.equal("pub room true", say(pa, "pub room down-A"))
    assert.equal("pub room true", say(pb, "pub room down-B"))

    -- Redis back on the same port: both processes reconnect and resubscribe
    ma, mb = A:mark(), B:mark()
    redis = start_redis(port)
    connected(A, 2, ma); connected(B, 2, mb)
    assert.equal("pub room true", say(pa, "pub room after-A"))
    assert.equal("pub room true", say(pb, "pub room after-B"))
    for _, c in ipairs(subs) do
      local first = H.read(c)
      assert.equal(c.srv == A and "down-A" or "down-B", first, "client " .. c.id)
      first = H.read(c)
      local second = H.read(c)
      local got = { first, second }
      table.sort(got)
      assert.same({ "after-A", "after-B" }, got, "client " .. c.id)
    end
    assert.equal("pub room true", say(pb, "pub room end"))
    for _, c in ipairs(subs) do assert.equal("end", H.read(c), "client " .. c.id) end
  end)

  it("a Redis that refuses connections at startup: retries in the log, local publish works, connects when it starts", function()
    port = free_port()   -- nothing listens there yet
    local A = luaws(1)
    A:wait_log("redis: cannot connect to 127%.0%.0%.1:" .. port .. " %(Connection refused%), retrying in 100 ms")
    A:wait_log("redis: cannot connect to 127%.0%.0%.1:" .. port .. " %(.-%), retrying in 200 ms")
    -- still serving: local subscribers get a local publish
    local subs = { keep(open(A, "/sub/room")), keep(open(A, "/sub/room")), keep(open(A, "/sub/room")) }
    local p = keep(open(A, "/pub"))
    assert.equal("pub room 3", say(p, "pub room local"))
    for _, c in ipairs(subs) do assert.equal("local", H.read(c)) end
    -- Redis starts: the server connects, subscribes the room, and publishes go through Redis
    local mark = A:mark()
    redis = start_redis(port)
    connected(A, 1, mark)
    assert.equal("pub room true", say(p, "pub room via-redis"))
    for _, c in ipairs(subs) do assert.equal("via-redis", H.read(c)) end
    assert.truthy(redis_cli(port, "publish", "luaws:room", "tbackend"):match("^1"))
    for _, c in ipairs(subs) do assert.equal("backend", H.read(c)) end
  end)
end)
