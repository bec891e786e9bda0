-- stress.lua — the driver of spec/stress_spec.lua: one seeded run of random
-- interleavings against a real luaws running spec/scripts/stress_chaos.lua.
--
--   local stress = require "spec.support.stress"
--   local report = stress.run(seed, { seconds = 6 })   -- raises on any failure
--
-- Everything the driver decides (which clients, what they send and when,
-- when they vanish, when the server gets SIGHUP or its script is rewritten)
-- comes from its own xorshift generator seeded with `seed`, so a seed
-- replays the same plan. The timing of the server's answers is not
-- replayed, so a seed explores the same plan under slightly different
-- orderings on every run.
--
-- Clients are raw, non-blocking luasocket connections (the handshake itself
-- uses spec/support/wsclient.lua): they answer pings only when told to, may
-- shrink their receive buffer and never read (backpressure), drop TCP while
-- the server sleeps in one of their events, and so on.
--
-- At the end: every client is gone, every sleep in the script has resumed,
-- every socket got exactly one on_close, the server's open fd count is back
-- to what it was after startup, a fresh connection still gets an echo, and
-- the server stops cleanly with no sanitizer report in its log.
local socket = require "socket"
local lfs = require "lfs"
local server = require "spec.support.server"
local wsc = require "spec.support.wsclient"

local M = {}

M.SCRIPT = "spec/scripts/stress_chaos.lua"

-- Server options: tiny limits so that every path is hit in a few seconds.
-- --high-water = --max-backpressure = 10000 as in issue 20 (2): 99 sends
-- of 98 bytes then a close with a 120-byte reason passes the limit with the
-- close frame itself.
M.HIGH_WATER = 10000
M.MAX_BACKPRESSURE = 10000
M.ARGS = {
  "--deflate", "off",
  "--high-water", tostring(M.HIGH_WATER),
  "--max-backpressure", tostring(M.MAX_BACKPRESSURE),
  "--ping-interval", "200",
  "--close-timeout", "300",
  "--handshake-timeout", "1000",
  "--shutdown-timeout", "2000",
}

