-- server.lua — start ./luaws (or any command that logs the same startup
-- line) for a spec, learn its pid and port from its own output, and read its
-- log. No sleeps and no fixed ports: the server is started with --port 0 and
-- the port is taken from the "listening on ws://HOST:PORT, script PATH" line.
--
--   local server = require "spec.support.server"
--   local srv = server.start { script = "spec/scripts/echo.lua" }
--   -- or server.start { source = "return { on_open = ... }", args = {"--max-message", "100"} }
--   srv.port, srv.pid
--   srv:wait_log("closed.*" .. id)
--   srv:stop()              -- SIGTERM, waits, errors if the server had died on its own
local socket = require "socket"

local S = {}

local function dirname(p) return (p:match("^(.*)/[^/]*$")) or "." end
local function abspath(p)
  if p:sub(1, 1) == "/" then return p end
  local pwd = os.getenv("PWD")
  if not pwd then local h = io.popen("pwd"); pwd = h:read("l"); h:close() end
  return pwd .. "/" .. p
end

local here = debug.getinfo(1, "S").source:match("^@(.*)$") or "spec/support/server.lua"
local function realdir(d)
  local h = io.popen("cd '" .. d:gsub("'", "'\\''") .. "' && pwd -P")
  local r = h:read("l"); h:close(); return r
end
S.ROOT = os.getenv("LUAWS_ROOT") or realdir(dirname(abspath(here)) .. "/../..")
S.BINARY = os.getenv("LUAWS_BIN") or (S.ROOT .. "/luaws")
S.TIMEOUT = tonumber(os.getenv("LUAWS_SPEC_TIMEOUT") or "") or 5
S.STOP_TIMEOUT = tonumber(os.getenv("LUAWS_SPEC_STOP_TIMEOUT") or "") or 15
S.POLL = 0.005
S.READY_PATTERN = "listening on wss?://[^%s,]-:(%d+)"

