-- 7.x Close handling (RFC 6455 5.5.1, 7.1, 7.4): the server answers a close
-- with a close echoing the code (1000 accepted too) and then closes TCP —
-- the server closes first (7.1.1); data after a close is ignored; malformed
-- close frames and codes a peer must not send fail the connection with 1002,
-- an invalid UTF-8 reason with 1007.
--
-- Valid codes: 1000-1003, 1007-1014, 3000-4999. Invalid (answered with
-- 1002): 0-999, 1004-1006, 1015, 1016-2999, >= 5000.
return function(case)
  case("7.1.1", "Send a text message, then a close; expect the echo, then the close answer", function(t)
    t:connect()
    t:roundtrip("text", "Hello World!")
    t:close(1000)
  end)

  case("7.1.2", "Send two close frames; expect one close answer, the second close ignored", function(t)
    t:connect()
    t:send { t:close_frame(1000), t:close_frame(1000) }
    t:close(1000, nil, { sent = true })
  end)

  case("7.1.3", "Send a close, then a ping; expect the close answer and no pong", function(t)
    t:connect()
    t:send { t:close_frame(1000), t:ping_frame("Hello World!") }
    t:close(1000, nil, { sent = true })
  end)

  case("7.1.4", "Send a close, then a text message; expect the close answer and no echo", function(t)
    t:connect()
    t:send { t:close_frame(1000), t:text("Hello World!") }
    t:close(1000, nil, { sent = true })
  end)

  case("7.1.5", "Send a message fragment, a close, then the final fragment; expect the close answer and no echo",
    function(t)
      t:connect()
      t:send { t:text("fragment1", { fin = false }), t:close_frame(1000), t:cont("fragment2", true) }
      t:close(1000, nil, { sent = true })
    end)

  case("7.1.6", "Send a 256 KiB text message, a small one, a close and a ping back to back; expect the echoes " ..
    "(those answered before the close), the close answer, no pong", function(t)
    t:connect()
    local big = ("BAsd7&jh23"):rep(26215):sub(1, 256 * 1024)
    t:send { t:text(big), t:text("Hello World!"), t:close_frame(1000), t:ping_frame("") }
    -- Autobahn rates this case informational: a server may answer the close
    -- before it got round to echoing. Allowed: a prefix of the two echoes.
    local want, n = { big, "Hello World!" }, 0
    t:close(1000, nil, { sent = true, allow = function(ev)
      if ev.type == "message" and ev.kind == "text" and ev.data == want[n + 1] then n = n + 1; return true end
    end })
    if n < 2 then t:note("%d of 2 messages echoed before the close", n) end
  end)

  case("7.3.1", "Send a close with an empty payload; expect a close answer (empty or 1000)", function(t)
    t:connect()
    t:close(nil)
  end)

  case("7.3.2", "Send a close with a 1-byte payload; expect close 1002", function(t)
    t:connect()
    t:send { opcode = 8, payload = "a" }
    t.sent_close = true
    t:expect_fail(1002)
  end)

  case("7.3.3", "Send a close with code 1000 and no reason; expect close 1000", function(t)
    t:connect()
    t:close(1000)
  end)

  case("7.3.4", "Send a close with code 1000 and a reason; expect close 1000", function(t)
    t:connect()
    t:close(1000, "Hello World!")
  end)

  case("7.3.5", "Send a close with code 1000 and a 123-byte reason (the maximum); expect close 1000", function(t)
    t:connect()
    t:close(1000, ("*"):rep(123))
  end)

  case("7.3.6", "Send a close with code 1000 and a 124-byte reason (a 126-byte control frame); expect close 1002",
    function(t)
      t:connect()
      t:send(t:close_frame(1000, ("*"):rep(124)))
      t.sent_close = true
      t:expect_fail(1002)
    end)

  case("7.5.1", "Send a close with code 1000 and an invalid UTF-8 reason; expect close 1007", function(t)
    t:connect()
    t:send(t:close_frame(1000, "\206\186\225\189\185\207\131\206\188\206\181\237\160\128edited"))
    t.sent_close = true
    t:expect_fail(1007)
  end)

  local VALID = { 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    1012, 1013, 1014 }
  for i, code in ipairs(VALID) do
    case("7.7." .. i, string.format("Send a close with valid code %d; expect the close answer (%d or 1000)", code, code),
      function(t)
        t:connect()
        t:close(code)
      end)
  end

  local INVALID = { 0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 1015, 1, 1017, 2500 }
  for i, code in ipairs(INVALID) do
    case("7.9." .. i, string.format("Send a close with invalid code %d; expect close 1002", code), function(t)
      t:connect()
      t:send(t:close_frame(code))
      t.sent_close = true
      t:expect_fail(1002)
    end)
  end

  for i, code in ipairs { 5000, 65535, 10000 } do
    case("7.13." .. i, string.format("Send a close with code %d (outside every range); expect close 1002", code),
      function(t)
        t:connect()
        t:send(t:close_frame(code))
        t.sent_close = true
        t:expect_fail(1002)
      end)
  end
end
