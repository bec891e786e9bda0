-- Issue 18 (hardening, second round): the attacks fixed so far, each
-- reproduced against the real binary, with the server's RSS read where the
-- attack is about memory, and another connection served meanwhile.
local server = require "spec.support.server"
local wsc = require "spec.support.wsclient"
local H = require "spec.support.helpers"
local quote = server.quote

-- Under ASan (make test SANITIZE=1) freed memory waits in a quarantine
-- (256 MB by default) before it is reused, which RSS would count: keep it
-- small for the specs that read RSS, and allow for ASan's redzones.
local ASAN = server.BINARY:match("asan") ~= nil
local RSS_ENV = ASAN and { ASAN_OPTIONS = (os.getenv("ASAN_OPTIONS") or "") .. ":quarantine_size_mb=4" } or nil
local RSS_SCALE = ASAN and 3 or 1

local function rss_kb(pid)
  local f = io.open("/proc/" .. pid .. "/status")
  local text = f and f:read("a") or ""
  if f then f:close() end
  return tonumber(text:match("VmRSS:%s*(%d+)")) or 0
end

-- Sends text (a raw request) on a connection of its own; returns the
-- response, or nil and why.
local function request(srv, text)
  local c = assert(wsc.tcp(srv.host, srv.port))
  c:send_raw(text)
  local res, err = c:read_response()
  c:close()
  return res, err
end

local function plain_get(srv, path, head)
  return assert(request(srv, "GET " .. path .. " HTTP/1.1\r\nHost: a\r\n" .. (head or "") .. "\r\n"))
end

