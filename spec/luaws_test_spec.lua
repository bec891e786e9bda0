-- `luaws test`: busted inside the binary, with luaws.test (lua/luaws/test.lua).
-- These run the real binary on spec folders and read what busted printed.
local server = require "spec.support.server"
local quote = server.quote
local luaws_test, spec_dir = server.luaws_test, server.spec_dir

-- A copy of scripts/ (the scripts and their specs) to change freely.
local function copy_scripts()
  local dir = server.tmpdir()
  assert(os.execute(string.format("cp -r %s/scripts/. %s/", quote(server.ROOT), quote(dir))))
  return dir
end

local function counts(out)
  local s, f, e = out:match("(%d+) successe?s? / (%d+) failures? / (%d+) errors?")
  return tonumber(s), tonumber(f), tonumber(e)
end

describe("luaws test", function()
  lazy_setup(function()
    assert(server.available(), "luaws binary not built: " .. server.BINARY)
  end)

  it("runs the example scripts' specs from their folder, all passing", function()
    local code, out = luaws_test(server.ROOT .. "/scripts")
    assert.equal(0, code, out)
    local s, f, e = counts(out)
    assert.truthy(s and s >= 15, out)
    assert.equal(0, f, out)
    assert.equal(0, e, out)
  end)

  it("needs no network: the example specs pass in a namespace without one (unshare -rn)", function()
    if not os.execute("unshare -rn true 2>/dev/null") then
      pending("this machine cannot make a network namespace (unshare -rn)")
      return
    end
    local code, out = luaws_test(server.ROOT .. "/scripts", {}, "unshare -rn")
    assert.equal(0, code, out)
    local s, f = counts(out)
    assert.truthy(s and s >= 15 and f == 0, out)
  end)

  it("a broken script fails its spec, naming the expectation and what arrived", function()
    local dir = copy_scripts()
    local echo = server.read_file(dir .. "/echo.lua")
    echo = echo:gsub("else socket:send%(message%) end", "else socket:send(message:reverse()) end")
    server.write_file(dir .. "/echo.lua", echo)
    local code, out = luaws_test(dir, { "spec/echo_spec.lua" })
    assert.equal(1, code, out)
    assert.truthy(out:find('expected a message matching "hello" within 1s; received "olleh"', 1, true), out)
    assert.truthy(out:find("spec/echo_spec.lua:10", 1, true), "the failure names the spec's line:\n" .. out)
  end)

  it("a wait for a message that never comes fails within its timeout instead of hanging", function()
    local dir = spec_dir {
      ["quiet.lua"] = "return { on_message = function() end }",
      ["spec/quiet_spec.lua"] = [[
        local t = require "luaws.test"
        it("waits", function()
          local c = t.connect("quiet.lua")
          c:send("anyone?")
          c:expect("an answer", 0.2)
        end)
        it("still runs the next test", function() assert.is_true(true) end)
      ]],
    }
    local code, out = luaws_test(dir)
    assert.equal(1, code, out)
    assert.truthy(out:find('expected a message matching "an answer" within 0.2s; received nothing', 1, true), out)
    local s, f = counts(out)
    assert.equal(1, s, out)
    assert.equal(1, f, out)
  end)

  it("drives timers, sleeps, automatic pings and the ping timeout with the spec's clock", function()
    local dir = spec_dir {
      ["timers.lua"] = [[
        local ws = require "luaws"
        local ticks = 0
        ws.every(1000, function() ticks = ticks + 1 end)
        return {
          on_message = function(s, m)
            if m == "nap" then ws.sleep(5000) s:send("awake") return end
            if m == "ticks" then s:send(tostring(ticks)) return end
            ws.after(2000, function() s:send("later " .. m) end)
          end,
        }
      ]],
      ["spec/timers_spec.lua"] = [[
        local t = require "luaws.test"
        it("an hour of luaws.every", function()
          local c = t.connect("timers.lua")
          t.clock:advance(3600)
          c:send("ticks")
          c:expect("3600")
        end)
        it("luaws.sleep and luaws.after", function()
          local c = t.connect("timers.lua")
          c:send("nap")
          t.clock:advance(4.999)
          c:refute()
          t.clock:advance(0.001)
          c:expect("awake")
          c:send("x")
          t.clock:advance(2)
          c:expect("later x")
        end)
        it("automatic pings keep an answering client, and cut a silent one", function()
          local good = t.connect("timers.lua")
          local silent = t.connect("timers.lua", { pong = false })
          t.clock:advance(30)
          assert.equal("luaws", silent:expect_ping())
          t.clock:advance(30)
          silent:expect_close(1006)
          good:send("ticks")
          good:expect("60")
        end)
      ]],
    }
    local code, out = luaws_test(dir)
    assert.equal(0, code, out)
    assert.equal(3, (counts(out)), out)
  end)

  it("reloads for real: on_reload runs with socket.data kept; a broken reload raises file:line", function()
    local dir = spec_dir {
      ["counter.lua"] = [[
        return { on_message = function(s, m) s.data.n = (s.data.n or 0) + 1 s:send("v1 " .. s.data.n) end }
      ]],
      ["spec/reload_spec.lua"] = [[
        local t = require "luaws.test"
        it("reloads", function()
          local c = t.connect("counter.lua")
          c:send("a")
          c:expect("v1 1")
          t.reload("return { on_reload = function(s) s:send('reloaded at ' .. s.data.n) end, " ..
                   "on_message = function(s, m) s.data.n = s.data.n + 1 s:send('v2 ' .. s.data.n) end }")
          c:expect("reloaded at 1")
          c:send("b")
          c:expect("v2 2")
          local ok, err = pcall(t.reload, "return {")
          assert.is_false(ok)
          assert.matches("counter.lua %(reloaded text%):1:", err)
          c:send("c")
          c:expect("v2 3")
        end)
      ]],
    }
    local code, out = luaws_test(dir)
    assert.equal(0, code, out)
  end)

  it("passes busted's options through: --filter, -o, a spec path", function()
    local code, out = luaws_test(server.ROOT .. "/scripts", { "--filter", "closes on exit", "-o", "TAP", "spec/echo_spec.lua" })
    assert.equal(0, code, out)
    assert.truthy(out:find("ok 1 - echo.lua closes on exit", 1, true), out)
    assert.truthy(out:find("1..1", 1, true), out)
  end)

  it("runs on the binary's Lua 5.4 with the real luaws module, and names a script's load error", function()
    local dir = spec_dir {
      ["broken.lua"] = "local x =\nreturn {}\n",
      ["spec/version_spec.lua"] = [[
        local t = require "luaws.test"
        it("is 5.4", function() assert.equal("Lua 5.4", _VERSION) assert.is_function(require("luaws").publish) end)
        it("broken", function() t.connect("broken.lua") end)
      ]],
    }
    local code, out = luaws_test(dir)
    assert.equal(1, code, out)
    assert.truthy(out:find("spec/version_spec.lua:3: broken.lua:2: unexpected symbol", 1, true), out)
    local s, f, e = counts(out)
    assert.same({ 1, 0, 1 }, { s, f, e })
  end)

  it("outside luaws test, luaws.test says how to run it", function()
    local dir = spec_dir {
      ["x.lua"] = "require 'luaws.test'\nreturn {}\n",
    }
    local code, out = server.run { "--check", dir .. "/x.lua" }
    assert.is_not.equal(0, code)
    assert.truthy(out:find("luaws.test works only inside `luaws test`", 1, true), out)
  end)
end)
