-- Issue 16: bots and the edit–reload loop without sharp edges. One block per
-- point; the real binary (and `luaws test` for what needs the spec's clock).
local server = require "spec.support.server"
local H = require "spec.support.helpers"
local quote = server.quote
local client = server.client

-- `luaws test` in a folder made of files; exit code and output.
local function luaws_test(files) return server.luaws_test(server.spec_dir(files)) end

describe("sharp edges (issue 16)", function()
  lazy_setup(function() assert(server.available(), "luaws binary not built: " .. server.BINARY) end)

  it("1. a timer started in on_close belongs to nobody and fires (every event checked)", function()
    local code, out = luaws_test {
      ["bot.lua"] = [[
        local ws = require "luaws"
        local function later(name) return function() ws.after(1000, function() ws.publish("fired", name) end) end end
        return { on_open = later("open"), on_message = later("message"), on_ping = later("ping"),
                 on_close = later("close"), on_error = later("error") }
      ]],
      ["spec/bot_spec.lua"] = [[
        local t = require "luaws.test"
        it("fires", function()
          local c = t.connect("bot.lua")
          c:send("x")
          c:close(1000)
          c:expect_close(1000)
          t.clock:advance(1)
          local fired = t.published("fired")
          table.sort(fired)
          -- open's and message's timers ended with their socket; close's fires
          assert.same({ "close" }, fired)
        end)
      ]],
    }
    assert.equal(0, code, out)
  end)

  it("2. the reload log counts outbound connections", function()
    local up = H.start { script = "scripts/echo.lua" }
    local bot = H.start { script = "scripts/bridge.lua", env = { BRIDGE_URL = "ws://127.0.0.1:" .. up.port .. "/" } }
    bot:wait_log("bridge: upstream ws://127.0.0.1:" .. up.port .. "/ open %(connection 1%)")
    local mark = bot:mark()
    os.execute("kill -HUP " .. bot.pid)
    bot:wait_log("reloaded %(SIGHUP%) .-: 0 connections moved, 0 kept their old listener, 1 outbound open", { after = mark })
    mark = bot:mark()
    os.execute("kill -HUP " .. bot.pid)
    bot:wait_log("1 outbound open", { after = mark })
    -- still one upstream connection, never reopened
    assert.same({}, bot:grep("open %(connection 2%)"))
    assert.equal(1, #up:grep(" open 127%.0%.0%.1"))
    bot:stop()
    up:stop()
  end)

  it("3. typos in listener and response tables: a warning with file:line; --strict makes them errors", function()
    local dir = server.tmpdir()
    server.write_file(dir .. "/typo.lua", "return {\n  on_open = function(s) end,\n  on_mesage = function(s, m) end,\n}\n")
    local code, out = server.run { "--check", dir .. "/typo.lua" }
    assert.equal(0, code, out)
    assert.truthy(out:find("typo.lua:3: unknown key 'on_mesage' in a listener table (did you mean 'on_message'?)", 1, true), out)
    code, out = server.run { "--check", "--strict", dir .. "/typo.lua" }
    assert.equal(1, code, out)
    assert.truthy(out:find("cannot load " .. dir .. "/typo.lua: " .. dir .. "/typo.lua:3: unknown key 'on_mesage'", 1, true), out)

    local src = "return function(req)\n  return { listner = { on_open = function(s) end } }\nend\n"
    local srv = H.start { source = src }
    local c = require("spec.support.wsclient").connect(srv.host, srv.port, {})
    assert.equal(200, c.status)
    srv:wait_log("script.lua:1: unknown key 'listner' in a response table %(did you mean 'listener'%?%)")
    srv:stop()
    srv = H.start { source = src, args = { "--strict" } }
    c = require("spec.support.wsclient").connect(srv.host, srv.port, {})
    assert.equal(500, c.status)
    srv:stop()
  end)

  it("4. error objects reach on_error as raised, and are logged readably", function()
    local srv = H.start { source = [[
      local ws = require "luaws"
      return {
        on_message = function(s, m) error({ code = 42, message = "bad" }) end,
        on_error = function(s, err) ws.log("info", "on_error got", type(err), err.code) end,
      } ]] }
    local c = H.open(srv)
    c:send_text("x")
    -- one level of the table, in whatever order its keys come
    local line = srv:wait_log("error in on_message: {")
    assert.truthy(line:find('code = 42', 1, true) and line:find('message = "bad"', 1, true), line)
    srv:wait_log("on_error got table 42", { plain = true })
    local data, kind = c:read_message()
    assert.equal("close", kind)
    assert.equal(1011, data:byte(1) * 256 + data:byte(2))
    srv:stop()
  end)

  it("5. a timer error names its connection; one of no socket names where it started", function()
    local srv = H.start { source = [[
      local ws = require "luaws"
      ws.after(0, function() error("loose boom") end)
      return { on_open = function(s) ws.after(0, function() error("owned boom") end) end,
               on_error = function(s, err) ws.log("info", "on_error of", s.id, err) end } ]] }
    srv:wait_log("error in luaws.after callback started at [^ ]*script.lua:2: .*loose boom")
    H.open(srv)
    local _, id = srv:wait_log("conn (%d+): error in luaws.after callback started at [^ ]*script.lua:3: .*owned boom")
    srv:wait_log("on_error of " .. id .. " .*owned boom")
    srv:stop()
  end)

  describe("6. luaws client", function()
    local srv
    lazy_setup(function()
      srv = H.start { source = [[
        return function(req)
          if req.uri == "/auth" and req.headers.authorization ~= "Bearer x" then
            return { status = 401, body = "who are you?\n" }
          end
          return { protocol = "chat.v2", listener = {
            on_open = function(s) s:send("hi " .. tostring(s.protocol) .. " " .. tostring(req.headers.authorization)) end,
            on_message = function(s, m)
              if m == "fail" then error("server-side failure") end
              if m == "pingme" then s:ping("hey") s:send("pinged") return end
              if type(m) == "string" then s:send("echo " .. m) else s:send("binary " .. #m) end
            end,
            on_pong = function() end,
          } }
        end ]] }
    end)
    lazy_teardown(function() srv:stop() end)
    local function url(path) return "ws://127.0.0.1:" .. srv.port .. (path or "/") end

    it("-s, -H and -x: negotiates, sends, prints the reply", function()
      local code, out, err = client({ "-s", "chat.v1", "-s", "chat.v2", "-H", "Authorization: Bearer x", "-x", "hello",
        "-n", "2", url("/auth") })
      assert.equal(0, code, err)
      assert.equal("hi chat.v2 Bearer x\necho hello\n", out)
      assert.truthy(err:find("(subprotocol chat.v2)", 1, true), err)
    end)

    it("a refused handshake shows the status and the body; exit 2", function()
      local code, out, err = client({ url("/auth") })
      assert.equal(2, code)
      assert.equal("", out)
      assert.equal("luaws client: the server refused the WebSocket handshake: HTTP 401 Unauthorized\nwho are you?\n", err)
    end)

    it("failures in one line, without Lua paths: a port out of range, a host that does not resolve", function()
      local code, _, err = client({ "ws://127.0.0.1:99999/" })
      assert.equal(2, code)
      assert.equal("luaws client: luaws.connect: port out of range in ws://127.0.0.1:99999/\n", err)
      code, _, err = client({ "ws://no-such-host.invalid/" })
      assert.equal(2, code)
      assert.truthy(err:match("^luaws client: cannot connect to ws://no%-such%-host%.invalid/: cannot resolve host 'no%-such%-host%.invalid': [^\n]+\n$"), err)
    end)

    it("exit 1 for a server-side 1011, 0 for a clean close; --binary sends hex lines; -P shows pings", function()
      local code, out, err = client({ "-s", "chat.v2", "-x", "fail", "-w", "10", url() })
      assert.equal(1, code, err)
      assert.truthy(err:find("closed 1011", 1, true), err)
      code, out, err = client({ "-s", "chat.v2", "--binary", "-n", "2", url() }, "00ff10\n")
      assert.equal(0, code, err)
      assert.equal("binary 3\n", out:match("\n(.*)$"))
      code, out, err = client({ "-s", "chat.v2", "-P", "-x", "pingme", "-n", "2", url() })
      assert.equal(0, code, err)
      assert.truthy(err:find("[ping hey]", 1, true), err)
      code, out, err = client({ "-s", "chat.v2", "-x", "pingme", "-n", "2", url() })
      assert.falsy(err:find("[ping", 1, true), err)
    end)

    it("has its own --help", function()
      local code, out = client({ "--help" })
      assert.equal(0, code)
      assert.truthy(out:find("usage: luaws client", 1, true), out)
      for _, opt in ipairs { "--subprotocol", "--header", "--execute", "--wait", "--count", "--binary",
                             "--show-ping-pong", "--no-color" } do
        assert.truthy(out:find(opt, 1, true), opt)
      end
    end)
  end)

  it("7. request.query is parsed; json.array and json.empty_array encode as arrays", function()
    local code, out = luaws_test {
      ["api.lua"] = [[
        local ws = require "luaws"
        return { on_open = function(s)
          s:send(ws.json.encode({ q = s.request.query, none = ws.json.empty_array, some = ws.json.array({ 1 }) }))
        end }
      ]],
      ["spec/api_spec.lua"] = [[
        local t = require "luaws.test"
        it("parses", function()
          local c = t.connect("api.lua", { query = "name=J%C3%BCrgen&room=a+b&room=c" })
          local got = c:expect_json({ q = { name = "Jürgen", room = "a b" } })
          local text = c:history()[1].value
          assert.truthy(text:find('"none":[]', 1, true), text)
          assert.truthy(text:find('"some":[1]', 1, true), text)
        end)
      ]],
    }
    assert.equal(0, code, out)
  end)

  it("8. a binary without its Lua half says where it looked, in one line; LUAWS_PATH fixes it", function()
    local dir = server.tmpdir()
    os.execute("cp " .. quote(server.BINARY) .. " " .. quote(dir .. "/luaws"))
    local code, out = server.run({ "--check", "scripts/echo.lua" }, { binary = dir .. "/luaws" })
    assert.equal(1, code)
    assert.equal(1, select(2, out:gsub("\n", "")), out)
    assert.truthy(out:find("the Lua half of luaws (luaws/loader.lua) is not in " .. dir .. "/lua", 1, true), out)
    assert.truthy(out:find("LUAWS_PATH", 1, true), out)
    local _, how, c = os.execute(string.format("cd %s && LUAWS_PATH=%s/lua %s/luaws --check scripts/echo.lua >/dev/null 2>&1",
      quote(server.ROOT), quote(server.ROOT), quote(dir)))
    assert.equal(0, c)
  end)

  it("directory mode: deleting a script removes its route at once", function()
    local dir = server.tmpdir() .. "/site"
    os.execute("mkdir -p " .. quote(dir))
    server.write_file(dir .. "/a.lua", "return { on_open = function(s) s:send('a') end }")
    server.write_file(dir .. "/b.lua", "return { on_open = function(s) s:send('b') end }")
    local srv = H.start { script = dir }
    assert.equal("b", (H.read(H.open(srv, "/b"))))
    local mark = srv:mark()
    os.remove(dir .. "/b.lua")
    srv:wait_log("reloaded %(file changed%)", { after = mark })
    local c = require("spec.support.wsclient").connect(srv.host, srv.port, { path = "/b" })
    assert.equal(404, c.status)
    assert.equal("a", (H.read(H.open(srv, "/a"))))
    srv:stop()
  end)

  it("ws.subscribers() does not count sockets being closed", function()
    local code, out = luaws_test {
      ["room.lua"] = [[
        local ws = require "luaws"
        return {
          on_open = function(s) s:subscribe("room") end,
          on_message = function(s, m) s:send(tostring(ws.subscribers("room"))) end,
          on_close = function(s) ws.publish("count", tostring(ws.subscribers("room"))) end,
        }
      ]],
      ["spec/room_spec.lua"] = [[
        local t = require "luaws.test"
        it("counts", function()
          local a, b = t.connect("room.lua"), t.connect("room.lua")
          a:send("n")
          a:expect("2")
          b:close(1000)
          b:expect_close()
          assert.same({ "1" }, t.published("count"))
          a:send("n")
          a:expect("1")
        end)
      ]],
    }
    assert.equal(0, code, out)
  end)
end)
