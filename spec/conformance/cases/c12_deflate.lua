-- 12.x permessage-deflate (RFC 7692) with the plain offer: echo round trips
-- of several data sets and message sizes (12.1-12.5, Autobahn's message
-- sizes and fragmentations), then the protocol rules and edge cases of
-- compressed messages (12.6, beyond Autobahn).
--
-- The client compresses with lua-zlib as the negotiation allows (keeping its
-- LZ77 window across messages unless client_no_context_takeover); the server's
-- messages are inflated with one persistent stream unless it said
-- server_no_context_takeover, each on its own otherwise. When the server
-- declines (--deflate=off) the same cases run uncompressed, and the 12.6 cases
-- that set RSV1 expect close 1002 (RSV1 without a negotiated extension).
local P = require "spec.conformance.payloads"
local D = require "spec.conformance.deflate"

local M = {}

-- Autobahn's (payload length, auto-fragment size) list. Autobahn sends 1000
-- messages per case; here 10 (4 of more than 16 KiB), and with large 100
-- (20 of more than 4 KiB, 10 of more than 32 KiB).
M.MSG_SIZES = {
  { 16, 0 }, { 64, 0 }, { 256, 0 }, { 1024, 0 }, { 4096, 0 }, { 8192, 0 }, { 16384, 0 }, { 32768, 0 },
  { 65536, 0 }, { 131072, 0 },
  { 8192, 256 }, { 16384, 256 }, { 32768, 256 }, { 65536, 256 }, { 131072, 256 },
  { 131072, 1024 }, { 131072, 4096 }, { 131072, 32768 },
}

-- Round trips on a negotiated (or declined) connection. sets: list of data set
-- names used in turn.
function M.count(t, len)
  if t.target.large then return len > 32768 and 10 or len > 4096 and 20 or 100 end
  return len > 16384 and 4 or 10
end

function M.count_desc(len)
  return string.format("%d (%d if large)", len > 16384 and 4 or 10, len > 32768 and 10 or len > 4096 and 20 or 100)
end

function M.roundtrips(t, sets, len, frag, count)
  local slicers = {}
  for i, name in ipairs(sets) do slicers[i] = P.slicer(name) end
  local compressed = 0
  for i = 1, count do
    local k = (i - 1) % #sets + 1
    local kind = P.SETS[sets[k]].kind
    local msg = slicers[k](len)
    t:send_message(kind, msg, { frag = frag })
    local ev = t:expect_message(kind, msg, string.format("the echo of message %d", i))
    if ev.compressed then compressed = compressed + 1 end
  end
  if t.pmd then t:note("server compressed %d of %d echoes", compressed, count) end
end

-- A compressor for a message that must carry RSV1 even when nothing was
-- negotiated (then the server must fail with 1002).
local function compressed_frames(t, kind, data, o)
  if t.pmd then return t:message_frames(kind, data, o) end
  o = o or {}
  local payload = D.compressor { window = 15, takeover = false }:compress(data, o.how)
  return { { opcode = kind == "binary" and 2 or 1, payload = payload, rsv1 = true } }
end

