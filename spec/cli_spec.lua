-- The command line: options, startup line, exit codes, signals, log lines.
local server = require "spec.support.server"
local wsc = require "spec.support.wsclient"
local H = require "spec.support.helpers"

describe("luaws command line", function()
  lazy_setup(function()
    assert(server.available(), "luaws binary not built: " .. server.BINARY)
  end)

  it("--help exits 0 and documents the options", function()
    local code, out = server.run { "--help" }
    assert.equal(0, code)
    for _, opt in ipairs { "--host", "--port", "--max-message", "--log-level", "--help", "--version" } do
      assert.truthy(out:find(opt, 1, true), "--help does not mention " .. opt .. ":\n" .. out)
    end
  end)

  it("--version exits 0 and prints a version number", function()
    local code, out = server.run { "--version" }
    assert.equal(0, code)
    assert.truthy(out:find("%d+%.%d+"), "no version number in: " .. out)
  end)

  it("a missing script exits non-zero with a message naming the file", function()
    local code, out = server.run { "--port", "0", "spec/scripts/no_such_script.lua" }
    assert.is_not.equal(0, code)
    assert.truthy(out:find("no_such_script.lua", 1, true), "message does not name the file:\n" .. out)
    assert.falsy(out:find("listening on", 1, true), "it started listening anyway:\n" .. out)
  end)

  it("no script at all exits non-zero", function()
    local code = server.run { "--port", "0" }
    assert.is_not.equal(0, code)
  end)

  it("an unknown option exits non-zero", function()
    local code = server.run { "--no-such-option", "--port", "0", "spec/scripts/echo.lua" }
    assert.is_not.equal(0, code)
  end)

  it("a script with a syntax error exits non-zero with file:line", function()
    local code, out = server.run { "--port", "0", "spec/scripts/bad_syntax.lua" }
    assert.is_not.equal(0, code)
    assert.truthy(out:find("bad_syntax.lua:4", 1, true), "no file:line in:\n" .. out)
  end)

  it("a script that raises while loading exits non-zero with file:line and the message", function()
    local code, out = server.run { "--port", "0", "spec/scripts/load_error.lua" }
    assert.is_not.equal(0, code)
    assert.truthy(out:find("load_error.lua:3", 1, true), "no file:line in:\n" .. out)
    assert.truthy(out:find("load-time failure on purpose", 1, true), "no message in:\n" .. out)
  end)

  it("a script that returns neither a handler nor a listener table exits non-zero", function()
    local code, out = server.run { "--port", "0", "spec/scripts/returns_number.lua" }
    assert.is_not.equal(0, code)
    assert.truthy(out:find("returns_number.lua", 1, true), "message does not name the file:\n" .. out)
  end)

  it("a port in use exits non-zero with a clear message", function()
    local srv = H.start { script = "spec/scripts/echo.lua" }
    finally(function() srv:stop() end)
    local code, out = server.run { "--port", tostring(srv.port), "spec/scripts/echo.lua" }
    assert.is_not.equal(0, code)
    assert.truthy(out:lower():find("in use", 1, true), "no 'in use' in:\n" .. out)
    assert.truthy(out:find(tostring(srv.port), 1, true), "message does not name the port:\n" .. out)
  end)

  it("an invalid --port value exits non-zero", function()
    assert.is_not.equal(0, (server.run { "--port", "notaport", "spec/scripts/echo.lua" }))
    assert.is_not.equal(0, (server.run { "--port", "70000", "spec/scripts/echo.lua" }))
  end)

  it("an invalid --log-level exits non-zero", function()
    assert.is_not.equal(0, (server.run { "--port", "0", "--log-level", "chatty", "spec/scripts/echo.lua" }))
  end)

  describe("running", function()
    local srv
    lazy_setup(function() srv = H.start { script = "spec/scripts/echo.lua", log_level = "info" } end)
    lazy_teardown(function() if srv then srv:stop() end end)

    it("logs the startup line with the port it bound and the script path", function()
      assert.truthy(srv.port > 0 and srv.port < 65536)
      assert.truthy(srv.ready_line:find("listening on ws://127.0.0.1:" .. srv.port .. ", script ", 1, true),
        srv.ready_line)
      assert.truthy(srv.ready_line:find("spec/scripts/echo.lua", 1, true), srv.ready_line)
    end)

    it("accepts connections on that port", function()
      local c = H.open(srv, "/")
      assert.equal("I will echo your messages", (H.read(c)))
      c:close(1000)
    end)

    it("logs open and closed lines carrying the connection id", function()
      local mark = srv:mark()
      local c = H.open(srv, "/")
      H.read(c)
      local open_line = srv:wait_log("%f[%w]open%f[%W]", { after = mark })
      local id = open_line:match("%f[%w]conn%w*[%s#:=]*(%d+)") or open_line:match("(%d+)%D*open")
      assert.truthy(id, "no connection id in: " .. open_line)
      local code = c:close(1000, "bye")
      assert.equal(1000, code)
      local closed_line = srv:wait_log("%f[%w]closed%f[%W]", { after = mark })
      assert.truthy(closed_line:find("%f[%d]" .. id .. "%f[%D]"),
        "closed line lacks the id " .. id .. ": " .. closed_line)
    end)

    it("logs an error line carrying the connection id, with a traceback, for a Lua error", function()
      local ctl = H.start { script = "spec/scripts/control.lua", log_level = "info" }
      finally(function() ctl:stop() end)
      local c = H.subject(ctl)
      c:send_text("!error " .. H.hex("logged"))
      assert.equal(1011, (c:expect_close()))
      local line = ctl:wait_log("boom from test: logged")
      assert.truthy(line:lower():find("%f[%w]error%f[%W]"), "no 'error' on the line: " .. line)
      assert.truthy(line:find("%f[%d]" .. c.id .. "%f[%D]"), "no connection id " .. c.id .. " in: " .. line)
      ctl:wait_log("traceback")
      ctl:wait_log("control.lua:%d+")
    end)
  end)

  it("--max-message is honoured (a bigger message closes with 1009)", function()
    local srv = H.start { script = "spec/scripts/echo.lua", max_message = 10 }
    finally(function() srv:stop() end)
    local c = H.open(srv, "/")
    H.read(c)
    c:send_text("0123456789")
    assert.equal("0123456789", (H.read(c)))
    c:send_text("0123456789A")
    assert.equal(1009, (c:expect_close()))
  end)

  it("--log-level info logs fewer lines than debug for the same session", function()
    local function session(level)
      local srv = H.start { script = "spec/scripts/echo.lua", log_level = level }
      finally(function() srv:stop() end)
      local c = H.open(srv, "/")
      H.read(c)
      c:send_text("one"); H.read(c)
      c:send_binary("two"); H.read(c)
      assert.equal(1000, (c:close(1000)))
      srv:wait_log("%f[%w]closed%f[%W]")
      local n = #srv:lines()
      srv:stop()
      return n
    end
    local debug_lines, info_lines = session("debug"), session("info")
    assert.is_true(info_lines < debug_lines,
      string.format("info: %d lines, debug: %d lines", info_lines, debug_lines))
  end)

  it("exits on SIGTERM, with status 0, closing open connections", function()
    local srv = H.start { script = "spec/scripts/echo.lua" }
    finally(function() srv:stop { quiet = true } end)
    local c = H.open(srv, "/")
    H.read(c)
    srv:signal("TERM")
    -- The open connection is closed by the server (close frame 1001 going away, or TCP close).
    local code, _, tcp_closed, info = c:expect_close()
    local how, status = srv:wait_exit()
    assert.equal("exit", how)
    assert.equal(0, status)
    assert.truthy(code == 1001 or code == nil, "close code on shutdown: " .. tostring(code))
    assert.truthy(tcp_closed or (info and info.err), "connection not closed on shutdown")
  end)
end)
