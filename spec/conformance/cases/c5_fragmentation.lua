-- 5.x Fragmentation (RFC 6455 5.4): control frames cannot be fragmented,
-- control frames may come between fragments, continuation frames need a
-- message to continue, a new data frame cannot start inside a message.
-- "Written frame by frame" and "1 byte at a time" send the same bytes with a
-- different write pattern (TCP_NODELAY is on, so writes become segments).
return function(case)
  local CHOPS = { { nil, "" }, { "frame", ", written frame by frame" }, { 1, ", written 1 byte at a time" } }

  case("5.1", "Send a ping fragmented into 2 fragments; expect close 1002", function(t)
    t:connect()
    t:send { { opcode = 9, payload = "fragment1", fin = false }, t:cont("fragment2", true) }
    t:expect_fail(1002)
  end)

  case("5.2", "Send a pong fragmented into 2 fragments; expect close 1002", function(t)
    t:connect()
    t:send { { opcode = 10, payload = "fragment1", fin = false }, t:cont("fragment2", true) }
    t:expect_fail(1002)
  end)

  for k, ch in ipairs(CHOPS) do
    case("5." .. (2 + k), "Send a text message in 2 fragments" .. ch[2] .. "; expect it echoed", function(t)
      t:connect()
      t:send({ t:text("fragment1", { fin = false }), t:cont("fragment2", true) }, { chop = ch[1] })
      t:expect_message("text", "fragment1fragment2")
      t:finish()
    end)
  end

  for k, ch in ipairs(CHOPS) do
    case("5." .. (5 + k), "Send a text message in 2 fragments with a ping between them" .. ch[2] ..
      "; expect the pong, then the echo", function(t)
      t:connect()
      t:send({ t:text("fragment1", { fin = false }), t:ping_frame("ping payload"), t:cont("fragment2", true) },
        { chop = ch[1] })
      t:expect_pong("ping payload")
      t:expect_message("text", "fragment1fragment2")
      t:finish()
    end)
  end

  for k, ch in ipairs(CHOPS) do
    case("5." .. (8 + k), "Send a final continuation frame with nothing to continue, then a text message" .. ch[2] ..
      "; expect close 1002 and no echo", function(t)
      t:connect()
      t:send({ t:cont("non-continuation payload", true), t:text("Hello, world!") }, { chop = ch[1] })
      t:expect_fail(1002)
    end)
  end

  for k, ch in ipairs(CHOPS) do
    case("5." .. (11 + k), "Send a non-final continuation frame with nothing to continue, then a text message" ..
      ch[2] .. "; expect close 1002 and no echo", function(t)
      t:connect()
      t:send({ t:cont("non-continuation payload", false), t:text("Hello, world!") }, { chop = ch[1] })
      t:expect_fail(1002)
    end)
  end

  case("5.15", "Send a text message in 2 fragments, then a continuation with nothing to continue, then a text " ..
    "message; expect the echo of the first, then close 1002", function(t)
    t:connect()
    t:send { t:text("fragment1", { fin = false }), t:cont("fragment2", true), t:cont("fragment3", false),
             t:text("fragment4") }
    t:expect_echo_then_fail("text", "fragment1fragment2", 1002)
  end)

  case("5.16", "Twice: a non-final continuation with nothing to continue, then a text message in 2 fragments; " ..
    "expect close 1002", function(t)
    t:connect()
    local f = { t:cont("fragment1", false), t:text("fragment2", { fin = false }), t:cont("fragment3", true) }
    t:send { f[1], f[2], f[3], t:cont("fragment1", false), t:text("fragment2", { fin = false }), t:cont("fragment3", true) }
    t:expect_fail(1002)
  end)

  case("5.17", "Twice: a final continuation with nothing to continue, then a text message in 2 fragments; " ..
    "expect close 1002", function(t)
    t:connect()
    t:send { t:cont("fragment1", true), t:text("fragment2", { fin = false }), t:cont("fragment3", true),
             t:cont("fragment1", true), t:text("fragment2", { fin = false }), t:cont("fragment3", true) }
    t:expect_fail(1002)
  end)

  case("5.18", "Send a text message in 2 fragments, both with the text opcode; expect close 1002", function(t)
    t:connect()
    t:send { t:text("fragment1", { fin = false }), t:text("fragment2") }
    t:expect_fail(1002)
  end)

  -- Autobahn pauses a second between the groups; here the pong of each ping
  -- proves the server has taken the fragments before it, with no waiting.
  local function five_fragments(t, chop)
    t:connect()
    t:send({ t:text("fragment1", { fin = false }), t:cont("fragment2", false), t:ping_frame("pongme 1!") }, { chop = chop })
    t:expect_pong("pongme 1!")
    t:send({ t:cont("fragment3", false), t:cont("fragment4", false), t:ping_frame("pongme 2!") }, { chop = chop })
    t:expect_pong("pongme 2!")
    t:send({ t:cont("fragment5", true) }, { chop = chop })
    t:expect_message("text", "fragment1fragment2fragment3fragment4fragment5")
    t:finish()
  end
  case("5.19", "Send a text message in 5 fragments with 2 pings between, each ping answered before going on; " ..
    "expect the pongs, then the echo", function(t) five_fragments(t) end)
  case("5.20", "As 5.19, written 1 byte at a time", function(t) five_fragments(t, 1) end)

  -- Beyond Autobahn's list.
  case("5.21", "Send a close frame with FIN = 0; expect close 1002", function(t)
    t:connect()
    t:send(t:close_frame(1000, nil, { fin = false }))
    t.sent_close = true
    t:expect_fail(1002)
  end)

  case("5.22", "Send a binary message in 3 fragments, the first and last empty, with a pong between; " ..
    "expect the echo", function(t)
    t:connect()
    t:send { t:binary("", { fin = false }), t:cont("\0\1\2\255", false), t:pong_frame("x"), t:cont("", true) }
    t:expect_message("binary", "\0\1\2\255")
    t:finish()
  end)
end