function M.register(case)
  local SETS = { { "text" }, { "bitmap" }, { "random" }, { "json" }, { "html" } }
  for j, set in ipairs(SETS) do
    for i, sz in ipairs(M.MSG_SIZES) do
      local len, frag = sz[1], sz[2]
      case(string.format("12.%d.%d", j, i),
        string.format("Offer plain permessage-deflate; echo %s messages of %d bytes of %s%s",
          M.count_desc(len),
          len, P.SETS[set[1]].desc, frag > 0 and string.format(", in fragments of %d bytes", frag) or ""),
        function(t)
          t:negotiate({ "permessage-deflate" }, { plain = true })
          M.roundtrips(t, set, len, frag, M.count(t, len))
          t:finish()
        end)
    end
  end

  local OFFER = { "permessage-deflate" }
  local function open(t) return t:negotiate(OFFER, { plain = true }) end

  -- A control frame or continuation with RSV1: 1002 in every mode.
  case("12.6.1", "With permessage-deflate, send a ping with RSV1 set; expect close 1002", function(t)
    open(t)
    t:send(t:ping_frame("ping", { rsv1 = true }))
    t:expect_fail(1002)
  end)
  case("12.6.2", "With permessage-deflate, send a pong with RSV1 set; expect close 1002", function(t)
    open(t)
    t:send(t:pong_frame("pong", { rsv1 = true }))
    t:expect_fail(1002)
  end)
  case("12.6.3", "With permessage-deflate, send a close with RSV1 set; expect close 1002", function(t)
    open(t)
    t:send(t:close_frame(1000, nil, { rsv1 = true }))
    t.sent_close = true
    t:expect_fail(1002)
  end)
  case("12.6.4", "Send a compressed text message in 2 frames with RSV1 on both; expect close 1002", function(t)
    open(t)
    local f = compressed_frames(t, "text", ("Hello, compressed world! "):rep(20))
    local p = f[1].payload
    local cut = #p // 2
    t:send { { opcode = 1, payload = p:sub(1, cut), rsv1 = true, fin = false },
             { opcode = 0, payload = p:sub(cut + 1), rsv1 = true, fin = true } }
    t:expect_fail(1002)
  end)
  case("12.6.5", "Send an uncompressed first fragment, then a continuation with RSV1; expect close 1002", function(t)
    open(t)
    t:send { t:text("fragment1", { fin = false }), t:cont("fragment2", true, { rsv1 = true }) }
    t:expect_fail(1002)
  end)
  case("12.6.6", "With permessage-deflate, send a text message with RSV2 set; expect close 1002", function(t)
    open(t)
    t:send(t:text("Hello, world!", { rsv2 = true }))
    t:expect_fail(1002)
  end)
  case("12.6.7", "Send a text message with RSV1 whose payload is not DEFLATE data; expect close 1007 (or 1002)",
    function(t)
      local pmd = open(t)
      t:send(t:text("\255\255\255\255 not deflate", { rsv1 = true }))
      t:expect_fail(pmd and { 1007, 1002 } or 1002)
    end)
  case("12.6.8", "Send a compressed text message that inflates to invalid UTF-8; expect close 1007", function(t)
    local pmd = open(t)
    t:send(compressed_frames(t, "text", "\206\186\225\189\185\207\131\206\188\206\181\237\160\128edited"))
    t:expect_fail(pmd and 1007 or 1002)
  end)
  case("12.6.9", "Send a compressed binary message that inflates to 17 MiB (over the 16 MiB limit); expect close 1009",
    function(t)
      local pmd = open(t)
      local zeros = ("\0"):rep(17 * 1024 * 1024)
      t:send(compressed_frames(t, "binary", zeros))
      t:expect_fail(pmd and 1009 or 1002)
    end)

  local function echo_or_1002(t, kind, data, frames_fn)
    local pmd = open(t)
    t:send(frames_fn(pmd))
    if pmd then
      t:expect_message(kind, data)
      t:finish()
    else
      t:expect_fail(1002)
    end
  end
  case("12.6.10", "Send an empty compressed text message (zlib's encoding); expect an empty echo", function(t)
    echo_or_1002(t, "text", "", function() return compressed_frames(t, "text", "") end)
  end)
  case("12.6.11", "Send an empty compressed text message as the single byte 0x00 (RFC 7692 7.2.3.6); " ..
    "expect an empty echo", function(t)
    echo_or_1002(t, "text", "", function() return { { opcode = 1, payload = "\0", rsv1 = true } } end)
  end)
  case("12.6.12", "Send a compressed message ending in a BFINAL block (RFC 7692 7.2.3.3), then a normal one; " ..
    "expect both echoed", function(t)
    local pmd = open(t)
    local a, b = ("BFINAL block message. "):rep(10), ("next message, fresh stream. "):rep(10)
    if not pmd then
      t:send(compressed_frames(t, "text", a, { how = "finish" }))
      return t:expect_fail(1002)
    end
    -- the first as a stand-alone final block; the second must not refer back
    -- (a new client stream), which is fine with or without context takeover
    local fin = D.compressor { window = 15, takeover = false }:compress(a, "finish")
    t:send { opcode = 1, payload = fin, rsv1 = true }
    t:expect_message("text", a)
    t.tx = D.compressor { window = t.tx.window, takeover = t.tx.takeover }
    t:roundtrip("text", b)
    t:finish()
  end)
  case("12.6.13", "Send a compressed message in 3 fragments with a ping between; expect the pong, then the echo",
    function(t)
      local pmd = open(t)
      local data = ("fragmented compressed message with a ping in between; "):rep(30)
      local f = compressed_frames(t, "text", data)
      local p = f[1].payload
      local a, b = #p // 3, 2 * #p // 3
      t:send { { opcode = 1, payload = p:sub(1, a), rsv1 = true, fin = false }, t:ping_frame("between"),
               t:cont(p:sub(a + 1, b), false), t:cont(p:sub(b + 1), true) }
      if not pmd then return t:expect_fail(1002) end
      t:expect_pong("between")
      t:expect_message("text", data)
      t:finish()
    end)
  case("12.6.14", "Alternate compressed and uncompressed messages on one connection; expect every echo", function(t)
    open(t)
    local s = P.slicer("json")
    for i = 1, 12 do
      local msg = s(700 + 97 * i)
      t:send_message("text", msg, { compress = (i % 3 ~= 0) })
      t:expect_message("text", msg, "the echo of message " .. i)
    end
    t:finish()
  end)
  case("12.6.15", "Send a compressed message written 1 byte at a time; expect the echo", function(t)
    open(t)
    local msg = P.slicer("html")(3000)
    t:send_message("text", msg, { chop = 1 })
    t:expect_message("text", msg)
    t:finish()
  end)
  case("12.6.16", "Send a compressed message in fragments of 1 byte; expect the echo", function(t)
    open(t)
    local msg = P.slicer("json")(2000)
    t:send_message("text", msg, { frag = 1 })
    t:expect_message("text", msg)
    t:finish()
  end)
  case("12.6.17", "Send 20 compressed messages in one write, then read the 20 echoes", function(t)
    open(t)
    local s, frames, msgs = P.slicer("text"), {}, {}
    for i = 1, 20 do
      msgs[i] = s(100 * i)
      for _, f in ipairs(t:message_frames("text", msgs[i])) do frames[#frames + 1] = f end
    end
    t:send(frames)
    for i = 1, 20 do t:expect_message("text", msgs[i], "the echo of message " .. i) end
    t:finish()
  end)
  case("12.6.18", "Send the same 4 KiB message 5 times (with context takeover mostly back-references); " ..
    "expect every echo", function(t)
    open(t)
    local msg = P.slicer("bitmap")(4096)
    for i = 1, 5 do
      t:send_message("binary", msg)
      t:expect_message("binary", msg, "the echo of message " .. i)
    end
    t:finish()
  end)
  case("12.6.19", "Send a compressed text message of multi-byte characters in fragments of 3 bytes; " ..
    "expect the echo", function(t)
    open(t)
    local msg = ("κόσμε 日本語 😀 "):rep(40)
    t:send_message("text", msg, { frag = 3 })
    t:expect_message("text", msg)
    t:finish()
  end)
end

return setmetatable(M, { __call = function(_, case) return M.register(case) end })
