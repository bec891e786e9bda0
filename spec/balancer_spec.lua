-- Behind a load balancer: --health and the drain on SIGTERM, per-client
-- limits (--max-conns-per-ip, --rate) attacked from one address while
-- another is served, with the server's RSS and descriptors read.
local server = require "spec.support.server"
local ws = require "spec.support.wsclient"

local ASAN = server.BINARY:match("asan") ~= nil
local ASAN_ENV = ASAN and ((os.getenv("ASAN_OPTIONS") or "") .. ":quarantine_size_mb=4") or nil
local RSS_SCALE = ASAN and 3 or 1

local ECHO = [[
  return { on_message = function(s, m) s:send(m) end }
]]

local function read_text(c)
  local data, kind = c:read_message()
  assert(kind == "text", "expected a text message, got " .. tostring(kind) .. " " .. tostring(data))
  return data
end

local function get(srv, path, opts)
  return assert(ws.http(srv.host, srv.port, { method = "GET", path = path, headers = opts and opts.headers }))
end

-- RSS (KiB) and open descriptors of pid and its children (the workers).
local function rss_fds(pid)
  local h = io.popen("for p in " .. pid .. " $(pgrep -P " .. pid .. "); do "
    .. "echo $(awk '/VmRSS/{print $2}' /proc/$p/status) $(ls /proc/$p/fd | wc -l); done")
  local rss, fds = 0, 0
  for l in h:lines() do
    local r, f = l:match("(%d+) (%d+)")
    rss, fds = rss + tonumber(r), fds + tonumber(f)
  end
  h:close()
  return rss, fds
end

