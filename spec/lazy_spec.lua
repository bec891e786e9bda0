-- Lazy socket fields (issue 21): socket.request is built when first read
-- after the upgrade (the socket keeps the request packed, a few hundred bytes
-- of C data), socket.data when first used, and a script cannot tell: the
-- same fields and values as the handler's table, the same table on every
-- read, the handler's own table when it changed it or still holds it, and
-- both kept across a hot reload. Then the Lua heap an idle connection costs,
-- read from /metrics (luaws_lua_heap_bytes) after full collections: no
-- timing involved. Driven through spec/scripts/lazy.lua.
local server = require "spec.support.server"
local wsc = require "spec.support.wsclient"
local H = require "spec.support.helpers"
local cjson = require "cjson"

local SOURCE = assert(server.read_file(server.script("lazy.lua")))

-- The Lua heap an idle WebSocket may cost at most (bytes; the socket
-- userdata with its packed request and registry slot comes to about 300
-- with this client's five headers; the request table alone used to be
-- about 900). README "Performance" quotes it.
local IDLE_HEAP_MAX = 400

local function open(srv, path, tag, opts)
  opts = opts or {}
  opts.headers = { { "X-Tag", tag } }
  return H.open(srv, path, opts)
end

local function say(c, msg)
  assert(c:send_text(msg))
  return (H.read(c))
end

local function get(srv, path)
  return assert(wsc.http(srv.host, srv.port, { method = "GET", path = path }))
end

local function heap_gauge(srv)
  local body = get(srv, "/metrics").body
  return tonumber((assert(body:match("\nluaws_lua_heap_bytes (%d+)\n"), "no luaws_lua_heap_bytes in:\n" .. body)))
end

describe("lazy socket fields", function()
  local srv
  before_each(function() srv = H.start { source = SOURCE, args = { "--metrics" } } end)
  after_each(function() if srv then srv:stop() end end)

  it("socket.request is built on first read with the handler's fields and values, then stays the same table", function()
    local c = open(srv, "/plain?a=1&b=x%20y", "p1")
    -- The handler's table is gone (collected): this one was built now.
    assert.equal("v1 collected=true same=true handlers=false", say(c, "check p1"))
    assert.equal("v1 ident=true twice=true", say(c, "ident"))
    assert.equal("v1 ident=true twice=true", say(c, "ident"))
    c:close(1000)
  end)

  it("with request.query made, when the handler made it", function()
    local c = open(srv, "/query?room=a+b&x=%41", "q1")
    assert.equal("v1 collected=true same=true handlers=false", say(c, "check q1"))
    c:close(1000)
  end)

  it("is the handler's own table when the handler changed it", function()
    local c = open(srv, "/changed", "c1")
    assert.equal("v1 collected=false same=true handlers=true", say(c, "check c1"))
    c:close(1000)
  end)

  it("is the table the listener holds, and its headers the ones it holds", function()
    local c = open(srv, "/held", "h1")
    assert.equal("held=true", say(c, "x"))
    c:close(1000)
    c = open(srv, "/held_headers", "h2")
    assert.equal("held=true later=1", say(c, "x"))
    c:close(1000)
  end)

  it("gives the fields a listener table's socket sees, socket.id, socket.protocol and tostring", function()
    local c = open(srv, "/protocol?k=v", "f1", { protocols = { "x", "chat" } })
    local f = cjson.decode(say(c, "fields"))
    local r = f.request
    assert.equal("GET", r.method)
    assert.equal("/protocol", r.uri)
    assert.equal("k=v", r.query_string)
    assert.equal("HTTP/1.1", r.protocol)
    assert.equal("ws", r.scheme)
    assert.equal("127.0.0.1", r.remote_addr)
    assert.equal("127.0.0.1", r.server_name)
    assert.equal(srv.port, r.server_port)
    assert.equal("f1", r.headers["x-tag"])
    assert.equal("websocket", r.headers.upgrade)
    assert.equal("x, chat", r.headers["sec-websocket-protocol"])
    assert.equal("chat", f.protocol)
    local id = assert(math.tointeger(f.id))   -- cjson decodes numbers as floats
    assert.equal("luaws.socket(" .. id .. ")", f.tostring)
    c:close(1000)
    c = open(srv, "/plain", "f2")
    assert.equal("none", cjson.decode(say(c, "fields")).protocol)
    c:close(1000)
  end)

  it("socket.data is made on first use and kept across events", function()
    local c = open(srv, "/plain", "d1")
    local id = say(c, "dataid")
    assert.truthy(id:match("^table: "), id)
    assert.equal("v1 set", say(c, "set a 1"))
    assert.equal("v1 a=1", say(c, "get a"))
    assert.equal(id, say(c, "dataid"))
    c:close(1000)
  end)

  it("the script's own values win over the made ones, nil included", function()
    local c = open(srv, "/plain", "o1")
    assert.equal("nil mine seven false luaws.socket(seven)", say(c, "override"))
    c:close(1000)
  end)

  it("socket.data and socket.request survive a hot reload, built or not yet", function()
    local a = open(srv, "/plain?x=1", "r1")       -- request read before the reload
    assert.equal("v1 ident=true twice=true", say(a, "ident"))
    assert.equal("v1 set", say(a, "set k 7"))
    local b = open(srv, "/query?room=z", "r2")    -- nothing read before the reload
    local d = open(srv, "/changed", "r3")
    local mark = srv:mark()
    server.write_file(srv.script, (SOURCE:gsub('local V = "v1"', 'local V = "v2"')))
    srv:wait_log("reloaded %(file changed%).-: 3 connections moved", { after = mark })
    assert.equal("v2 ident=true twice=true", say(a, "ident"))
    assert.equal("v2 k=7", say(a, "get k"))
    -- The new handler was given the request again (built, not kept).
    assert.equal("v2 collected=true same=true handlers=false", say(b, "check r2"))
    assert.equal("v2 ident=true twice=true", say(b, "ident"))
    assert.equal("v2 collected=false same=true handlers=true", say(d, "check r3"))
    for _, c in ipairs { a, b, d } do c:close(1000) end
  end)

  it("costs at most " .. IDLE_HEAP_MAX .. " bytes of Lua heap per idle connection (luaws_lua_heap_bytes)", function()
    local N = 200
    get(srv, "/gc")
    local before = heap_gauge(srv)
    local conns = {}
    for i = 1, N do conns[i] = H.open(srv, "/idle") end
    -- every handshake done and its on_message run once
    for i = 1, N do assert.equal("m", say(conns[i], "m")) end
    get(srv, "/gc")
    local after = heap_gauge(srv)
    local per = (after - before) / N
    print(string.format("lazy_spec: Lua heap %d -> %d bytes over %d idle connections: %.0f bytes each",
      before, after, N, per))
    assert.truthy(per <= IDLE_HEAP_MAX, string.format("%.0f bytes per idle connection", per))
    for i = 1, N do conns[i]:close(1000) end
  end)
end)
