-- Plain HTTP, the upgrade handshake and its rejections, handler errors,
-- subprotocols and the listener-table shortcut.
local wsc = require "spec.support.wsclient"
local H = require "spec.support.helpers"

local function count(srv)
  local r = assert(wsc.http(srv.host, srv.port, { path = "/count", headers = { Host = "x" } }))
  assert.equal(200, r.status)
  return tonumber(r.body)
end

describe("HTTP", function()
  local srv
  lazy_setup(function() srv = H.start { script = "spec/scripts/http.lua" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  describe("plain responses", function()
    it("returns status, headers and body from the handler", function()
      local r = assert(wsc.http(srv.host, srv.port, { path = "/hello", headers = { Host = "h" } }))
      assert.equal(200, r.status)
      assert.equal("hello world", r.body)
      assert.equal("yes", r.headers["x-custom"])
      assert.equal("text/plain", r.headers["content-type"])
      assert.equal("11", r.headers["content-length"])
    end)

    it("uses the status code the handler chose", function()
      for _, code in ipairs { 201, 404, 418, 503 } do
        local r = assert(wsc.http(srv.host, srv.port, { path = "/status/" .. code, headers = { Host = "h" } }))
        assert.equal(code, r.status)
        assert.equal("status " .. code, r.body)
      end
    end)

    it("sends a 1 MiB body intact", function()
      local r = assert(wsc.http(srv.host, srv.port, { path = "/big", headers = { Host = "h" } }))
      assert.equal(200, r.status)
      assert.equal(1 << 20, #r.body)
      assert.equal(string.rep("0123456789abcdef", 65536), r.body)
    end)

    it("a 204 has no body", function()
      local c = assert(wsc.tcp(srv.host, srv.port))
      local r = assert(c:request { path = "/empty", headers = { Host = "h" } })
      assert.equal(204, r.status)
      assert.truthy(r.body == nil or r.body == "")
      -- the connection is still usable: the next response parses cleanly
      local r2 = assert(c:request { path = "/hello", headers = { Host = "h" } })
      assert.equal("hello world", r2.body)
      c:shutdown()
    end)

    it("fills the request table for plain HTTP (scheme http, body, query, headers)", function()
      local r = assert(wsc.http(srv.host, srv.port, {
        method = "POST", path = "/dump/me?x=1&y=two",
        headers = { { "Host", "example.test:1234" }, { "X-Multi", "a" }, { "X-Multi", "b" },
                    { "Content-Type", "text/plain" } },
        body = "the body",
      }))
      assert.equal(200, r.status)
      local req = H.parse_dump(r.body)
      assert.equal("POST", req.method.value)
      assert.equal("/dump/me", req.uri.value)
      assert.equal("x=1&y=two", req.query_string.value)
      assert.equal("HTTP/1.1", req.protocol.value)
      assert.equal("http", req.scheme.value)
      assert.equal("the body", req.body.value)
      assert.equal("a, b", req.headers["x-multi"].value)
      assert.equal("example.test:1234", req.headers["host"].value)
      assert.equal("127.0.0.1", req.remote_addr.value)
      assert.equal(tostring(srv.port), req.server_port.value)
      assert.equal("number", req.server_port.type)
      assert.is_nil(req.headers["X-Multi"], "header keys must be lower-cased")
    end)

    it("query_string and body are nil when absent", function()
      local r = assert(wsc.http(srv.host, srv.port, { path = "/dump", headers = { Host = "h" } }))
      local req = H.parse_dump(r.body)
      assert.equal("nil", req.query_string.type)
      assert.equal("nil", req.body.type)
      assert.equal("GET", req.method.value)
    end)

    it("ws.upgrade_request is false for plain requests, and the request offers no protocols", function()
      local r = assert(wsc.http(srv.host, srv.port, { path = "/is-upgrade", headers = { Host = "h" } }))
      assert.equal("false", r.body)
      r = assert(wsc.http(srv.host, srv.port, { path = "/protocols", headers = { Host = "h" } }))
      assert.equal("", r.body)
    end)

    it("ws.request_protocols lists the offered subprotocols in order", function()
      local r = assert(wsc.http(srv.host, srv.port, { path = "/protocols",
        headers = { Host = "h", ["Sec-WebSocket-Protocol"] = "chat, superchat ,  v2" } }))
      assert.equal("chat,superchat,v2", r.body)
    end)

    it("ws.websocket_response tells listener responses from plain ones", function()
      local r = assert(wsc.http(srv.host, srv.port, { path = "/websocket-response", headers = { Host = "h" } }))
      assert.equal("true,false", r.body)
    end)

    it("a handler error gives 500, logs a traceback, and the server goes on", function()
      local mark = srv:mark()
      local r = assert(wsc.http(srv.host, srv.port, { path = "/error", headers = { Host = "h" } }))
      assert.equal(500, r.status)
      srv:wait_log("handler boom", { after = mark })
      srv:wait_log("traceback", { after = mark })
      local ok = assert(wsc.http(srv.host, srv.port, { path = "/hello", headers = { Host = "h" } }))
      assert.equal("hello world", ok.body)
    end)
  end)

  describe("keep-alive", function()
    it("serves several requests on one HTTP/1.1 connection", function()
      local c = assert(wsc.tcp(srv.host, srv.port))
      for i = 1, 5 do
        local r = assert(c:request { path = "/status/20" .. i, headers = { Host = "h" } })
        assert.equal(200 + i, r.status)
        assert.equal("status 20" .. i, r.body)
      end
      c:shutdown()
    end)

    it("answers pipelined requests in order", function()
      local c = assert(wsc.tcp(srv.host, srv.port))
      local reqs = {}
      for _, p in ipairs { "/status/201", "/hello", "/status/202" } do
        reqs[#reqs + 1] = wsc.format_request { path = p, headers = { Host = "h" } }
      end
      assert(c:send_raw(table.concat(reqs)))
      assert.equal(201, assert(c:read_response()).status)
      assert.equal("hello world", assert(c:read_response()).body)
      assert.equal(202, assert(c:read_response()).status)
      c:shutdown()
    end)

    it("a request after a 500 on the same connection still works", function()
      local c = assert(wsc.tcp(srv.host, srv.port))
      local r = assert(c:request { path = "/error", headers = { Host = "h" } })
      assert.equal(500, r.status)
      if (r.headers["connection"] or ""):lower() ~= "close" then
        local r2 = assert(c:request { path = "/hello", headers = { Host = "h" } })
        assert.equal("hello world", r2.body)
      else
        assert.is_true(c:tcp_closed())
      end
      c:shutdown()
    end)

    it("closes after the response when the client sends Connection: close", function()
      local c = assert(wsc.tcp(srv.host, srv.port))
      local r = assert(c:request { path = "/hello", headers = { Host = "h", Connection = "close" } })
      assert.equal("hello world", r.body)
      assert.is_true(c:tcp_closed())
      c:shutdown()
    end)

    it("closes after the response to an HTTP/1.0 request without keep-alive", function()
      local c = assert(wsc.tcp(srv.host, srv.port))
      local r = assert(c:request { path = "/hello", version = "HTTP/1.0", headers = { Host = "h" } })
      assert.equal(200, r.status)
      assert.equal("hello world", r.body)
      assert.is_true(c:tcp_closed())
      c:shutdown()
    end)
  end)

  describe("upgrade", function()
    it("answers 101 with a correct Sec-WebSocket-Accept", function()
      local c = assert(wsc.connect(srv.host, srv.port, { path = "/plain",
        key = "dGhlIHNhbXBsZSBub25jZQ==" }))
      assert.equal(101, c.status)
      assert.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", c.headers["sec-websocket-accept"])
      assert.equal("websocket", (c.headers["upgrade"] or ""):lower())
      assert.truthy((c.headers["connection"] or ""):lower():find("upgrade", 1, true))
      assert.equal("upgraded /plain", (H.read(c)))
      c:close(1000)
    end)

    it("accepts Connection: keep-alive, Upgrade and mixed-case tokens", function()
      local c = assert(wsc.connect(srv.host, srv.port, { path = "/tokens",
        connection = "keep-alive, Upgrade", upgrade = "WebSocket" }))
      assert.equal(101, c.status)
      assert.is_true(c.accept_ok)
      assert.equal("upgraded /tokens", (H.read(c)))
      c:close(1000)
    end)

    it("sends no Sec-WebSocket-Protocol when the handler chose none", function()
      local c = H.open(srv, "/none", { protocols = { "chat" } })
      assert.is_nil(c.headers["sec-websocket-protocol"])
      c:close(1000)
    end)

    it("returns the subprotocol the handler chose from the offered ones", function()
      local c = H.open(srv, "/protocol-first", { protocols = { "v2.chat", "v1.chat" } })
      assert.equal("v2.chat", c.headers["sec-websocket-protocol"])
      assert.equal("upgraded /protocol-first", (H.read(c)))
      c:close(1000)
    end)

    it("a protocol the client did not offer is a handler error: 500", function()
      local mark = srv:mark()
      local c = assert(wsc.connect(srv.host, srv.port, { path = "/protocol-bad", protocols = { "chat" } }))
      assert.equal(500, c.status)
      c:shutdown()
      srv:wait_log("not%-offered", { after = mark })
    end)

    it("a protocol chosen when none was offered is a handler error: 500", function()
      local c = assert(wsc.connect(srv.host, srv.port, { path = "/protocol-bad" }))
      assert.equal(500, c.status)
      c:shutdown()
    end)

    it("adds the handler's headers to the 101", function()
      local c = H.open(srv, "/upgrade-headers")
      assert.equal("yes", c.headers["x-extra"])
      c:close(1000)
    end)

    it("a handler error on an upgrade gives 500 and a logged traceback", function()
      local mark = srv:mark()
      local c = assert(wsc.connect(srv.host, srv.port, { path = "/error" }))
      assert.equal(500, c.status)
      c:shutdown()
      srv:wait_log("handler boom on upgrade", { after = mark })
      srv:wait_log("traceback", { after = mark })
    end)

    it("a plain response to an upgrade request is sent as such (no upgrade)", function()
      local c = assert(wsc.connect(srv.host, srv.port, { path = "/refuse" }))
      assert.equal(403, c.status)
      assert.equal("refused", c.body)
      assert.is_nil(c.headers["sec-websocket-accept"])
      c:shutdown()
    end)
  end)

  describe("rejections before the handler runs", function()
    local function rejected(opts, status)
      local before = count(srv)
      local c = assert(wsc.connect(srv.host, srv.port, opts))
      assert.equal(status, c.status, "status line: " .. tostring(c.response.status_line))
      assert.is_nil(c.headers["sec-websocket-accept"])
      c:shutdown()
      -- /count is the only handler call in between: the rejected request never reached it
      assert.equal(before + 1, count(srv))
      return c
    end

    it("a non-GET upgrade gets 405", function()
      rejected({ method = "POST", path = "/count", body = "" }, 405)
      rejected({ method = "PUT", path = "/x" }, 405)
    end)

    it("Sec-WebSocket-Version other than 13 gets 426 with Sec-WebSocket-Version: 13", function()
      for _, v in ipairs { "8", "12", "14", "abc" } do
        local c = rejected({ version = v, path = "/count" }, 426)
        assert.equal("13", c.headers["sec-websocket-version"])
      end
    end)

    it("a missing Sec-WebSocket-Version gets 426 (or 400)", function()
      local before = count(srv)
      local c = assert(wsc.connect(srv.host, srv.port, { omit = { ["sec-websocket-version"] = true } }))
      assert.truthy(c.status == 426 or c.status == 400, "status " .. c.status)
      c:shutdown()
      assert.equal(before + 1, count(srv))
    end)

    it("a missing Sec-WebSocket-Key gets 400", function()
      rejected({ omit = { ["sec-websocket-key"] = true }, path = "/count" }, 400)
    end)

    it("an invalid Sec-WebSocket-Key gets 400", function()
      rejected({ key = "abc" }, 400)                                  -- not 16 bytes of base64
      rejected({ key = wsc.b64(string.rep("k", 15)) }, 400)            -- 15 bytes
      rejected({ key = wsc.b64(string.rep("k", 17)) }, 400)            -- 17 bytes
      rejected({ key = "!!!!!!!!!!!!!!!!!!!!!!==" }, 400)              -- not base64
    end)

    it("the server goes on after rejections", function()
      local c = H.open(srv, "/after")
      assert.equal("upgraded /after", (H.read(c)))
      c:close(1000)
    end)
  end)
end)

describe("a listener-table script", function()
  local srv
  lazy_setup(function() srv = H.start { script = "spec/scripts/listener_table.lua" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("answers plain HTTP with 426", function()
    local r = assert(wsc.http(srv.host, srv.port, { path = "/", headers = { Host = "h" } }))
    assert.equal(426, r.status)
  end)

  it("uses the table as the listener for every upgrade, whatever the path", function()
    for _, path in ipairs { "/", "/any/path?q=1" } do
      local c = H.open(srv, path)
      assert.equal("hello from a listener table", (H.read(c)))
      c:send_text("ping me back")
      assert.equal("ping me back", (H.read(c)))
      c:send_binary("\0\1")
      local data, kind = H.read(c)
      assert.equal("\0\1", data)
      assert.equal("binary", kind)
      assert.equal(1000, (c:close(1000)))
    end
  end)

  it("still applies the upgrade rejections", function()
    local c = assert(wsc.connect(srv.host, srv.port, { version = "8" }))
    assert.equal(426, c.status)
    assert.equal("13", c.headers["sec-websocket-version"])
    c:shutdown()
  end)
end)
