-- helpers.lua — shared bits for the specs: hex, request dumps, monitors.
local wsc = require "spec.support.wsclient"
local server = require "spec.support.server"

local H = {}

function H.hex(s)
  if s == nil then return "nil" end
  if s == "" then return "-" end
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end
function H.unhex(h)
  if h == nil or h == "-" then return "" end
  if h == "nil" then return nil end
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- Parse the request dump of control.lua / http.lua:
-- { method = {type = "string", value = "GET"}, ..., headers = {name = {type, value}} }
function H.parse_dump(text)
  local r = { headers = {} }
  for line in text:gmatch("[^\n]+") do
    local k, t, v = line:match("^(%S+) (%S+) (%S+)$")
    assert(k, "bad dump line: " .. line)
    local name = k:match("^header:(%x+)$")
    local val = { type = t, value = (t ~= "nil") and H.unhex(v) or nil }
    if name then r.headers[H.unhex(name)] = val
    elseif k == "headers" then r.headers_type = t
    else r[k] = val end
  end
  return r
end

-- Start luaws with a script, with a clear error when it is not built.
function H.start(opts)
  if not server.available() then
    error("luaws binary not built: " .. server.BINARY .. " (run `make luaws`)", 2)
  end
  return server.start(opts)
end

-- Connect and expect a 101.
function H.open(srv, path, opts)
  opts = opts or {}
  opts.path = path or opts.path or "/"
  local c, err = wsc.connect(srv.host, srv.port, opts)
  assert(c, err)
  assert(c.status == 101, "expected 101, got " .. tostring(c.status) .. " " .. tostring(c.body))
  assert(c.accept_ok, "bad Sec-WebSocket-Accept")
  return c
end

-- Read the next message, failing the test with a useful message if none.
function H.read(c, opts)
  local data, kind, info = c:read_message(opts)
  assert(data, "read_message failed: " .. tostring(kind))
  return data, kind, info
end

-- A subject of control.lua: connected, with its id.
function H.subject(srv, path, opts)
  local c = H.open(srv, path or "/subject", opts)
  c:send_text("!id")
  local msg = H.read(c)
  c.id = assert(msg:match("^id (%S+)$"), "bad id reply: " .. msg)
  return c
end

---------------------------------------------------------------------------
-- Monitor: a connection to control.lua's /monitor, receiving every event.
---------------------------------------------------------------------------
local Monitor = {}
Monitor.__index = Monitor

function H.monitor(srv)
  local c = H.open(srv, "/monitor")
  local greet = H.read(c)
  assert(greet == "monitoring", "monitor greeting: " .. tostring(greet))
  return setmetatable({ c = c, seen = {} }, Monitor)
end

-- Next event line (any connection).
function Monitor:next()
  local data, kind = self.c:read_message({ auto_pong = true })
  assert(data, "monitor: no event: " .. tostring(kind))
  assert(kind == "text", "monitor: unexpected " .. tostring(kind))
  self.seen[#self.seen + 1] = data
  return data
end

-- Read events until one matches the Lua pattern; returns the line and captures.
function Monitor:wait(pattern)
  while true do
    local line = self:next()
    local caps = { line:find(pattern) }
    if caps[1] then return line, table.unpack(caps, 3) end
  end
end

-- Events for connection id: wait for "<name> <id> ..." and return the split words.
function Monitor:event(name, id)
  local line = self:wait("^" .. name .. " " .. id .. "%f[%s\0]")
  local w = {}
  for x in line:gmatch("%S+") do w[#w + 1] = x end
  return w, line
end

-- Number of seen lines matching pattern so far.
function Monitor:count(pattern)
  local n = 0
  for _, l in ipairs(self.seen) do if l:find(pattern) then n = n + 1 end end
  return n
end

-- Seen lines about id, in order (names only).
function Monitor:names_for(id)
  local t = {}
  for _, l in ipairs(self.seen) do
    local name, lid = l:match("^(%S+) (%S+)")
    if lid == tostring(id) then t[#t + 1] = name end
  end
  return t
end

function Monitor:close() self.c:shutdown() end

-- Parse a close event line of control.lua:
-- "close ID CODE HEXREASON is_open=B send=OK,R,E"
function H.parse_close(words)
  return {
    id = words[2], code = tonumber(words[3]), reason = H.unhex(words[4]),
    is_open = words[5] and words[5]:match("is_open=(%S+)"),
    send = words[6] and words[6]:match("send=(%S+)"),
  }
end

-- Deterministic pseudo-random bytes (so failures are reproducible).
function H.bytes(n, seed)
  local t = {}
  local x = seed or 12345
  for i = 1, n do
    x = (x * 1103515245 + 12345) & 0x7fffffff
    t[i] = string.char((x >> 16) & 0xff)
  end
  return table.concat(t)
end

function H.text(n)
  local pat = "The quick brown fox jumps over the lazy dog 0123456789. "
  return string.rep(pat, n // #pat + 1):sub(1, n)
end

return H
