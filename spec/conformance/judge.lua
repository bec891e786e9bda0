-- judge.lua — the test context of one conformance case: a raw connection to
-- the server under test (spec/support/wsclient.lua underneath) and the strict
-- expectations a case asserts with it.
--
-- A case calls t:fail(...) — directly or through an expect_* — to end with
-- FAILED; t:nonstrict(...) marks a tolerated deviation (the case goes on and
-- ends NON-STRICT unless it fails later). Timeouts are guards only: every
-- wait ends as soon as the awaited frame or TCP event arrives.
--
-- What the judge checks on every frame the server sends (any violation is
-- FAILED): unmasked, no RSV2/RSV3, RSV1 only on the first frame of a message
-- and only when permessage-deflate was negotiated, known opcodes, control
-- frames final and <= 125 bytes, no continuation without a start, text
-- messages valid UTF-8, close payloads well-formed (no 1-byte payload, a code
-- a peer may send, a UTF-8 reason), nothing after the close frame.
local socket = require "socket"
local wsc = require "spec.support.wsclient"
local D = require "spec.conformance.deflate"

local J = {}

local function envnum(name, default) return tonumber(os.getenv(name) or "") or default end
-- Guard timeouts (seconds). READ: any awaited frame. CLOSE: the server closes
-- TCP after the close handshake or after failing the connection. FAILFAST:
-- how long a server may take to fail a text message on the invalid byte before
-- the case falls back to completing the message (then NON-STRICT).
J.READ_GUARD = envnum("CONFORMANCE_READ_GUARD", 10)
J.CLOSE_GUARD = envnum("CONFORMANCE_CLOSE_GUARD", 2)
J.FAILFAST_GUARD = envnum("CONFORMANCE_FAILFAST_GUARD", 2)

local Failure = {}
Failure.__index = Failure
Failure.__tostring = function(f) return f.msg end
J.Failure = Failure

function J.is_failure(e) return getmetatable(e) == Failure end

-- Close codes a server may put in a close frame (RFC 6455 7.4, IANA registry).
function J.valid_close_code(c)
  return (c >= 1000 and c <= 1003) or (c >= 1007 and c <= 1014) or (c >= 3000 and c <= 4999)
end

