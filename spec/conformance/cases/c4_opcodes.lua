-- 4.x Reserved opcodes: 3-7 (non-control, 4.1) and 11-15 (control, 4.2)
-- MUST fail the connection (RFC 6455 5.2) with 1002.
return function(case)
  for group, ops in ipairs { { 3, 4, 5, 6, 7 }, { 11, 12, 13, 14, 15 } } do
    local kind = group == 1 and "non-control" or "control"
    local o1, o2, o3, o4, o5 = table.unpack(ops)

    case(string.format("4.%d.1", group), string.format("Send a frame with reserved %s opcode %d; expect close 1002", kind, o1),
      function(t)
        t:connect()
        t:send { opcode = o1, payload = "" }
        t:expect_fail(1002)
      end)

    case(string.format("4.%d.2", group),
      string.format("Send a frame with reserved %s opcode %d and a payload; expect close 1002", kind, o2),
      function(t)
        t:connect()
        t:send { opcode = o2, payload = "reserved opcode payload" }
        t:expect_fail(1002)
      end)

    for k, op in ipairs { o3, o4, o5 } do
      local with_payload = k > 1
      case(string.format("4.%d.%d", group, k + 2),
        string.format("Send a small text message, then a frame with reserved %s opcode %d%s, then a ping; " ..
          "expect the echo, then close 1002", kind, op, with_payload and " and a payload" or ""),
        function(t)
          t:connect()
          t:send { t:text("Hello, world!"), { opcode = op, payload = with_payload and "reserved opcode payload" or "" },
                   t:ping_frame("") }
          t:expect_echo_then_fail("text", "Hello, world!", 1002)
        end)
    end
  end
end
