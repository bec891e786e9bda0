-- Issue 18 (hardening, second round): the attacks fixed so far, each
-- reproduced against the real binary, with the server's RSS read where the
-- attack is about memory, and another connection served meanwhile.
local server = require "spec.support.server"
local wsc = require "spec.support.wsclient"
local H = require "spec.support.helpers"
local quote = server.quote

local function rss_kb(pid)
  local f = io.open("/proc/" .. pid .. "/status")
  local text = f and f:read("a") or ""
  if f then f:close() end
  return tonumber(text:match("VmRSS:%s*(%d+)")) or 0
end

local function plain_get(srv, path)
  local c = assert(wsc.tcp(srv.host, srv.port))
  c:send_raw("GET " .. path .. " HTTP/1.1\r\nHost: a\r\n\r\n")
  local res = assert(c:read_response())
  c:close()
  return res
end

describe("hardening", function()
  lazy_setup(function() assert(server.available(), "luaws binary not built: " .. server.BINARY) end)

  it("1. pipelined requests from a client that does not read: reading stops past --high-water of answers", function()
    local srv = H.start { script = "scripts/echo.lua" }
    local before = rss_kb(srv.pid)
    local c = assert(wsc.tcp(srv.host, srv.port))
    c.sock:setoption("tcp-nodelay", true)
    -- 20,000 requests for the console page (~300 MB of answers) in one send
    local req = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    c.sock:settimeout(10)
    assert(c.sock:send(string.rep(req, 20000)))
    srv:wait_log("answers unread, reading no more requests for now")
    local grown = rss_kb(srv.pid) - before
    assert.truthy(grown < 16 * 1024, "RSS grew by " .. grown .. " KiB")
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
      local c = assert(wsc.tcp(srv.host, srv.port))
      c:send_raw(head)
      local res = c:read_response()
      c:close()
      return res and res.status
    end
    assert.equal(431, status("GET /x HTTP/1.1\r\nHost: a\r\nX:" .. string.rep(" ", 70000) .. "\r\n\r\n"))
    assert.equal(431, status("GET /x HTTP/1.1\r\nHost: a\r\n" .. string.rep("a:\r\n", 1000) .. "\r\n"))
    assert.equal(200, status("GET /x HTTP/1.1\r\nHost: a\r\nX: " .. string.rep("y", 900) .. "\r\n\r\n"))
    assert.equal(200, status("GET /x HTTP/1.1\r\nHost: a\r\n" .. string.rep("a:\r\n", 100) .. "\r\n"))
    srv:stop()
  end)
end)
