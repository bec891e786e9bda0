-- payloads.lua — deterministic test data for the conformance suite: a
-- seeded generator (so a failing case sends the same bytes every run) and
-- the data sets the compression cases slice their messages from.
local P = {}

-- xorshift64* — its own state, independent of math.random.
local Rng = {}
Rng.__index = Rng
function P.rng(seed)
  return setmetatable({ s = (seed or 1) * 0x9E3779B97F4A7C15 | 1 }, Rng)
end
function Rng:next()
  local x = self.s
  x = x ~ (x >> 12); x = x ~ (x << 25); x = x ~ (x >> 27)
  self.s = x
  return (x * 0x2545F4914F6CDD1D) >> 11   -- 53 non-negative bits
end
function Rng:int(a, b) return a + self:next() % (b - a + 1) end
function Rng:pick(t) return t[self:int(1, #t)] end

-- n random bytes (any value).
function P.random_bytes(n, seed)
  local r, t = P.rng(seed or 7), {}
  local i = 0
  while i + 6 <= n do
    local v = r:next()
    t[#t + 1] = string.pack("<I6", v & 0xffffffffffff)
    i = i + 6
  end
  while i < n do t[#t + 1] = string.char(r:next() & 0xff); i = i + 1 end
  return table.concat(t)
end

-- n bytes of printable ASCII, not compressible to speak of.
function P.ascii(n, seed)
  local r, t = P.rng(seed or 11), {}
  for i = 1, n do t[i] = string.char(32 + r:next() % 95) end
  return table.concat(t)
end

-- Repeat a block (of a length coprime to common frame sizes) to n bytes.
function P.repeat_to(block, n)
  if n == 0 then return "" end
  local s = block:rep(n // #block + 1)
  return s:sub(1, n)
end

-- Big payloads for 9.x without generating megabytes in Lua one byte at a
-- time: a 65521-byte (prime) block repeated.
local big_text_block, big_bin_block
function P.big_text(n)
  big_text_block = big_text_block or P.ascii(65521, 91)
  return P.repeat_to(big_text_block, n)
end
function P.big_binary(n)
  big_bin_block = big_bin_block or P.random_bytes(65521, 92)
  return P.repeat_to(big_bin_block, n)
end

---------------------------------------------------------------------------
-- Data sets for the compression cases (about 256 KiB each).
---------------------------------------------------------------------------
local WORDS = { "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with",
  "be", "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but",
  "have", "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her",
  "Faust", "Mephistopheles", "Gretchen", "Wagner", "spirit", "heaven", "earth", "night",
  "Straße", "Größe", "über", "Mädchen", "schön", "Frühling", "naïve", "café", "κόσμε",
  "λόγος", "Ωμέγα", "€", "—", "…", "«quoted»", "ñandú", "Ærø", "日本語", "中文", "😀" }

local SIZE = 256 * 1024
local cache = {}

local function text_human()
  local r, t, n = P.rng(101), {}, 0
  while n < SIZE do
    local sentence = {}
    for i = 1, r:int(4, 18) do sentence[i] = r:pick(WORDS) end
    local s = table.concat(sentence, " ")
    s = s:sub(1, 1):upper() .. s:sub(2) .. r:pick { ".", ".", "!", "?", ";" } .. (r:int(1, 6) == 1 and "\n\n" or " ")
    t[#t + 1] = s; n = n + #s
  end
  return table.concat(t)
end

local function json()
  local r, t, n = P.rng(202), { "[" }, 1
  local id = 0
  while n < SIZE do
    id = id + 1
    local tags = {}
    for i = 1, r:int(0, 4) do tags[i] = '"' .. r:pick(WORDS):gsub("[^%w]", "") .. '"' end
    local s = string.format(
      '{"id":%d,"name":"user%d","email":"user%d@example.org","active":%s,"score":%d.%02d,' ..
      '"tags":[%s],"address":{"street":"%d Main St","city":"%s","zip":"%05d"}},\n',
      id, r:int(1, 99999), id, r:int(0, 1) == 1 and "true" or "false", r:int(0, 1000), r:int(0, 99),
      table.concat(tags, ","), r:int(1, 9999), r:pick { "Berlin", "Paris", "Lisbon", "Oslo", "Rome" },
      r:int(0, 99999))
    t[#t + 1] = s; n = n + #s
  end
  t[#t + 1] = "{}]"
  return table.concat(t)
end

local function html()
  local r, t, n = P.rng(303), { "<!DOCTYPE html>\n<html><head><title>luaws</title></head><body>\n" }, 0
  while n < SIZE do
    local s = string.format(
      '<div class="item item-%d" id="n%d"><a href="/path/%d/%s.html">%s %s</a><span style="color:#%06x">%d</span></div>\n',
      r:int(1, 9), r:int(1, 1e6), r:int(1, 500), r:pick { "index", "about", "news", "faq" },
      r:pick { "Read", "See", "Open" }, r:pick { "more", "this", "the page" }, r:int(0, 0xffffff), r:int(0, 1e5))
    t[#t + 1] = s; n = n + #s
  end
  t[#t + 1] = "</body></html>\n"
  return table.concat(t)
end

-- A 512x512 8-bit "image": smooth gradients with noise (compressible binary).
local function bitmap()
  local r, rows = P.rng(404), {}
  local header = "BM" .. string.pack("<I4I2I2I4", SIZE + 54, 0, 0, 54) .. string.rep("\0", 40)
  for y = 0, 511 do
    local row = {}
    for x = 0, 511 do
      local v = ((x * 3 + y * 5) // 7 + (x * y) // 997 + r:int(0, 3)) & 0xff
      row[x + 1] = string.char(v)
    end
    rows[#rows + 1] = table.concat(row)
  end
  return header .. table.concat(rows)
end

local SETS = {
  text = { desc = "human-readable text, UTF-8 with multi-byte characters", kind = "text", make = text_human },
  json = { desc = "JSON text", kind = "text", make = json },
  html = { desc = "HTML text", kind = "text", make = html },
  bitmap = { desc = "bitmap image (compressible binary)", kind = "binary", make = bitmap },
  random = { desc = "random bytes (incompressible binary)", kind = "binary", make = function() return P.random_bytes(SIZE, 505) end },
}
P.SETS = SETS

function P.dataset(name)
  if not cache[name] then cache[name] = assert(SETS[name], name).make() end
  return cache[name]
end

-- A slicer: successive messages of about len bytes from a data set, wrapping
-- around (as Autobahn does). Text slices are moved to character boundaries.
function P.slicer(name)
  local data = P.dataset(name)
  local text = SETS[name].kind == "text"
  local pos = 1
  return function(len)
    if len == 0 then return "" end
    local s
    if pos + len - 1 <= #data then s = data:sub(pos, pos + len - 1); pos = pos + len
    else
      local rest = len - (#data - pos + 1)
      s = data:sub(pos) .. data:sub(1, rest); pos = rest + 1
    end
    if text then
      -- drop continuation bytes at the start, and a cut sequence at the end
      s = s:gsub("^[\128-\191]+", "")
      local cut = s:find("[\192-\255][\128-\191]*$")
      if cut and not utf8.len(s, cut) then s = s:sub(1, cut - 1) end
      assert(utf8.len(s), "slicer produced invalid UTF-8")
    end
    return s
  end
end

return P
