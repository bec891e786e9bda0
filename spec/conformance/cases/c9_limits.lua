-- 9.x Limits and performance: large messages up to 16 MiB (the default
-- --max-message, which a message may reach but not exceed), fragmented with
-- various fragment sizes, chopped into various write sizes, and many
-- messages in a row. Cases marked large run only with CONFORMANCE_LARGE=1 /
-- run.lua --large (9.1/9.2 up to 256 KiB and 9.7/9.8 with 100 messages run
-- always).
local P = require "spec.conformance.payloads"

local KiB, MiB = 1024, 1024 * 1024

return function(case)
  local KINDS = { { "text", P.big_text }, { "binary", P.big_binary } }

  for k, kind in ipairs(KINDS) do
    for i, size in ipairs { 64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB, 8 * MiB, 16 * MiB } do
      case(string.format("9.%d.%d", k, i),
        string.format("Send a %s message of %d KiB; expect it echoed", kind[1], size // KiB),
        function(t)
          t:connect()
          t:roundtrip(kind[1], kind[2](size))
          t:finish()
        end, { large = size > 256 * KiB })
    end
  end

  for k, kind in ipairs(KINDS) do
    for i, frag in ipairs { 64, 256, KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB } do
      case(string.format("9.%d.%d", k + 2, i),
        string.format("Send a 4 MiB %s message in fragments of %d bytes; expect it echoed", kind[1], frag),
        function(t)
          t:connect()
          t:roundtrip(kind[1], kind[2](4 * MiB), { frag = frag })
          t:finish()
        end, { large = true })
    end
  end

  for k, kind in ipairs(KINDS) do
    for i, chop in ipairs { 64, 128, 256, 512, 1024, 2048 } do
      case(string.format("9.%d.%d", k + 4, i),
        string.format("Send a 1 MiB %s message in one frame, written %d bytes at a time; expect it echoed", kind[1], chop),
        function(t)
          t:connect()
          t:roundtrip(kind[1], kind[2](MiB), { chop = chop })
          t:finish()
        end, { large = true })
    end
  end

  for k, kind in ipairs(KINDS) do
    for i, size in ipairs { 0, 16, 64, 256, 1024, 4096 } do
      case(string.format("9.%d.%d", k + 6, i),
        string.format("Send 1000 %s messages of %d bytes (100 unless large), each after the previous echo; " ..
          "expect every echo", kind[1], size),
        function(t)
          t:connect()
          local data = kind[2](size)
          for _ = 1, t.target.large and 1000 or 100 do t:roundtrip(kind[1], data) end
          t:finish()
        end)
    end
  end
end