describe("behind a load balancer", function()
  after_each(function() server.stop_all() end)

  it("--health answers 200 while serving, 503 while draining (still serving), then SIGTERM's close follows", function()
    local srv = server.start { workers = 2, source = ECHO, args = { "--health", "/health", "--drain-delay", "60000" } }
    local r = get(srv, "/health")
    assert.equal(200, r.status)
    assert.equal("ok\n", r.body)
    assert.equal("no-store", r.headers["cache-control"])
    assert.equal(200, get(srv, "/health?probe=1").status)
    local open = assert(ws.connect(srv.host, srv.port, {}))
    local mark = srv:mark()
    srv:signal("TERM")
    srv:wait_log("%[w1%] signal 15: draining for 60000 ms", { after = mark })
    srv:wait_log("%[w2%] signal 15: draining for 60000 ms", { after = mark })
    -- Both workers say 503; new connections are still served meanwhile.
    for _ = 1, 4 do
      r = get(srv, "/health")
      assert.equal(503, r.status)
      assert.equal("draining\n", r.body)
    end
    local late = assert(ws.connect(srv.host, srv.port, {}))
    assert.equal(101, late.status)
    late:send_text("still here")
    assert.equal("still here", read_text(late))
    open:send_text("me too")
    assert.equal("me too", read_text(open))
    -- A second SIGTERM ends the drain: sockets close with 1001.
    srv:signal("TERM")
    for _, c in ipairs { open, late } do
      local data, kind = c:read_message()
      assert.equal("close", kind)
      assert.equal(1001, data:byte(1) * 256 + data:byte(2))
      c:send_close(1001)
      c:shutdown()
    end
    assert.truthy(srv:wait_exit())
  end)

  it("--health answers 503 while the node is at --max-connections", function()
    local srv = server.start { source = ECHO, args = { "--health", "/health", "--max-connections", "2" } }
    assert.equal(200, get(srv, "/health").status)
    local c = assert(ws.connect(srv.host, srv.port, {}))
    assert.equal(101, c.status)
    -- This check and the WebSocket fill the node: no room for one more.
    local r = get(srv, "/health")
    assert.equal(503, r.status)
    assert.equal("full\n", r.body)
    c:close(1000)
    local status
    for _ = 1, 200 do
      status = get(srv, "/health").status
      if status == 200 then break end
    end
    assert.equal(200, status)
  end)

  it("--max-conns-per-ip: a flood from one address gets 503 past the limit, on both workers; another address is served; memory and descriptors stay put", function()
    local srv = server.start { workers = 2, source = ECHO, env = { ASAN_OPTIONS = ASAN_ENV },
                               args = { "--max-conns-per-ip", "5", "--metrics" } }
    local rss0, fds0 = rss_fds(srv.pid)
    local kept, refused = {}, 0
    for _ = 1, 300 do
      local c = assert(ws.connect(srv.host, srv.port, { bind = "127.0.0.2" }))
      if c.status == 101 then kept[#kept + 1] = c
      else
        assert.equal(503, c.status)
        assert.equal("1", c.headers["retry-after"])
        refused = refused + 1
        c:shutdown()
      end
    end
    assert.equal(5, #kept)
    assert.equal(295, refused)
    srv:wait_log("conn %d+ from 127%.0%.0%.2:%d+ refused: 5 connections from this address %(%-%-max%-conns%-per%-ip%)")
    -- The kernel spread them over both workers: the limit is the machine's.
    assert.truthy(srv:grep("%[w1%] conn %d+ from 127%.0%.0%.2")[1] and srv:grep("%[w2%] conn %d+ from 127%.0%.0%.2")[1]
      or srv:grep("%[w1%] conn %d+ open")[1] and srv:grep("%[w2%] conn %d+ open")[1])
    local other = assert(ws.connect(srv.host, srv.port, { bind = "127.0.0.3" }))
    assert.equal(101, other.status)
    other:send_text("served")
    assert.equal("served", read_text(other))
    local body = get(srv, "/metrics").body
    assert.equal("295", body:match("\nluaws_ip_refused_total (%d+)"))
    local rss1 = rss_fds(srv.pid)
    assert.truthy(rss1 - rss0 < RSS_SCALE * 16 * 1024, "grew by " .. (rss1 - rss0) .. " KiB")
    -- One leaves: that address may connect once more.
    kept[1]:close(1000)
    local status
    for _ = 1, 200 do
      local c = assert(ws.connect(srv.host, srv.port, { bind = "127.0.0.2" }))
      status = c.status
      if status == 101 then kept[1] = c; break end
      c:shutdown()
    end
    assert.equal(101, status)
    for _, c in ipairs(kept) do c:close(1000) end
    other:close(1000)
    -- Every refused socket was closed: the descriptors are back.
    local fds
    for _ = 1, 200 do
      _, fds = rss_fds(srv.pid)
      if fds <= fds0 then break end
      require("socket").sleep(0.01)
    end
    assert.truthy(fds <= fds0, "descriptors: " .. fds0 .. " before, " .. fds .. " after")
  end)

  it("--rate with --rate-action close: a flood is closed with 1008; another socket is served", function()
    local srv = server.start { source = ECHO, args = { "--rate", "20:5", "--rate-action", "close", "--metrics" } }
    local flood = assert(ws.connect(srv.host, srv.port, {}))
    local other = assert(ws.connect(srv.host, srv.port, {}))
    for i = 1, 200 do
      if not flood:send_text("m" .. i) then break end
    end
    -- The burst is echoed, then the close (no more than the burst plus what refilled).
    local echoed = 0
    while true do
      local data, kind = flood:read_message()
      if kind == "close" then
        assert.equal(1008, data:byte(1) * 256 + data:byte(2))
        assert.equal("message rate limit", data:sub(3))
        break
      end
      echoed = echoed + 1
    end
    assert.truthy(echoed >= 5 and echoed < 200, "echoed " .. echoed)
    srv:wait_log("conn %d+ from 127%.0%.0%.1:%d+: over its message rate %(20/s, burst 5%), closing with 1008")
    other:send_text("fine")
    assert.equal("fine", read_text(other))
    assert.truthy(tonumber(get(srv, "/metrics").body:match("\nluaws_rate_limited_total (%d+)")) >= 1)
  end)

  it("--rate pausing (the default): a flood that never reads is read at the rate, the server's memory stays put, another socket is served", function()
    local srv = server.start { source = [[
      local n = 0
      return { on_message = function(s, m) n = n + 1; if m == "count" then s:send(tostring(n)) end end }
    ]], env = { ASAN_OPTIONS = ASAN_ENV }, args = { "--rate", "50:10" } }
    local rss0 = rss_fds(srv.pid)
    local flood = assert(ws.connect(srv.host, srv.port, { timeout = 0.5 }))
    -- 64 MB of 1 KiB messages (one masked frame, sent again and again),
    -- written without reading: the kernel's buffers fill and the writes
    -- stall, because the server reads 50 a second.
    local frame = string.rep(ws.encode_frame { opcode = 1, payload = string.rep("x", 1024) }, 64)
    local sent = 0
    flood.sock:settimeout(0.2)
    for _ = 1, 1000 do
      if not flood:send_raw(frame) then break end
      sent = sent + 1
    end
    assert.truthy(sent < 1000, "the server read 64 MB at once: no rate limit")
    local other = assert(ws.connect(srv.host, srv.port, {}))
    other:send_text("count")
    local n = tonumber(read_text(other))
    assert.truthy(n < 200, "handled " .. n .. " messages")
    local rss1 = rss_fds(srv.pid)
    assert.truthy(rss1 - rss0 < RSS_SCALE * 16 * 1024, "grew by " .. (rss1 - rss0) .. " KiB")
    flood:shutdown()
  end)

  it("socket:set_rate under luaws test: the spec's clock decides when a paused socket reads again", function()
    local dir = server.spec_dir {
      ["bot.lua"] = [[
        return { on_message = function(s, m)
          if m == "login" then s:set_rate(2, 2); s:send("limited")   -- 2 a second, 2 at once
          elseif m == "vip" then s:set_rate(nil); s:send("unlimited")
          elseif m == "bad" then s:send(select(2, pcall(function() s:set_rate(-1) end)))
          else s:send(m) end
        end }
      ]],
      ["spec/bot_spec.lua"] = [[
        local t = require "luaws.test"
        it("paces a socket after login", function()
          local c = t.connect("bot.lua")
          c:send("login")
          c:expect("limited")
          for i = 1, 5 do c:send("m" .. i) end
          c:expect("m1"); c:expect("m2")       -- the burst
          c:refute()                            -- then nothing until a token is back
          t.clock:advance(0.5)
          c:expect("m3")
          c:refute()
          t.clock:advance(0.5)
          c:expect("m4")
          t.clock:advance(0.5)
          c:expect("m5")
        end)
        it("lifts the limit, and what waited flows at once", function()
          local c = t.connect("bot.lua")
          c:send("login"); c:expect("limited")
          for i = 1, 4 do c:send("m" .. i) end
          c:expect("m1"); c:expect("m2"); c:refute()
          t.clock:advance(0.5)
          c:expect("m3")
          c:send("vip")                         -- waits its turn, behind m4
          t.clock:advance(0.5)
          c:expect("m4"); c:refute()
          t.clock:advance(0.5)
          c:expect("unlimited")
          for i = 5, 30 do c:send("m" .. i) end
          for i = 5, 30 do c:expect("m" .. i) end
        end)
        it("rejects a bad rate with the argument's position", function()
          local c = t.connect("bot.lua")
          c:send("bad")
          c:expect("^bot%.lua:4: bad argument #1 to 'set_rate' %(a rate from 0 %(no limit%) to 1e9")
        end)
      ]],
    }
    local code, out = server.luaws_test(dir, {})
    assert.equal(0, code, out)
    assert.truthy(out:find("3 successes / 0 failures", 1, true), out)
  end)
end)
