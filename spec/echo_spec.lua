-- Echo through spec/scripts/echo.lua (the Ring example): payload sizes around
-- the length-encoding boundaries, fragmented and chopped input, many
-- concurrent clients, error isolation and --max-message.
local wsc = require "spec.support.wsclient"
local H = require "spec.support.helpers"

local SIZES = { 0, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20 }

local function greeted(srv, path)
  local c = H.open(srv, path or "/")
  local g, kind = H.read(c)
  assert.equal("I will echo your messages", g)
  assert.equal("text", kind)
  return c
end

describe("echo", function()
  local srv
  lazy_setup(function() srv = H.start { script = "spec/scripts/echo.lua" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("greets, echoes, and closes with 1000 on \"exit\"", function()
    local c = greeted(srv)
    c:send_text("hello")
    assert.equal("hello", (H.read(c)))
    c:send_text("exit")
    local code, reason, tcp_closed = c:expect_close()
    assert.equal(1000, code)
    assert.equal("", reason)
    assert.is_true(tcp_closed)
  end)

  describe("sizes", function()
    local c
    lazy_setup(function() c = greeted(srv) end)
    lazy_teardown(function() if c then c:close(1000) end end)

    for _, n in ipairs(SIZES) do
      it("text of " .. n .. " bytes comes back as the same text", function()
        local payload = H.text(n)
        assert(c:send_text(payload))
        local data, kind, info = H.read(c)
        assert.equal("text", kind)
        assert.equal(n, #data)
        assert.is_true(data == payload, "payload differs")
        assert.is_false(info.rsv)
        assert.falsy(info.masked, "server frames must not be masked")
      end)

      it("binary of " .. n .. " bytes comes back as the same binary", function()
        local payload = H.bytes(n, n + 1)
        assert(c:send_binary(payload))
        local data, kind = H.read(c)
        assert.equal("binary", kind)
        assert.equal(n, #data)
        assert.is_true(data == payload, "payload differs")
      end)
    end

    it("uses the minimal length encoding in its frames", function()
      for _, n in ipairs { 125, 126, 65535, 65536 } do
        assert(c:send_binary(H.bytes(n)))
        local f = assert(c:read_frame())
        assert.equal(n, #f.payload)
        local want = n < 126 and "7" or (n < 65536 and "16" or "64")
        assert.equal(want, f.length_form, n .. " bytes")
      end
    end)

    it("multi-byte UTF-8 text survives intact", function()
      local payload = string.rep("κόσμε €𝄞 日本語 ", 5000)
      assert(c:send_text(payload))
      assert.is_true((H.read(c)) == payload)
    end)

    it("text with a NUL byte survives", function()
      assert(c:send_text("a\0b"))
      assert.equal("a\0b", (H.read(c)))
    end)
  end)

  describe("fragmented input", function()
    it("reassembles a fragmented text message", function()
      local c = greeted(srv)
      assert(c:send_fragmented("text", { "Hel", "lo, ", "world" }))
      local data, kind = H.read(c)
      assert.equal("Hello, world", data)
      assert.equal("text", kind)
      c:close(1000)
    end)

    it("reassembles a fragmented binary message", function()
      local c = greeted(srv)
      local parts = { H.bytes(100, 1), H.bytes(70000, 2), H.bytes(3, 3) }
      assert(c:send_fragmented("binary", parts))
      local data, kind = H.read(c)
      assert.equal("binary", kind)
      assert.is_true(data == table.concat(parts))
      c:close(1000)
    end)

    it("accepts empty fragments", function()
      local c = greeted(srv)
      assert(c:send_fragmented("text", { "", "a", "", "b", "" }))
      assert.equal("ab", (H.read(c)))
      c:close(1000)
    end)

    it("accepts a code point split across fragments", function()
      local c = greeted(srv)
      -- "€" is E2 82 AC
      assert(c:send_fragmented("text", { "price: \xe2", "\x82", "\xac 5" }))
      assert.equal("price: € 5", (H.read(c)))
      c:close(1000)
    end)

    it("answers a ping interleaved between fragments, then delivers the message", function()
      local c = greeted(srv)
      assert(c:send_fragmented("text", { "frag1 ", "frag2 ", "frag3" }, function(i)
        assert(c:ping("between " .. i))
      end))
      local data, kind = H.read(c)
      assert.equal("pong", kind)
      assert.equal("between 1", data)
      data, kind = H.read(c)
      assert.equal("pong", kind)
      assert.equal("between 2", data)
      data, kind = H.read(c)
      assert.equal("text", kind)
      assert.equal("frag1 frag2 frag3", data)
      c:close(1000)
    end)

    it("accepts a pong interleaved between fragments", function()
      local c = greeted(srv)
      assert(c:send_fragmented("binary", { "ab", "cd" }, function() assert(c:pong("x")) end))
      local data, kind = H.read(c)
      assert.equal("binary", kind)
      assert.equal("abcd", data)
      c:close(1000)
    end)

    it("a fragmented \"exit\" also closes", function()
      local c = greeted(srv)
      assert(c:send_fragmented("text", { "ex", "it" }))
      assert.equal(1000, (c:expect_close()))
    end)

    it("handles 1000 one-byte fragments", function()
      local c = greeted(srv)
      local parts = {}
      for i = 1, 1000 do parts[i] = string.char(97 + i % 26) end
      assert(c:send_fragmented("text", parts))
      assert.equal(table.concat(parts), (H.read(c)))
      c:close(1000)
    end)
  end)

  describe("bytes delivered in pieces", function()
    it("a frame sent one byte at a time", function()
      local c = greeted(srv)
      assert(c:send_frame { opcode = 1, payload = "byte by byte", chop = 1, pause = 0.0005 })
      assert.equal("byte by byte", (H.read(c)))
      c:close(1000)
    end)

    it("a 16-bit-length frame sent one byte at a time", function()
      local c = greeted(srv)
      local payload = H.bytes(300)
      assert(c:send_frame { opcode = 2, payload = payload, chop = 1 })
      assert.is_true((H.read(c)) == payload)
      c:close(1000)
    end)

    it("a 64-bit-length frame sent in 7-byte pieces", function()
      local c = greeted(srv)
      local payload = H.bytes(70000)
      assert(c:send_frame { opcode = 2, payload = payload, chop = 7 })
      assert.is_true((H.read(c)) == payload)
      c:close(1000)
    end)

    -- Past 16 KiB the server reads the rest of a frame straight into the
    -- message buffer: pieces of odd sizes, characters split across them, and
    -- the next frame right behind must all come out whole.
    it("large text frames in odd-sized pieces, multibyte characters split across them", function()
      local c = greeted(srv)
      local unit = "a\u{e9}\u{20ac}\u{1f600}"           -- 1 + 2 + 3 + 4 bytes
      local one = string.rep(unit, 20000)                  -- 200,000 bytes
      local two = string.rep("z", 30000) .. unit
      local blob = wsc.encode_frame { opcode = 1, payload = one }
          .. wsc.encode_frame { opcode = 1, payload = two }
      assert(c:send_raw(blob, { chop = 4099 }))
      assert.is_true((H.read(c)) == one, "first message differs")
      assert.is_true((H.read(c)) == two, "second message differs")
      c:close(1000)
    end)

    it("a large fragmented message with a ping between its fragments", function()
      local c = greeted(srv)
      local parts = { H.bytes(100000, 1), H.bytes(70000, 2), H.bytes(50000, 3) }
      assert(c:send_fragmented("binary", parts, function(i) if i == 1 then c:ping("mid") end end))
      local data, kind = H.read(c)
      assert.equal("pong", kind)
      assert.equal("mid", data)
      data, kind = H.read(c)
      assert.equal("binary", kind)
      assert.is_true(data == table.concat(parts), "message differs")
      c:close(1000)
    end)

    it("a large text frame with invalid UTF-8 deep inside fails with 1007", function()
      local c = greeted(srv)
      local payload = string.rep("a", 150000) .. "\xff" .. string.rep("b", 50000)
      assert(c:send_raw(wsc.encode_frame { opcode = 1, payload = payload }, { chop = 8192 }))
      local code = c:expect_close()
      assert.equal(1007, code)
    end)

    it("several frames in one write", function()
      local c = greeted(srv)
      local blob = wsc.encode_frame { opcode = 1, payload = "one" }
          .. wsc.encode_frame { opcode = 9, payload = "p" }
          .. wsc.encode_frame { opcode = 2, payload = "two" }
          .. wsc.encode_frame { opcode = 1, payload = "thr", fin = false }
          .. wsc.encode_frame { opcode = 0, payload = "ee" }
      assert(c:send_raw(blob))
      local got = {}
      for i = 1, 4 do
        local data, kind = H.read(c)
        got[i] = kind .. ":" .. data
      end
      assert.same({ "text:one", "pong:p", "binary:two", "text:three" }, got)
      c:close(1000)
    end)

    it("the upgrade request and a first frame in the same write", function()
      local key = wsc.b64(wsc.random_bytes(16))
      local raw = wsc.format_request { path = "/", headers = {
        { "Host", "127.0.0.1:" .. srv.port }, { "Upgrade", "websocket" }, { "Connection", "Upgrade" },
        { "Sec-WebSocket-Key", key }, { "Sec-WebSocket-Version", "13" } } }
      local c = assert(wsc.connect(srv.host, srv.port, {
        raw = raw .. wsc.encode_frame { opcode = 1, payload = "early bird" } }))
      assert.equal(101, c.status)
      assert.equal(wsc.accept_for(key), c.headers["sec-websocket-accept"])
      assert.equal("I will echo your messages", (H.read(c)))
      assert.equal("early bird", (H.read(c)))
      c:close(1000)
    end)
  end)

  describe("close handshake", function()
    it("a client close gets a close reply echoing the code, then TCP close", function()
      local c = greeted(srv)
      local code, _, tcp_closed = c:close(1000, "done")
      assert.equal(1000, code)
      assert.is_true(tcp_closed)
    end)

    local V = require "spec.support.violations"
    for _, code in ipairs(V.valid_close_codes) do
      it("valid close code " .. code .. " is answered without a protocol error", function()
        local c = greeted(srv)
        local rcode, _, tcp_closed = c:close(code, "r")
        assert.truthy(rcode == code or rcode == 1000,
          "reply to close " .. code .. " was " .. tostring(rcode))
        assert.is_true(tcp_closed)
      end)
    end

    it("a ping after the client's close gets no pong", function()
      local c = greeted(srv)
      assert(c:send_close(1000, ""))
      assert(c:ping("after close"))
      local data, kind = H.read(c)
      assert.equal("close", kind, "got " .. kind .. " " .. data)
      assert.is_true(c:tcp_closed())
    end)
  end)

  describe("100 concurrent clients", function()
    it("each gets its own messages back", function()
      local conns = {}
      for i = 1, 100 do conns[i] = greeted(srv) end
      for round = 1, 3 do
        for i, c in ipairs(conns) do assert(c:send_text("client " .. i .. " round " .. round)) end
        for i = 100, 1, -1 do
          assert.equal("client " .. i .. " round " .. round, (H.read(conns[i])))
        end
      end
      for i, c in ipairs(conns) do
        if i % 2 == 0 then assert.equal(1000, (c:close(1000))) else c:shutdown() end
      end
      -- the server is still fine
      local c = greeted(srv)
      c:send_text("after the crowd")
      assert.equal("after the crowd", (H.read(c)))
      c:close(1000)
    end)

    it("serves them interleaved with binary and fragments", function()
      local conns = {}
      for i = 1, 100 do conns[i] = greeted(srv) end
      for i, c in ipairs(conns) do
        assert(c:send_frame { opcode = 2, payload = "part" .. i, fin = false })
      end
      for i, c in ipairs(conns) do
        assert(c:send_frame { opcode = 0, payload = "/end" .. i, fin = true })
      end
      for i, c in ipairs(conns) do
        local data, kind = H.read(c)
        assert.equal("binary", kind)
        assert.equal("part" .. i .. "/end" .. i, data)
      end
      for _, c in ipairs(conns) do c:close(1000) end
    end)
  end)
end)

describe("a Lua error in one connection", function()
  local srv, mon
  lazy_setup(function() srv = H.start { script = "spec/scripts/control.lua" } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("closes that connection with 1011 and leaves the others alone", function()
    mon = H.monitor(srv)
    local a, b, d = H.subject(srv), H.subject(srv), H.subject(srv)
    b:send_text("!set k kept")
    assert.equal("set ok", (H.read(b)))
    a:send_text("!error " .. H.hex("only a"))
    assert.equal(1011, (a:expect_close()))
    b:send_text("b still here")
    assert.equal("b still here", (H.read(b)))
    b:send_text("!get k")
    assert.equal("get kept", (H.read(b)))
    d:send_binary("\1\2")
    assert.truthy((H.read(d)):find("^binary "))
    assert.equal("\1\2", (H.read(d)))
    local e = H.subject(srv)   -- new connections still open
    e:send_text("new")
    assert.equal("new", (H.read(e)))
    for _, c in ipairs { b, d, e } do assert.equal(1000, (c:close(1000))) end
    assert.equal(0, mon:count("^close " .. b.id .. " "))
    mon:close()
  end)

  it("many errors in a row do not wear the server down", function()
    for i = 1, 50 do
      local c = H.subject(srv)
      c:send_text("!error -")
      assert.equal(1011, (c:expect_close()), "round " .. i)
    end
    local c = H.subject(srv)
    c:send_text("fine")
    assert.equal("fine", (H.read(c)))
    c:close(1000)
  end)
end)

describe("--max-message", function()
  local srv
  lazy_setup(function() srv = H.start { script = "spec/scripts/echo.lua", max_message = 1000 } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("accepts a message of exactly the limit", function()
    local c = greeted(srv)
    c:send_binary(string.rep("m", 1000))
    assert.equal(1000, #(H.read(c)))
    c:close(1000)
  end)

  it("closes with 1009 on a single frame over the limit", function()
    local c = greeted(srv)
    c:send_binary(string.rep("m", 1001))
    local code, _, tcp_closed = c:expect_close()
    assert.equal(1009, code)
    assert.is_true(tcp_closed)
  end)

  it("closes with 1009 on a text frame over the limit", function()
    local c = greeted(srv)
    c:send_text(string.rep("t", 1001))
    assert.equal(1009, (c:expect_close()))
  end)

  it("closes with 1009 when the fragments add up to more than the limit", function()
    local c = greeted(srv)
    c:send_fragmented("text", { string.rep("a", 600), string.rep("b", 401) })
    assert.equal(1009, (c:expect_close()))
  end)

  it("closes with 1009 as soon as a frame header announces too much (no payload sent)", function()
    local c = greeted(srv)
    -- header only: a 1 MiB binary frame whose payload never comes
    assert(c:send_raw(string.char(0x82, 0x80 | 127) .. string.pack(">i8", 1 << 20) .. "\1\2\3\4"))
    assert.equal(1009, (c:expect_close()))
  end)

  it("fragments exactly at the limit are fine", function()
    local c = greeted(srv)
    c:send_fragmented("text", { string.rep("a", 600), string.rep("b", 400) })
    assert.equal(1000, #(H.read(c)))
    c:close(1000)
  end)

  it("control frames do not count toward the message size", function()
    local c = greeted(srv)
    c:send_fragmented("text", { string.rep("a", 500), string.rep("b", 500) }, function()
      c:ping(string.rep("p", 125))
    end)
    local data, kind = H.read(c)
    assert.equal("pong", kind)
    data, kind = H.read(c)
    assert.equal("text", kind)
    assert.equal(1000, #data)
    c:close(1000)
  end)
end)