function S.quote(s)
  s = tostring(s)
  if s:match("^[%w%./_=:,@%%+-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
local quote = S.quote

function S.exists(path)
  local f = io.open(path, "rb"); if f then f:close(); return true end
  return false
end

function S.available() return S.exists(S.BINARY) end

function S.script(name) return S.ROOT .. "/spec/scripts/" .. name end

function S.read_file(path)
  local f = io.open(path, "rb"); if not f then return nil end
  local s = f:read("a"); f:close(); return s
end

function S.write_file(path, s)
  local f = assert(io.open(path, "wb")); f:write(s); f:close()
end

function S.tmpdir()
  local h = io.popen("mktemp -d /tmp/luaws-spec.XXXXXX")
  local d = h:read("l"); h:close()
  assert(d and d ~= "", "mktemp failed")
  return d
end

-- Process state from /proc: "R", "S", "Z", ... or nil when gone.
local function proc_state(pid)
  local s = S.read_file("/proc/" .. pid .. "/stat")
  if not s then return nil end
  return s:match("^%d+ %b() (%a)")
end
S.proc_state = proc_state

local function alive(pid)
  local st = proc_state(pid)
  return st ~= nil and st ~= "Z" and st ~= "X"
end

local Server = {}
Server.__index = Server

-- Servers still running. Strong references: a forgotten server must not be
-- collected, because collecting its popen handle would pclose() it, which
-- waits for the server to exit, forever.
local running = {}

-- opts:
--   script = path | source = "inline Lua" (written to a temp .lua file)
--   args = {...} extra options; log_level (default "debug"); max_message
--   command = {...} argv replacing the luaws binary (script still appended if given)
--   port = n (default 0); host; env = {NAME = value}
--   ready = pattern (default S.READY_PATTERN, first capture = port)
--   no_wait = true: do not wait for the ready line (for failing startups)
function S.start(opts)
  opts = opts or {}
  local self = setmetatable({ opts = opts }, Server)
  self.dir = S.tmpdir()
  self.logfile = self.dir .. "/server.log"
  if opts.source then
    self.script = self.dir .. "/" .. (opts.script_name or "script.lua")
    S.write_file(self.script, opts.source)
  elseif opts.script then
    self.script = opts.script:sub(1, 1) == "/" and opts.script or (S.ROOT .. "/" .. opts.script)
  end
  local argv = {}
  if opts.command then
    for _, a in ipairs(opts.command) do argv[#argv + 1] = a end
  else
    argv[1] = S.BINARY
    argv[#argv + 1] = "--port"; argv[#argv + 1] = tostring(opts.port or 0)
    if opts.host then argv[#argv + 1] = "--host"; argv[#argv + 1] = opts.host end
    argv[#argv + 1] = "--log-level"; argv[#argv + 1] = opts.log_level or "debug"
    if opts.max_message then argv[#argv + 1] = "--max-message"; argv[#argv + 1] = tostring(opts.max_message) end
    -- One worker unless a spec asks for more: specs observe one connection's
    -- events from another, which needs them in the same process.
    argv[#argv + 1] = "--workers"; argv[#argv + 1] = tostring(opts.workers or 1)
  end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  if self.script then argv[#argv + 1] = self.script end
  local qargv = {}
  for i, a in ipairs(argv) do qargv[i] = quote(a) end
  local envs = {}
  for k, v in pairs(opts.env or {}) do envs[#envs + 1] = k .. "=" .. quote(v) end
  -- The shell prints its pid, then exec()s the server in its place, so the
  -- pid is the server's and closing the popen handle reaps it (and gives us
  -- its exit status).
  self.cmdline = table.concat(qargv, " ")
  local cmd = string.format("cd %s && echo $$ && exec %s %s </dev/null >%s 2>&1",
    quote(S.ROOT), #envs > 0 and ("env " .. table.concat(envs, " ")) or "",
    self.cmdline, quote(self.logfile))
  self.handle = assert(io.popen(cmd, "r"))
  self.pid = tonumber(self.handle:read("l"))
  assert(self.pid, "could not start: " .. cmd)
  running[self] = true
  -- Finalizers run in reverse order of creation, so this one runs before the
  -- popen handle's (at the latest when the Lua state closes): a server that a
  -- failed spec never stopped is killed, and the handle's pclose() returns.
  local pid, dir = self.pid, self.dir
  self.killer = setmetatable({}, { __gc = function()
    if alive(pid) then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
    if not os.getenv("LUAWS_SPEC_KEEP") then os.execute("rm -rf " .. quote(dir)) end
  end })
  if not opts.no_wait then
    local line, port = self:wait_log(opts.ready or S.READY_PATTERN, { timeout = opts.start_timeout or 10 })
    self.ready_line = line
    self.port = tonumber(port)
    self.host = opts.host or "127.0.0.1"
  end
  return self
end

function Server:alive() return alive(self.pid) end

function Server:log() return self.final_log or S.read_file(self.logfile) or "" end

function Server:lines()
  local t = {}
  for l in self:log():gmatch("[^\n]*") do if l ~= "" then t[#t + 1] = l end end
  return t
end

-- A mark for wait_log{after = mark}: the number of log lines so far.
function Server:mark() return #self:lines() end

-- Lines (after opts.after) matching pattern.
function Server:grep(pattern, opts)
  opts = opts or {}
  local out = {}
  for i, l in ipairs(self:lines()) do
    if i > (opts.after or 0) and l:find(pattern, 1, opts.plain) then out[#out + 1] = l end
  end
  return out
end

-- Poll the log until a line (after opts.after) matches pattern; opts.count = n
-- waits for n matching lines. Returns the (last) line and its captures.
-- Errors with the log text when the guard timeout passes or the process died.
function Server:wait_log(pattern, opts)
  opts = opts or {}
  local deadline = socket.gettime() + (opts.timeout or S.TIMEOUT)
  local want = opts.count or 1
  while true do
    local n = 0
    local lines = self:lines()
    for i, l in ipairs(lines) do
      if i > (opts.after or 0) then
        local caps = { l:find(pattern, 1, opts.plain) }
        if caps[1] then
          n = n + 1
          if n >= want then return l, table.unpack(caps, 3) end
        end
      end
    end
    local dead = not alive(self.pid)
    if dead or socket.gettime() > deadline then
      -- one last read: the line may have been written just before exit
      local last = self:lines()
      if #last ~= #lines then goto continue end
      error(string.format("wait_log(%q): %s after %d match(es)\n--- command: %s\n--- log:\n%s",
        pattern, dead and "server exited" or "timed out", n, self.cmdline, self:log()), 2)
    end
    socket.sleep(S.POLL)
    ::continue::
  end
end

-- Wait for the process to exit by itself (guard timeout). Returns how, code
-- ("exit", n) or ("signal", n), or nil when it is still running.
function Server:wait_exit(timeout)
  local deadline = socket.gettime() + (timeout or S.TIMEOUT)
  while alive(self.pid) do
    if socket.gettime() > deadline then return nil end
    socket.sleep(S.POLL)
  end
  return self:reap()
end

function Server:reap()
  if not self.exit then
    local _, how, code = self.handle:close()
    self.exit = { how = how, code = code }
    running[self] = nil
  end
  return self.exit.how, self.exit.code
end

function Server:signal(sig)
  os.execute(string.format("kill -%s %d 2>/dev/null", sig or "TERM", self.pid))
end

-- Whether args give the server a drain delay on SIGTERM (--drain-delay, or
-- --health with its default).
local function drain_delay(args)
  local health, delay = false, nil
  for i, a in ipairs(args or {}) do
    if a == "--health" then health = true end
    if a == "--drain-delay" then delay = args[i + 1] end
  end
  if delay then return delay ~= "0" end
  return health
end

-- SIGTERM and wait. Errors if the server had already died (crash) or wrote a
-- sanitizer report; returns how, code. opts.keep keeps the temp directory.
function Server:stop(opts)
  opts = opts or {}
  if self.stopped then return self.exit.how, self.exit.code, self.final_log end
  self.stopped = true
  local died = not self.exit and not alive(self.pid)
  local t0
  if not self.exit and not died then
    -- What the spec left open to this server goes first (opts.keep_clients
    -- keeps it, for a spec whose scenario is a shutdown with clients open).
    t0 = socket.gettime()
    if not opts.keep_clients and self.port then require("spec.support.wsclient").drop_to(self.port) end
    local mark, draining = self:mark(), #self:grep("draining for", { plain = true }) > 0
    self:signal("TERM")
    -- With a drain delay the server would serve on for it: once every worker
    -- says it is draining, a second SIGTERM shuts it down at once
    -- (opts.full_drain waits the delay out).
    if drain_delay(self.opts.args) and not draining and not opts.full_drain then
      if pcall(self.wait_log, self, "draining for", { plain = true, after = mark, count = self.opts.workers or 1 }) then
        self:signal("TERM")
      end
    end
    -- The server may drain open connections for its close timeout (5 s by
    -- default) first, e.g. those a failed spec left open: wait longer than that.
    if not self:wait_exit(S.STOP_TIMEOUT) then
      self:signal("KILL")
      self:wait_exit(S.TIMEOUT)
      self.killed = true
    end
  end
  local how, code = self:reap()
  -- LUAWS_SPEC_SLOW_STOP=1: say which stops took over a second (what makes
  -- a suite slow is usually a server draining what a spec left open).
  if os.getenv("LUAWS_SPEC_SLOW_STOP") and t0 and socket.gettime() - t0 > 1 then
    io.stderr:write(string.format("slow stop: %.2f s: %s\n%s\n", socket.gettime() - t0, self.cmdline,
      debug.traceback("", 2)))
  end
  local log = self:log()
  self.final_log = log
  if not opts.keep and not os.getenv("LUAWS_SPEC_KEEP") then
    os.execute("rm -rf " .. quote(self.dir))
  end
  if not opts.quiet then
    if died then
      error(string.format("server died before stop (%s %s)\n--- log:\n%s", how, code, log), 2)
    end
    if self.killed then error("server ignored SIGTERM; killed\n--- log:\n" .. log, 2) end
    if log:find("AddressSanitizer") or log:find("runtime error:") then
      error("sanitizer report in server log:\n" .. log, 2)
    end
  end
  return how, code, log
end

function S.stop_all()
  require("spec.support.wsclient").drop_to(nil)   -- nothing is read after this
  for srv in pairs(running) do pcall(srv.stop, srv, { quiet = true }) end
end

-- Run the binary to completion (for CLI specs). Returns exit code (or 128+sig),
-- combined stdout+stderr. A guard timeout kills a server that keeps running.
function S.run(args, opts)
  opts = opts or {}
  local dir = S.tmpdir()
  local out = dir .. "/out"
  local q = { quote(opts.binary or S.BINARY) }
  for _, a in ipairs(args) do q[#q + 1] = quote(a) end
  local cmd = string.format("cd %s && timeout -s KILL %d %s </dev/null >%s 2>&1",
    quote(S.ROOT), opts.timeout or S.TIMEOUT, table.concat(q, " "), quote(out))
  local ok, how, code = os.execute(cmd)
  local text = S.read_file(out) or ""
  os.execute("rm -rf " .. quote(dir))
  if how == "signal" then code = 128 + code end
  return code, text
end

-- `luaws client ARGS...` with input on stdin; returns exit code, stdout,
-- stderr. opts.hold = {srv =, text =}: stdin stays open (the client does not
-- close yet) until srv's log, from the lines to come, contains text (~10 s
-- at most, polled as wait_log does).
function S.client(args, input, opts)
  opts = opts or {}
  local dir = S.tmpdir()
  S.write_file(dir .. "/in", input or "")
  local q = { quote(S.BINARY), "client" }
  for _, a in ipairs(args) do q[#q + 1] = quote(a) end
  local feed = "cat " .. quote(dir .. "/in")
  if opts.hold then
    local srv = opts.hold.srv
    feed = string.format("{ %s; for i in $(seq 1000); do tail -n +%d %s | grep -qF -e %s && break; sleep 0.01; done; }",
      feed, srv:mark() + 1, quote(srv.logfile), quote(opts.hold.text))
  end
  local cmd = string.format("cd %s && %s | timeout -s KILL 15 %s >%s 2>%s", quote(S.ROOT), feed,
    table.concat(q, " "), quote(dir .. "/out"), quote(dir .. "/err"))
  local _, how, code = os.execute(cmd)
  if how == "signal" then code = 128 + code end
  local out, err = S.read_file(dir .. "/out") or "", S.read_file(dir .. "/err") or ""
  os.execute("rm -rf " .. quote(dir))
  return code, out, err
end

-- A folder for `luaws test` holding files ({name = text}, spec/ made).
function S.spec_dir(files)
  local dir = S.tmpdir()
  os.execute("mkdir -p " .. quote(dir .. "/spec"))
  for name, text in pairs(files or {}) do S.write_file(dir .. "/" .. name, text) end
  return dir
end

-- Runs `luaws test ARGS...` in dir (with an optional command in front, as
-- `unshare -rn`); returns the exit code and everything printed.
function S.luaws_test(dir, args, prefix)
  local q = {}
  for _, a in ipairs(args or {}) do q[#q + 1] = quote(a) end
  local out = S.tmpdir() .. "/out"
  local cmd = string.format("cd %s && timeout -s KILL 60 %s %s test %s </dev/null >%s 2>&1", quote(dir),
    prefix or "", quote(S.BINARY), table.concat(q, " "), quote(out))
  local _, how, code = os.execute(cmd)
  if how == "signal" then code = 128 + code end
  return code, S.read_file(out) or ""
end

-- A temp file holding src; returns its path (removed by S.cleanup_files()).
local tmpfiles = {}
function S.temp_script(src, name)
  local d = S.tmpdir()
  local p = d .. "/" .. (name or "script.lua")
  S.write_file(p, src)
  tmpfiles[#tmpfiles + 1] = d
  return p
end
function S.cleanup_files()
  for _, d in ipairs(tmpfiles) do os.execute("rm -rf " .. quote(d)) end
  tmpfiles = {}
end

-- A free TCP port on 127.0.0.1 (for servers that cannot be told port 0).
function S.free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- Processes started while spec connections are open would inherit their
-- sockets (popen keeps them) and keep them open after the spec closes them:
-- argv prefixed so that it runs with every descriptor above 2 closed.
function S.closefds(argv)
  local t = { "/bin/bash", "-c",
    'for fd in /proc/$$/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done; exec "$@"', "closefds" }
  for _, a in ipairs(argv) do t[#t + 1] = a end
  return t
end

-- A throwaway redis-server on 127.0.0.1:port, its data in a temp directory.
function S.start_redis(port)
  local dir = S.tmpdir()
  local r = S.start {
    command = S.closefds { "redis-server", "--port", tostring(port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", dir, "--loglevel", "notice" },
    ready = "Ready to accept connections",
  }
  r.redis_dir = dir
  return r
end

-- Stops it (continued first, should a spec have stopped it with SIGSTOP)
-- and removes its directory; opts.quiet as for Server:stop. nil is ignored.
function S.stop_redis(r, opts)
  if not r then return end
  r:signal("CONT")
  r:stop { quiet = opts and opts.quiet }
  os.execute("rm -rf " .. quote(r.redis_dir))
end

return S
