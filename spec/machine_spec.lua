-- One machine, one server: with --workers 2, topics, luaws.subscribers,
-- /metrics and --max-connections span both workers; the script's top level
-- runs once per worker and never in the main process; luaws.state outlives
-- a hot reload. Connections land on whichever worker the kernel picks
-- (SO_REUSEPORT), so every spec first proves both workers took some.
local server = require "spec.support.server"
local ws = require "spec.support.wsclient"
local socket = require "socket"
local socket_time = socket.gettime

local function read_text(c)
  local data, kind = c:read_message()
  assert(kind == "text", "expected a text message, got " .. tostring(kind) .. " " .. tostring(data))
  return data
end

-- Both workers took connections: the log tags each line with its worker.
local function both_workers(srv)
  assert.truthy(srv:grep("%[w1%] conn %d+ open")[1], "no connection landed on worker 1")
  assert.truthy(srv:grep("%[w2%] conn %d+ open")[1], "no connection landed on worker 2")
end

-- Sends msg on c until the answer is want (a count another worker reports
-- a moment later), or the spec's timeout passes.
local function ask_until(c, msg, want)
  local deadline = socket_time() + server.TIMEOUT
  local got
  repeat
    c:send_text(msg)
    got = read_text(c)
    if got == want then return got end
  until socket_time() > deadline
  return got
end

