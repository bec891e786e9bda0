-- violations.lua — malformed client input and the close code RFC 6455
-- requires in answer. Shared by protocol_spec.lua (against luaws) and
-- wsclient_spec.lua (against the node `ws` reference server, which proves the
-- client really produces the bytes each case claims).
--
-- Each case: { name, send = function(c) ... end, codes = {accepted close codes},
--              oracle = false when the node reference legitimately differs }
local wsc = require "spec.support.wsclient"

local V = {}

local function frame(f) return function(c) assert(c:send_frame(f)) end end

local function add(name, codes, send, extra)
  local case = { name = name, codes = codes, send = send }
  for k, v in pairs(extra or {}) do case[k] = v end
  V[#V + 1] = case
end

-- Framing (1002) ------------------------------------------------------------
add("an unmasked text frame", { 1002 }, frame { opcode = 1, payload = "hello", mask = false })
add("an unmasked binary frame", { 1002 }, frame { opcode = 2, payload = "\1\2\3", mask = false })
add("an unmasked ping", { 1002 }, frame { opcode = 9, payload = "p", mask = false })
for _, op in ipairs { 3, 4, 5, 6, 7 } do
  add("reserved data opcode " .. op, { 1002 }, frame { opcode = op, payload = "x" })
end
for _, op in ipairs { 0xB, 0xC, 0xD, 0xE, 0xF } do
  add(string.format("reserved control opcode 0x%X", op), { 1002 }, frame { opcode = op, payload = "" })
end
add("RSV1 set without an extension", { 1002 }, frame { opcode = 1, payload = "x", rsv1 = true })
add("RSV2 set", { 1002 }, frame { opcode = 1, payload = "x", rsv2 = true })
add("RSV3 set", { 1002 }, frame { opcode = 2, payload = "x", rsv3 = true })
add("RSV bits on a ping", { 1002 }, frame { opcode = 9, payload = "", rsv1 = true, rsv2 = true, rsv3 = true })
add("a ping with a 126-byte payload", { 1002 }, frame { opcode = 9, payload = string.rep("p", 126) })
add("a pong with a 126-byte payload", { 1002 }, frame { opcode = 10, payload = string.rep("p", 126) })
add("a close with a 126-byte payload", { 1002 },
  frame { opcode = 8, payload = wsc.close_payload(1000, string.rep("r", 124)) })
-- RFC 6455 5.2: "the minimal number of bytes MUST be used to encode the length"
add("a 5-byte text frame whose length uses the 16-bit form", { 1002 },
  frame { opcode = 1, payload = "hello", length_form = "16" }, { oracle = false })
add("a 200-byte binary frame whose length uses the 64-bit form", { 1002 },
  frame { opcode = 2, payload = string.rep("b", 200), length_form = "64" }, { oracle = false })
add("a fragmented ping (FIN clear)", { 1002 }, frame { opcode = 9, payload = "p", fin = false })
add("a fragmented close (FIN clear)", { 1002 },
  frame { opcode = 8, payload = wsc.close_payload(1000), fin = false })
add("a continuation frame without a start", { 1002 }, frame { opcode = 0, payload = "x", fin = true })
add("a non-final continuation without a start", { 1002 }, frame { opcode = 0, payload = "x", fin = false })
add("a new text frame inside a fragmented message", { 1002 }, function(c)
  assert(c:send_frame { opcode = 1, payload = "part", fin = false })
  assert(c:send_frame { opcode = 1, payload = "again", fin = true })
end)
add("a new binary frame inside a fragmented message", { 1002 }, function(c)
  assert(c:send_frame { opcode = 2, payload = "part", fin = false })
  assert(c:send_frame { opcode = 2, payload = "again", fin = true })
end)
add("a 64-bit length with the most significant bit set", { 1002, 1009 }, function(c)
  -- 0x8000000000000000: RFC 6455 5.2 says the MSB MUST be 0
  local head = string.char(0x82, 0x80 | 127) .. "\128\0\0\0\0\0\0\0" .. "\1\2\3\4"
  assert(c:send_raw(head .. "abcd"))
end)

-- UTF-8 (1007) ----------------------------------------------------------------
local bad_utf8 = {
  { "a lone 0xFF byte", "abc\xffdef" },
  { "a lone continuation byte", "\x80" },
  { "an overlong '/' (C0 AF)", "\xc0\xaf" },
  { "an overlong 3-byte NUL (E0 80 80)", "\xe0\x80\x80" },
  { "a UTF-16 surrogate (ED A0 80)", "\xed\xa0\x80" },
  { "a code point above U+10FFFF (F4 90 80 80)", "\xf4\x90\x80\x80" },
  { "F5 (never valid)", "\xf5\x80\x80\x80" },
  { "a sequence truncated at the end of the message", "ok \xe2\x82" },
  { "a 2-byte lead followed by ASCII", "\xce\x41" },
}
for _, b in ipairs(bad_utf8) do
  add("invalid UTF-8 in a text message: " .. b[1], { 1007 }, frame { opcode = 1, payload = b[2] })
end
add("invalid UTF-8 split across fragments (CE | 41)", { 1007 }, function(c)
  assert(c:send_frame { opcode = 1, payload = "ok \xce", fin = false })
  assert(c:send_frame { opcode = 0, payload = "\x41", fin = true })
end)
add("a message whose last fragment ends inside a code point", { 1007 }, function(c)
  assert(c:send_frame { opcode = 1, payload = "euro ", fin = false })
  assert(c:send_frame { opcode = 0, payload = "\xe2\x82", fin = true })
end)
-- Fail fast: the final fragment never comes; the server must not wait for it.
add("invalid UTF-8 in a non-final fragment (fail fast, no final fragment sent)", { 1007 },
  frame { opcode = 1, payload = "abc\xff", fin = false }, { oracle = false })
add("invalid UTF-8 in a later non-final fragment (fail fast)", { 1007 }, function(c)
  assert(c:send_frame { opcode = 1, payload = "fine so far", fin = false })
  assert(c:send_frame { opcode = 0, payload = "\xed\xa0\x80", fin = false })
end, { oracle = false })

-- Close frames -------------------------------------------------------------
add("a close frame with a 1-byte payload", { 1002 }, frame { opcode = 8, payload = "\3" })
for _, code in ipairs { 0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535 } do
  add("a close frame with invalid code " .. code, { 1002 },
    frame { opcode = 8, payload = wsc.close_payload(code, "") })
end
add("a close reason that is not UTF-8", { 1007, 1002 },
  frame { opcode = 8, payload = wsc.close_payload(1000, "bad \xff reason") })

-- Valid close codes: the server answers the close handshake without error.
V.valid_close_codes = { 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999 }

return V
