-- Self-test of spec/support/wsclient.lua: pure functions, and sessions
-- against the node `ws` reference server (spec/support/node_echo_server.js),
-- which also serves as the oracle for spec/support/violations.lua: every case
-- the reference server judges the same way proves the client sends the bytes
-- the case claims.
local wsc = require "spec.support.wsclient"
local server = require "spec.support.server"
local V = require "spec.support.violations"
local H = require "spec.support.helpers"

local NODE_CMD = { "env", "NODE_PATH=/usr/share/nodejs", "/usr/bin/node", "spec/support/node_echo_server.js" }

describe("wsclient", function()
  describe("pure functions", function()
    it("computes the RFC 6455 example Sec-WebSocket-Accept", function()
      assert.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", wsc.accept_for("dGhlIHNhbXBsZSBub25jZQ=="))
    end)

    it("computes SHA-1 test vectors", function()
      assert.equal("a9993e364706816aba3e25717850c26c9cd0d89d", H.hex(wsc.sha1("abc")))
      assert.equal("da39a3ee5e6b4b0d3255bfef95601890afd80709", H.hex(wsc.sha1("")))
      assert.equal("84983e441c3bd26ebaae4aa1f95129e5e54670f1",
        H.hex(wsc.sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")))
    end)

    it("masks as the RFC example (Hello with 37 fa 21 3d)", function()
      local f = wsc.encode_frame { opcode = 1, payload = "Hello", mask = "\x37\xfa\x21\x3d" }
      assert.equal("818537fa213d7f9f4d5158", H.hex(f))
    end)

    it("masking is an involution for every length", function()
      for n = 0, 20 do
        local s = H.bytes(n, n)
        assert.equal(s, wsc.mask(wsc.mask(s, "abcd"), "abcd"))
      end
    end)

    it("encodes the three length forms and overrides", function()
      assert.equal("8105", H.hex(wsc.encode_frame { opcode = 1, payload = "Hello", mask = false }):sub(1, 4))
      assert.equal("827e0100", H.hex(wsc.encode_frame { opcode = 2, payload = string.rep("x", 256), mask = false }):sub(1, 8))
      assert.equal("827f0000000000010000",
        H.hex(wsc.encode_frame { opcode = 2, payload = string.rep("x", 65536), mask = false }):sub(1, 20))
      assert.equal("817e0005", H.hex(wsc.encode_frame { opcode = 1, payload = "Hello", mask = false, length_form = "16" }):sub(1, 8))
      assert.equal("0107", H.hex(wsc.encode_frame { opcode = 1, fin = false, payload = "a", length = 7, mask = false }):sub(1, 4))
      assert.equal("f9", H.hex(wsc.encode_frame { opcode = 9, rsv1 = true, rsv2 = true, rsv3 = true, mask = false }):sub(1, 2))
    end)
  end)

  describe("against the node ws reference server", function()
    local srv
    lazy_setup(function() srv = server.start { command = NODE_CMD } end)
    lazy_teardown(function() if srv then srv:stop() end end)

    local function greeted()
      local c = assert(wsc.connect(srv.host, srv.port, { path = "/x?y=1", protocols = { "a", "b" } }))
      assert.equal(101, c.status)
      assert.is_true(c.accept_ok)
      assert.equal("I will echo your messages", (H.read(c)))
      return c
    end

    it("echoes text and binary of every size", function()
      local c = greeted()
      for _, n in ipairs { 0, 125, 126, 65535, 65536, 1 << 20 } do
        c:send_text(H.text(n))
        assert.is_true((H.read(c)) == H.text(n))
        local b = H.bytes(n)
        c:send_binary(b)
        local data, kind = H.read(c)
        assert.equal("binary", kind)
        assert.is_true(data == b)
      end
      assert.equal(1000, (c:close(1000)))
    end)

    it("fragments, interleaves pings, and chops bytes correctly", function()
      local c = greeted()
      c:send_fragmented("text", { "a", "b", "c" }, function(i) c:ping("p" .. i) end)
      assert.equal("p1", (H.read(c)))
      assert.equal("p2", (H.read(c)))
      assert.equal("abc", (H.read(c)))
      c:send_frame { opcode = 2, payload = H.bytes(300), chop = 1 }
      assert.equal(H.bytes(300), (H.read(c)))
      c:send_text("exit")
      local code, _, tcp_closed = c:expect_close()
      assert.equal(1000, code)
      assert.is_true(tcp_closed)
    end)

    it("read_message(auto_pong) answers pings", function()
      local c = greeted()
      c:send_text("msg")
      assert.equal("msg", (c:read_message { auto_pong = true }))
      c:close(1000)
    end)

    it("reports a rejected handshake", function()
      -- ws accepts versions 8 and 13 and answers others with 400
      local c = assert(wsc.connect(srv.host, srv.port, { version = "7" }))
      assert.equal(400, c.status)
      assert.is_nil(c.headers["sec-websocket-accept"])
      c:shutdown()
      c = assert(wsc.connect(srv.host, srv.port, { omit = { ["sec-websocket-key"] = true } }))
      assert.equal(400, c.status)
      c:shutdown()
    end)

    describe("agrees on the violation cases", function()
      for _, case in ipairs(V) do
        if case.oracle ~= false then
          it(case.name, function()
            local c = greeted()
            case.send(c)
            local code, err, tcp_closed = c:expect_close()
            assert.truthy(code, tostring(err))
            local ok = false
            for _, x in ipairs(case.codes) do ok = ok or x == code end
            assert.is_true(ok, "reference server answered " .. tostring(code))
            assert.is_true(tcp_closed)
          end)
        end
      end
    end)
  end)
end)
