-- 3.x Reserved bits: with no extension negotiated, a frame with any RSV bit
-- set MUST fail the connection (RFC 6455 5.2) with 1002. RSV is written as a
-- 3-bit number, RSV1 its most significant bit (as Autobahn numbers them).
return function(case)
  local function rsv(n, f)
    f.rsv1 = (n & 4) ~= 0; f.rsv2 = (n & 2) ~= 0; f.rsv3 = (n & 1) ~= 0
    return f
  end

  case("3.1", "Send a small text message with RSV = 1; expect close 1002", function(t)
    t:connect()
    t:send(rsv(1, t:text("Hello, world!")))
    t:expect_fail(1002)
  end)

  local function echo_then_bad(t, n, chop)
    t:connect()
    t:send({ t:text("Hello, world!"), rsv(n, t:text("Hello, world!")), t:ping_frame("") }, { chop = chop })
    t:expect_echo_then_fail("text", "Hello, world!", 1002)   -- and no pong: the ping comes after the bad frame
  end

  case("3.2", "Send a small text message, then one with RSV = 2, then a ping; expect the echo, then close 1002",
    function(t) echo_then_bad(t, 2) end)
  case("3.3", "As 3.2 with RSV = 3, written frame by frame", function(t) echo_then_bad(t, 3, "frame") end)
  case("3.4", "As 3.2 with RSV = 4, written 1 byte at a time", function(t) echo_then_bad(t, 4, 1) end)

  case("3.5", "Send a small binary message with RSV = 5; expect close 1002", function(t)
    t:connect()
    t:send(rsv(5, t:binary("\0\255\254\253\252\251\0\255")))
    t:expect_fail(1002)
  end)

  case("3.6", "Send a ping with RSV = 6; expect close 1002 (no pong)", function(t)
    t:connect()
    t:send(rsv(6, t:ping_frame("Hello, world!")))
    t:expect_fail(1002)
  end)

  case("3.7", "Send a close frame with RSV = 7; expect close 1002", function(t)
    t:connect()
    t:send(rsv(7, t:close_frame(1000)))
    t.sent_close = true   -- we did send a close; the server still owes a 1002
    t:expect_fail(1002)
  end)
end
