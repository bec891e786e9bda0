-- 1.x Framing: text (1.1) and binary (1.2) messages of the lengths around the
-- 7/16/64-bit length encodings, one chopped delivery; 1.3 (beyond Autobahn)
-- masking and length-field rules of RFC 6455 5.1/5.2.
return function(case)
  local LENGTHS = { 0, 125, 126, 127, 128, 65535, 65536 }

  for sub, spec in ipairs { { kind = "text", byte = "*" }, { kind = "binary", byte = "\254" } } do
    for i, len in ipairs(LENGTHS) do
      case(string.format("1.%d.%d", sub, i),
        string.format("Send a %s message with a payload of %d bytes; expect it echoed", spec.kind, len),
        function(t)
          t:connect()
          local data = spec.byte:rep(len)
          t:roundtrip(spec.kind, data)
          t:finish()
        end)
    end
    case(string.format("1.%d.8", sub),
      string.format("Send a %s message of 65536 bytes in writes of 997 bytes; expect it echoed", spec.kind),
      function(t)
        t:connect()
        local data = spec.byte:rep(65536)
        t:roundtrip(spec.kind, data, { chop = 997 })
        t:finish()
      end)
  end

  case("1.3.1", "Send an unmasked text frame; a server MUST fail the connection (1002)", function(t)
    t:connect()
    t:send(t:text("Hello, world!", { mask = false }))
    t:expect_fail(1002)
  end)

  case("1.3.2", "Send a frame whose 64-bit length has the most significant bit set (1002)", function(t)
    t:connect()
    -- header only: 0x81, 0xFF (mask + 127), then 8 length bytes with the MSB set
    t:send_bytes("\129\255" .. string.pack(">I8", 0x8000000000000005) .. "\1\2\3\4" .. "abcde")
    t:expect_fail(1002)
  end)

  case("1.3.3", "Send a text message masked with the all-zero key; expect it echoed", function(t)
    t:connect()
    t:send(t:text("zero mask key", { mask = "\0\0\0\0" }))
    t:expect_message("text", "zero mask key")
    t:finish()
  end)

  case("1.3.4", "Send a text frame header announcing 2^40 bytes (beyond the message limit); expect close 1009", function(t)
    t:connect()
    t:send_bytes("\129\255" .. string.pack(">I8", 1 << 40) .. "\1\2\3\4")
    t:expect_fail(1009)
  end)
end
