-- control.lua — a scriptable subject for the specs.
--
-- Paths:
--   /monitor        a monitor: receives one text message per event of every
--                   other connection ("open 7", "close 7 1006 <hexreason> ...")
--   /with-on-ping   a subject whose listener has on_ping
--   /error-on-open  a subject whose on_open raises
--   /error-on-close a subject whose on_close raises
--   anything else   a subject without on_ping
--   plain HTTP      200 with the request dumped (see dump_request)
--
-- A subject echoes text in kind; a text starting with "!" is a command (see
-- `commands`). A binary message is echoed back as binary, preceded by a text
-- "binary type=<type(msg)> len=<#msg> hex=<hex of msg:string()>".
-- Strings that may hold any byte travel hex-encoded; "-" stands for "".
local ws = require "luaws"

local function hex(s)
  if s == nil then return "nil" end
  if s == "" then return "-" end
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end
local function unhex(h)
  if h == nil or h == "-" then return "" end
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end
-- Event payloads may come as strings or luaws.buffers: report the bytes and the type.
local function bytes(d)
  if d == nil then return "" end
  if type(d) == "string" then return d end
  return d:string()
end

local monitors = {}   -- id -> socket
local sockets = {}    -- id -> socket, every subject ever opened (kept after close)

local function report(fmt, ...)
  local line = string.format(fmt, ...)
  for _, m in pairs(monitors) do
    if m:is_open() then m:send(line) end
  end
end