local function hexsnip(s, n)
  n = n or 16
  local h = s:sub(1, n):gsub(".", function(c) return string.format("%02x", c:byte()) end)
  return h .. (#s > n and "…" or "")
end
J.hexsnip = hexsnip

local function show(s)
  if s == nil then return "nil" end
  if #s <= 40 and s:match("^[%g ]*$") then return string.format("%q", s) end
  return string.format("%d bytes %s", #s, hexsnip(s))
end
J.show = show

local function first_difference(a, b)
  local n = math.min(#a, #b)
  local i = 1
  local step = 4096
  while i <= n do
    local j = math.min(i + step - 1, n)
    if a:sub(i, j) ~= b:sub(i, j) then
      for k = i, j do if a:byte(k) ~= b:byte(k) then return k end end
    end
    i = j + 1
  end
  return n + 1
end

local T = {}
T.__index = T

-- target = {host=, port=, profile = {deflate = "off"|"shared"|"dedicated"|"any"}}
function J.new(target, case)
  return setmetatable({ target = target, case = case, notes = {}, log = {},
                        nonstrict_msgs = {}, pmd = nil }, T)
end

function T:fail(fmt, ...)
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or fmt
  error(setmetatable({ msg = msg }, Failure), 0)
end

function T:nonstrict(fmt, ...)
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or fmt
  self.nonstrict_msgs[#self.nonstrict_msgs + 1] = msg
end

function T:note(fmt, ...)
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or fmt
  self.notes[#self.notes + 1] = msg
end

-- The frame trace printed (--verbose) for a case that is not OK: the first 40
-- and the last 200 entries.
function T:trace(fmt, ...)
  local log = self.log
  local n = (log.n or 0) + 1
  log.n = n
  local line = string.format(fmt, ...)
  if n <= 40 then log[n] = line else log[41 + (n - 41) % 200] = line end
end

function T:trace_lines()
  local log, n, out = self.log, self.log.n or 0, {}
  for i = 1, math.min(n, 40) do out[#out + 1] = log[i] end
  if n > 240 then out[#out + 1] = string.format("... (%d entries left out)", n - 240) end
  for k = math.max(41, n - 199), n do out[#out + 1] = log[41 + (k - 41) % 200] end
  return out
end

---------------------------------------------------------------------------
-- Opening
---------------------------------------------------------------------------
-- opts.offers = list of Sec-WebSocket-Extensions header values to send (each
-- its own header line). Without offers the response must carry no extension.
-- Returns the negotiated permessage-deflate params (or nil when none).
function T:connect(opts)
  opts = opts or {}
  local headers = {}
  for _, o in ipairs(opts.offers or {}) do headers[#headers + 1] = { "Sec-WebSocket-Extensions", o } end
  local c, err = wsc.connect(self.target.host, self.target.port,
    { headers = headers, timeout = J.READ_GUARD, path = opts.path or "/" })
  if not c then self:fail("opening handshake: %s", tostring(err)) end
  self.c = c
  if c.status ~= 101 then self:fail("opening handshake: HTTP %s %s", tostring(c.status), c.response.reason or "") end
  if not c.accept_ok then self:fail("opening handshake: wrong Sec-WebSocket-Accept") end
  local ext = c.headers["sec-websocket-extensions"]
  self.response_extensions = ext
  self:trace("open%s -> %s", opts.offers and (" offering " .. table.concat(opts.offers, " | ")) or "",
    ext and ("extensions: " .. ext) or "no extensions")
  if not opts.offers then
    if ext then self:fail("the server answered Sec-WebSocket-Extensions: %s although nothing was offered", ext) end
    return nil
  end
  local params, why = D.judge_response(opts.offers, ext)
  if params == nil then self:fail("%s", why) end
  if params then
    self.pmd = params
    -- client -> server: the window the server allows us, else the full 15
    -- (an offered client_max_window_bits value is only a hint, RFC 7692 7.1.2.2)
    local cw = (type(params.cmwb) == "number") and params.cmwb or 15
    self.tx = D.compressor { window = cw, takeover = not params.cnct }
    self.rx = D.decompressor { window = params.smwb or 15, takeover = not params.snct }
    self.accepted_offer = why
    self:note("negotiated %s", D.describe(params))
  else
    self:note("declined permessage-deflate")
  end
  return self.pmd
end

-- Open with permessage-deflate offers and judge the answer against the
-- server's deflate mode (target.profile.deflate):
--   off        every offer declined
--   shared     any acceptance carries server_no_context_takeover and
--              client_no_context_takeover
--   dedicated  the plain offer is answered without either (context takeover
--              honoured), an offer of server_no_context_takeover is accepted
--   any        (independent servers) the plain offer is accepted
-- opts.plain: this is the plain offer; opts.snct_offer: the offer is
-- server_no_context_takeover alone; opts.invalid: every offer is invalid and
-- must be declined whatever the mode.
function T:negotiate(offers, opts)
  opts = opts or {}
  local mode = self.target.profile.deflate or "any"
  local pmd = self:connect { offers = offers }
  if opts.invalid then
    if pmd then self:fail("the server accepted an invalid offer: %s", self.response_extensions) end
    return nil
  end
  if mode == "off" then
    if pmd then self:fail("the server accepted permessage-deflate (%s) with deflate off", self.response_extensions) end
    return nil
  end
  if opts.plain and not pmd then self:fail("the server declined the plain permessage-deflate offer") end
  if pmd and mode == "shared" and not (pmd.snct and pmd.cnct) then
    self:fail("shared mode must answer with server_no_context_takeover and client_no_context_takeover, got: %s",
      self.response_extensions)
  end
  if mode == "dedicated" then
    if opts.plain and (pmd.snct or pmd.cnct) then
      self:fail("dedicated mode should honour context takeover, but answered the plain offer with: %s",
        self.response_extensions)
    end
    if opts.snct_offer and not pmd then self:fail("dedicated mode declined server_no_context_takeover") end
  end
  return pmd
end

---------------------------------------------------------------------------
-- Sending. A frame is a table for wsclient.encode_frame:
--   {opcode=, payload=, fin=, rsv1=, rsv2=, rsv3=, mask=, length=, length_form=}
-- Write errors are recorded, not fatal: a server that already failed the
-- connection may have closed it; what it sent before is judged by reading.
---------------------------------------------------------------------------
function T:encode(f) return wsc.encode_frame(f) end

function T:send_bytes(bytes, chop)
  if self.write_error then return false end
  local ok, err = self.c:send_raw(bytes, chop and { chop = chop } or nil)
  if not ok then self.write_error = err; self:trace("write error: %s", tostring(err)) end
  return ok
end

-- frames: one frame table or a list of them. opts.chop: nil (all in one
-- write), "frame" (one write per frame) or n (writes of n bytes).
function T:send(frames, opts)
  opts = opts or {}
  if frames.opcode or frames.payload then frames = { frames } end
  local parts = {}
  for i, f in ipairs(frames) do
    parts[i] = self:encode(f)
    self:trace("send op=%d fin=%s rsv=%d%d%d len=%d%s", f.opcode or 1, tostring(f.fin ~= false),
      f.rsv1 and 1 or 0, f.rsv2 and 1 or 0, f.rsv3 and 1 or 0, #(f.payload or ""),
      opts.chop and (" chop=" .. tostring(opts.chop)) or "")
  end
  if opts.chop == "frame" then
    for _, p in ipairs(parts) do if not self:send_bytes(p) then return false end end
    return true
  end
  return self:send_bytes(table.concat(parts), opts.chop)
end

-- Helpers for single frames.
function T:text(payload, o) o = o or {}; o.opcode = 1; o.payload = payload; return o end
function T:binary(payload, o) o = o or {}; o.opcode = 2; o.payload = payload; return o end
function T:cont(payload, fin, o) o = o or {}; o.opcode = 0; o.payload = payload; o.fin = fin; return o end
function T:ping_frame(payload, o) o = o or {}; o.opcode = 9; o.payload = payload or ""; return o end
function T:pong_frame(payload, o) o = o or {}; o.opcode = 10; o.payload = payload or ""; return o end
function T:close_frame(code, reason, o)
  o = o or {}; o.opcode = 8; o.payload = wsc.close_payload(code, reason); return o
end

-- The frames of one message, compressed when permessage-deflate is in effect
-- (opts.compress = false sends it plain even then). opts.frag = fragment size
-- (of the payload as sent, i.e. after compression). opts.how = "finish" ends
-- the deflate data with a final block.
function T:message_frames(kind, data, opts)
  opts = opts or {}
  local op = (kind == "binary") and 2 or 1
  local payload, rsv1 = data, false
  if self.pmd and opts.compress ~= false then
    payload, rsv1 = self.tx:compress(data, opts.how), true
  end
  local frames = {}
  local frag = opts.frag
  if not frag or frag <= 0 or #payload <= frag then
    frames[1] = { opcode = op, payload = payload, rsv1 = rsv1 }
  else
    local i = 1
    while i <= #payload do
      local piece = payload:sub(i, i + frag - 1)
      i = i + frag
      frames[#frames + 1] = { opcode = (#frames == 0) and op or 0, payload = piece,
                              rsv1 = (#frames == 0) and rsv1 or false, fin = i > #payload }
    end
  end
  return frames
end

function T:send_message(kind, data, opts)
  return self:send(self:message_frames(kind, data, opts), opts)
end

---------------------------------------------------------------------------
-- Receiving
---------------------------------------------------------------------------
-- Next frame, judged. nil, "timeout" | "closed" | "reset: ..." when none.
function T:read_frame(timeout)
  local c = self.c
  c.sock:settimeout(timeout or J.READ_GUARD)
  local f, err = c:read_frame()
  if not f then
    if err == "closed" then return nil, "closed" end
    if err and tostring(err):find("reset") then return nil, "closed" end
    return nil, err
  end
  self:trace("recv op=%d fin=%s rsv=%d%d%d len=%d %s", f.opcode, tostring(f.fin), f.rsv1 and 1 or 0,
    f.rsv2 and 1 or 0, f.rsv3 and 1 or 0, #f.payload, f.opcode >= 8 and show(f.payload) or "")
  if self.got_close then self:fail("the server sent a frame (opcode %d) after its close frame", f.opcode) end
  if f.masked then self:fail("the server sent a masked frame (opcode %d)", f.opcode) end
  if f.rsv2 or f.rsv3 then self:fail("the server set RSV2/RSV3 on a frame (opcode %d)", f.opcode) end
  local op = f.opcode
  if (op >= 3 and op <= 7) or op >= 11 then self:fail("the server sent reserved opcode %d", op) end
  if op >= 8 then
    if not f.fin then self:fail("the server sent a fragmented control frame (opcode %d)", op) end
    if #f.payload > 125 then self:fail("the server sent a control frame with a %d-byte payload", #f.payload) end
    if f.rsv1 then self:fail("the server set RSV1 on a control frame (opcode %d)", op) end
  elseif op == 0 then
    if not self.frag then self:fail("the server sent a continuation frame with no message to continue") end
    if f.rsv1 then self:fail("the server set RSV1 on a continuation frame") end
  else
    if self.frag then self:fail("the server started a new message inside a fragmented one") end
    if f.rsv1 and not self.pmd then
      self:fail("the server set RSV1 on a data frame without permessage-deflate negotiated")
    end
  end
  return f
end

-- Next event: {type="message", kind=, data=, frames=, compressed=} |
-- {type="ping"|"pong", data=} | {type="close", code=, reason=, payload=} |
-- nil, "timeout" | "closed".
function T:read_event(timeout)
  while true do
    local f, err = self:read_frame(timeout)
    if not f then return nil, err end
    local op = f.opcode
    if op == 9 or op == 10 then
      return { type = op == 9 and "ping" or "pong", data = f.payload }
    elseif op == 8 then
      self.got_close = true
      local p = f.payload
      local ev = { type = "close", payload = p }
      if #p == 1 then self:fail("the server sent a close frame with a 1-byte payload") end
      if #p >= 2 then
        ev.code = string.unpack(">I2", p)
        ev.reason = p:sub(3)
        if not J.valid_close_code(ev.code) then self:fail("the server sent close code %d, which a peer must not send", ev.code) end
        if not utf8.len(ev.reason) then self:fail("the server's close reason is not valid UTF-8: %s", show(ev.reason)) end
      end
      return ev
    else
      if op ~= 0 then self.frag = { kind = op == 1 and "text" or "binary", parts = {}, compressed = f.rsv1, frames = 0 } end
      local fr = self.frag
      fr.parts[#fr.parts + 1] = f.payload
      fr.frames = fr.frames + 1
      if f.fin then
        self.frag = nil
        local data = table.concat(fr.parts)
        if fr.compressed then
          local out, derr = self.rx:decompress(data)
          if not out then self:fail("the server's compressed %s message does not decompress: %s", fr.kind, derr) end
          data = out
        end
        if fr.kind == "text" and not utf8.len(data) then
          self:fail("the server sent a text message that is not valid UTF-8 (%s)", show(data))
        end
        return { type = "message", kind = fr.kind, data = data, frames = fr.frames, compressed = fr.compressed }
      end
    end
  end
end

local function describe_event(ev, err)
  if not ev then
    if err == "closed" then return "the TCP connection closed" end
    return "nothing (" .. tostring(err) .. " after the guard timeout)"
  end
  if ev.type == "close" then
    return string.format("a close frame (%s%s)", ev.code and tostring(ev.code) or "no code",
      (ev.reason and ev.reason ~= "") and (" " .. show(ev.reason)) or "")
  end
  if ev.type == "message" then return string.format("a %s message (%s)", ev.kind, show(ev.data)) end
  return string.format("a %s (%s)", ev.type, show(ev.data))
end
J.describe_event = describe_event

---------------------------------------------------------------------------
-- Expectations
---------------------------------------------------------------------------
function T:expect_message(kind, data, what)
  local ev, err = self:read_event()
  if not ev or ev.type ~= "message" or ev.kind ~= kind then
    self:fail("expected %s (a %s message of %d bytes), got %s", what or "the echo", kind, #data, describe_event(ev, err))
  end
  if ev.data ~= data then
    if #ev.data ~= #data then
      self:fail("%s differs: %d bytes instead of %d (first difference at byte %d)", what or "the echo",
        #ev.data, #data, first_difference(ev.data, data))
    end
    self:fail("%s differs at byte %d", what or "the echo", first_difference(ev.data, data))
  end
  return ev
end

function T:expect_pong(data)
  local ev, err = self:read_event()
  if not ev or ev.type ~= "pong" then
    self:fail("expected a pong (%s), got %s", show(data), describe_event(ev, err))
  end
  if ev.data ~= data then self:fail("the pong carries %s instead of %s", show(ev.data), show(data)) end
end

function T:roundtrip(kind, data, opts)
  self:send_message(kind, data, opts)
  return self:expect_message(kind, data)
end

-- After the close frames were exchanged (or the server's close answered):
-- the server must close the TCP connection, first, and send nothing more.
function T:expect_tcp_close(context)
  local c = self.c
  c.sock:settimeout(J.CLOSE_GUARD)
  local t0 = socket.gettime()
  local closed, why = c:tcp_closed()
  if closed then
    self:trace("tcp closed by the server after %.3fs", socket.gettime() - t0)
    return
  end
  if why == "timeout" then
    self:fail("the server did not close the TCP connection within %gs %s", J.CLOSE_GUARD,
      context or "after the close handshake")
  end
  self:fail("the server sent more bytes after its close frame (%s)", tostring(why))
end

local function code_in(code, codes)
  for _, c in ipairs(codes) do if c == code then return true end end
  return false
end
local function codes_str(codes)
  local t = {}
  for i, c in ipairs(codes) do t[i] = tostring(c) end
  return table.concat(t, " or ")
end

-- The server must fail the connection: a close frame carrying one of codes,
-- then it closes TCP. opts.allow = function(ev) -> true to skip events that may
-- come first (e.g. echoes of earlier valid messages), opts.timeout.
-- A TCP close without a close frame is NON-STRICT (RFC 6455 7.1.7: SHOULD
-- send one); a close frame without a code is NON-STRICT; a wrong code FAILED.
function T:expect_fail(codes, opts)
  opts = opts or {}
  if type(codes) == "number" then codes = { codes } end
  local ev, err = opts.event, opts.event_err
  while not opts.have_event do
    ev, err = self:read_event(opts.timeout)
    if ev and ev.type ~= "close" and opts.allow and opts.allow(ev) then
      self:trace("allowed before the close: %s", describe_event(ev))
    else
      break
    end
  end
  if not ev then
    if err == "closed" then
      self:nonstrict("the server dropped TCP without a close frame (expected close %s)", codes_str(codes))
      return
    end
    self:fail("expected the server to fail the connection with close %s, got %s", codes_str(codes), describe_event(ev, err))
  end
  if ev.type ~= "close" then
    self:fail("expected the server to fail the connection with close %s, got %s", codes_str(codes), describe_event(ev, err))
  end
  if ev.code == nil then
    self:nonstrict("the server's close frame has no status code (expected %s)", codes_str(codes))
  elseif not code_in(ev.code, codes) then
    self:fail("expected close %s, got close %d%s", codes_str(codes), ev.code,
      ev.reason ~= "" and (" " .. show(ev.reason)) or "")
  end
  -- answer the close (as a client does), then the server must close TCP
  if not self.sent_close then
    self.sent_close = true
    self:send_bytes(self:encode(self:close_frame(ev.code)))
  end
  self:expect_tcp_close("after failing the connection")
  return ev
end

-- A valid message, then a violation sent together: the echo of the valid
-- message first (strict), then the failure. A server that fails the
-- connection before echoing is NON-STRICT (as Autobahn rates 3.2, 4.1.3, 5.15).
function T:expect_echo_then_fail(kind, data, codes)
  local ev, err = self:read_event()
  if ev and ev.type == "message" then
    if ev.kind ~= kind or ev.data ~= data then
      self:fail("expected the echo of the first (valid) message (%s), got %s", show(data), describe_event(ev))
    end
    return self:expect_fail(codes)
  end
  if (ev and ev.type == "close") or (not ev and err == "closed") then
    self:nonstrict("the server failed the connection without echoing the valid message before the violation")
  end
  return self:expect_fail(codes, { event = ev, event_err = err, have_event = true })
end

-- Client-initiated close: send close(code, reason) (code nil: empty payload)
-- unless opts.sent, then the server must answer with a close frame echoing
-- the code (1000 also accepted) — for an empty close payload: empty or 1000 —
-- and close TCP. opts.allow: events tolerated before the close frame.
function T:close(code, reason, opts)
  opts = opts or {}
  if not opts.sent then
    self.sent_close = true
    self:send(self:close_frame(code, reason))
  end
  local ev, err
  while true do
    ev, err = self:read_event()
    if ev and ev.type ~= "close" and opts.allow and opts.allow(ev) then
      self:trace("allowed before the close: %s", describe_event(ev))
    else
      break
    end
  end
  if not ev or ev.type ~= "close" then
    self:fail("expected the server's close frame answering close %s, got %s", tostring(code or "(empty)"),
      describe_event(ev, err))
  end
  local ok_codes = opts.codes or ((code and code ~= 1000) and { code, 1000 } or { 1000 })
  if ev.code == nil then
    if code ~= nil and not opts.codes then
      self:nonstrict("the server answered close %d with a close frame without a status code", code)
    end
  elseif not code_in(ev.code, ok_codes) then
    self:fail("the server answered close %s with close %d (expected %s)", tostring(code or "(empty)"),
      ev.code, codes_str(ok_codes))
  end
  self:expect_tcp_close()
  return ev
end

-- The normal end of a case that expects the connection to be open.
function T:finish()
  return self:close(1000)
end

-- Wait for a close frame for at most `guard` seconds. Returns the event (a
-- close, or whatever came first), or nil when the guard expired.
function T:poll_event(guard)
  local ev, err = self:read_event(guard)
  if not ev and err == "timeout" then return nil end
  if not ev then return { type = "tcp-closed" } end
  return ev
end

function T:cleanup()
  if self.c then self.c:shutdown() end
end

return J
