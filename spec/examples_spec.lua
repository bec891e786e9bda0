-- The example scripts in scripts/: echo, chat (topics), clock (a global
-- timer + publish), jsonrpc (a JSON-RPC 2.0 calculator) and relay (an
-- outbound luaws.connect relaying both ways). Each runs in the real binary.
--
-- "Nothing else arrives" is checked by order, never by waiting: after the
-- thing that must not arrive, something that must arrive is caused, and it
-- has to be the next message.
local cjson = require "cjson"
local socket = require "socket"
local wsc = require "spec.support.wsclient"
local server = require "spec.support.server"
local H = require "spec.support.helpers"

local function read_text(c)
  local data, kind = H.read(c)
  assert.equal("text", kind, "expected text, got " .. tostring(kind) .. ": " .. tostring(data))
  return data
end

-- A port with nothing listening: bind an ephemeral one, then let it go.
local function dead_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function urlencode(s)
  return (s:gsub("[^%w%-._~]", function(ch) return string.format("%%%02X", ch:byte()) end))
end

---------------------------------------------------------------------------
describe("scripts/echo.lua", function()
  local srv
  lazy_setup(function() srv = H.start { script = "scripts/echo.lua" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("greets, echoes text and binary in kind, and closes with 1000 on \"exit\"", function()
    local c = H.open(srv, "/")
    assert.equal("I will echo your messages", read_text(c))
    c:send_text("hello ✓")
    assert.equal("hello ✓", read_text(c))
    c:send_binary("\0\1\2\255")
    local data, kind = H.read(c)
    assert.equal("binary", kind)
    assert.equal("\0\1\2\255", data)
    c:send_text("exit")
    local code, _, tcp_closed = c:expect_close()
    assert.equal(1000, code)
    assert.is_true(tcp_closed)
  end)
end)

---------------------------------------------------------------------------
describe("scripts/chat.lua", function()
  local srv
  lazy_setup(function() srv = H.start { script = "scripts/chat.lua" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  local function join(query)
    local c = H.open(srv, "/?" .. query)
    return c, read_text(c)
  end

  it("welcomes, announces joins, broadcasts \"name: text\" to the room, and announces leaving", function()
    local ann, welcome = join("name=ann&room=r1")
    assert.equal("* welcome to r1, ann (0 others here)", welcome)
    local bob, welcome2 = join("room=r1&name=bob")
    assert.equal("* welcome to r1, bob (1 other here)", welcome2)
    assert.equal("* bob joined", read_text(ann))
    bob:send_text("hi all")
    assert.equal("bob: hi all", read_text(ann))
    assert.equal("bob: hi all", read_text(bob))
    ann:send_text("hello bob")
    assert.equal("ann: hello bob", read_text(bob))
    assert.equal("ann: hello bob", read_text(ann))
    bob:close(1000)
    assert.equal("* bob left", read_text(ann))
    ann:close(1000)
  end)

  it("asks for a name when the query has none and takes the first message", function()
    local cy, prompt = join("room=r2")
    assert.equal("* your name?", prompt)
    cy:send_text("   ")
    assert.equal("* a name is 1 to 32 characters; your name?", read_text(cy))
    cy:send_text(string.rep("x", 33))
    assert.equal("* a name is 1 to 32 characters; your name?", read_text(cy))
    cy:send_text("  cy  ")
    assert.equal("* welcome to r2, cy (0 others here)", read_text(cy))
    cy:send_text("now I talk")
    assert.equal("cy: now I talk", read_text(cy))
    cy:close(1000)
  end)

  it("decodes names from the query string", function()
    local c, welcome = join("name=" .. urlencode("Jürgen K") .. "&room=caf%C3%A9")
    assert.equal("* welcome to café, Jürgen K (0 others here)", welcome)
    local d, welcome2 = join("name=J+K&room=caf%C3%A9")
    assert.equal("* welcome to café, J K (1 other here)", welcome2)
    assert.equal("* J K joined", read_text(c))
    c:close(1000); d:close(1000)
  end)

  it("keeps rooms apart", function()
    local ann = join("name=ann&room=a")
    local dan = join("name=dan&room=b")
    local eve = join("name=eve&room=a")
    assert.equal("* eve joined", read_text(ann))
    dan:send_text("only for room b")
    assert.equal("dan: only for room b", read_text(dan))   -- published by now
    eve:send_text("for room a")
    assert.equal("eve: for room a", read_text(ann))         -- and ann did not get dan's
    ann:close(1000); dan:close(1000); eve:close(1000)
  end)

  it("refuses binary messages", function()
    local c = join("name=bin&room=r3")
    c:send_binary("\1\2\3")
    assert.equal("* text messages only, please", read_text(c))
    c:close(1000)
  end)

  it("nobody is announced as leaving before joining", function()
    local ann = join("name=ann&room=r4")
    local anon = join("room=r4")
    anon:close(1000)
    local bob = join("name=bob&room=r4")
    assert.equal("* bob joined", read_text(ann))
    ann:close(1000); bob:close(1000)
  end)

  it("serves the browser console to plain HTTP", function()
    local resp = assert(wsc.http(srv.host, srv.port, { path = "/" }))
    assert.equal(200, resp.status)
    assert.truthy(resp.headers["content-type"]:find("text/html", 1, true))
  end)
end)

---------------------------------------------------------------------------
describe("scripts/clock.lua", function()
  local ISO = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$"
  local function epoch(iso)
    local y, mo, d, h, mi, s = iso:match("^(%d+)%-(%d+)%-(%d+)T(%d+):(%d+):(%d+)Z$")
    -- os.time reads local time: correct by the offset of the epoch itself.
    local t = os.time { year = y, month = mo, day = d, hour = h, min = mi, sec = s }
    local now = os.time()
    return t + os.difftime(now, os.time(os.date("!*t", now)))
  end

  describe("with CLOCK_INTERVAL_MS=50", function()
    local srv
    lazy_setup(function() srv = H.start { script = "scripts/clock.lua", env = { CLOCK_INTERVAL_MS = "50" } } end)
    lazy_teardown(function() if srv then srv:stop() end end)

    it("sends the time at once, then on every tick", function()
      local c = H.open(srv, "/")
      local first = read_text(c)
      assert.truthy(first:match(ISO), first)
      assert.is_true(math.abs(epoch(first) - os.time()) <= 5, first .. " is not now")
      for _ = 1, 2 do
        local tick = read_text(c)
        assert.truthy(tick:match(ISO), tick)
      end
      c:close(1000)
    end)

    it("broadcasts to every connected socket", function()
      local a, b = H.open(srv, "/"), H.open(srv, "/")
      for _, c in ipairs { a, b } do
        read_text(c)                                -- the time on connect
        assert.truthy(read_text(c):match(ISO))      -- a tick
        assert.truthy(read_text(c):match(ISO))      -- and another
      end
      a:close(1000); b:close(1000)
    end)

    it("stops sending to closed sockets and goes on for the others", function()
      local a, b = H.open(srv, "/"), H.open(srv, "/")
      read_text(a); read_text(b)
      a:close(1000)
      local mark = srv:mark()
      read_text(b); read_text(b)
      assert.same({}, srv:grep("ERROR", { after = mark }))
      b:close(1000)
    end)
  end)

  describe("with the default interval", function()
    local srv
    lazy_setup(function() srv = H.start { script = "scripts/clock.lua" } end)
    lazy_teardown(function() if srv then srv:stop() end end)

    it("ticks once a second", function()
      local c = H.open(srv, "/", { timeout = 5 })
      read_text(c)
      read_text(c)                     -- first tick: anywhere within the first second
      local t0 = socket.gettime()
      read_text(c)
      local gap = socket.gettime() - t0
      -- (a late read of the first tick shortens the gap: a generous margin)
      assert.is_true(gap > 0.5 and gap < 1.5, "ticks " .. gap .. " s apart")
      c:close(1000)
    end)
  end)

  describe("after a hot reload", function()
    local srv
    lazy_setup(function()
      srv = H.start { script = "scripts/clock.lua", env = { CLOCK_INTERVAL_MS = "150" } }
    end)
    lazy_teardown(function() if srv then srv:stop() end end)

    it("keeps one timer, not one per version", function()
      local c = H.open(srv, "/")
      read_text(c)
      for _ = 1, 2 do
        local mark = srv:mark()
        srv:signal("HUP")
        srv:wait_log("reloaded %(", { after = mark })
      end
      read_text(c)   -- a tick from after the reloads
      local t0 = socket.gettime()
      for _ = 1, 8 do read_text(c) end
      -- one timer: 8 ticks take 1.2 s; two would take 0.6 s, three 0.4 s
      -- (a late read of the first tick only shortens it by that delay)
      local took = socket.gettime() - t0
      assert.is_true(took > 0.9, "8 ticks in " .. took .. " s")
      c:close(1000)
    end)
  end)
end)

---------------------------------------------------------------------------
describe("scripts/jsonrpc.lua", function()
  local srv, c
  lazy_setup(function()
    srv = H.start { script = "scripts/jsonrpc.lua" }
    c = H.open(srv, "/")
  end)
  lazy_teardown(function()
    if c then c:close(1000) end
    if srv then srv:stop() end
  end)

  local function rpc(text)
    assert(c:send_text(text))
    return cjson.decode(read_text(c))
  end
  local function by_id(list)
    local t = {}
    for _, r in ipairs(list) do t[r.id == cjson.null and "null" or r.id] = r end
    return t
  end

  it("adds, subtracts, multiplies and divides, positional and named", function()
    assert.same({ jsonrpc = "2.0", result = 5, id = 1 }, rpc('{"jsonrpc":"2.0","method":"add","params":[2,3],"id":1}'))
    assert.same({ jsonrpc = "2.0", result = 19, id = 2 }, rpc('{"jsonrpc":"2.0","method":"sub","params":[42,23],"id":2}'))
    assert.same({ jsonrpc = "2.0", result = -19, id = "x" }, rpc('{"jsonrpc":"2.0","method":"sub","params":{"b":42,"a":23},"id":"x"}'))
    assert.same({ jsonrpc = "2.0", result = 7.5, id = 4 }, rpc('{"jsonrpc":"2.0","method":"mul","params":[2.5,3],"id":4}'))
    assert.same({ jsonrpc = "2.0", result = 0.25, id = 5 }, rpc('{"jsonrpc":"2.0","method":"div","params":[1,4],"id":5}'))
  end)

  it("answers division by zero with an application error", function()
    local r = rpc('{"jsonrpc":"2.0","method":"div","params":[1,0],"id":6}')
    assert.same({ code = 1, message = "division by zero" }, r.error)
    assert.equal(6, r.id)
    assert.is_nil(r.result)
  end)

  it("answers a parse error with -32700 and id null", function()
    local r = rpc('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
    assert.same({ jsonrpc = "2.0", id = cjson.null, error = { code = -32700, message = "Parse error" } }, r)
  end)

  it("answers invalid requests with -32600", function()
    for _, text in ipairs {
      '{"jsonrpc": "2.0", "method": 1, "params": "bar"}',
      '{"jsonrpc": "1.0", "method": "add", "params": [1, 2], "id": 1}',
      '{"method": "add", "params": [1, 2], "id": 1}',
      '{"jsonrpc": "2.0", "method": "add", "params": "1 2", "id": 1}',
      '{"jsonrpc": "2.0", "method": "add", "params": [1, 2], "id": {"a": 1}}',
      '"add"', '42', 'null', '{}',
    } do
      local r = rpc(text)
      assert.equal(-32600, r.error.code, text)
      assert.equal("Invalid Request", r.error.message, text)
    end
    -- the id is kept when it is a valid one
    assert.equal(9, rpc('{"jsonrpc": "1.0", "method": "add", "id": 9}').id)
    assert.equal(cjson.null, rpc('{"jsonrpc": "2.0", "method": 1}').id)
  end)

  it("answers unknown methods with -32601", function()
    local r = rpc('{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')
    assert.same({ code = -32601, message = "Method not found" }, r.error)
    assert.equal("1", r.id)
  end)

  it("answers bad params with -32602", function()
    for _, params in ipairs { '[1]', '[1, 2, 3]', '["1", 2]', '[1, null]', '{"a": 1}', '{"a": 1, "c": 2}',
                              '[]', '{}', '[true, false]' } do
      local r = rpc('{"jsonrpc":"2.0","method":"add","params":' .. params .. ',"id":7}')
      assert.equal(-32602, r.error and r.error.code, params)
      assert.equal(7, r.id)
    end
    assert.equal(-32602, rpc('{"jsonrpc":"2.0","method":"add","id":8}').error.code)   -- no params
  end)

  it("does not answer notifications, not even failing ones", function()
    c:send_text('{"jsonrpc": "2.0", "method": "add", "params": [1, 2]}')
    c:send_text('{"jsonrpc": "2.0", "method": "nope"}')
    c:send_text('{"jsonrpc": "2.0", "method": "div", "params": [1, 0]}')
    -- the next message answers this request, not any of the notifications
    assert.same({ jsonrpc = "2.0", result = 3, id = 10 }, rpc('{"jsonrpc":"2.0","method":"add","params":[1,2],"id":10}'))
  end)

  it("answers a batch with an array of responses, notifications left out", function()
    local list = rpc([=[[
      {"jsonrpc": "2.0", "method": "add", "params": [1, 2], "id": "1"},
      {"jsonrpc": "2.0", "method": "add", "params": [7, 4]},
      {"jsonrpc": "2.0", "method": "sub", "params": [42, 23], "id": "2"},
      {"foo": "boo"},
      {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
      {"jsonrpc": "2.0", "method": "div", "params": [9, 0], "id": "9"}
    ]]=])
    assert.equal(5, #list)
    local r = by_id(list)
    assert.equal(3, r["1"].result)
    assert.equal(19, r["2"].result)
    assert.equal(-32600, r.null.error.code)
    assert.equal(-32601, r["5"].error.code)
    assert.equal(1, r["9"].error.code)
  end)

  it("answers an empty batch, and one of non-objects, with Invalid Request", function()
    assert.same({ jsonrpc = "2.0", id = cjson.null, error = { code = -32600, message = "Invalid Request" } }, rpc("[]"))
    local list = rpc("[1, 2, 3]")
    assert.equal(3, #list)
    for _, r in ipairs(list) do assert.equal(-32600, r.error.code) end
    local one = rpc("[1]")
    assert.equal(1, #one)
  end)

  it("answers a batch that is not JSON with one parse error", function()
    local r = rpc('[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"jsonrpc": "2.0", "method"]')
    assert.equal(-32700, r.error.code)
  end)

  it("does not answer a batch of notifications at all", function()
    c:send_text('[{"jsonrpc": "2.0", "method": "add", "params": [1,2]}, {"jsonrpc": "2.0", "method": "mul", "params": [3,4]}]')
    assert.same({ jsonrpc = "2.0", result = 2, id = 11 }, rpc('{"jsonrpc":"2.0","method":"div","params":[4,2],"id":11}'))
  end)

  it("keeps results finite", function()
    local r = rpc('{"jsonrpc":"2.0","method":"mul","params":[1e308, 10],"id":12}')
    assert.equal(2, r.error.code)
  end)

  it("agrees on the jsonrpc subprotocol when offered", function()
    local d = H.open(srv, "/", { protocols = { "chat", "jsonrpc" } })
    assert.equal("jsonrpc", d.headers["sec-websocket-protocol"])
    d:close(1000)
  end)

  it("closes with 1003 on a binary message", function()
    local d = H.open(srv, "/")
    d:send_binary('{"jsonrpc":"2.0"}')
    local code, reason = d:expect_close()
    assert.equal(1003, code)
    assert.equal("JSON-RPC comes in text messages", reason)
  end)
end)

---------------------------------------------------------------------------
describe("scripts/relay.lua", function()
  local echo, relay, target
  lazy_setup(function()
    echo = H.start { script = "scripts/echo.lua" }
    relay = H.start { script = "scripts/relay.lua" }
    target = "ws://127.0.0.1:" .. echo.port .. "/"
  end)
  lazy_teardown(function()
    if relay then relay:stop() end
    if echo then echo:stop() end
  end)

  local function via(url) return H.open(relay, "/?target=" .. urlencode(url)) end

  it("relays the target's greeting, text and binary both ways, and its close", function()
    local c = via(target)
    assert.equal("I will echo your messages", read_text(c))
    c:send_text("through the relay ✓")
    assert.equal("through the relay ✓", read_text(c))
    c:send_binary("\0\255\1")
    local data, kind = H.read(c)
    assert.equal("binary", kind)
    assert.equal("\0\255\1", data)
    c:send_text("exit")            -- the echo bot closes: the relay closes us the same way
    local code, _, tcp_closed = c:expect_close()
    assert.equal(1000, code)
    assert.is_true(tcp_closed)
  end)

  it("keeps what the client says before the target has answered, in order", function()
    local c = via(target)
    for i = 1, 3 do c:send_text("early " .. i) end
    assert.equal("I will echo your messages", read_text(c))
    for i = 1, 3 do assert.equal("early " .. i, read_text(c)) end
    c:close(1000)
  end)

  it("closes the target's side when the client leaves", function()
    local mark = echo:mark()
    local c = via(target)
    read_text(c)
    local _, id = echo:wait_log("conn (%d+) open", { after = mark })
    c:close(4001, "bye")
    echo:wait_log("conn " .. id .. " closed code 4001 reason bye", { after = mark })
  end)

  it("closes with 1014 when the target cannot be reached", function()
    local c = via("ws://127.0.0.1:" .. dead_port() .. "/")
    local code, reason = c:expect_close()
    assert.equal(1014, code)
    assert.truthy(reason:find("^relay target: "), reason)
  end)

  it("answers 400 without a target, or with one it may not use", function()
    for _, query in ipairs { "", "?target=http://127.0.0.1/", "?target=ws://example.com/",
                             "?target=" .. urlencode("ws://127.0.0.1.example.com/"),
                             "?target=" .. urlencode("ws://x@127.0.0.1/") } do
      local c = assert(wsc.connect(relay.host, relay.port, { path = "/" .. query }))
      assert.equal(400, c.status, query)
      c:shutdown()
    end
  end)
end)
