-- The feed bridge's spec: the upstream is a fake remote (t.connect_out),
-- restarted three times; the bot is reloaded twice. Run it from this folder
-- with: luaws test
local t = require "luaws.test"

local UPSTREAM = "ws://127.0.0.1:8080/"

describe("bridge.lua", function()
  it("keeps one upstream connection through restarts and reloads, and relays each message once", function()
    local upstream = t.connect_out(UPSTREAM)
    local c = t.connect("bridge.lua")
    upstream:expect_connect()
    c:expect("* upstream connected")
    c:send("hello upstream")
    upstream:expect("hello upstream")
    upstream:send("hello clients")
    c:expect("hello clients")

    for restart = 1, 3 do
      upstream:drop()                      -- the upstream server goes away
      c:expect("* upstream lost (1006), reconnecting")
      t.clock:advance(10)                  -- backoff, at most 10 s
      upstream:expect_connect()
      c:expect("* upstream connected")
    end

    for reload = 1, 2 do
      t.reload("bridge.lua")
      upstream:refute()                    -- no second connection, nothing resent
    end
    assert.equal(1, upstream:connections())

    upstream:send("once")
    c:expect("once")
    c:refute()                             -- not twice
    c:send("back")
    upstream:expect("back")
    upstream:refute()
  end)

  it("keeps what local clients send while the upstream is down, and sends it on reconnect", function()
    local upstream = t.connect_out(UPSTREAM)
    local c = t.connect("bridge.lua")
    upstream:expect_connect()
    upstream:drop()
    c:expect("* upstream lost (1006), reconnecting")
    c:send("while down")
    upstream:refute()
    t.clock:advance(10)
    upstream:expect_connect()
    upstream:expect("while down")
  end)
end)
