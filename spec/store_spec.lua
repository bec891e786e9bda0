-- luaws.store (README "Shared state: luaws.store"): key/value state shared
-- by every worker of a machine, on LMDB. The real binary over real sockets
-- (spec/scripts/store.lua answers one command per message), and `luaws test`
-- for the semantics (its clock drives the ttl without waiting).
local server = require "spec.support.server"
local socket = require "socket"
local H = require "spec.support.helpers"
local quote = server.quote

local SCRIPT = server.read_file(server.script("store.lua"))

local function say(c, text)
  c:send_text(text)
  return (H.read(c))
end

local function rss_kb(pid)
  local text = server.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(text:match("VmRSS:%s*(%d+)")) or 0
end

-- Connections, until both workers' pids were seen (at most limit).
local function spread(srv, want, limit)
  local conns, pids, seen = {}, {}, 0
  for _ = 1, limit do
    local c = H.open(srv)
    local pid = tonumber(say(c, "pid"))
    if not pids[pid] then pids[pid] = 0; seen = seen + 1 end
    pids[pid] = pids[pid] + 1
    conns[#conns + 1] = { c = c, pid = pid }
    if #conns >= want and seen >= 2 then break end
  end
  return conns, pids, seen
end

describe("luaws.store", function()
  lazy_setup(function() assert(server.available(), "luaws binary not built: " .. server.BINARY) end)

  it("1. --workers 2: 20 connections over both workers, 1,000 incr each, total exactly 20,000", function()
    local srv = H.start { source = SCRIPT, workers = 2, log_level = "info" }
    local conns, pids, seen = spread(srv, 20, 200)
    assert.equal(2, seen, "both workers answered")
    -- 20 connections, with at least one of each worker among them
    local chosen, per = {}, {}
    for _, e in ipairs(conns) do
      if not per[e.pid] then per[e.pid] = true; chosen[#chosen + 1] = e end
    end
    for _, e in ipairs(conns) do
      if #chosen >= 20 then break end
      local dup = false
      for _, x in ipairs(chosen) do dup = dup or x == e end
      if not dup then chosen[#chosen + 1] = e end
    end
    assert.equal(20, #chosen)
    for _, e in ipairs(chosen) do e.c:send_text("incr 1000") end   -- all at once: both workers write together
    local by = {}
    for _, e in ipairs(chosen) do
      local pid = tonumber(H.read(e.c):match("^done (%d+)$"))
      by[pid] = (by[pid] or 0) + 1
    end
    local n = 0
    for _ in pairs(by) do n = n + 1 end
    assert.equal(2, n, "both workers incremented")
    assert.equal("20000", say(conns[1].c, "get counter"))
    for _, e in ipairs(conns) do e.c:close(1000) end
    srv:stop()
  end)

  it("2. a value survives a hot reload", function()
    local srv = H.start { source = SCRIPT, log_level = "info" }
    local c = H.open(srv)
    assert.equal("ok", say(c, "set greeting hello"))
    local mark = srv:mark()
    server.write_file(srv.script, (SCRIPT:gsub('local V = "v1"', 'local V = "v2"')))
    srv:wait_log("reloaded %(file changed%)", { after = mark })
    assert.equal("v2", say(c, "version"))
    assert.equal("hello", say(c, "get greeting"))
    local d = H.open(srv)
    assert.equal("hello", say(d, "get greeting"))
    c:close(1000); d:close(1000)
    srv:stop()
  end)

  it("3. with --store PATH a value survives a restart; without it nothing is left behind", function()
    local dir = server.tmpdir()
    local path = dir .. "/kept.mdb"
    local srv = H.start { source = SCRIPT, args = { "--store", path } }
    local c = H.open(srv)
    assert.equal("ok", say(c, "set kept yes"))
    assert.equal("1", say(c, "incr1 n"))
    c:close(1000)
    srv:stop()
    assert.truthy(server.exists(path))
    srv = H.start { source = SCRIPT, workers = 2, args = { "--store", path } }
    c = H.open(srv)
    assert.equal("yes", say(c, "get kept"))
    assert.equal("2", say(c, "incr1 n"))
    c:close(1000)
    srv:stop()
    os.execute("rm -rf " .. quote(dir))
    -- the default store lives in the run directory, removed at exit
    srv = H.start { source = SCRIPT }
    c = H.open(srv)
    assert.equal("ok", say(c, "set gone soon"))
    local rundir = server.read_file("/proc/" .. srv.pid .. "/environ"):match("LUAWS_RUNDIR=([^%z]+)")
    local h = io.popen("ls /proc/" .. srv.pid .. "/fd -l 2>/dev/null | grep -o '/tmp/luaws-run-[^/]*/store.mdb' | head -1")
    local file = h:read("l"); h:close()
    assert.truthy(file, "the store file is open in the run directory")
    c:close(1000)
    srv:stop()
    assert.falsy(server.exists(file), file .. " removed at exit")
    assert.is_nil(rundir and server.exists(rundir) or nil)
  end)

  it("4. a worker SIGKILLed inside update leaves the old value, and both workers read and write it", function()
    local srv = H.start { source = SCRIPT, workers = 2, log_level = "info", args = { "--script-timeout", "0" } }
    local conns, _, seen = spread(srv, 2, 200)
    assert.equal(2, seen)
    local a = conns[1]
    local b
    for _, e in ipairs(conns) do if e.pid ~= a.pid then b = e end end
    assert.equal("ok", say(a.c, "set v old"))
    local mark = srv:mark()
    a.c:send_text("hang v")
    local _, pid = srv:wait_log("store update hanging in pid (%d+)", { after = mark })
    assert.equal(a.pid, tonumber(pid))
    os.execute("kill -KILL " .. pid)
    srv:wait_log("worker %d %(pid " .. pid .. "%) killed by signal 9.*restarting it", { after = mark })
    -- the other worker: the old value, and the writer lock is free again
    assert.equal("old", say(b.c, "get v"))
    assert.equal("ok", say(b.c, "set v new"))
    assert.equal("new", say(b.c, "get v"))
    -- the replacement worker (a pid not seen before): poll until it serves
    local deadline = socket.gettime() + 10
    local fresh
    while not fresh do
      local c = H.open(srv)
      local p = tonumber(say(c, "pid"))
      if p ~= a.pid and p ~= b.pid then fresh = c else c:close(1000) end
      assert(socket.gettime() < deadline, "no replacement worker answered")
      if not fresh then socket.sleep(0.01) end
    end
    assert.equal("new", say(fresh, "get v"))
    assert.equal("ok", say(fresh, "set v newer"))
    assert.equal("newer", say(b.c, "get v"))
    fresh:close(1000)
    b.c:close(1000)
    srv:stop()
  end)

  it("4b. an update stopped by --script-timeout writes nothing and releases the lock", function()
    local srv = H.start { source = SCRIPT, args = { "--script-timeout", "200" } }
    local c = H.open(srv)
    assert.equal("ok", say(c, "set v old"))
    c:send_text("hang v")
    srv:wait_log("script timeout")
    local d = H.open(srv)
    assert.equal("old", say(d, "get v"))
    assert.equal("ok", say(d, "set v new"))
    d:close(1000)
    srv:stop()
  end)

  it("5. a full store raises a clear error the script can catch; others are served; RSS stays bounded", function()
    local srv = H.start { source = SCRIPT, args = { "--store-size", tostring(1 << 20) } }
    local c = H.open(srv)
    local r = say(c, "fill")
    assert.truthy(r:find("^full %d+ .*luaws.store fill: full %(%d+ bytes%).*%-%-store%-size"), r)
    local before = rss_kb(srv.pid)
    for _ = 1, 10 do
      r = say(c, "fill")
      assert.truthy(r:find("^full "), r)
    end
    local d = H.open(srv)
    assert.equal("nil", say(d, "get nothing"))
    local grown = rss_kb(srv.pid) - before
    assert.truthy(grown < 8 * 1024, "RSS grew by " .. grown .. " KiB")
    c:close(1000); d:close(1000)
    srv:stop()
  end)

  it("6. semantics under luaws test: get/set/add/incr/delete/keys/update, ttl on the spec's clock, types, errors", function()
    local dir = server.spec_dir {
      ["app.lua"] = [[
        local ws = require "luaws"
        return { on_message = function(sock, m)
          local s = ws.store("app")
          local ok, r = pcall(load("local s, ws = ... return " .. m), s, ws)
          if not ok then sock:send("ERR " .. tostring(r)) return end
          sock:send(type(r) == "table" and ws.json.encode(r) or (math.type(r) or type(r)) .. " " .. tostring(r))
        end }
      ]],
      ["spec/app_spec.lua"] = [==[
        local t = require "luaws.test"
        local function check(c, expr, want) c:send(expr) c:expect(want) end
        it("get, set, add, incr, delete, keys, update", function()
          local c = t.connect("app.lua")
          check(c, 's:get("a")', "nil nil")
          check(c, 's:set("a", 1)', "boolean true")
          check(c, 's:incr("a")', "integer 2")
          check(c, 's:incr("a", 5)', "integer 7")
          check(c, 's:incr("new", 1, 100)', "integer 101")
          check(c, 's:incr("f", 0.5)', "float 0.5")
          check(c, 's:incr("a", 0.5)', "float 7.5")
          check(c, 's:add("a", 2)', "boolean false")
          check(c, 's:add("b", 2)', "boolean true")
          check(c, 's:delete("b") and s:get("b")', "nil nil")
          check(c, 's:set("b", 3) and s:set("b", nil) and s:get("b")', "nil nil")
          check(c, 's:set("p:1", 1) and s:set("p:2", 2) and s:set("q", 3) and s:keys("p:")', '["p:1","p:2"]')
          check(c, 's:keys()', '["a","f","new","p:1","p:2","q"]')
          check(c, 's:update("a", function(v) return v * 2 end)', "float 15.0")
          check(c, 's:update("u", function(v) return (v or 0) + 1 end)', "integer 1")
          check(c, 's:update("u", function(v) return nil end) or s:get("u")', "nil nil")
          check(c, 's:update("a", function(v) error("no!") end)', "^ERR .*no!")
          check(c, 's:get("a")', "float 15.0")
          check(c, 's:update("a", function(v) ws.sleep(10) end)', "^ERR .*update: the function cannot wait")
          check(c, 's:update("a", function(v) s:get("x") end)', "^ERR .*cannot be used inside the update function")
          check(c, 's:get("a")', "float 15.0")
          check(c, 'ws.store("app") ~= s and ws.store("app"):get("q")', "integer 3")
          check(c, 'ws.store("other"):get("q")', "nil nil")
        end)
        it("types round-trip", function()
          local c = t.connect("app.lua")
          check(c, 's:set("i", math.maxinteger) and s:get("i") == math.maxinteger', "boolean true")
          check(c, 's:set("x", 2^53 + 0.5) and s:get("x")', "^float ")
          check(c, 's:set("x", -0.25) and s:get("x")', "float -0.25")
          check(c, 's:set("x", false) and s:get("x")', "boolean false")
          check(c, 's:set("x", "a\0b\0") and s:get("x") == "a\0b\0"', "boolean true")
          check(c, 's:set("x", "") and s:get("x") == ""', "boolean true")
          check(c, 's:set("x", {n = {1, 2, {deep = "yes"}}, ok = true}) and s:get("x").n[3].deep', "string yes")
          check(c, 's:get("x").ok', "boolean true")
          check(c, 's:set("x", {n = 7, f = 0.5}) and s:get("x").n', "integer 7")
          check(c, 's:get("x").f', "float 0.5")
        end)
        it("errors", function()
          local c = t.connect("app.lua")
          check(c, 's:set("x", print)', "^ERR .*a string, number, boolean or table, not a function")
          check(c, 's:set("x", {f = print})', "^ERR .*")
          check(c, 's:set("", 1)', "^ERR .*the key is empty")
          check(c, 's:set(string.rep("k", 600), 1)', "^ERR .*the key is 600 bytes; at most 511")
          check(c, 's:set("x", "str") and s:incr("x")', "^ERR .*incr: the value is not a number")
          check(c, 's:set("x", 1, -1)', "^ERR .*ttl must be > 0")
          check(c, 's:update("x", function() return print end)', "^ERR .*returned a function")
          check(c, 'ws.store("")', "^ERR .*a store name is")
        end)
        it("ttl follows the spec's clock", function()
          local c = t.connect("app.lua")
          check(c, 's:set("e", "x", 2)', "boolean true")
          check(c, 's:incr("e2", 1) and s:set("e2", 5, 2) and s:incr("e2")', "integer 6")
          t.clock:advance(1.999)
          check(c, 's:get("e")', "string x")
          check(c, 's:add("e", "y")', "boolean false")
          t.clock:advance(0.001)
          check(c, 's:get("e")', "nil nil")
          check(c, 's:get("e2")', "nil nil")
          check(c, 's:keys("e")', "{}")
          check(c, 's:add("e", "y")', "boolean true")
          check(c, 's:get("e")', "string y")
        end)
        it("each test starts with empty stores", function()
          local c = t.connect("app.lua")
          check(c, 's:keys()', "{}")
        end)
      ]==],
    }
    local code, out = server.luaws_test(dir)
    assert.equal(0, code, out)
    assert.truthy(out:find("5 successes / 0 failures / 0 errors", 1, true), out)
    os.execute("rm -rf " .. quote(dir))
  end)
end)
