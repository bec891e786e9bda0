-- RFC 6455 strictness: malformed client input is answered with the right
-- close code (spec/support/violations.lua), the bad message never reaches the
-- script, and the server closes TCP. The same cases run against the node `ws`
-- reference server in wsclient_spec.lua.
local H = require "spec.support.helpers"
local V = require "spec.support.violations"

local function contains(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

describe("protocol violations", function()
  local srv
  lazy_setup(function() srv = H.start { script = "spec/scripts/echo.lua" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  for _, case in ipairs(V) do
    local want = table.concat(case.codes, " or ")
    it(case.name .. " -> close " .. want .. ", then TCP close", function()
      local c = H.open(srv, "/")
      assert.equal("I will echo your messages", (H.read(c)))
      case.send(c)
      local code, reason, tcp_closed, info = c:expect_close()
      assert.truthy(code, "no close frame (" .. tostring(reason) .. ")")
      assert.truthy(contains(case.codes, code), "close code " .. tostring(code) .. ", want " .. want)
      assert.is_true(tcp_closed, "TCP still open after the close: " .. tostring(info.after_close))
      for _, s in ipairs(info.skipped) do
        assert.is_false(s[1] == "text" or s[1] == "binary",
          "the bad input produced an echo: " .. s[1] .. " " .. H.hex(s[2]:sub(1, 40)))
      end
      assert.truthy(reason == nil or utf8.len(reason), "close reason is not UTF-8")
    end)
  end

  it("a violation on one connection leaves the others alone", function()
    local good = H.open(srv, "/")
    H.read(good)
    local bad = H.open(srv, "/")
    H.read(bad)
    bad:send_frame { opcode = 1, payload = "no mask", mask = false }
    assert.equal(1002, (bad:expect_close()))
    good:send_text("unaffected")
    assert.equal("unaffected", (H.read(good)))
    good:close(1000)
  end)

  it("data after a violation is not processed", function()
    local c = H.open(srv, "/")
    H.read(c)
    local wsc = require "spec.support.wsclient"
    c:send_raw(wsc.encode_frame { opcode = 3, payload = "" } .. wsc.encode_frame { opcode = 1, payload = "ignored" })
    local code, _, _, info = c:expect_close()
    assert.equal(1002, code)
    assert.equal(0, #info.skipped, "frames before the close: " .. #info.skipped)
  end)

  it("the server survives every violation above and still echoes", function()
    local c = H.open(srv, "/")
    H.read(c)
    c:send_text("alive")
    assert.equal("alive", (H.read(c)))
    c:close(1000)
  end)
end)

describe("handshake garbage", function()
  local srv
  lazy_setup(function() srv = H.start { script = "spec/scripts/echo.lua" } end)
  lazy_teardown(function() if srv then srv:stop() end end)
  local wsc = require "spec.support.wsclient"

  it("a malformed request line gets a 400 (or a close) and the server goes on", function()
    local c = assert(wsc.tcp(srv.host, srv.port))
    c:send_raw("THIS IS NOT HTTP\r\n\r\n")
    local r = c:read_response()
    assert.truthy(r == nil or r.status == 400, r and r.status_line)
    c:shutdown()
    local ok = H.open(srv, "/")
    assert.equal("I will echo your messages", (H.read(ok)))
    ok:close(1000)
  end)

  it("a client that disconnects in the middle of the request does not disturb the server", function()
    local c = assert(wsc.tcp(srv.host, srv.port))
    c:send_raw("GET / HTTP/1.1\r\nHost: x\r\nUpg")
    c:shutdown()
    local ok = H.open(srv, "/")
    assert.equal("I will echo your messages", (H.read(ok)))
    ok:close(1000)
  end)

  it("an upgrade request delivered one byte at a time works", function()
    local key = wsc.b64(wsc.random_bytes(16))
    local c = assert(wsc.tcp(srv.host, srv.port))
    c:send_raw(wsc.format_request { path = "/", headers = {
      { "Host", "x" }, { "Upgrade", "websocket" }, { "Connection", "Upgrade" },
      { "Sec-WebSocket-Key", key }, { "Sec-WebSocket-Version", "13" } } }, { chop = 1 })
    local r = assert(c:read_response())
    assert.equal(101, r.status)
    assert.equal(wsc.accept_for(key), r.headers["sec-websocket-accept"])
    assert.equal("I will echo your messages", (H.read(c)))
    c:close(1000)
  end)
end)
