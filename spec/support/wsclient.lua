-- wsclient.lua — a raw RFC 6455 client on luasocket, for the specs.
--
-- It does exactly what it is told: it masks (or not), fragments, chops
-- bytes, sets reserved bits, lies about lengths; and it answers nothing
-- automatically unless asked. Sockets are blocking with a timeout that is
-- only a guard against a hung server, never what a test waits on.
--
--   local wsc = require "spec.support.wsclient"
--   local c = assert(wsc.connect("127.0.0.1", port, { path = "/chat" }))
--   assert.equal(101, c.status)
--   c:send_text("hi");  local data, kind = c:read_message()
--   local code, reason, tcp_closed = c:close(1000, "bye")
local socket = require "socket"
local mime = require "mime"

local M = {}
M.DEFAULT_TIMEOUT = 5

M.OP = { cont = 0x0, text = 0x1, binary = 0x2, close = 0x8, ping = 0x9, pong = 0xA }
local OPNAME = { [0] = "cont", "text", "binary", [8] = "close", [9] = "ping", [10] = "pong" }
M.OPNAME = OPNAME
local GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

---------------------------------------------------------------------------
-- SHA-1 (for Sec-WebSocket-Accept), Lua 5.4 integers.
---------------------------------------------------------------------------
local function sha1(msg)
  local function rol(x, n) return ((x << n) | (x >> (32 - n))) & 0xffffffff end
  local h0, h1, h2, h3, h4 = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0
  local ml = #msg * 8
  msg = msg .. "\128" .. string.rep("\0", (55 - #msg) % 64) .. string.pack(">I8", ml)
  assert(#msg % 64 == 0)
  local w = {}
  for chunk = 1, #msg, 64 do
    for i = 0, 15 do w[i] = string.unpack(">I4", msg, chunk + i * 4) end
    for i = 16, 79 do w[i] = rol(w[i - 3] ~ w[i - 8] ~ w[i - 14] ~ w[i - 16], 1) end
    local a, b, c, d, e = h0, h1, h2, h3, h4
    for i = 0, 79 do
      local f, k
      if i < 20 then f, k = (b & c) | ((~b) & d), 0x5A827999
      elseif i < 40 then f, k = b ~ c ~ d, 0x6ED9EBA1
      elseif i < 60 then f, k = (b & c) | (b & d) | (c & d), 0x8F1BBCDC
      else f, k = b ~ c ~ d, 0xCA62C1D6 end
      local t = (rol(a, 5) + (f & 0xffffffff) + e + k + w[i]) & 0xffffffff
      e, d, c, b, a = d, c, rol(b, 30), a, t
    end
    h0 = (h0 + a) & 0xffffffff; h1 = (h1 + b) & 0xffffffff; h2 = (h2 + c) & 0xffffffff
    h3 = (h3 + d) & 0xffffffff; h4 = (h4 + e) & 0xffffffff
  end
  return string.pack(">I4I4I4I4I4", h0, h1, h2, h3, h4)
end
M.sha1 = sha1

function M.b64(s) return (mime.b64(s)) end
function M.accept_for(key) return M.b64(sha1(key .. GUID)) end

function M.random_bytes(n)
  local t = {}
  for i = 1, n do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

-- XOR payload with a 4-byte key, 8 bytes at a time (fast enough for MiBs).
function M.mask(payload, key)
  local n = #payload
  if n == 0 then return "" end
  local k4 = string.unpack("<i4", key)
  local k8 = string.unpack("<i8", key .. key)
  local out, o = {}, 0
  local i = 1
  while i + 7 <= n do
    o = o + 1; out[o] = string.pack("<i8", string.unpack("<i8", payload, i) ~ k8)
    i = i + 8
  end
  if i + 3 <= n then
    o = o + 1; out[o] = string.pack("<i4", string.unpack("<i4", payload, i) ~ k4)
    i = i + 4
  end
  local j = 1
  while i <= n do
    o = o + 1; out[o] = string.char(payload:byte(i) ~ key:byte(j))
    i, j = i + 1, j + 1
  end
  return table.concat(out)
end

-- Encode a frame. f = {fin=true, rsv1, rsv2, rsv3, opcode=1, payload="",
--   mask=nil (random key) | false (unmasked) | "4-byte key",
--   length=N (value written in the length field instead of #payload),
--   length_form="7"|"16"|"64" (force an encoding of the length field)}
function M.encode_frame(f)
  local payload = f.payload or ""
  if type(payload) ~= "string" then payload = tostring(payload) end
  local fin = f.fin; if fin == nil then fin = true end
  local b1 = (fin and 0x80 or 0) | (f.rsv1 and 0x40 or 0) | (f.rsv2 and 0x20 or 0)
      | (f.rsv3 and 0x10 or 0) | ((f.opcode or 1) & 0x0f)
  local len = f.length or #payload
  local key = f.mask
  if key == nil or key == true then key = M.random_bytes(4) end
  local maskbit = key and 0x80 or 0
  local form = f.length_form or (len < 126 and "7") or (len < 65536 and "16") or "64"
  local head
  if form == "7" then
    head = string.char(b1, maskbit | len)
  elseif form == "16" then
    head = string.char(b1, maskbit | 126) .. string.pack(">I2", len)
  else
    head = string.char(b1, maskbit | 127) .. string.pack(">i8", len)
  end
  if key then
    assert(#key == 4, "mask key must be 4 bytes")
    return head .. key .. M.mask(payload, key)
  end
  return head .. payload
end

function M.close_payload(code, reason)
  if code == nil then return "" end
  return string.pack(">I2", code) .. (reason or "")
end

---------------------------------------------------------------------------
-- Connection object
---------------------------------------------------------------------------
local Conn = {}
Conn.__index = Conn
M.Conn = Conn

-- Every connection opened here, weakly: Server:stop drops the ones a spec left
-- open to that server first (M.drop_to), so the server sees them go at once
-- instead of draining them for its close timeout.
local opened = setmetatable({}, { __mode = "k" })

-- Close, without a close handshake, every connection still open to port
-- (to any port when port is nil).
function M.drop_to(port)
  for c in pairs(opened) do
    if (port == nil or c.port == port) and not c.closed then c:shutdown() end
  end
end

-- Open a plain TCP connection (no handshake yet).
function M.tcp(host, port, opts)
  opts = opts or {}
  local sock = socket.tcp()
  sock:settimeout(opts.timeout or M.DEFAULT_TIMEOUT)
  if opts.bind then   -- a source address (127.0.0.N: distinct clients on loopback)
    local bok, berr = sock:bind(opts.bind, 0)
    if not bok then sock:close(); return nil, "bind: " .. tostring(berr) end
  end
  local ok, err = sock:connect(host or "127.0.0.1", port)
  if not ok then sock:close(); return nil, "connect: " .. tostring(err) end
  sock:setoption("tcp-nodelay", true)
  local c = setmetatable({ sock = sock, host = host or "127.0.0.1", port = port,
                          buf = "", frag = nil, timeout = opts.timeout or M.DEFAULT_TIMEOUT }, Conn)
  opened[c] = true
  return c
end

-- Raw bytes out; opts.chop = n delivers n bytes per write (opts.pause = seconds
-- between writes, to make the server see separate reads).
function Conn:send_raw(data, opts)
  local chop = opts and opts.chop
  if not chop then
    local ok, err, last = self.sock:send(data)
    if not ok then return nil, err, last end
    return true
  end
  for i = 1, #data, chop do
    local ok, err = self.sock:send(data:sub(i, i + chop - 1))
    if not ok then return nil, err end
    if opts.pause then socket.sleep(opts.pause) end
  end
  return true
end

-- Raw bytes in. Keeps a small read-ahead buffer (self.buf).
function Conn:receive_bytes(n)
  if #self.buf >= n then
    local s = self.buf:sub(1, n); self.buf = self.buf:sub(n + 1)
    return s
  end
  local need = n - #self.buf
  local data, err, partial = self.sock:receive(need)
  if not data then
    self.buf = self.buf .. (partial or "")
    return nil, err
  end
  local s = self.buf .. data; self.buf = ""
  return s
end

function Conn:receive_line()
  local pos = self.buf:find("\r\n", 1, true)
  if pos then
    local line = self.buf:sub(1, pos - 1); self.buf = self.buf:sub(pos + 2)
    return line
  end
  local line, err, partial = self.sock:receive("*l")
  if not line then self.buf = self.buf .. (partial or ""); return nil, err end
  line = self.buf .. line; self.buf = ""
  return (line:gsub("\r$", ""))
end

-- Read an HTTP response head (and a Content-Length body unless opts.head_only).
-- Returns resp = {status=, reason=, version=, headers={lower=value}, raw_headers={...}, body=}
function Conn:read_response(opts)
  opts = opts or {}
  local line, err = self:receive_line()
  if not line then return nil, "reading status line: " .. tostring(err) end
  local version, status, reason = line:match("^(HTTP/%d%.%d) (%d%d%d) ?(.*)$")
  if not version then return nil, "bad status line: " .. line end
  local resp = { version = version, status = tonumber(status), reason = reason,
                 headers = {}, raw_headers = {}, status_line = line }
  while true do
    line, err = self:receive_line()
    if not line then return nil, "reading headers: " .. tostring(err) end
    if line == "" then break end
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if not name then return nil, "bad header line: " .. line end
    resp.raw_headers[#resp.raw_headers + 1] = { name, value }
    local k = name:lower()
    if resp.headers[k] then resp.headers[k] = resp.headers[k] .. ", " .. value
    else resp.headers[k] = value end
  end
  if not opts.head_only and resp.status ~= 101 then
    local cl = tonumber(resp.headers["content-length"])
    if cl then
      resp.body, err = self:receive_bytes(cl)
      if not resp.body then return nil, "reading body: " .. tostring(err) end
    elseif (resp.headers["transfer-encoding"] or ""):lower():find("chunked") then
      local parts = {}
      while true do
        local sz = self:receive_line()
        if not sz then return nil, "reading chunk size" end
        local n = tonumber(sz:match("^%x+"), 16)
        if not n then return nil, "bad chunk size: " .. sz end
        if n == 0 then
          repeat local l = self:receive_line() until l == nil or l == ""
          break
        end
        parts[#parts + 1] = self:receive_bytes(n)
        self:receive_line()
      end
      resp.body = table.concat(parts)
    elseif opts.read_to_eof then
      local rest = self.sock:receive("*a")
      resp.body = self.buf .. (rest or ""); self.buf = ""
    end
  end
  return resp
end

-- Build and send one HTTP request. req = {method="GET", path="/", version="HTTP/1.1",
--   headers = { {"Name","value"}, ... } or {Name = "value"}, body = "..."}
function M.format_request(req)
  local lines = { string.format("%s %s %s", req.method or "GET", req.path or "/",
                                req.version or "HTTP/1.1") }
  local have = {}
  local hdrs = req.headers or {}
  local function add(k, v) lines[#lines + 1] = k .. ": " .. v; have[k:lower()] = true end
  if hdrs[1] then
    for _, kv in ipairs(hdrs) do add(kv[1], kv[2]) end
  else
    local keys = {}
    for k in pairs(hdrs) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do add(k, hdrs[k]) end
  end
  if req.body and not have["content-length"] and not have["transfer-encoding"] then
    add("Content-Length", tostring(#req.body))
  end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (req.body or "")
end

function Conn:request(req)
  local ok, err = self:send_raw(M.format_request(req))
  if not ok then return nil, err end
  return self:read_response(req)
end

-- One-shot plain HTTP request on a fresh connection.
function M.http(host, port, req)
  local c, err = M.tcp(host, port)
  if not c then return nil, err end
  local resp, rerr = c:request(req or {})
  c:shutdown()
  return resp, rerr
end

-- WebSocket upgrade.
-- opts = {path="/", host_header=, key=, version="13", protocols={...},
--   headers = list {{k,v}} or map appended, omit = {["sec-websocket-key"]=true, ...},
--   method = "GET", raw = "full request text" (overrides all), timeout = }
-- Returns a Conn with .status, .headers, .response (also for non-101 answers),
-- or nil, err when the TCP connect or the response parse failed.
function M.connect(host, port, opts)
  opts = opts or {}
  local c, err = M.tcp(host, port, opts)
  if not c then return nil, err end
  local request
  if opts.raw then
    request = opts.raw
  else
    local key = opts.key or M.b64(M.random_bytes(16))
    c.key = key
    local omit = opts.omit or {}
    local hdrs = {}
    local function add(k, v) if not omit[k:lower()] then hdrs[#hdrs + 1] = { k, v } end end
    add("Host", opts.host_header or ((host or "127.0.0.1") .. ":" .. port))
    add("Upgrade", opts.upgrade or "websocket")
    add("Connection", opts.connection or "Upgrade")
    add("Sec-WebSocket-Key", key)
    add("Sec-WebSocket-Version", opts.version or "13")
    if opts.protocols then add("Sec-WebSocket-Protocol", table.concat(opts.protocols, ", ")) end
    local extra = opts.headers or {}
    if extra[1] then
      for _, kv in ipairs(extra) do hdrs[#hdrs + 1] = kv end
    else
      for k, v in pairs(extra) do hdrs[#hdrs + 1] = { k, v } end
    end
    request = M.format_request { method = opts.method or "GET", path = opts.path or "/",
                                 headers = hdrs, body = opts.body }
  end
  local ok, serr = c:send_raw(request)
  if not ok then c:shutdown(); return nil, "sending upgrade: " .. tostring(serr) end
  local resp, rerr = c:read_response()
  if not resp then c:shutdown(); return nil, rerr end
  c.response, c.status, c.headers, c.body = resp, resp.status, resp.headers, resp.body
  if resp.status == 101 and c.key then
    c.accept_ok = (resp.headers["sec-websocket-accept"] == M.accept_for(c.key))
  end
  return c
end

function Conn:settimeout(t) self.timeout = t; self.sock:settimeout(t) end

function Conn:shutdown()
  if self.sock then self.sock:close() end
  self.closed = true
end

-- Frames out ---------------------------------------------------------------
-- f: see M.encode_frame; plus f.chop / f.pause for chopped delivery.
function Conn:send_frame(f)
  return self:send_raw(M.encode_frame(f), f)
end

function Conn:send_text(s, o)
  o = o or {}
  return self:send_frame { opcode = 1, payload = s, fin = o.fin, mask = o.mask, chop = o.chop, pause = o.pause }
end
function Conn:send_binary(s, o)
  o = o or {}
  return self:send_frame { opcode = 2, payload = s, fin = o.fin, mask = o.mask, chop = o.chop, pause = o.pause }
end
function Conn:send_cont(s, fin, o)
  o = o or {}
  return self:send_frame { opcode = 0, payload = s, fin = fin, mask = o.mask, chop = o.chop }
end
function Conn:ping(s) return self:send_frame { opcode = 9, payload = s or "" } end
function Conn:pong(s) return self:send_frame { opcode = 10, payload = s or "" } end
function Conn:send_close(code, reason)
  return self:send_frame { opcode = 8, payload = M.close_payload(code, reason) }
end

-- Send a message in fragments: parts = {"a","b","c"}, kind "text"|"binary".
-- between = function(i) called after fragment i (e.g. to send a ping).
function Conn:send_fragmented(kind, parts, between)
  for i, p in ipairs(parts) do
    local op = (i == 1) and (kind == "binary" and 2 or 1) or 0
    local ok, err = self:send_frame { opcode = op, payload = p, fin = (i == #parts) }
    if not ok then return nil, err end
    if between and i < #parts then between(i) end
  end
  return true
end

-- Frames in ----------------------------------------------------------------
-- Returns frame = {fin, rsv1, rsv2, rsv3, opcode, kind, masked, payload, length}
-- or nil, "timeout"|"closed"|err.
function Conn:read_frame()
  local h, err = self:receive_bytes(2)
  if not h then return nil, err end
  local b1, b2 = h:byte(1, 2)
  local f = {
    fin = (b1 & 0x80) ~= 0, rsv1 = (b1 & 0x40) ~= 0, rsv2 = (b1 & 0x20) ~= 0,
    rsv3 = (b1 & 0x10) ~= 0, opcode = b1 & 0x0f, masked = (b2 & 0x80) ~= 0,
  }
  f.kind = OPNAME[f.opcode] or ("op" .. f.opcode)
  local len = b2 & 0x7f
  f.length_form = "7"
  if len == 126 then
    local e; e, err = self:receive_bytes(2); if not e then return nil, err end
    len = string.unpack(">I2", e); f.length_form = "16"
  elseif len == 127 then
    local e; e, err = self:receive_bytes(8); if not e then return nil, err end
    len = string.unpack(">i8", e); f.length_form = "64"
  end
  f.length = len
  local key
  if f.masked then
    key, err = self:receive_bytes(4); if not key then return nil, err end
  end
  local payload = ""
  if len > 0 then
    payload, err = self:receive_bytes(len)
    if not payload then return nil, err end
  end
  if key then payload = M.mask(payload, key) end
  f.payload = payload
  return f
end

-- Next message. Data frames are reassembled; a control frame is returned as
-- its own message (kind "ping"/"pong"/"close") even in the middle of a
-- fragmented message (the fragments so far are kept for the next call).
-- opts.auto_pong = true answers pings (and skips them); opts.skip_control
-- skips pings/pongs. Returns data, kind, info  or nil, err.
-- info = {frames = n, opcode = first opcode, fins = {...}, rsv = any rsv set}
function Conn:read_message(opts)
  opts = opts or {}
  while true do
    local f, err = self:read_frame()
    if not f then return nil, err end
    if f.opcode >= 8 then
      if f.opcode == 9 and opts.auto_pong then
        self:pong(f.payload)
      elseif (f.opcode == 9 or f.opcode == 10) and opts.skip_control then
        -- skip
      else
        return f.payload, f.kind, { frames = 1, opcode = f.opcode, frame = f }
      end
    else
      if f.opcode ~= 0 then
        if self.frag then return nil, "protocol: new data frame inside fragmented message" end
        self.frag = { kind = f.kind, opcode = f.opcode, parts = {}, frames = 0, rsv = false }
      elseif not self.frag then
        return nil, "protocol: continuation without start"
      end
      local fr = self.frag
      fr.parts[#fr.parts + 1] = f.payload
      fr.frames = fr.frames + 1
      fr.rsv = fr.rsv or f.rsv1 or f.rsv2 or f.rsv3
      fr.masked = fr.masked or f.masked
      if f.fin then
        self.frag = nil
        return table.concat(fr.parts), fr.kind,
               { frames = fr.frames, opcode = fr.opcode, rsv = fr.rsv, masked = fr.masked }
      end
    end
  end
end

-- Is the TCP connection closed by the peer (EOF or reset) without more data?
-- Returns true, or false plus what arrived instead.
function Conn:tcp_closed()
  if #self.buf > 0 then return false, "pending bytes: " .. #self.buf end
  local data, err, partial = self.sock:receive(1)
  if data then self.buf = self.buf .. data; return false, "data" end
  if err == "closed" or (err and err:find("reset")) then return true end
  if partial and #partial > 0 then self.buf = self.buf .. partial; return false, "data" end
  return false, err
end

-- Wait for the server's close frame. Data frames and pings/pongs that arrive
-- first are collected into info.skipped (pings are not answered).
-- By default replies with a close echoing the code (opts.reply = false: don't;
-- opts.reply_code = n: reply with that code), then checks that the server
-- closes TCP. Returns code (nil when the close had no payload), reason,
-- tcp_closed, info = {payload, skipped = {{kind, data}}, err}
-- On failure (no close frame) returns nil, err_string, tcp_closed, info.
function Conn:expect_close(opts)
  opts = opts or {}
  local info = { skipped = {} }
  while true do
    local data, kind = self:read_message()
    if not data then
      info.err = kind
      local closed = (kind == "closed") or (kind and kind:find("reset") ~= nil)
      return nil, "no close frame: " .. tostring(kind), closed, info
    end
    if kind == "close" then
      info.payload = data
      local code, reason
      if #data >= 2 then code = string.unpack(">I2", data); reason = data:sub(3)
      elseif #data == 1 then info.malformed = true end
      if opts.reply ~= false and not self.sent_close then
        self.sent_close = true
        local rc = opts.reply_code or code
        self:send_raw(M.encode_frame { opcode = 8, payload = M.close_payload(rc, "") })
      end
      local closed, why = self:tcp_closed()
      info.after_close = why
      self:shutdown()
      return code, reason, closed, info
    end
    info.skipped[#info.skipped + 1] = { kind, data }
  end
end

-- Client-initiated close: send close(code, reason) and wait for the server's
-- close reply and TCP close. Returns code, reason, tcp_closed, info.
function Conn:close(code, reason, opts)
  self.sent_close = true
  self:send_close(code, reason)
  return self:expect_close(opts)
end

return M