describe("one machine, --workers 2", function()
  after_each(function() server.stop_all() end)

  it("scripts/chat.lua: 50 clients on both workers get every message, in one order, through a hot reload", function()
    local source = server.read_file(server.ROOT .. "/scripts/chat.lua")
    local srv = server.start { source = source, script_name = "chat.lua", workers = 2, log_level = "info" }
    local clients = {}
    for i = 1, 50 do
      local c = assert(ws.connect(srv.host, srv.port, { path = "/?name=u" .. i }))
      assert.equal(101, c.status)
      -- The welcome comes once it is subscribed (and says how many are here:
      -- the whole machine's count, which may lag the other worker's joins).
      local line
      repeat line = read_text(c) until line:find("^%* welcome")
      assert.falsy(line:find("u" .. i .. " joined", 1, true))
      clients[i] = c
    end
    both_workers(srv)
    for i = 1, 25 do clients[i]:send_text("m" .. i) end
    -- A hot reload on both workers while those are in flight.
    local mark = srv:mark()
    server.write_file(srv.script, source .. "\n-- v2\n")
    srv:wait_log("%[w1%] reloaded", { after = mark })
    srv:wait_log("%[w2%] reloaded", { after = mark })
    for i = 26, 50 do clients[i]:send_text("m" .. i) end
    local first
    for i, c in ipairs(clients) do
      local got, seen = {}, {}
      while #got < 50 do
        local line = read_text(c)
        -- Only chat lines: joins of later clients are notices ("* ...").
        if line:find("^u%d+: m%d+$") then
          assert.falsy(seen[line], "client " .. i .. " got " .. line .. " twice")
          seen[line] = true
          got[#got + 1] = line
        elseif line:find("^%* u" .. i .. " joined") then
          error("client " .. i .. " got its own join notice")
        end
      end
      for k = 1, 50 do assert.truthy(seen["u" .. k .. ": m" .. k], "client " .. i .. " missed m" .. k) end
      first = first or got
      assert.same(first, got)
    end
    for _, c in ipairs(clients) do c:close(1000) end
  end)

  it("luaws.subscribers counts both workers' sockets, and forgets a killed worker's", function()
    local srv = server.start { workers = 2, source = [[
      local ws = require "luaws"
      local core = require "luaws.core"
      return {
        on_open = function(s) s:subscribe("t") end,
        on_message = function(s, m)
          if m == "count" then s:send(tostring(ws.subscribers("t")))
          elseif m == "pid" then s:send(tostring(core.pid())) end
        end,
      }
    ]] }
    local clients, by_pid, pids = {}, {}, {}
    for i = 1, 20 do
      local c = assert(ws.connect(srv.host, srv.port, {}))
      c:send_text("pid")
      local pid = tonumber(read_text(c))
      if not by_pid[pid] then by_pid[pid] = {}; pids[#pids + 1] = pid end
      table.insert(by_pid[pid], c)
      clients[i] = c
    end
    assert.equal(2, #pids, "all 20 connections landed on one worker")
    for _, pid in ipairs(pids) do assert.equal("20", ask_until(by_pid[pid][1], "count", "20")) end
    -- Five leave: both workers see 15.
    for i = 1, 5 do clients[i]:close(1000) end
    local left = {}
    for _, pid in ipairs(pids) do
      for _, c in ipairs(by_pid[pid]) do if not c.closed then left[pid] = c; break end end
    end
    for _, c in pairs(left) do assert.equal("15", ask_until(c, "count", "15")) end
    -- A worker killed: the other stops counting its sockets.
    local victim, survivor = pids[1], pids[2]
    local lost = 0
    for _, c in ipairs(by_pid[victim]) do if not c.closed then lost = lost + 1 end end
    assert.truthy(left[survivor], "no open connection on the surviving worker")
    local mark = srv:mark()
    os.execute("kill -KILL " .. victim)
    srv:wait_log("worker %d %(pid " .. victim .. "%) killed by signal 9", { after = mark })
    assert.equal(tostring(15 - lost), ask_until(left[survivor], "count", tostring(15 - lost)))
  end)

  it("a publish from either worker reaches the other; {except = socket} skips only that socket", function()
    local srv = server.start { workers = 2, source = [[
      local ws = require "luaws"
      local core = require "luaws.core"
      return {
        on_open = function(s) s:subscribe("t"); s:send("pid " .. core.pid()) end,
        on_message = function(s, m)
          if m:find("^others ") then ws.publish("t", m, { except = s })
          elseif m == "bad" then
            local ok, err = pcall(ws.publish, "t", "x", { exept = s })
            s:send(tostring(err))
          else ws.publish("t", m) end
        end,
      }
    ]] }
    local by_pid, pids = {}, {}
    for _ = 1, 20 do
      local c = assert(ws.connect(srv.host, srv.port, {}))
      local pid = read_text(c):match("^pid (%d+)$")
      if not by_pid[pid] then by_pid[pid] = {}; pids[#pids + 1] = pid end
      table.insert(by_pid[pid], c)
    end
    assert.equal(2, #pids, "all 20 connections landed on one worker")
    local a, b = by_pid[pids[1]][1], by_pid[pids[2]][1]
    a:send_text("from a")
    for _, pid in ipairs(pids) do for _, c in ipairs(by_pid[pid]) do assert.equal("from a", read_text(c)) end end
    b:send_text("others from b")
    for _, pid in ipairs(pids) do
      for _, c in ipairs(by_pid[pid]) do if c ~= b then assert.equal("others from b", read_text(c)) end end
    end
    -- b got nothing: the next message it reads is the next publish.
    a:send_text("from a again")
    assert.equal("from a again", read_text(b))
    b:send_text("bad")
    local err
    repeat err = read_text(b) until err ~= "from a again"
    assert.truthy(err:find("unknown option exept", 1, true), err)
  end)

  it("/metrics answers for the machine: the sum, and each worker with its label", function()
    local srv = server.start { workers = 2, args = { "--metrics" }, source = "return { on_open = function() end }" }
    local clients = {}
    for i = 1, 20 do clients[i] = assert(ws.connect(srv.host, srv.port, {})) end
    -- Wait until both workers' slots show them (the gauge is the slots').
    local body
    for _ = 1, 200 do
      body = ws.http(srv.host, srv.port, { method = "GET", path = "/metrics" }).body
      if body:match("\nluaws_websockets_total (%d+)") == "20" then break end
    end
    local total = tonumber(body:match("\nluaws_websockets_total (%d+)"))
    local w1 = tonumber(body:match('luaws_websockets_total{worker="1"} (%d+)'))
    local w2 = tonumber(body:match('luaws_websockets_total{worker="2"} (%d+)'))
    assert.equal(20, total, body)
    assert.equal(20, w1 + w2, body)
    -- 20 WebSockets and the scrape itself.
    local open = tonumber(body:match("\nluaws_connections (%d+)"))
    assert.equal(21, open, body)
    assert.equal(21, tonumber(body:match('luaws_connections{worker="1"} (%d+)'))
      + tonumber(body:match('luaws_connections{worker="2"} (%d+)')), body)
    both_workers(srv)
    for _, c in ipairs(clients) do c:close(1000) end
  end)

  it("--max-connections counts both workers", function()
    -- 20: the kernel puts them all on one worker once in 2^19 runs.
    local srv = server.start { workers = 2, args = { "--max-connections", "20" },
                               source = "return { on_open = function() end }" }
    local open = {}
    for i = 1, 20 do
      local c = assert(ws.connect(srv.host, srv.port, {}))
      assert.equal(101, c.status, "connection " .. i)
      open[i] = c
    end
    both_workers(srv)
    for i = 21, 24 do
      local c = assert(ws.connect(srv.host, srv.port, {}))
      assert.equal(503, c.status, "connection " .. i .. " over the machine's limit")
      c:shutdown()
    end
    srv:wait_log("refused: %d+ connections open %(%-%-max%-connections%)", { count = 4 })
    -- One leaves: a newcomer gets in (once the closing one is freed).
    open[1]:close(1000)
    local status
    for _ = 1, 200 do
      local c = assert(ws.connect(srv.host, srv.port, {}))
      status = c.status
      c:shutdown()
      if status == 101 then break end
    end
    assert.equal(101, status)
  end)

  it("the script's top level runs once per worker, never in the main process: a load-time luaws.connect connects twice; math.random differs per worker", function()
    local target = server.start { source = [[
      return { on_open = function(s) require("luaws").log("info", "remote open") end }
    ]] }
    local dir = server.tmpdir()
    local pids = dir .. "/pids"
    local srv = server.start { workers = 2, env = { PIDS = pids, TARGET = "ws://127.0.0.1:" .. target.port .. "/" },
      source = [[
      local ws = require "luaws"
      local f = assert(io.open(os.getenv("PIDS"), "a"))
      f:write(require("luaws.core").pid(), " ", math.random(1 << 40), "\n")
      f:close()
      ws.connect(os.getenv("TARGET"), { on_open = function() end })
      return { on_open = function() end }
    ]] }
    -- Ready means both workers loaded it.
    local lines, draws = {}, {}
    for l in server.read_file(pids):gmatch("[^\n]+") do
      local pid, draw = l:match("^(%d+) (%d+)$")
      lines[#lines + 1], draws[#draws + 1] = tonumber(pid), draw
    end
    assert.equal(2, #lines)
    assert.are_not.equal(lines[1], lines[2])
    -- Forked workers do not share math.random's sequence (each state is
    -- seeded from the kernel, not from the time and a heap address).
    assert.are_not.equal(draws[1], draws[2])
    for _, pid in ipairs(lines) do assert.are_not.equal(srv.pid, pid) end
    target:wait_log("remote open")
    srv:stop()
    -- Whatever it ever connected is in the target's log now.
    assert.equal(2, #target:grep("remote open"))
  end)

  it("a broken script still fails the start, with file:line, though the main process only compiles it", function()
    local dir = server.tmpdir()
    server.write_file(dir .. "/boom.lua", "local x = 1\nerror('boom at load')\n")
    local code, out = server.run { "--port", "0", "--workers", "2", dir .. "/boom.lua" }
    assert.equal(1, code, out)
    assert.truthy(out:find(dir .. "/boom.lua:2: boom at load", 1, true), out)
    server.write_file(dir .. "/syntax.lua", "local x = = 1\n")
    code, out = server.run { "--port", "0", "--workers", "2", dir .. "/syntax.lua" }
    assert.equal(1, code, out)
    assert.truthy(out:find("luaws: cannot load " .. dir .. "/syntax.lua: " .. dir .. "/syntax.lua:1:", 1, true), out)
  end)

  it("luaws.state keeps a worker's sockets and values across a hot reload", function()
    local v1 = [[
      local ws = require "luaws"
      local st = ws.state
      st.loads = (st.loads or 0) + 1
      st.sockets = st.sockets or {}
      return {
        on_open = function(s) st.sockets[s] = true; s:send("hi") end,
        on_close = function(s) st.sockets[s] = nil end,
        on_message = function(s, m)
          if m == "all" then
            local n = 0
            for other in pairs(st.sockets) do other:send("loads " .. st.loads); n = n + 1 end
          end
        end,
      }
    ]]
    local srv = server.start { source = v1 }
    local a = assert(ws.connect(srv.host, srv.port, {}))
    local b = assert(ws.connect(srv.host, srv.port, {}))
    assert.equal("hi", read_text(a))
    assert.equal("hi", read_text(b))
    local mark = srv:mark()
    server.write_file(srv.script, v1 .. "\n-- v2\n")
    srv:wait_log("reloaded", { after = mark })
    a:send_text("all")
    assert.equal("loads 2", read_text(a))
    assert.equal("loads 2", read_text(b))
  end)

  -- Under ASan freed memory waits in a quarantine that RSS would count:
  -- keep it small, and allow for redzones (as hardening_spec does).
  local ASAN = server.BINARY:match("asan") ~= nil
  local ASAN_ENV = ASAN and ((os.getenv("ASAN_OPTIONS") or "") .. ":quarantine_size_mb=4") or nil

  -- The process's resident memory (KiB) and open descriptors.
  local function rss_fds(pid)
    local st = server.read_file("/proc/" .. pid .. "/status") or ""
    local h = io.popen("ls /proc/" .. pid .. "/fd | wc -l")
    local fds = tonumber(h:read("l")); h:close()
    return tonumber(st:match("VmRSS:%s*(%d+)")), fds
  end

  it("limits: a worker that does not read topic messages costs the main process at most 64 MiB; one event cannot queue more than 64 MiB", function()
    local dir = server.tmpdir()
    local go = dir .. "/go"
    -- Whatever fails below, the spinning worker must be let go.
    finally(function() server.write_file(go, "") end)
    local srv = server.start { workers = 2, args = { "--script-timeout", "0" }, env = { GO = go, ASAN_OPTIONS = ASAN_ENV },
      source = [[
      local ws = require "luaws"
      local core = require "luaws.core"
      local big = string.rep("x", 1 << 20)
      return {
        on_open = function(s) s:subscribe("t"); s:send("pid " .. core.pid()) end,
        on_message = function(s, m)
          if m == "spin" then                  -- this worker stops reading anything
            while not io.open(os.getenv("GO")) do end
            s:send("spun")
          elseif m == "flood" then             -- 32 MiB on a topic nobody here reads
            -- (ENOBUFS while the main process has not taken the last 64: wait)
            for _ = 1, 32 do while not ws.publish("flood", big) do ws.sleep(10) end end
            s:send("flooded")
          elseif m == "too much" then          -- past 64 MiB in one event
            for i = 1, 100 do
              local ok, err, code = ws.publish("flood", big)
              if not ok then s:send(i .. " " .. err .. " " .. code); return end
            end
            s:send("no limit")
          elseif m == "echo" then s:send("echo")
          else ws.publish("t", m) end
        end,
      }
    ]] }
    local by_pid, pids = {}, {}
    for _ = 1, 24 do
      local c = assert(ws.connect(srv.host, srv.port, {}))
      local pid = read_text(c):match("^pid (%d+)$")
      if not by_pid[pid] then by_pid[pid] = {}; pids[#pids + 1] = pid end
      table.insert(by_pid[pid], c)
    end
    assert.equal(2, #pids, "all 24 connections landed on one worker")
    local stuck, other = by_pid[pids[1]], by_pid[pids[2]]
    assert.truthy(#stuck >= 2 and #other >= 2, "too few connections on one worker")
    -- One event that publishes more than 64 MiB gets ENOBUFS: the 64th MiB,
    -- with the framing of the 63 before it, would pass the limit.
    other[1]:send_text("too much")
    assert.equal("64 publish: more than 64 MiB of messages wait for the other workers ENOBUFS", read_text(other[1]))
    local rss0, fds0 = rss_fds(srv.pid)
    stuck[1]:send_text("spin")
    local mark = srv:mark()
    -- 128 MiB for the stuck worker: the main process keeps at most 64.
    for _ = 1, 4 do
      other[1]:send_text("flood")
      assert.equal("flooded", read_text(other[1]))
    end
    local _, queued = srv:wait_log("worker %d is not reading topic messages %((%d+) bytes queued%): dropping its messages",
      { after = mark })
    assert.truthy(tonumber(queued) <= 64 * 1024 * 1024, queued)
    local rss1, fds1 = rss_fds(srv.pid)
    -- At most 64 MiB per worker: the stuck one's, and what the busy one
    -- has not read yet (a moment's worth).
    assert.truthy(rss1 - rss0 < (ASAN and 3 or 1) * (2 * 64 + 8) * 1024, "the main process grew by " .. (rss1 - rss0) .. " KiB")
    assert.equal(fds0, fds1)
    -- The other worker serves on.
    other[2]:send_text("echo")
    assert.equal("echo", read_text(other[2]))
    -- Once the stuck worker reads again, topics reach it.
    server.write_file(go, "")
    assert.equal("spun", read_text(stuck[1]))
    other[1]:send_text("after")
    for _, c in ipairs(stuck) do
      local m
      repeat m = read_text(c) until m ~= "spun"
      assert.equal("after", m)
    end
  end)

  it("the main process killed outright: the workers drain and stop instead of serving on alone", function()
    local srv = server.start { workers = 2, source = "return { on_open = function() end }" }
    local h = io.popen("pgrep -P " .. srv.pid)
    local kids = {}
    for l in h:lines() do kids[#kids + 1] = tonumber(l) end
    h:close()
    assert.equal(2, #kids)
    srv:signal("KILL")
    assert.truthy(srv:wait_exit())
    -- wait_log stops at the main process's death: read the workers' lines here.
    local deadline = socket_time() + server.TIMEOUT
    local log
    repeat
      log = server.read_file(srv.logfile) or ""
      if log:find("[w1] signal 15: shutting down", 1, true) and log:find("[w2] signal 15: shutting down", 1, true) then
        break
      end
      socket.sleep(0.01)
    until socket_time() > deadline
    assert.truthy(log:find("[w1] signal 15: shutting down", 1, true), log)
    assert.truthy(log:find("[w2] signal 15: shutting down", 1, true), log)
    deadline = socket_time() + server.TIMEOUT
    local left
    repeat
      left = 0
      for _, pid in ipairs(kids) do
        local f = io.open("/proc/" .. pid .. "/stat")
        -- a zombie (Z) waits for init to reap it: it serves nothing
        if f then
          local st = f:read("a"):match("^%d+ %b() (%a)")
          f:close()
          if st ~= "Z" then left = left + 1 end
        end
      end
    until left == 0 or socket_time() > deadline
    assert.equal(0, left)
  end)
end)
