-- The echo bot's spec. Run it from this folder with: luaws test
local t = require "luaws.test"

describe("echo.lua", function()
  it("greets, then echoes text and binary messages in kind", function()
    local c = t.connect("echo.lua")
    assert.is_true(c.accepted)
    c:expect("I will echo your messages")
    c:send("hello")
    c:expect("hello")
    c:send_binary("\0\1\2")
    c:expect(function(m) return m == "\0\1\2" end)
    c:refute()
  end)

  it("closes on exit", function()
    local c = t.connect("echo.lua")
    c:send("exit")
    c:expect_close(1000)
  end)

  it("answers pings", function()
    local c = t.connect("echo.lua")
    c:ping("are you there")
    assert.equal("are you there", c:expect_pong())
  end)

  it("tells plain HTTP how to connect", function()
    local res = t.request("echo.lua", { path = "/about" })
    assert.equal(200, res.status)
    assert.matches("open a WebSocket to ws://luaws.test/about", res.body, 1, true)
  end)
end)