---------------------------------------------------------------------------
-- A seeded generator (xorshift64), independent of math.random, which busted
-- and wsclient use for their own ends.
---------------------------------------------------------------------------
local function generator(seed)
  local x = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) | 1
  local r = {}
  function r.next()
    x = x ~ (x << 13); x = x ~ (x >> 7); x = x ~ (x << 17)
    return x
  end
  function r.int(a, b) return a + ((r.next() >> 1) % (b - a + 1)) end
  function r.chance(p) return ((r.next() >> 11) / 9007199254740992.0) < p end
  function r.pick(t) return t[r.int(1, #t)] end
  -- weighted: {{w, value}, ...}
  function r.weighted(t)
    local total = 0
    for _, e in ipairs(t) do total = total + e[1] end
    local n = r.int(1, total)
    for _, e in ipairs(t) do
      n = n - e[1]
      if n <= 0 then return e[2] end
    end
  end
  return r
end
M.generator = generator

---------------------------------------------------------------------------
-- /proc helpers
---------------------------------------------------------------------------
function M.fd_count(pid)
  local ok, iter, dir = pcall(lfs.dir, "/proc/" .. pid .. "/fd")
  if not ok then return nil end
  local n = 0
  for name in iter, dir do
    if name ~= "." and name ~= ".." then n = n + 1 end
  end
  return n
end

function M.fd_list(pid)
  local out = {}
  local ok, iter, dir = pcall(lfs.dir, "/proc/" .. pid .. "/fd")
  if not ok then return out end
  for name in iter, dir do
    if name ~= "." and name ~= ".." then
      local target = lfs.symlinkattributes("/proc/" .. pid .. "/fd/" .. name, "target")
      out[#out + 1] = name .. " -> " .. tostring(target)
    end
  end
  table.sort(out, function(a, b) return (tonumber(a:match("^%d+")) or 0) < (tonumber(b:match("^%d+")) or 0) end)
  return out
end

-- A port nothing listens on: bound, then closed again.
local function dead_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

---------------------------------------------------------------------------
-- Sanitizer reports in a log: the first lines of each distinct one.
---------------------------------------------------------------------------
local REPORT_STARTS = {
  "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
  "AddressSanitizer:DEADLYSIGNAL", "Assertion .* failed", "Lua panic", "WARNING: AddressSanitizer",
  -- glibc's own checks, for a build without sanitizers
  "double free", "corrupted size", "corrupted double%-linked", "free%(%): invalid", "malloc%(%): ",
}

function M.reports(log, lines_each)
  lines_each = lines_each or 12
  local lines = {}
  for l in log:gmatch("[^\n]*") do lines[#lines + 1] = l end
  local out, seen = {}, {}
  for i, l in ipairs(lines) do
    for _, p in ipairs(REPORT_STARTS) do
      if l:find(p) then
        -- the "kind" of the report without addresses, pids and thread numbers
        local kind = l:gsub("0x%x+", "ADDR"):gsub("==%d+==", ""):gsub("%d+", "N")
        if not seen[kind] then
          seen[kind] = true
          local chunk = {}
          for j = i, math.min(#lines, i + lines_each - 1) do chunk[#chunk + 1] = lines[j] end
          out[#out + 1] = table.concat(chunk, "\n")
        end
        break
      end
    end
  end
  return out
end

---------------------------------------------------------------------------
-- Clients
---------------------------------------------------------------------------
local Client = {}
Client.__index = Client

-- Opens a WebSocket with an optional small receive buffer (set before the
-- connect, so that it bounds the advertised window). The handshake blocks
-- (the server answers it from its loop at once); then the socket goes
-- non-blocking. Returns the client, or nil and why.
local function open_client(srv, path, rcvbuf)
  local sock = socket.tcp()
  if rcvbuf then sock:setoption("recv-buffer-size", rcvbuf) end
  sock:settimeout(5)
  local ok, err = sock:connect(srv.host, srv.port)
  if not ok then sock:close(); return nil, "connect: " .. tostring(err) end
  sock:setoption("tcp-nodelay", true)
  local c = setmetatable({ sock = sock, host = srv.host, port = srv.port, buf = "", timeout = 5 }, wsc.Conn)
  local key = wsc.b64(wsc.random_bytes(16))
  local req = wsc.format_request { method = "GET", path = path, headers = {
    { "Host", srv.host .. ":" .. srv.port }, { "Upgrade", "websocket" }, { "Connection", "Upgrade" },
    { "Sec-WebSocket-Key", key }, { "Sec-WebSocket-Version", "13" } } }
  ok, err = c:send_raw(req)
  if not ok then sock:close(); return nil, "send: " .. tostring(err) end
  local resp, rerr = c:read_response()
  if not resp then sock:close(); return nil, "handshake: " .. tostring(rerr) end
  if resp.status ~= 101 then sock:close(); return nil, "status " .. tostring(resp.status) end
  sock:settimeout(0)
  return setmetatable({ sock = sock, rbuf = c.buf or "", out = {}, outpos = 1, closed = false }, Client)
end

function Client:queue(bytes) self.out[#self.out + 1] = bytes end

function Client:send_text(s) self:queue(wsc.encode_frame { opcode = 1, payload = s }) end

function Client:flush()
  while not self.closed and #self.out > 0 do
    local data = self.out[1]
    local last, err, partial = self.sock:send(data, self.outpos)
    if last then
      table.remove(self.out, 1); self.outpos = 1
    else
      if partial and partial >= self.outpos then self.outpos = partial + 1 end
      if err == "timeout" then return end
      self:drop(); return
    end
  end
end

-- TCP gone: a FIN, or with rst a reset (SO_LINGER 0).
function Client:drop(rst)
  if self.closed then return end
  if rst then pcall(self.sock.setoption, self.sock, "linger", { on = true, timeout = 0 }) end
  self.sock:close()
  self.closed = true
end

-- Reads what is there (at most limit bytes) and handles whole frames:
-- pings are answered if self.pong, a close frame is echoed once.
function Client:pump(limit)
  if self.closed then return end
  local got = 0
  while got < limit do
    local data, err, partial = self.sock:receive(math.min(65536, limit - got))
    local chunk = data or partial
    if chunk and #chunk > 0 then self.rbuf = self.rbuf .. chunk; got = got + #chunk end
    if not data then
      if err ~= "timeout" then self:parse(); self:drop(); return end
      break
    end
  end
  self:parse()
end

function Client:parse()
  local buf, pos = self.rbuf, 1
  while true do
    if #buf - pos + 1 < 2 then break end
    local b1, b2 = buf:byte(pos, pos + 1)
    local len, p = b2 & 0x7f, pos + 2
    if len == 126 then
      if #buf < p + 1 then break end
      len = string.unpack(">I2", buf, p); p = p + 2
    elseif len == 127 then
      if #buf < p + 7 then break end
      len = string.unpack(">I8", buf, p); p = p + 8
    end
    if (b2 & 0x80) ~= 0 then p = p + 4 end
    if #buf < p + len - 1 then break end
    local op, payload = b1 & 0x0f, buf:sub(p, p + len - 1)
    pos = p + len
    self.frames = (self.frames or 0) + 1
    if op == 9 and self.pong and not self.sent_close then
      self:queue(wsc.encode_frame { opcode = 10, payload = payload })
    elseif op == 8 then
      self.got_close = true
      if not self.sent_close then
        self.sent_close = true
        self:queue(wsc.encode_frame { opcode = 8, payload = payload:sub(1, 2) })
      end
    end
  end
  if pos > 1 then self.rbuf = buf:sub(pos) end
end

---------------------------------------------------------------------------
-- What the clients say: commands of stress_chaos.lua, chosen at random.
---------------------------------------------------------------------------
local SET_KEYS = {
  { "close_sleep", 0, 400 }, { "close_pub", 0, 4 }, { "close_pub_size", 1, 3000 },
  { "close_pub_first", 0, 1 }, { "error_sleep", 0, 400 }, { "reload_sleep", 0, 400 },
  { "msg_sleep", 0, 150 },
}
local CLOSE_CODES = { 1000, 1001, 1003, 1008, 1011, 3000, 4000, 4999 }
local MODES = { "now", "now", "after", "sleep", "owner", "keep" }

-- A sleep of a to b ms (0 when sleeps are left out).
local function ms(r, env, a, b)
  local v = r.int(a, b)
  if env.without.sleep then return 0 end
  return v
end

local function gen_connect(r, env)
  local url
  if r.chance(0.7) then
    url = string.format("ws://127.0.0.1:%d/up?life=%d&s=%d", env.port, r.int(0, 600), r.int(0, 1) * ms(r, env, 0, 200))
  else
    url = string.format("ws://127.0.0.1:%d/", env.dead_port)
  end
  return string.format("c %s %s %d %d %d", url, r.pick(MODES), ms(r, env, 0, 300), ms(r, env, 0, 400), r.int(0, 3))
end

-- A simple command (for timers: no spaces, commas instead).
local function gen_simple(r, env)
  local k = r.int(1, 6)
  if k == 1 then return "s," .. ms(r, env, 10, 400)
  elseif k == 2 then return string.format("pub,%d,%d", r.int(1, 3), r.int(1, 3000))
  elseif k == 3 then return string.format("close,%d,%d", r.pick(CLOSE_CODES), r.int(0, 123))
  elseif k == 4 then return string.format("kill,%d,%d", r.int(0, 50), r.pick(CLOSE_CODES))
  elseif k == 5 then return (gen_connect(r, env):gsub(" ", ","))
  else return string.format("burst,%d,%d", r.int(1, 120), r.int(50, 200)) end
end

local function gen_set(r, env)
  local k = r.pick(SET_KEYS)
  local v = r.int(k[2], k[3])
  if env.without.sleep and k[1]:find("sleep") then v = 0 end
  return string.format("set %s %d", k[1], v)
end

local COMMANDS = {
  { 8, "e" }, { 12, "s" }, { 6, "sub" }, { 1, "unsub" }, { 8, "pub" }, { 5, "flood" }, { 5, "burst" },
  { 3, "bigclose" }, { 4, "close" }, { 10, "set" }, { 2, "boom" }, { 5, "after" }, { 2, "tick" },
  { 3, "poke" }, { 3, "kill" }, { 10, "c" },
}

local function gen_one(r, env)
  local what
  repeat what = r.weighted(env.commands) until what
  env.counts[what] = (env.counts[what] or 0) + 1
  if what == "e" then return "e " .. string.rep("z", r.int(0, 200))
  elseif what == "s" then return "s " .. ms(r, env, 10, 600)
  elseif what == "sub" or what == "unsub" or what == "boom" then return what
  elseif what == "pub" then return string.format("pub %d %d", r.int(1, 4), r.int(1, 3000))
  elseif what == "flood" then return string.format("flood %d %d", r.int(1, 40), r.int(10, 3000))
  elseif what == "burst" then return string.format("burst %d %d", r.int(1, 150), r.int(10, 200))
  elseif what == "bigclose" then
    -- issue 20 (2): the close frame itself passes --max-backpressure
    return string.format("%s 99 98;close 4000 120", r.chance(0.5) and "burst" or "flood")
  elseif what == "close" then return string.format("close %d %d", r.pick(CLOSE_CODES), r.int(0, 123))
  elseif what == "set" then return gen_set(r, env)
  elseif what == "after" then return string.format("after %d %s", r.int(0, 400), gen_simple(r, env))
  elseif what == "tick" then return string.format("tick %d %d", r.int(5, 100), r.int(1, 10))
  elseif what == "poke" then return "poke " .. r.int(0, 50)
  elseif what == "kill" then return string.format("kill %d %d", r.int(0, 50), r.pick(CLOSE_CODES))
  else return gen_connect(r, env) end
end

local function gen_message(r, env)
  local n = r.chance(0.3) and r.int(2, 3) or 1
  local t = {}
  for i = 1, n do t[i] = gen_one(r, env) end
  return table.concat(t, ";")
end

-- The plan of one client: how it reads, and timed steps (ms after it opens).
local function gen_client(r, env)
  local kind = r.weighted(env.kinds)
  local c = { kind = kind, steps = {} }
  c.pong = (kind == "reader" and r.chance(0.8)) or (kind == "lazy" and r.chance(0.5))
  if (kind == "mute" or kind == "lazy") and r.chance(0.7) then c.rcvbuf = r.int(1024, 8192) end
  local t = 0
  local function step(f) c.steps[#c.steps + 1] = { at = t, f = f } end
  local function say(m) step(function(cl) cl:send_text(m) end) end
  if r.chance(0.6) then say("sub") end
  for _ = 1, r.int(0, 2) do say(gen_set(r, env)) end
  if kind == "vanisher" then
    -- the peer vanishes while an event of its socket sleeps
    t = t + r.int(0, 100)
    say(r.weighted { { 3, "s " .. ms(r, env, 100, 600) }, { 1, "boom" }, { 1, gen_message(r, env) } })
    t = t + r.int(0, 400)
    local rst = r.chance(0.4)
    step(function(cl) cl:drop(rst) end)
    return c
  end
  if kind == "mute" and r.chance(0.5) then
    -- issue 20 (1b): one message, then silence; the ping times out while it sleeps
    say("s " .. ms(r, env, 200, 1500))
  end
  for _ = 1, r.int(1, 6) do
    t = t + r.int(0, 300)
    say(gen_message(r, env))
  end
  t = t + r.int(0, 800)
  local ending = r.weighted { { 3, "close" }, { 3, "drop" }, { 1, "rst" }, { 2, "stay" } }
  if ending == "close" then
    local code = r.pick(CLOSE_CODES)
    step(function(cl)
      if not cl.sent_close then
        cl.sent_close = true
        cl:queue(wsc.encode_frame { opcode = 8, payload = wsc.close_payload(code, "bye") })
      end
    end)
    t = t + r.int(100, 600)
    step(function(cl) cl:drop() end)
  elseif ending == "drop" or ending == "rst" then
    step(function(cl) cl:drop(ending == "rst") end)
  else
    -- stays until the end of the run (or until the server cuts it)
    t = t + r.int(500, 3000)
    step(function(cl) cl:drop() end)
  end
  return c
end

---------------------------------------------------------------------------
-- Talking to the script
---------------------------------------------------------------------------
local function http_get(srv, path)
  local resp, err = wsc.http(srv.host, srv.port, { path = path, headers = { Connection = "close" } })
  if not resp then return nil, err end
  return resp
end

function M.stats(srv)
  local resp, err = http_get(srv, "/stats")
  if not resp then return nil, err end
  if resp.status ~= 200 then return nil, "status " .. resp.status .. ": " .. tostring(resp.body) end
  local cjson = require "cjson"
  return cjson.decode(resp.body)
end

-- Polls f until it returns true (a bounded wait for an effect, not a sleep).
local function await(what, timeout, f, srv)
  local deadline = socket.gettime() + timeout
  while true do
    local v, info = f()
    if v then return v end
    if srv and not srv:alive() then error({ stress = "server died while waiting for " .. what }) end
    if socket.gettime() > deadline then
      error({ stress = string.format("timed out after %.1f s waiting for %s%s", timeout, what,
        info and (": " .. tostring(info)) or "") })
    end
    socket.sleep(0.01)
  end
end
M.await = await

-- A fresh connection gets an echo (within a bounded time: pings from the
-- server would otherwise keep a blocking read alive for ever).
local function assert_serves(srv, text)   -- text: one word (the command is "e WORD")
  local deadline = socket.gettime() + 10
  local c = assert(wsc.connect(srv.host, srv.port, { path = "/" }))
  assert(c.status == 101, "fresh connection: status " .. tostring(c.status))
  local got = {}
  local function wait_for(pred, what)
    while true do
      local f, err = c:read_frame()
      if not f or socket.gettime() > deadline then
        c:shutdown()
        error({ stress = string.format("fresh connection: no %s (%s); got: %s", what,
          tostring(f and "deadline passed" or err), table.concat(got, " | ")) })
      end
      got[#got + 1] = f.kind .. ":" .. f.payload:sub(1, 40)
      if f.kind == "ping" then c:pong(f.payload) end
      if f.kind == "text" and pred(f.payload) then return end
    end
  end
  wait_for(function(d) return d:sub(1, 3) == "hi " end, "greeting")
  c:send_text("e " .. text)
  wait_for(function(d) return d == text end, "echo")
  c:settimeout(10)
  local code, why = c:close(1000, "done")
  if code ~= 1000 then error({ stress = "fresh connection: close answered with " .. tostring(code) .. " " .. tostring(why) }) end
end

-- Writes the script file again with VERSION = v, by write-and-rename.
local function rewrite(path, src, v)
  local tmp = path:gsub("[^/]*$", ".stress-rewrite.tmp")
  server.write_file(tmp, (src:gsub("local VERSION = %d+", "local VERSION = " .. v, 1)))
  assert(os.rename(tmp, path))
end

---------------------------------------------------------------------------
-- One run
---------------------------------------------------------------------------
-- opts: seconds (chaos phase, default 6), max_clients (default 24),
-- without = "a,b" (to narrow a failure down: leave out these commands of
-- stress_chaos.lua (e, s, sub, unsub, pub, flood, burst, bigclose, close,
-- set, boom, after, tick, poke, kill, c), these client kinds (reader, mute,
-- lazy, vanisher), "hup", "rewrite", "oc" (GET /oc), or "sleep" (every
-- sleep becomes 0 ms)).
function M.run(seed, opts)
  opts = opts or {}
  local seconds = opts.seconds or 6
  local max_clients = opts.max_clients or 24
  local r = generator(seed)
  local src = assert(server.read_file(server.ROOT .. "/" .. M.SCRIPT), "cannot read " .. M.SCRIPT)
  local srv = server.start { source = src, script_name = "stress_chaos.lua", args = M.ARGS,
                             log_level = "info" }
  local report = { seed = seed, clients = 0, open_failed = 0, hups = 0, rewrites = 0, oc = 0,
                   counts = {}, dropped = 0 }
  local without = {}
  for w in (opts.without or ""):gmatch("[^,%s]+") do without[w] = true end
  local env = { port = srv.port, dead_port = dead_port(), counts = report.counts, without = without,
                commands = {}, kinds = {} }
  for _, e in ipairs(COMMANDS) do
    if not without[e[2]] then env.commands[#env.commands + 1] = e end
  end
  for _, e in ipairs { { 45, "reader" }, { 20, "mute" }, { 15, "lazy" }, { 20, "vanisher" } } do
    if not without[e[2]] then env.kinds[#env.kinds + 1] = e end
  end
  local t_start = socket.gettime()

  local clients = {}
  local ok, err = xpcall(function()
    local baseline = assert(M.fd_count(srv.pid), "cannot read /proc/" .. srv.pid .. "/fd")
    report.baseline_fds = baseline
    local now = socket.gettime
    local t0 = now()
    local t_end = t0 + seconds
    local next_spawn, next_hup, next_rewrite, next_oc = t0, t0 + r.int(200, 900) / 1000,
      t0 + r.int(700, 2000) / 1000, t0 + r.int(100, 800) / 1000
    local version = 0
    local next_alive_check = t0

    while now() < t_end do
      local t = now()
      if t >= next_alive_check then
        if not srv:alive() then error({ stress = "server died during the chaos phase" }) end
        next_alive_check = t + 0.1
      end
      -- new clients
      if t >= next_spawn and #clients < max_clients then
        next_spawn = t + r.int(10, 150) / 1000
        local plan = gen_client(r, env)
        local cl, why = open_client(srv, "/", plan.rcvbuf)
        if cl then
          for k, v in pairs(plan) do cl[k] = v end
          cl.t_open = now()
          cl.next_step = 1
          cl.next_lazy = cl.t_open
          clients[#clients + 1] = cl
          report.clients = report.clients + 1
        else
          report.open_failed = report.open_failed + 1
          report.last_open_error = why
          if not srv:alive() then error({ stress = "server died (a client could not connect: " .. tostring(why) .. ")" }) end
        end
      end
      -- reloads: SIGHUP, and saves of the script file
      if t >= next_hup and not without.hup then
        next_hup = t + r.int(200, 900) / 1000
        srv:signal("HUP")
        report.hups = report.hups + 1
      end
      if t >= next_rewrite and not without.rewrite then
        next_rewrite = t + r.int(700, 2000) / 1000
        version = version + 1
        rewrite(srv.script, src, version)
        report.rewrites = report.rewrites + 1
      end
      -- issue 20 (1a): the handler connects and closes at once
      if t >= next_oc and not without.oc then
        next_oc = t + r.int(100, 800) / 1000
        local port = r.chance(0.7) and srv.port or env.dead_port
        local resp = http_get(srv, string.format("/oc?port=%d&s=%d", port, ms(r, env, 0, 300)))
        if not resp and not srv:alive() then error({ stress = "server died (GET /oc)" }) end
        report.oc = report.oc + 1
      end
      -- the clients' steps and I/O
      local keep = {}
      for _, cl in ipairs(clients) do
        local age = (now() - cl.t_open) * 1000
        while not cl.closed and cl.steps[cl.next_step] and cl.steps[cl.next_step].at <= age do
          cl.steps[cl.next_step].f(cl)
          cl.next_step = cl.next_step + 1
        end
        if not cl.closed then cl:flush() end
        if not cl.closed then
          if cl.kind == "reader" or cl.kind == "vanisher" or cl.got_close then
            cl:pump(256 * 1024)
          elseif cl.kind == "lazy" and now() >= cl.next_lazy then
            cl.next_lazy = now() + r.int(50, 300) / 1000
            cl:pump(4096)
          end
        end
        if cl.closed then report.dropped = report.dropped + 1 else keep[#keep + 1] = cl end
      end
      clients = keep
      socket.sleep(0.002)
    end

    -- The end: every client goes, then wait for the server to settle.
    for _, cl in ipairs(clients) do cl:drop(r.chance(0.3)) end
    report.chaos_seconds = now() - t0
    local st
    await("every sleep to resume and every socket to get on_close", 20, function()
      local s, e = M.stats(srv)
      if not s then return false, e end
      st = s
      return s.inflight == 0 and s.live == 0,
        string.format("inflight=%s live=%s (opened=%s closed=%s)", s.inflight, s.live, s.opened, s.closed)
    end, srv)
    report.stats = st
    local fds
    await("the open fd count to come back to " .. baseline, 10, function()
      fds = M.fd_count(srv.pid)
      return fds == baseline, "now " .. tostring(fds) .. " open:\n  " .. table.concat(M.fd_list(srv.pid), "\n  ")
    end, srv)
    assert(st.bugs == 0, "the stress script raised errors by mistake: " .. tostring(st.last_bug))
    assert(st.dup_close == 0, st.dup_close .. " sockets got on_close twice")
    assert(st.sleep_errors == 0, st.sleep_errors .. " luaws.sleep calls failed: " .. tostring(st.last_sleep_error))
    assert_serves(srv, "still-serving-after-seed-" .. seed)
  end, function(e)
    if type(e) == "table" and e.stress then return e.stress end
    return debug.traceback(tostring(e), 2)
  end)

  -- Stop (SIGTERM) and look at the log, whatever happened above.
  for _, cl in ipairs(clients) do cl:drop() end
  local died = not srv:alive() and not srv.exit
  local how, code, log = srv:stop { quiet = true, keep = false }
  report.seconds = socket.gettime() - t_start
  report.exit = tostring(how) .. " " .. tostring(code)
  local reports = M.reports(log or "")
  report.reports = reports
  local problems = {}
  if not ok then problems[#problems + 1] = tostring(err) end
  if died then problems[#problems + 1] = "the server died before stop (" .. report.exit .. ")" end
  if srv.killed then problems[#problems + 1] = "the server ignored SIGTERM and was killed" end
  if #reports > 0 then
    problems[#problems + 1] = #reports .. " sanitizer/assertion report(s) in the server log:\n"
      .. table.concat(reports, "\n-----\n")
  end
  if (log or ""):find("stress%-bug") then problems[#problems + 1] = "the stress script logged stress-bug lines" end
  if ok and how == "exit" and code ~= 0 then problems[#problems + 1] = "the server exited with " .. report.exit end
  if #problems > 0 then
    local saved = string.format("/tmp/luaws-stress-seed%d-%d.log", seed, srv.pid)
    server.write_file(saved, log or "")
    error(string.format("stress seed %d (replay: LUAWS_STRESS_SEEDS=%d): %s\n--- full server log: %s",
      seed, seed, table.concat(problems, "\n"), saved), 0)
  end
  return report
end

return M
