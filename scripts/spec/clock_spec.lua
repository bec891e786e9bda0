-- The clock's spec: the spec's clock drives the script's timer, so a
-- minute of ticks takes no real time. Run it from this folder with: luaws test
local t = require "luaws.test"

local ISO = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$"

describe("clock.lua", function()
  it("sends the time on connect and then once a second", function()
    local c = t.connect("clock.lua")
    c:expect(ISO)
    c:refute()                -- no time has passed
    t.clock:advance(1)
    c:expect(ISO)
    t.clock:advance(60)
    for _ = 1, 60 do c:expect(ISO) end
    c:refute()
  end)

  it("a hot reload keeps one timer, not two", function()
    local c = t.connect("clock.lua")
    c:expect(ISO)
    t.reload("clock.lua")
    t.clock:advance(1)
    c:expect(ISO)
    c:refute()
  end)
end)
