-- deflate.lua — permessage-deflate (RFC 7692) for the conformance suite:
-- Sec-WebSocket-Extensions parsing, judging a server's response against the
-- offers, and the two compression directions with the negotiated parameters.
--
--   local D = require "spec.conformance.deflate"
--   local exts = D.parse_extensions("permessage-deflate; server_max_window_bits=10")
--   local params, err = D.judge_response(offers, response_header_value)
--   local tx = D.compressor { window = 15, takeover = true }   -- client -> server
--   local rx = D.decompressor { window = 15, takeover = true } -- server -> client
--   local payload = tx:compress(message)      -- without the 00 00 ff ff tail
--   local message, err = rx:decompress(payload)
--
-- zlib cannot deflate with an LZ77 window of 256 bytes (raw deflate with
-- windowBits 8 is refused), so when the server limits the client to
-- client_max_window_bits=8 the suite compresses with its own small
-- fixed-Huffman encoder below, whose matches never reach back further than
-- 256 bytes. Inflating is always zlib with exactly the negotiated window, so a
-- server that promised server_max_window_bits=N and reaches further back makes
-- inflate fail ("invalid distance too far back").
local zlib = require "zlib"

local D = {}
D.TAIL = "\0\0\255\255"

---------------------------------------------------------------------------
-- Sec-WebSocket-Extensions (RFC 6455 9.1):
--   extension-list = 1#extension
--   extension      = extension-token *( ";" extension-param )
--   extension-param = token [ "=" (token | quoted-string) ]
---------------------------------------------------------------------------
local TCHAR = "[!#$%%&'*+%-.^_`|~%w]"