local function dump_request(r)
  local out = {}
  local keys = { "method", "uri", "query_string", "protocol", "scheme", "remote_addr",
                 "server_name", "server_port", "body" }
  for _, k in ipairs(keys) do
    out[#out + 1] = string.format("%s %s %s", k, type(r[k]), hex(r[k] ~= nil and tostring(r[k]) or nil))
  end
  out[#out + 1] = "headers " .. type(r.headers) .. " -"
  if type(r.headers) == "table" then
    local names = {}
    for name in pairs(r.headers) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      local v = r.headers[name]
      out[#out + 1] = string.format("header:%s %s %s", hex(name), type(v), hex(tostring(v)))
    end
  end
  return table.concat(out, "\n")
end

local function words(s)
  local t = {}
  for w in s:gmatch("%S+") do t[#t + 1] = w end
  return t
end

local commands = {}

function commands.id(s) s:send("id " .. tostring(s.id)) end
function commands.id_type(s) s:send("id_type " .. type(s.id)) end

function commands.ping(s, arg)
  local r
  if arg then r = s:ping(unhex(arg)) else r = s:ping() end
  report("did-ping %s %s", s.id, tostring(r))
end
function commands.ping_buffer(s, arg) s:ping(ws.buffer(unhex(arg))) end
function commands.ping_big(s, n)
  local ok, r, e = pcall(s.ping, s, string.rep("x", tonumber(n)))
  s:send(string.format("ping_big %s %s %s", tostring(ok), tostring(r), tostring(e)))
end
function commands.pong(s, arg)
  if arg then s:pong(unhex(arg)) else s:pong() end
end

function commands.close(s, code, reason)
  if code then s:close(tonumber(code), unhex(reason)) else s:close() end
  report("did-close %s is_open=%s", s.id, tostring(s:is_open()))
end

function commands.error(s, msg)
  error("boom from test: " .. unhex(msg))
end

function commands.is_open(s) s:send("is_open " .. tostring(s:is_open())) end

function commands.set(s, k, v) s.data[k] = v; s:send("set ok") end
function commands.get(s, k) s:send("get " .. tostring(s.data[k])) end
function commands.data_type(s) s:send("data_type " .. type(s.data)) end

function commands.request(s) s:send(dump_request(s.request)) end

function commands.send_ret(s)
  local r, e = s:send("x")
  s:send("send_ret " .. tostring(r) .. " " .. tostring(e))
end

function commands.async(s, arg)
  local r = s:send(unhex(arg),
    function(...) report("succeed %s %d", s.id, select("#", ...)); s:send("succeeded") end,
    function(e) report("fail %s %s", s.id, hex(tostring(e))) end)
  s:send("returned " .. tostring(r))
end
function commands.async_binary(s, arg)
  s:send(ws.buffer(unhex(arg)),
    function() s:send("succeeded") end,
    function(e) report("fail %s %s", s.id, hex(tostring(e))) end)
end
-- n async sends of size bytes; "async_done n" once all succeeded.
function commands.async_many(s, n, size)
  n, size = tonumber(n), tonumber(size)
  local done = 0
  for i = 1, n do
    s:send(string.format("%08d", i) .. string.rep("a", size - 8),
      function()
        done = done + 1
        if done == n then s:send("async_done " .. done) end
      end,
      function(e) report("fail %s %s", s.id, hex(tostring(e))) end)
  end
end

function commands.invalid_utf8(s)
  local ok, r, e = pcall(s.send, s, "abc\xff\xfe")
  s:send(string.format("invalid_utf8 %s %s %s", tostring(ok), tostring(r), hex(tostring(e))))
end

-- Sent as a long message (the server remembers long text it validated):
-- a long string that is not UTF-8 is still refused, the message itself is not.
function commands.invalid_utf8_long(s, pad, m)
  local bad = m:sub(1, 300) .. "\xff" .. m:sub(301)
  local ok, r, e = pcall(s.send, s, bad)
  s:send(string.format("invalid_utf8_long %s %s %s", tostring(ok), tostring(r), hex(tostring(e))))
  s:send(m)
end

function commands.buffer(s, arg)
  local data = unhex(arg)
  local b = ws.buffer(data)
  s:send(string.format("buffer len=%d same=%s type=%s", #b, tostring(b:string() == data), type(b:string())))
  s:send(b)
end

-- n synchronous sends of size bytes each, then "flood_done"; the client may
-- not read meanwhile: send must yield under backpressure, not fail or drop.
function commands.flood(s, n, size)
  n, size = tonumber(n), tonumber(size)
  local body = string.rep("f", size - 8)
  for i = 1, n do
    local ok, err = s:send(string.format("%08d", i) .. body)
    if not ok then report("flood-failed %s %d %s", s.id, i, hex(tostring(err))); return end
  end
  s:send("flood_done")
end

function commands.send_to(s, id, arg)
  local other = sockets[tonumber(id)]
  local ok, r, e = pcall(other.send, other, unhex(arg))
  s:send(string.format("send_to %s %s %s", tostring(ok), tostring(r), hex(e and tostring(e) or nil)))
end
function commands.is_open_of(s, id)
  s:send("is_open_of " .. tostring(sockets[tonumber(id)]:is_open()))
end

local function subject(extra)
  local L = {
    on_open = function(s)
      sockets[s.id] = s
      report("open %s is_open=%s", s.id, tostring(s:is_open()))
    end,
    on_message = function(s, m)
      if type(m) == "string" then
        report("message %s text %d %s", s.id, #m, #m <= 256 and hex(m) or "long")
        if m:sub(1, 1) == "!" then
          local w = words(m:sub(2))
          local f = commands[w[1]]
          if not f then s:send("unknown command " .. w[1]); return end
          if w[1] == "invalid_utf8_long" then return f(s, w[2], m) end
          return f(s, table.unpack(w, 2))
        end
        s:send(m)
      else
        local str = m:string()
        report("message %s binary %d %s", s.id, #str, #str <= 256 and hex(str) or "long")
        s:send(string.format("binary type=%s len=%d hex=%s", type(m), #m,
                             #str <= 1024 and hex(str) or "long"))
        s:send(m)
      end
    end,
    on_pong = function(s, data)
      report("pong %s %s %s", s.id, type(data), hex(bytes(data)))
      s:send("on_pong " .. hex(bytes(data)))
    end,
    on_error = function(s, err)
      report("error %s %s", s.id, hex(tostring(err)))
    end,
    on_close = function(s, code, reason)
      local is_open = s:is_open()
      local ok, r, e = pcall(s.send, s, "too late")
      report("close %s %s %s is_open=%s send=%s,%s,%s", s.id, tostring(code), hex(reason),
             tostring(is_open), tostring(ok), tostring(r), e ~= nil and "err" or "nil")
      pcall(s.send, s, "too late async",
        function() report("late-succeed %s", s.id) end,
        function(err) report("late-fail %s %s", s.id, hex(tostring(err))) end)
    end,
  }
  for k, v in pairs(extra or {}) do L[k] = v end
  return L
end

local plain_subject = subject()
local ping_subject = subject {
  on_ping = function(s, data)
    local d = bytes(data)
    report("ping %s %s %s", s.id, type(data), hex(d))
    if d == "answer" then s:pong("answered") end
  end,
}
local open_error_subject = subject {
  on_open = function(s)
    sockets[s.id] = s
    report("open %s is_open=%s", s.id, tostring(s:is_open()))
    error("boom in on_open")
  end,
}
local close_error_subject = subject {
  on_close = function(s, code)
    report("close %s %s", s.id, tostring(code))
    error("boom in on_close")
  end,
}

local monitor = {
  on_open = function(s) monitors[s.id] = s; s:send("monitoring") end,
  on_close = function(s) monitors[s.id] = nil end,
}

return function(req)
  if not ws.upgrade_request(req) then
    return { status = 200, headers = { ["Content-Type"] = "text/plain" }, body = dump_request(req) }
  end
  if req.uri == "/monitor" then return { listener = monitor } end
  if req.uri == "/with-on-ping" then return { listener = ping_subject } end
  if req.uri == "/error-on-open" then return { listener = open_error_subject } end
  if req.uri == "/error-on-close" then return { listener = close_error_subject } end
  return { listener = plain_subject }
end