describe("hardening", function()
  lazy_setup(function() assert(server.available(), "luaws binary not built: " .. server.BINARY) end)

  it("1. pipelined requests from a client that does not read: reading stops past --high-water of answers", function()
    local srv = H.start { script = "scripts/echo.lua", env = RSS_ENV }
    local before = rss_kb(srv.pid)
    local c = assert(wsc.tcp(srv.host, srv.port))
    c.sock:setoption("tcp-nodelay", true)
    -- 20,000 requests for the console page (~300 MB of answers) in one send
    local req = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    c.sock:settimeout(10)
    assert(c.sock:send(string.rep(req, 20000)))
    srv:wait_log("answers unread, reading no more requests for now")
    local grown = rss_kb(srv.pid) - before
    assert.truthy(grown < 16 * 1024 * RSS_SCALE, "RSS grew by " .. grown .. " KiB")
    -- others are served meanwhile
    assert.equal(200, plain_get(srv, "/x").status)
    c:close()
    srv:stop()
  end)

  it("1. ... and every answer comes once the client reads", function()
    local srv = H.start { script = "scripts/echo.lua", args = { "--high-water", "16384" } }
    local c = assert(wsc.tcp(srv.host, srv.port))
    -- ~20 MB of console pages: more than the kernel's buffers hold
    c:send_raw(string.rep("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1500))
    srv:wait_log("answers unread, reading no more requests for now")
    for i = 1, 1500 do
      local res = assert(c:read_response())
      assert.equal(200, res.status, "answer " .. i)
    end
    c:close()
    srv:stop()
  end)

  it("4. what a script stopped for --script-timeout allocated is collected before anything else runs", function()
    local srv = H.start { source = [[
      return { on_message = function(s, m)
        if m == "hog" then
          local t = {}
          for i = 1, 1e9 do t[i] = string.rep("x", 100) .. i end
        elseif m == "mem" then
          s:send(string.format("%.0f", collectgarbage("count") / 1024))
        else
          local big = string.rep("y", 40 * 1024 * 1024)
          s:send("ok " .. #big)
        end
      end } ]], args = { "--script-timeout", "300", "--script-memory", "200000000" } }
    local hog = H.open(srv)
    hog:send_text("hog")
    local data, kind = hog:read_message()
    assert.equal("close", kind)
    assert.equal(1011, data:byte(1) * 256 + data:byte(2))
    local c = H.open(srv)
    c:send_text("mem")
    local mb = tonumber((H.read(c)))
    assert.truthy(mb < 20, mb .. " MiB still in use")
    c:send_text("big")
    assert.equal("ok 41943040", (H.read(c)))
    srv:stop()
  end)

  it("6. a FIFO neither blocks --static nor a load or a reload", function()
    local dir = server.tmpdir()
    os.execute("mkdir -p " .. quote(dir .. "/www") .. " && mkfifo " .. quote(dir .. "/www/pipe.html"))
    local srv = H.start { script = "scripts/echo.lua", args = { "--static", dir .. "/www" } }
    -- not a regular file: not served from --static; the script answers
    assert.equal(200, plain_get(srv, "/pipe.html").status)
    assert.equal(200, plain_get(srv, "/x").status)
    srv:stop()

    os.execute("mkfifo " .. quote(dir .. "/fifo.lua"))
    local code, out = server.run { "--check", dir .. "/fifo.lua" }
    assert.equal(1, code)
    assert.truthy(out:find("not a regular file", 1, true), out)

    srv = H.start { source = "return { on_open = function(s) s:send('v1') end }" }
    assert.equal("v1", (H.read(H.open(srv))))
    local mark = srv:mark()
    os.execute("mkfifo " .. quote(srv.dir .. "/new.lua") .. " && mv " .. quote(srv.dir .. "/new.lua") .. " " .. quote(srv.script))
    srv:wait_log("reload %(file changed%) failed, the old code keeps serving: .*not a regular file", { after = mark })
    assert.equal("v1", (H.read(H.open(srv))))
    srv:stop()
  end)

  it("8. --max-header counts every byte of the head: colons, line ends, whitespace, empty headers", function()
    local srv = H.start { script = "scripts/echo.lua", args = { "--max-header", "1024" } }
    local function status(head)
      local res = request(srv, head)
      return res and res.status
    end
    assert.equal(431, status("GET /x HTTP/1.1\r\nHost: a\r\nX:" .. string.rep(" ", 70000) .. "\r\n\r\n"))
    assert.equal(431, status("GET /x HTTP/1.1\r\nHost: a\r\n" .. string.rep("a:\r\n", 1000) .. "\r\n"))
    assert.equal(200, status("GET /x HTTP/1.1\r\nHost: a\r\nX: " .. string.rep("y", 900) .. "\r\n\r\n"))
    assert.equal(200, status("GET /x HTTP/1.1\r\nHost: a\r\n" .. string.rep("a:\r\n", 100) .. "\r\n"))
    srv:stop()
  end)

  it("risk: --max-buffered-total caps the incomplete messages of all sockets; the biggest holder gets 1009", function()
    local srv = H.start { script = "scripts/echo.lua", args = { "--max-buffered-total", "3000000" }, env = RSS_ENV }
    local before = rss_kb(srv.pid)
    local a, b = H.open(srv), H.open(srv)
    H.read(a) H.read(b)                                   -- the greetings
    a:send_frame { opcode = 2, fin = false, payload = string.rep("a", 1000000) }
    b:send_frame { opcode = 2, fin = false, payload = string.rep("b", 1500000) }
    assert.equal(200, plain_get(srv, "/x").status)        -- both fragments are in
    a:send_frame { opcode = 0, fin = false, payload = string.rep("a", 1000000) }
    -- b holds the most (2 MiB of buffer): it is cut, with a 1009 close frame
    -- (which b may not get to read: TCP is reset under its unread data)
    local data, kind = b:read_message()
    if kind == "close" then assert.equal(1009, data:byte(1) * 256 + data:byte(2))
    else assert.truthy(kind == "closed" or tostring(kind):find("reset"), tostring(kind)) end
    srv:wait_log("holds %d+ bytes of an incomplete message; the worker holds %d+ %(%-%-max%-buffered%-total 3000000%)")
    srv:wait_log("closing with 1009")
    -- a goes on
    a:send_frame { opcode = 0, fin = true, payload = "!" }
    assert.equal(2000001, #(H.read(a)))
    assert.truthy(rss_kb(srv.pid) - before < 32 * 1024 * RSS_SCALE)
    srv:stop()
  end)

  it("risk: --static serves neither hidden files nor links out of its directory, unless told to", function()
    local dir = server.tmpdir()
    os.execute("mkdir -p " .. quote(dir .. "/www/.git") .. " && echo secret > " .. quote(dir .. "/www/.git/config")
      .. " && echo secret > " .. quote(dir .. "/www/.env") .. " && echo outside > " .. quote(dir .. "/outside.txt")
      .. " && ln -s " .. quote(dir .. "/outside.txt") .. " " .. quote(dir .. "/www/link.txt")
      .. " && echo inside > " .. quote(dir .. "/www/in.txt") .. " && ln -s in.txt " .. quote(dir .. "/www/inlink.txt"))
    local srv = H.start { script = "scripts/echo.lua", args = { "--static", dir .. "/www" } }
    assert.equal("inside\n", plain_get(srv, "/in.txt").body)
    assert.equal("inside\n", plain_get(srv, "/inlink.txt").body)     -- a link that stays inside
    for _, path in ipairs { "/.git/config", "/.env", "/link.txt" } do
      local res = plain_get(srv, path)
      assert.falsy((res.body or ""):find("secret", 1, true) or (res.body or ""):find("outside", 1, true), path)
    end
    srv:wait_log("%-%-static refuses /%.env: a dotfile")
    srv:wait_log("%-%-static refuses /link%.txt: a link out of the directory")
    srv:stop()
    srv = H.start { script = "scripts/echo.lua", args = { "--static", dir .. "/www", "--static-dotfiles", "--static-symlinks" } }
    assert.equal("secret\n", plain_get(srv, "/.env").body)
    assert.equal("outside\n", plain_get(srv, "/link.txt").body)
    srv:stop()
  end)

  it("risk: --metrics-token keeps /metrics from anyone without the token", function()
    local srv = H.start { script = "scripts/echo.lua", args = { "--metrics-token", "s3cret" } }
    local function get(auth)
      return plain_get(srv, "/metrics", auth and ("Authorization: " .. auth .. "\r\n"))
    end
    assert.equal(401, get(nil).status)
    assert.equal(401, get("Bearer wrong").status)
    local res = get("Bearer s3cret")
    assert.equal(200, res.status)
    assert.truthy(res.body:find("luaws_connections", 1, true))
    srv:stop()
  end)

  it("2. pongs to a peer that does not read are coalesced: one, for the most recent ping, once the queue drains", function()
    local srv = H.start { source = [[
      local ws = require "luaws"
      return { on_message = function(s, m)
        if m == "fill" then   -- 60 MB queued at once (async sends): more than the kernel's buffers (36 MB here)
          local chunk = ws.buffer(string.rep("z", 1024 * 1024))
          for _ = 1, 60 do s:send(chunk, function() end, function() end) end
        else
          ws.log("info", "pong-spec got " .. m)   -- every ping before it is handled
          if m ~= "filled?" then s:send(m) end   -- (a send would wait: the queue is full)
        end
      end } ]], env = RSS_ENV }
    local c = H.open(srv)
    c:send_text("fill")
    c:send_text("filled?")
    srv:wait_log("pong-spec got filled?", { plain = true })
    local before = rss_kb(srv.pid)
    for i = 1, 20000 do c:ping("p" .. i) end
    c:send_text("after the pings")
    -- we read nothing until the server has handled every ping
    srv:wait_log("pong-spec got after the pings", { plain = true })
    local grown = rss_kb(srv.pid) - before
    assert.truthy(grown < 1024 * RSS_SCALE, "RSS grew by " .. grown .. " KiB for 20,000 pings")
    for _ = 1, 60 do
      local data, kind = H.read(c)
      assert.equal("binary", kind)
    end
    -- the text and the held pong, in either order (the pong leaves when the
    -- queue drains, the text when the queue falls under --high-water), then
    -- nothing more but our "end"
    local pongs, texts = {}, {}
    c:send_text("end")
    repeat
      local data, kind = H.read(c)
      if kind == "pong" then pongs[#pongs + 1] = data else texts[#texts + 1] = data end
    until texts[#texts] == "end" and #pongs > 0   -- the pong may even come after our "end"
    c:send_text("final")
    repeat
      local data, kind = H.read(c)
      if kind == "pong" then pongs[#pongs + 1] = data else texts[#texts + 1] = data end
    until data == "final"
    assert.same({ "after the pings", "end", "final" }, texts)
    -- the answer to the last ping only (the others were held and replaced)
    assert.same({ "p20000" }, pongs)
    c:close(1000)
    srv:stop()
  end)

  it("3. a worker stuck in a C call --script-timeout cannot interrupt is replaced; the others serve", function()
    local srv = H.start { workers = 2, args = { "--script-timeout", "300" }, source = [[
      return { on_message = function(s, m)
        if m == "stuck" then string.find(string.rep("a", 24), string.rep("a-", 14) .. "b") end
        s:send("echo " .. m)
      end } ]] }
    local c = H.open(srv)
    c:send_text("stuck")
    srv:wait_log("worker %d %(pid %d+%) stuck for %d+ ms in on_message of [^ ]*script.lua: a C call %-%-script%-timeout cannot interrupt")
    srv:wait_log("killed by signal 9 %(Killed%); restarting it")
    local _, kind = c:read_message()
    assert.truthy(kind == "closed" or tostring(kind):find("reset"), tostring(kind))
    for i = 1, 4 do
      local d = H.open(srv)
      d:send_text("hi " .. i)
      assert.equal("echo hi " .. i, (H.read(d)))
      d:close(1000)
    end
    srv:stop()
  end)

  it("5. a worker restarted while the script on disk is broken starts with the last code that loaded", function()
    local srv = H.start { workers = 2, source = "return { on_open = function(s) s:send('v1') end }" }
    local mark = srv:mark()
    server.write_file(srv.script, "return { on_open = function(s) s:send('v2') end ")   -- broken
    srv:wait_log("%[w1%] reload %(file changed%) failed", { after = mark })
    srv:wait_log("%[w2%] reload %(file changed%) failed", { after = mark })
    local h = io.popen("pgrep -P " .. srv.pid)
    local child = tonumber(h:read("l"))
    h:close()
    os.execute("kill -KILL " .. child)
    srv:wait_log("the script on disk does not load %(.*%); starting with the last code that loaded", { after = mark })
    srv:wait_log("restarting it", { after = mark })
    for _ = 1, 6 do
      local c = H.open(srv)
      assert.equal("v1", (H.read(c)))
      c:close(1000)
    end
    srv:stop()
  end)

  it("6. --static reads files off the loop; pipelined requests are answered in order", function()
    local dir = server.tmpdir()
    os.execute("mkdir -p " .. quote(dir .. "/www"))
    server.write_file(dir .. "/www/a.txt", "first\n")
    server.write_file(dir .. "/www/b.txt", string.rep("b", 300000))
    server.write_file(dir .. "/www/empty.txt", "")
    local srv = H.start { script = "scripts/echo.lua", args = { "--static", dir .. "/www" } }
    local c = assert(wsc.tcp(srv.host, srv.port))
    c:send_raw("GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: a\r\n\r\n"
      .. "GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\nGET /empty.txt HTTP/1.1\r\nHost: a\r\n\r\n"
      .. "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert.equal("first\n", assert(c:read_response()).body)
    assert.equal(300000, #assert(c:read_response()).body)
    assert.equal("first\n", assert(c:read_response()).body)
    assert.equal("", assert(c:read_response()).body)
    assert.truthy(assert(c:read_response()).body:find("luaws echo bot", 1, true))
    c:close()
    srv:stop()
  end)
  it("after a burst of connections comes (once quiet) and after it closes, the worker gives memory back (full collection, malloc_trim)", function()
    local srv = H.start { script = "bench/echo_nogreet.lua", args = { "--metrics" }, env = RSS_ENV }
    local function heap()
      local r = assert(wsc.http(srv.host, srv.port, { path = "/metrics", headers = { Host = "x" } }))
      return tonumber(assert(r.body:match("\nluaws_lua_heap_bytes (%d+)")))
    end
    local flag = server.tmpdir() .. "/go"
    local h = assert(io.popen(string.format("/usr/bin/python3 %s ws://%s:%d/ 1500 %s 2>&1",
      quote(server.ROOT .. "/spec/scripts/hold_many.py"), srv.host, srv.port, quote(flag))))
    assert.equal("open 1500", h:read("l"))
    -- quiet for a housekeeping tick after 1,500 handshakes: their garbage goes
    srv:wait_log("150%d connections now, 150%d at the peak, %d+ before: memory given back")
    local rss_peak, heap_peak = rss_kb(srv.pid), heap()
    local mark = srv:mark()
    server.write_file(flag, "")
    assert.equal("closed 1500", h:read("l"))
    h:close()
    srv:wait_log("0 connections now, 150%d at the peak, 150%d before: memory given back", { after = mark })
    -- the collection: the Lua heap is back to a fraction of what 1,500 sockets held
    assert.is_true(heap() < heap_peak / 2, "Lua heap " .. heap() .. " B, at the peak " .. heap_peak .. " B")
    -- and (glibc's malloc: ASan has its own allocator) the freed heap left RSS
    if not ASAN then
      local rss = rss_kb(srv.pid)
      assert.is_true(rss < rss_peak - 1024, "RSS " .. rss .. " kB, at the peak " .. rss_peak .. " kB")
    end
    srv:stop()
  end)
end)