-- Returns a list of { name = "...", params = { {name=, value=|nil, quoted=bool}, ... } }
-- or nil, error message for a malformed header.
function D.parse_extensions(s)
  local exts = {}
  local i, n = 1, #s
  local function ws() i = s:find("[^ \t]", i) or (n + 1) end
  local function token()
    local a, b = s:find("^" .. TCHAR .. "+", i)
    if not a then return nil end
    i = b + 1
    return s:sub(a, b)
  end
  ws()
  if i > n then return nil, "empty extension list" end
  while true do
    ws()
    local name = token()
    if not name then return nil, string.format("expected an extension token at %d in %q", i, s) end
    local ext = { name = name, params = {} }
    exts[#exts + 1] = ext
    ws()
    while s:sub(i, i) == ";" do
      i = i + 1; ws()
      local pname = token()
      if not pname then return nil, string.format("expected a parameter name at %d in %q", i, s) end
      local p = { name = pname }
      ws()
      if s:sub(i, i) == "=" then
        i = i + 1; ws()
        if s:sub(i, i) == '"' then
          local j, out = i + 1, {}
          while true do
            local c = s:sub(j, j)
            if c == "" then return nil, "unterminated quoted-string in " .. s end
            if c == '"' then break end
            if c == "\\" then j = j + 1; c = s:sub(j, j) end
            out[#out + 1] = c; j = j + 1
          end
          p.value, p.quoted = table.concat(out), true
          i = j + 1
        else
          p.value = token()
          if not p.value then return nil, string.format("expected a parameter value at %d in %q", i, s) end
        end
        ws()
      end
      ext.params[#ext.params + 1] = p
    end
    if i > n then break end
    if s:sub(i, i) ~= "," then return nil, string.format("unexpected %q at %d in %q", s:sub(i, i), i, s) end
    i = i + 1
    ws()
    if i > n then return nil, "trailing comma in " .. s end
  end
  return exts
end

-- permessage-deflate parameters of one extension element, checked the way a
-- server must check an offer (RFC 7692 5 and 7.1): known names only, no
-- duplicates, values where values belong (8..15, no leading zero).
-- Returns {snct=, cnct=, smwb=n|nil, cmwb=n|true|nil} or nil, why.
-- as = "offer" | "response": in a response client_max_window_bits needs a value.
function D.pmd_params(ext, as)
  local r, seen = {}, {}
  for _, p in ipairs(ext.params) do
    local k = p.name:lower()
    if seen[k] then return nil, "duplicate parameter " .. p.name end
    seen[k] = true
    if k == "server_no_context_takeover" or k == "client_no_context_takeover" then
      if p.value ~= nil then return nil, p.name .. " must not have a value" end
      r[k == "server_no_context_takeover" and "snct" or "cnct"] = true
    elseif k == "server_max_window_bits" or k == "client_max_window_bits" then
      local v = p.value
      local key = k == "server_max_window_bits" and "smwb" or "cmwb"
      if v == nil then
        if key == "smwb" or as == "response" then return nil, p.name .. " needs a value" end
        r[key] = true
      else
        if not v:match("^[1-9]%d?$") or tonumber(v) < 8 or tonumber(v) > 15 then
          return nil, string.format("%s=%q is not 8..15", p.name, v)
        end
        r[key] = tonumber(v)
      end
    else
      return nil, "unknown parameter " .. p.name
    end
  end
  return r
end

local function describe(p)
  local t = {}
  if p.snct then t[#t + 1] = "server_no_context_takeover" end
  if p.cnct then t[#t + 1] = "client_no_context_takeover" end
  if p.smwb then t[#t + 1] = "server_max_window_bits=" .. tostring(p.smwb) end
  if p.cmwb then t[#t + 1] = "client_max_window_bits" .. (p.cmwb == true and "" or "=" .. p.cmwb) end
  return "permessage-deflate" .. (#t > 0 and "; " .. table.concat(t, "; ") or "")
end
D.describe = describe

-- Is response params r a valid acceptance of offer params o (RFC 7692 7.1)?
local function accepts(o, r)
  if o.snct and not r.snct then return false, "the offer asked for server_no_context_takeover but the response lacks it" end
  if o.smwb then
    if not r.smwb then return false, "the offer has server_max_window_bits but the response lacks it" end
    if r.smwb > o.smwb then return false, string.format("server_max_window_bits=%d exceeds the offered %d", r.smwb, o.smwb) end
  end
  if r.cmwb then
    if not o.cmwb then return false, "client_max_window_bits in the response although the offer lacks it" end
    if o.cmwb ~= true and r.cmwb > o.cmwb then
      return false, string.format("client_max_window_bits=%d exceeds the offered %d", r.cmwb, o.cmwb)
    end
  end
  return true
end

-- offers: list of offer header strings as sent (each may hold several
-- comma-separated offers). response: the response's Sec-WebSocket-Extensions
-- (nil when absent). Returns
--   params (negotiated, see pmd_params), index of the offer it accepts
--   false (declined)
--   nil, why (not a valid response)
function D.judge_response(offers, response)
  local olist = {}
  for _, h in ipairs(offers) do
    local exts = assert(D.parse_extensions(h))
    for _, e in ipairs(exts) do
      if e.name:lower() == "permessage-deflate" then
        local p = D.pmd_params(e, "offer")
        olist[#olist + 1] = p or false   -- false: an invalid offer, must not be accepted
      else
        olist[#olist + 1] = false
      end
    end
  end
  if response == nil or response:match("^%s*$") then return false end
  local exts, err = D.parse_extensions(response)
  if not exts then return nil, "malformed Sec-WebSocket-Extensions response: " .. err end
  if #exts > 1 then return nil, "the response accepts more than one extension: " .. response end
  local e = exts[1]
  if e.name:lower() ~= "permessage-deflate" then
    return nil, "the response accepts an extension that was not offered: " .. e.name
  end
  local r, perr = D.pmd_params(e, "response")
  if not r then return nil, "invalid permessage-deflate response (" .. perr .. "): " .. response end
  local whys = {}
  for i, o in ipairs(olist) do
    if o then
      local ok, why = accepts(o, r)
      if ok then return r, i end
      whys[#whys + 1] = string.format("offer %d: %s", i, why)
    else
      whys[#whys + 1] = string.format("offer %d: invalid, must be declined", i)
    end
  end
  return nil, "the response " .. response .. " accepts none of the offers (" .. table.concat(whys, "; ") .. ")"
end

---------------------------------------------------------------------------
-- A tiny raw-DEFLATE encoder: LZ77 with a bounded distance + fixed Huffman
-- codes (RFC 1951 3.2.6), ending each message with a sync flush.
---------------------------------------------------------------------------
local LBASE = { 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258 }
local LEXTRA = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0 }
local DBASE = { 1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
  2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577 }
local DEXTRA = { 0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13 }

local function reverse_bits(code, len)
  local r = 0
  for _ = 1, len do r = (r << 1) | (code & 1); code = code >> 1 end
  return r
end

local function bitwriter()
  local out, acc, nacc = {}, 0, 0
  local w = {}
  function w.bits(v, n)        -- LSB first
    acc = acc | (v << nacc); nacc = nacc + n
    if nacc >= 32 then
      out[#out + 1] = string.pack("<I4", acc & 0xffffffff)
      acc = acc >> 32; nacc = nacc - 32
    end
  end
  function w.align() if nacc % 8 ~= 0 then w.bits(0, 8 - nacc % 8) end end
  function w.result()
    assert(nacc % 8 == 0)
    while nacc > 0 do out[#out + 1] = string.char(acc & 0xff); acc = acc >> 8; nacc = nacc - 8 end
    return table.concat(out)
  end
  return w
end

-- Fixed Huffman codes, bit-reversed for the LSB-first writer: symbol -> code, length.
local LITCODE, LITLEN, DISTCODE = {}, {}, {}
for sym = 0, 287 do
  local code, len
  if sym <= 143 then code, len = 0x30 + sym, 8
  elseif sym <= 255 then code, len = 0x190 + sym - 144, 9
  elseif sym <= 279 then code, len = sym - 256, 7
  else code, len = 0xC0 + sym - 280, 8 end
  LITCODE[sym], LITLEN[sym] = reverse_bits(code, len), len
end
for d = 0, 29 do DISTCODE[d] = reverse_bits(d, 5) end

local function lit(w, sym) w.bits(LITCODE[sym], LITLEN[sym]) end

local function length_code(len)
  for i = #LBASE, 1, -1 do if len >= LBASE[i] then return i end end
end
local function dist_code(d)
  for i = #DBASE, 1, -1 do if d >= DBASE[i] then return i end end
end

-- Encode data (appended after history, which it may refer back into) with
-- matches at most maxdist back. Returns the compressed bytes minus the sync
-- flush tail.
function D.fixed_deflate(data, history, maxdist)
  history = history or ""
  local buf = history .. data
  local byte, unpack = string.byte, string.unpack
  local w = bitwriter()
  w.bits(0, 1)       -- BFINAL = 0
  w.bits(1, 2)       -- BTYPE = 01 (fixed Huffman)
  local n = #buf
  local head, prev = {}, {}   -- hash chains: 3-byte key -> latest position; position -> previous
  local function insert(pos)
    if pos + 2 <= n then
      local a, b, c = byte(buf, pos, pos + 2)
      local k = (a << 16) | (b << 8) | c
      prev[pos] = head[k]
      head[k] = pos
    end
  end
  local start = #history + 1
  for p = math.max(1, start - maxdist), start - 1 do insert(p) end
  local i = start
  while i <= n do
    local best_len, best_pos = 0, nil
    if i + 2 <= n then
      local a, b, c = byte(buf, i, i + 2)
      local p = head[(a << 16) | (b << 8) | c]
      local tries = 0
      local limit = math.min(258, n - i + 1)
      while p and i - p <= maxdist and tries < 4 do
        local len = 3
        while len + 8 <= limit and unpack("<i8", buf, p + len) == unpack("<i8", buf, i + len) do len = len + 8 end
        while len < limit and byte(buf, p + len) == byte(buf, i + len) do len = len + 1 end
        if len > best_len then best_len, best_pos = len, p end
        if best_len == limit then break end
        tries = tries + 1
        p = prev[p]
      end
    end
    if best_len >= 3 then
      local lc = length_code(best_len)
      lit(w, 256 + lc)
      if LEXTRA[lc] > 0 then w.bits(best_len - LBASE[lc], LEXTRA[lc]) end
      local d = i - best_pos
      local dc = dist_code(d)
      w.bits(DISTCODE[dc - 1], 5)
      if DEXTRA[dc] > 0 then w.bits(d - DBASE[dc], DEXTRA[dc]) end
      -- index only the start of a match (cheaper, still valid LZ77)
      for q = i, i + math.min(best_len, 4) - 1 do insert(q) end
      i = i + best_len
    else
      lit(w, byte(buf, i))
      insert(i)
      i = i + 1
    end
  end
  lit(w, 256)        -- end of block
  w.bits(0, 3)       -- empty stored block header (BFINAL 0, BTYPE 00) ...
  w.align()          -- ... whose LEN/NLEN (00 00 ff ff) is the tail we strip
  return w.result()
end

---------------------------------------------------------------------------
-- A DEFLATE stream scanner that checks LZ77 distances. zlib's inflate only
-- rejects a distance that reaches before the data it still has, and within one
-- output buffer it has more than the declared window, so it cannot tell whether
-- a server kept to server_max_window_bits. This decodes the block structure and
-- every symbol (table driven), counting output bytes instead of producing them.
-- data: one message's payload with the 00 00 ff ff tail appended.
-- Returns the number of bytes the message inflates to, or nil, why.
---------------------------------------------------------------------------
local function build_table(lengths, n)
  local maxlen = 0
  for i = 0, n - 1 do if (lengths[i] or 0) > maxlen then maxlen = lengths[i] end end
  if maxlen == 0 then return { bits = 0, tab = {} } end
  local count = {}
  for l = 0, 15 do count[l] = 0 end
  for i = 0, n - 1 do local l = lengths[i] or 0; count[l] = count[l] + 1 end
  count[0] = 0
  local left = 1
  for l = 1, 15 do
    left = left * 2 - count[l]
    if left < 0 then return nil, "over-subscribed Huffman code" end
  end
  local nextcode, code = {}, 0
  for l = 1, 15 do code = (code + count[l - 1]) << 1; nextcode[l] = code end
  local tab = {}
  for sym = 0, n - 1 do
    local l = lengths[sym] or 0
    if l > 0 then
      local rev = reverse_bits(nextcode[l], l)
      nextcode[l] = nextcode[l] + 1
      local entry = sym | (l << 16)
      for fill = 0, (1 << (maxlen - l)) - 1 do tab[rev | (fill << l)] = entry end
    end
  end
  return { bits = maxlen, tab = tab }
end

local FIXED_LIT, FIXED_DIST
do
  local l = {}
  for i = 0, 143 do l[i] = 8 end
  for i = 144, 255 do l[i] = 9 end
  for i = 256, 279 do l[i] = 7 end
  for i = 280, 287 do l[i] = 8 end
  FIXED_LIT = build_table(l, 288)
  local d = {}
  for i = 0, 29 do d[i] = 5 end
  FIXED_DIST = build_table(d, 30)
end
local CLORDER = { 16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15 }

-- maxdist: 2^window; avail: bytes of earlier messages the stream may refer to.
function D.check_distances(data, maxdist, avail)
  local unpack, byte = string.unpack, string.byte
  local pos, bitbuf, bitcnt, n = 1, 0, 0, #data
  local out = 0
  -- top the bit buffer up to at least 32 bits (fewer only at the end of data)
  local function refill()
    if pos + 3 <= n then
      bitbuf = bitbuf | (unpack("<I4", data, pos) << bitcnt)
      pos = pos + 4; bitcnt = bitcnt + 32
    else
      while bitcnt < 32 and pos <= n do
        bitbuf = bitbuf | (byte(data, pos) << bitcnt)
        pos = pos + 1; bitcnt = bitcnt + 8
      end
    end
  end
  local function bits(k)
    if k == 0 then return 0 end
    if bitcnt < k then refill(); if bitcnt < k then error("truncated deflate data", 0) end end
    local v = bitbuf & ((1 << k) - 1)
    bitbuf = bitbuf >> k; bitcnt = bitcnt - k
    return v
  end
  local function decode(h)
    if bitcnt < 32 then refill() end
    local e = h.tab[bitbuf & ((1 << h.bits) - 1)]
    if not e then error("invalid Huffman code", 0) end
    local l = e >> 16
    if l > bitcnt then error("truncated deflate data", 0) end
    bitbuf = bitbuf >> l; bitcnt = bitcnt - l
    return e & 0xffff
  end
  local ok, err = pcall(function()
    while true do
      local final = bits(1)
      local btype = bits(2)
      if btype == 0 then
        -- skip to the byte boundary; give back whole bytes still buffered
        local drop = bitcnt % 8
        bitbuf, bitcnt = bitbuf >> drop, bitcnt - drop
        pos = pos - bitcnt // 8
        bitbuf, bitcnt = 0, 0
        if pos + 3 > n then error("truncated stored block", 0) end
        local len, nlen = unpack("<I2I2", data, pos)
        if len ~= (~nlen & 0xffff) then error("stored block LEN/NLEN mismatch", 0) end
        pos = pos + 4
        if pos + len - 1 > n then error("truncated stored block", 0) end
        pos = pos + len
        out = out + len
      elseif btype == 1 or btype == 2 then
        local lit, dist = FIXED_LIT, FIXED_DIST
        if btype == 2 then
          local hlit, hdist, hclen = bits(5) + 257, bits(5) + 1, bits(4) + 4
          local cl = {}
          for i = 1, hclen do cl[CLORDER[i]] = bits(3) end
          local clt, e1 = build_table(cl, 19)
          if not clt then error(e1, 0) end
          local lens, i = {}, 0
          while i < hlit + hdist do
            local sym = decode(clt)
            if sym < 16 then lens[i] = sym; i = i + 1
            else
              local rep, val
              if sym == 16 then
                if i == 0 then error("repeat with no previous length", 0) end
                val, rep = lens[i - 1], 3 + bits(2)
              elseif sym == 17 then val, rep = 0, 3 + bits(3)
              else val, rep = 0, 11 + bits(7) end
              if i + rep > hlit + hdist then error("too many code lengths", 0) end
              for _ = 1, rep do lens[i] = val; i = i + 1 end
            end
          end
          local ll, dl = {}, {}
          for k = 0, hlit - 1 do ll[k] = lens[k] end
          for k = 0, hdist - 1 do dl[k] = lens[hlit + k] end
          local e2, e3
          lit, e2 = build_table(ll, hlit); if not lit then error(e2, 0) end
          dist, e3 = build_table(dl, hdist); if not dist then error(e3, 0) end
        end
        local ltab, lmask = lit.tab, (1 << lit.bits) - 1
        local dtab, dmask = dist.tab, (1 << dist.bits) - 1
        while true do
          if bitcnt < 32 then refill() end
          local e = ltab[bitbuf & lmask]
          if not e then error("invalid Huffman code", 0) end
          local l = e >> 16
          if l > bitcnt then error("truncated deflate data", 0) end
          bitbuf = bitbuf >> l; bitcnt = bitcnt - l
          local sym = e & 0xffff
          if sym < 256 then out = out + 1
          elseif sym == 256 then break
          else
            local li = sym - 256
            if li > 29 then error("invalid length symbol", 0) end
            local len = LBASE[li]
            local xb = LEXTRA[li]
            if bitcnt < 32 then refill() end
            if xb > 0 then
              if xb > bitcnt then error("truncated deflate data", 0) end
              len = len + (bitbuf & ((1 << xb) - 1)); bitbuf = bitbuf >> xb; bitcnt = bitcnt - xb
            end
            if bitcnt < 32 then refill() end
            local de = dtab[bitbuf & dmask]
            if not de then error("invalid Huffman code", 0) end
            local dl = de >> 16
            if dl > bitcnt then error("truncated deflate data", 0) end
            bitbuf = bitbuf >> dl; bitcnt = bitcnt - dl
            local ds = (de & 0xffff) + 1
            if ds > 30 then error("invalid distance symbol", 0) end
            local d = DBASE[ds]
            xb = DEXTRA[ds]
            if xb > 0 then
              if bitcnt < xb then refill(); if bitcnt < xb then error("truncated deflate data", 0) end end
              d = d + (bitbuf & ((1 << xb) - 1)); bitbuf = bitbuf >> xb; bitcnt = bitcnt - xb
            end
            if d > maxdist then
              error(string.format("distance %d exceeds the negotiated window of %d bytes", d, maxdist), 0)
            end
            if d > out + avail then
              error(string.format("distance %d reaches before the available history (%d bytes)", d, out + avail), 0)
            end
            out = out + len
          end
        end
      else
        error("invalid block type 3", 0)
      end
      if final == 1 then return end
      if pos > n and bitcnt < 3 then return end
    end
  end)
  if not ok then return nil, err end
  return out
end

---------------------------------------------------------------------------
-- Compressor (what the client sends). opts: window (8..15), takeover (keep
-- the LZ77 window across messages), level, finish (end each message with a
-- final block instead of a sync flush, RFC 7692 7.2.3.3 style).
---------------------------------------------------------------------------
local Comp = {}
Comp.__index = Comp

function D.compressor(opts)
  local self = setmetatable({ window = opts.window or 15, takeover = opts.takeover ~= false,
                              level = opts.level or 6, history = "" }, Comp)
  return self
end

function Comp:compress(data, how)
  if self.window == 8 then
    local out = D.fixed_deflate(data, self.takeover and self.history or "", 256)
    if self.takeover then self.history = (self.history .. data):sub(-256) end
    return out
  end
  if how == "finish" then
    -- a final block, then the empty stored block RFC 7692 7.2.1 appends and
    -- whose 4-byte LEN/NLEN is removed: one 0x00 byte is left of it.
    local z = zlib.deflate(self.level, -self.window)
    local out = z(data, "finish")
    return out .. "\0"
  end
  if not self.stream or not self.takeover then
    self.stream = zlib.deflate(self.level, -self.window)
  end
  local out = self.stream(data, "sync")
  assert(out:sub(-4) == D.TAIL, "zlib sync flush did not end with 00 00 ff ff")
  return out:sub(1, -5)
end

---------------------------------------------------------------------------
-- Decompressor (what the server sends). opts: window (8..15), takeover.
-- Returns data, or nil and an error.
---------------------------------------------------------------------------
local Decomp = {}
Decomp.__index = Decomp

function D.decompressor(opts)
  return setmetatable({ window = opts.window or 15, takeover = opts.takeover ~= false,
                        history = "", total_in = 0, seen = 0 }, Decomp)
end

-- A fresh raw inflater primed with history (fed as stored blocks, whose
-- output is discarded) so that the next message may refer back into it.
local function primed(window, history)
  local z = zlib.inflate(-window)
  local i, fed = 1, 0
  while i <= #history do
    local chunk = history:sub(i, i + 65535 - 1)
    local hdr = string.char(0) .. string.pack("<I2", #chunk) .. string.pack("<I2", (~#chunk) & 0xffff)
    z(hdr .. chunk)
    fed = fed + #hdr + #chunk
    i = i + #chunk
  end
  return z, fed
end

function Decomp:decompress(payload)
  local data = payload .. D.TAIL
  if self.window < 15 then
    local n, err = D.check_distances(data, 1 << self.window, self.takeover and self.seen or 0)
    if not n then return nil, err end
  end
  if not self.stream or not self.takeover then
    self.stream, self.total_in = zlib.inflate(-self.window), 0
  end
  local ok, out, eof, total_in = pcall(self.stream, data)
  if not ok then
    self.stream = nil
    return nil, "inflate failed: " .. tostring(out):gsub(" at lua_zlib.c.*$", "")
  end
  local used = total_in - self.total_in
  self.total_in = total_in
  if eof then
    -- The message ended with a BFINAL block (allowed by RFC 7692 7.2.3.3);
    -- whatever follows it must be (part of) the empty stored block of the tail.
    local rest = data:sub(used + 1)
    if rest ~= "" and rest ~= D.TAIL and rest ~= "\0" .. D.TAIL then
      return nil, string.format("%d stray bytes after the final deflate block", #rest)
    end
    self.stream = nil
    if self.takeover then
      self.history = (self.history .. out):sub(-(1 << self.window))
      self.stream, self.total_in = primed(self.window, self.history)
    end
  elseif used ~= #data then
    return nil, string.format("inflate left %d of %d bytes unused", #data - used, #data)
  elseif self.takeover then
    self.history = (self.history .. out):sub(-(1 << self.window))
  end
  self.seen = self.seen + #out
  return out
end

return D
