-- 6.x UTF-8 handling: valid text is echoed, invalid text MUST fail the
-- connection with 1007 (RFC 6455 8.1), and fail fast: as soon as the invalid
-- byte arrives, even inside a non-final fragment or a partly received frame
-- (6.4.x; failing only at the end of the message is NON-STRICT).
-- 6.5-6.23 are the sequences of Markus Kuhn's UTF-8 decoder test, in the
-- order and grouping Autobahn|Testsuite uses.
local J = require "spec.conformance.judge"

local KOSME = "\206\186\225\189\185\207\131\206\188\206\181"   -- κόσμε

-- { group description, { {valid, bytes}, ... } } — numbered 6.5 upwards.
local function sequences()
  local G = {}
  local function group(desc, list) G[#G + 1] = { desc, list } end

  group("Some valid UTF-8 sequences", {
    { true, "hello\36world" }, { true, "hello\194\162world" }, { true, "hello\226\130\172world" },
    { true, "hello\240\164\173\162world" }, { true, KOSME } })

  local prefixes = {}
  for i = 1, #KOSME do
    local p = KOSME:sub(1, i)
    prefixes[#prefixes + 1] = { utf8.len(p) ~= nil, p }
  end
  group("All prefixes of a valid UTF-8 string that contains multi-byte code points", prefixes)

  group("First possible sequence of a certain length", {
    { true, "\0" }, { true, "\194\128" }, { true, "\224\160\128" }, { true, "\240\144\128\128" } })
  group("First possible sequence length 5/6 (invalid codepoints)", {
    { false, "\248\136\128\128\128" }, { false, "\252\132\128\128\128\128" } })
  group("Last possible sequence of a certain length", {
    { true, "\127" }, { true, "\223\191" }, { true, "\239\191\191" }, { true, "\244\143\191\191" } })
  group("Last possible sequence length 4/5/6 (invalid codepoints)", {
    { false, "\247\191\191\191" }, { false, "\251\191\191\191\191" }, { false, "\253\191\191\191\191\191" } })
  group("Other boundary conditions", {
    { true, "\237\159\191" }, { true, "\238\128\128" }, { true, "\239\191\189" }, { true, "\244\143\191\191" },
    { false, "\244\144\128\128" } })

  local allcont = {}
  for b = 0x80, 0xbe do allcont[#allcont + 1] = string.char(b) end
  group("Unexpected continuation bytes", {
    { false, "\128" }, { false, "\191" }, { false, "\128\191" }, { false, "\128\191\128" },
    { false, "\128\191\128\191" }, { false, "\128\191\128\191\128" }, { false, "\128\191\128\191\128\191" },
    { false, table.concat(allcont) } })

  local lonely = {}
  for _, r in ipairs { { 0xc0, 0xdf }, { 0xe0, 0xef }, { 0xf0, 0xf7 }, { 0xf8, 0xfb }, { 0xfc, 0xfd } } do
    local s = {}
    for b = r[1], r[2] - 1 do s[#s + 1] = string.char(b) .. " " end
    lonely[#lonely + 1] = { false, table.concat(s) }
  end
  group("Lonely start characters", lonely)

  local missing = { "\192", "\224\128", "\240\128\128", "\248\128\128\128", "\252\128\128\128\128",
    "\223", "\239\191", "\247\191\191", "\251\191\191\191", "\253\191\191\191\191" }
  local ml = {}
  for i, s in ipairs(missing) do ml[i] = { false, s } end
  group("Sequences with last continuation byte missing", ml)
  group("Concatenation of incomplete sequences", { { false, table.concat(missing) } })
  group("Impossible bytes", { { false, "\254" }, { false, "\255" }, { false, "\254\254\255\255" } })
  group("Examples of an overlong ASCII character", {
    { false, "\192\175" }, { false, "\224\128\175" }, { false, "\240\128\128\175" },
    { false, "\248\128\128\128\175" }, { false, "\252\128\128\128\128\175" } })
  group("Maximum overlong sequences", {
    { false, "\193\191" }, { false, "\224\159\191" }, { false, "\240\143\191\191" },
    { false, "\248\135\191\191\191" }, { false, "\252\131\191\191\191\191" } })
  group("Overlong representation of the NUL character", {
    { false, "\192\128" }, { false, "\224\128\128" }, { false, "\240\128\128\128" },
    { false, "\248\128\128\128\128" }, { false, "\252\128\128\128\128\128" } })
  group("Single UTF-16 surrogates", {
    { false, "\237\160\128" }, { false, "\237\173\191" }, { false, "\237\174\128" }, { false, "\237\175\191" },
    { false, "\237\176\128" }, { false, "\237\190\128" }, { false, "\237\191\191" } })
  group("Paired UTF-16 surrogates", {
    { false, "\237\160\128\237\176\128" }, { false, "\237\160\128\237\191\191" },
    { false, "\237\173\191\237\176\128" }, { false, "\237\173\191\237\191\191" },
    { false, "\237\174\128\237\176\128" }, { false, "\237\174\128\237\191\191" },
    { false, "\237\175\191\237\176\128" }, { false, "\237\175\191\237\191\191" } })

  local nonchars = { { true, "\239\191\190" }, { true, "\239\191\191" } }
  for _, z1 in ipairs { 0xf0, 0xf1, 0xf2, 0xf3, 0xf4 } do
    for _, z2 in ipairs { 0x8f, 0x9f, 0xaf, 0xbf } do
      if not (z1 == 0xf4 and z2 ~= 0x8f) then
        for _, z3 in ipairs { 0xbe, 0xbf } do
          local zz = string.char(z1, z2, 0xbf, z3)
          if zz ~= "\240\143\191\190" and zz ~= "\240\143\191\191" then nonchars[#nonchars + 1] = { true, zz } end
        end
      end
    end
  end
  group("Non-character code points (valid UTF-8)", nonchars)
  group("Unicode specials (i.e. replacement char)", {
    { true, "\239\191\185" }, { true, "\239\191\186" }, { true, "\239\191\187" }, { true, "\239\191\188" },
    { true, "\239\191\189" }, { true, "\239\191\190" }, { true, "\239\191\191" } })
  return G
end

return function(case)
  case("6.1.1", "Send a text message with an empty payload; expect it echoed", function(t)
    t:connect()
    t:roundtrip("text", "")
    t:finish()
  end)
  case("6.1.2", "Send an empty text message in 3 empty fragments; expect it echoed", function(t)
    t:connect()
    t:send { t:text("", { fin = false }), t:cont("", false), t:cont("", true) }
    t:expect_message("text", "")
    t:finish()
  end)
  case("6.1.3", "Send a text message in 3 fragments, the first and last empty; expect it echoed", function(t)
    t:connect()
    t:send { t:text("", { fin = false }), t:cont("middle frame payload", false), t:cont("", true) }
    t:expect_message("text", "middle frame payload")
    t:finish()
  end)

  local HELLO = "Hello-\194\181@\195\159\195\182\195\164\195\188\195\160\195\161-UTF-8!!"
  case("6.2.1", "Send a valid UTF-8 text message in one fragment; expect it echoed", function(t)
    t:connect()
    t:roundtrip("text", HELLO)
    t:finish()
  end)
  case("6.2.2", "Send a valid UTF-8 text message in 2 fragments split on a code point boundary; expect it echoed",
    function(t)
      t:connect()
      t:send { t:text(HELLO:sub(1, 13), { fin = false }), t:cont(HELLO:sub(14), true) }
      t:expect_message("text", HELLO)
      t:finish()
    end)
  local function per_byte(t, s)
    t:connect()
    local frames = {}
    for i = 1, #s do
      frames[i] = { opcode = i == 1 and 1 or 0, payload = s:sub(i, i), fin = i == #s }
    end
    t:send(frames)
    t:expect_message("text", s)
    t:finish()
  end
  case("6.2.3", "Send a valid UTF-8 text message in fragments of 1 byte (splitting code points); expect it echoed",
    function(t) per_byte(t, HELLO) end)
  case("6.2.4", "Send the valid UTF-8 text κόσμε in fragments of 1 byte; expect it echoed",
    function(t) per_byte(t, KOSME) end)

  local BAD = KOSME .. "\237\160\128" .. "edited"   -- a surrogate in the middle
  case("6.3.1", "Send an invalid UTF-8 text message (a surrogate) in one fragment; expect close 1007", function(t)
    t:connect()
    t:send(t:text(BAD))
    t:expect_fail(1007)
  end)
  case("6.3.2", "Send an invalid UTF-8 text message (a surrogate) in fragments of 1 byte; expect close 1007",
    function(t)
      t:connect()
      local frames = {}
      for i = 1, #BAD do frames[i] = { opcode = i == 1 and 1 or 0, payload = BAD:sub(i, i), fin = i == #BAD } end
      t:send(frames)
      t:expect_fail(1007)
    end)

  -- 6.4.x fail fast. The message is KOSME .. F4 90 80 80 (U+110000) ..
  -- "edited"; the byte 0x90 at position 12 makes it invalid.
  local P = KOSME .. "\244\144\128\128" .. "edited"
  -- After part 2 the server must fail within the guard; if it does not, part 3
  -- completes the message and the failure must come then (NON-STRICT).
  local function after_part2(t, send_part3)
    local ev = t:poll_event(J.FAILFAST_GUARD)
    if ev == nil then
      t:nonstrict("the server did not fail the connection when the invalid byte arrived (within %gs), " ..
        "only after the rest of the message", J.FAILFAST_GUARD)
      send_part3()
      t:expect_fail(1007)
      return
    end
    if ev.type == "tcp-closed" then
      t:nonstrict("the server dropped TCP without a close frame (expected close 1007)")
      return
    end
    if ev.type ~= "close" then t:fail("expected close 1007, got %s", J.describe_event(ev)) end
    if ev.code == nil then
      t:nonstrict("the server's close frame has no status code (expected 1007)")
    elseif ev.code ~= 1007 then
      t:fail("expected close 1007, got close %d", ev.code)
    end
    t.sent_close = true
    t:send_bytes(t:encode(t:close_frame(1007)))
    t:expect_tcp_close("after failing the connection")
  end

  local function frames_case(t, p1, p2, p3)
    t:connect()
    t:send { t:text(p1, { fin = false }), t:ping_frame("part 1 taken") }
    t:expect_pong("part 1 taken")          -- the valid part must not fail the message
    t:send(t:cont(p2, false))
    after_part2(t, function() t:send(t:cont(p3, true)) end)
  end
  case("6.4.1", "Send an invalid UTF-8 text message in 3 fragments, the 2nd holding the invalid code point " ..
    "(U+110000); expect close 1007 right after the 2nd", function(t)
    frames_case(t, KOSME, "\244\144\128\128", "edited")
  end)
  case("6.4.2", "As 6.4.1, the 2nd fragment being just the byte that makes the text invalid", function(t)
    frames_case(t, P:sub(1, 12), P:sub(13, 13), P:sub(14))
  end)

  -- 6.4.3/6.4.4: one frame whose payload is written in 3 parts; the server
  -- must fail on the partial frame. (A ping cannot go inside a frame, so the
  -- first part is checked with a zero-time peek only.)
  local function chops_case(t, cut1, cut2)
    t:connect()
    local frame = t:encode(t:text(P))
    local header = #frame - #P
    t:send_bytes(frame:sub(1, header + cut1))
    local early = t:poll_event(0)
    if early then t:fail("the server reacted to the valid first part of the message: %s", J.describe_event(early)) end
    t:send_bytes(frame:sub(header + cut1 + 1, header + cut2))
    after_part2(t, function() t:send_bytes(frame:sub(header + cut2 + 1)) end)
  end
  case("6.4.3", "As 6.4.1, but one frame whose payload arrives in 3 writes; expect close 1007 right after the 2nd",
    function(t) chops_case(t, #KOSME, #KOSME + 4) end)
  case("6.4.4", "As 6.4.2, but one frame whose payload arrives in 3 writes (the 2nd just the invalid byte)",
    function(t) chops_case(t, 12, 13) end)

  for gi, g in ipairs(sequences()) do
    for si, s in ipairs(g[2]) do
      local valid, bytes = s[1], s[2]
      assert((utf8.len(bytes) ~= nil) == valid, "UTF-8 test vector disagrees with utf8.len: " .. J.hexsnip(bytes))
      local id = string.format("6.%d.%d", gi + 4, si)
      if valid then
        case(id, g[1] .. ": send valid UTF-8 " .. J.hexsnip(bytes, 32) .. " in one frame; expect it echoed", function(t)
          t:connect()
          t:roundtrip("text", bytes)
          t:finish()
        end)
      else
        case(id, g[1] .. ": send invalid UTF-8 " .. J.hexsnip(bytes, 32) .. " in one frame; expect close 1007", function(t)
          t:connect()
          t:send(t:text(bytes))
          t:expect_fail(1007)
        end)
      end
    end
  end
end
