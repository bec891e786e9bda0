-- luaws.store on Redis (--store redis://HOST:PORT/DB; README "Shared state:
-- luaws.store"): the real binary over real sockets against a throwaway
-- redis-server on a free loopback port (spec/scripts/store_redis.lua
-- answers one command per message). No fixed sleeps: every wait is on a
-- reply, a log line, or a condition polled with a deadline.
local socket = require "socket"
local server = require "spec.support.server"
local H = require "spec.support.helpers"
local quote = server.quote

local SCRIPT = "spec/scripts/store_redis.lua"

local free_port = server.free_port
local start_redis = server.start_redis
local function stop_redis(r) server.stop_redis(r, { quiet = true }) end

local function redis_cli(port, ...)
  local q = { "redis-cli", "-h", "127.0.0.1", "-p", tostring(port), "-n", "3" }
  for _, a in ipairs { ... } do q[#q + 1] = quote(a) end
  local h = assert(io.popen(table.concat(q, " ") .. " 2>&1"))
  local out = h:read("a")
  h:close()
  return out
end

local function say(c, text)
  c:send_text(text)
  return (H.read(c))
end

-- say() until the answer matches pattern, or fail at the deadline.
local function say_until(c, text, pattern, timeout)
  local deadline = socket.gettime() + (timeout or server.TIMEOUT)
  local got
  repeat
    got = say(c, text)
    if got:find(pattern) then return got end
  until socket.gettime() > deadline
  error(("%q never answered %q; last: %s"):format(text, pattern, got), 2)
end

describe("luaws.store on Redis", function()
  local port, redis, srvs

  local function luaws(extra)
    local args = { "--store", "redis://127.0.0.1:" .. port .. "/3" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local srv = H.start { script = SCRIPT, log_level = "info", args = args }
    srv:wait_log("redis store: connected to 127%.0%.0%.1:" .. port)
    srvs[#srvs + 1] = srv
    return srv
  end

  before_each(function()
    assert(server.available(), "luaws binary not built: " .. server.BINARY)
    srvs = {}
    port = free_port()
    redis = start_redis(port)
  end)

  after_each(function()
    for _, s in ipairs(srvs) do s:stop { quiet = true } end
    stop_redis(redis)
  end)

  it("1. get/set/add/incr/delete/keys/update: types round-trip, the key layout, ttl", function()
    local A = luaws()
    local c = H.open(A)
    assert.equal("nil nil", say(c, "get a"))
    assert.equal("boolean true", say(c, "seti a 42"))
    assert.equal("integer 42", say(c, "get a"))
    assert.equal("42", redis_cli(port, "GET", "luaws:store:spec:a"):match("%S+"))   -- INCRBY can read it
    assert.equal("boolean true", say(c, "setf b 1.5"))
    assert.equal("float 1.5", say(c, "get b"))
    assert.equal("boolean true", say(c, "setf b2 3"))
    assert.equal("float 3.0", say(c, "get b2"))
    assert.equal("boolean true", say(c, "sets s 12"))
    assert.equal("string 12", say(c, "get s"))
    assert.equal("boolean true", say(c, "setb t false"))
    assert.equal("boolean false", say(c, "get t"))
    assert.equal("boolean true", say(c, 'sett j {"x":[1,2],"y":"z"}'))
    assert.equal("table", say(c, "get j"):match("^%S+"))
    -- incr: INCRBY on integers, the script for floats and init; keeps the type
    assert.equal("integer 43", say(c, "incr a"))
    assert.equal("integer 53", say(c, "incr a 10"))
    assert.equal("float 55.5", say(c, "incr a 2.5"))
    assert.equal("float 56.5", say(c, "incr a"))
    assert.equal("integer 1", say(c, "incr n"))
    assert.equal("integer 11", say(c, "incrinit m 10"))
    assert.truthy(say(c, "incr s"):find("incr: the value is not a number", 1, true))
    -- add = SET NX
    assert.equal("boolean false", say(c, "add a z"))
    assert.equal("boolean true", say(c, "add z z"))
    assert.equal("string z", say(c, "get z"))
    -- keys: SCAN with the prefix's glob characters escaped, sorted
    assert.equal("a,b,b2,j,m,n,s,t,z", say(c, "keys"))
    say(c, "sets k*1 x"); say(c, "sets k?2 x"); say(c, "sets k[3 x"); say(c, "sets k\\4 x")
    assert.equal("k*1", say(c, "keys k*"))
    assert.equal("k[3", say(c, "keys k["))
    assert.equal("k\\4", say(c, "keys k\\"))
    assert.equal("k*1,k?2,k[3,k\\4", say(c, "keys k"))
    assert.equal("boolean true", say(c, "delete a"))
    assert.equal("nil nil", say(c, "get a"))
    -- update: read-modify-write; nil deletes; no store call nor wait inside
    assert.equal("len 1", say(c, "append L x"))
    assert.equal("len 2", say(c, "append L y"))
    assert.equal('table ["x","y"]', say(c, "get L"))
    assert.equal("integer 1", say(c, "upd_incr u"))
    assert.equal("integer 2", say(c, "upd_incr u"))
    assert.equal("nil nil", say(c, "upd_delete u"))
    assert.equal("nil nil", say(c, "get u"))
    assert.truthy(say(c, "upd_nested u"):find("cannot be used inside the update function", 1, true))
    assert.truthy(say(c, "upd_sleep u"):find("update: the function cannot wait", 1, true))
    -- in a timer callback too
    assert.equal("scheduled", say(c, "later z"))
    assert.equal("later string z", H.read(c))
    -- ttl (seconds; 0.1 here): Redis expiry; incr and update keep it
    assert.equal("boolean true", say(c, "setttl t1 100"))
    assert.equal("string soon gone", say(c, "get t1"))
    say_until(c, "get t1", "^nil nil$", 5)
    assert.equal("boolean true", say(c, "addttl t2 150"))
    local pttl = tonumber(redis_cli(port, "PTTL", "luaws:store:spec:t2"):match("%-?%d+"))
    assert.truthy(pttl > 0 and pttl <= 150, "PTTL " .. pttl)
    say_until(c, "get t2", "^nil nil$", 5)
    assert.equal("boolean true", say(c, "seti cnt 1"))
    redis_cli(port, "PEXPIRE", "luaws:store:spec:cnt", "60000")
    assert.equal("integer 2", say(c, "incr cnt"))
    assert.equal("float 2.5", say(c, "incr cnt 0.5"))
    assert.equal("float 3.5", say(c, "upd_incr cnt"))
    pttl = tonumber(redis_cli(port, "PTTL", "luaws:store:spec:cnt"):match("%-?%d+"))
    assert.truthy(pttl > 0 and pttl <= 60000, "ttl kept: PTTL " .. pttl)
    c:close(1000)
    assert.falsy(A:log():find("ERROR", 1, true), A:log())
  end)

  it("2. two machines: 10 connections each, 500 incr each: exactly 10,000; update appends lose nothing", function()
    local A, B = luaws(), luaws()
    local conns = {}
    for _ = 1, 10 do conns[#conns + 1] = H.open(A); conns[#conns + 1] = H.open(B) end
    for _, c in ipairs(conns) do c:send_text("many counter 500") end
    for _, c in ipairs(conns) do assert.truthy(H.read(c):find("^done %d+$")) end
    assert.equal("integer 10000", say(conns[1], "get counter"))
    assert.equal("integer 10000", say(conns[2], "get counter"))
    -- update contention: 4 connections per machine append 25 items each
    local writers = { conns[1], conns[3], conns[5], conns[7], conns[2], conns[4], conns[6], conns[8] }
    for _, c in ipairs(writers) do c:send_text("appendmany list 25") end
    for _, c in ipairs(writers) do
      local r = H.read(c)
      assert.truthy(r:find("^done %d+$"), r)
    end
    assert.equal("200", say(conns[1], "len list"))
    for _, c in ipairs(conns) do c:close(1000) end
  end)

  it("3. Redis stopped, then killed: a clear error within the timeout, others served, back once Redis is", function()
    local A = luaws { "--store-timeout", "500" }
    local c, d = H.open(A), H.open(A)
    assert.equal("boolean true", say(c, "sets x v"))
    redis:signal("STOP")
    local t0 = socket.gettime()
    c:send_text("get x")
    assert.equal("echo hi", say(d, "echo hi"))   -- served while c's event waits for Redis
    local r = H.read(c)
    local waited = socket.gettime() - t0
    assert.truthy(r:find("luaws.store spec: Redis unavailable (no reply within 500 ms)", 1, true), r)
    assert.truthy(waited < 1.5, "answered after " .. waited .. " s")
    r = say(c, "get x")
    assert.truthy(r:find("luaws.store spec: Redis unavailable", 1, true), r)
    redis:signal("CONT")
    say_until(c, "get x", "^string v$")
    -- killed: an error at once, or within the timeout
    local mark = A:mark()
    redis:stop { quiet = true }
    A:wait_log("redis store: connection lost", { after = mark })
    t0 = socket.gettime()
    r = say(c, "get x")
    assert.truthy(r:find("Redis unavailable", 1, true), r)
    assert.truthy(socket.gettime() - t0 < 1.5)
    assert.equal("echo again", say(d, "echo again"))
    redis = start_redis(port)
    say_until(c, "sets x back", "^boolean true$")
    assert.equal("string back", say(c, "get x"))
    c:close(1000); d:close(1000)
  end)

  it("4. a socket that closes while its store call waits: no crash, a clean log; a stop while one waits", function()
    local A = luaws { "--store-timeout", "5000" }
    local c = H.open(A)
    assert.equal("boolean true", say(c, "sets x v"))
    redis:signal("STOP")
    local mark = A:mark()
    c:send_text("get x")
    c.sock:close()        -- gone, without a close handshake, while its event waits
    redis:signal("CONT")
    A:wait_log("conn %d+ closed", { after = mark })
    local d = H.open(A)
    assert.equal("string v", say(d, "get x"))
    -- the server stops while an event waits: the task is abandoned
    redis:signal("STOP")
    d:send_text("get x")
    local how, code, log = A:stop { quiet = true }
    redis:signal("CONT")
    assert.equal("exit", how)
    assert.equal(0, code)
    assert.falsy(log:find("ERROR", 1, true), log)
    assert.falsy(log:find("AddressSanitizer", 1, true) or log:find("runtime error:", 1, true), log)
  end)

  it("5. at the top level while loading: a clear error with file:line", function()
    local srv = H.start {
      source = 'local s = require("luaws").store("boot")\nlocal v = s:get("k")\nreturn {}\n',
      log_level = "info", no_wait = true,
      args = { "--store", "redis://127.0.0.1:" .. port .. "/3" },
    }
    srvs[#srvs + 1] = srv
    srv:wait_log("script%.lua:2: luaws%.store boot: luaws%.store on Redis works only inside a listener event or a timer callback")
  end)
end)
