-- The relay bot's spec: the target is a fake remote (t.connect_out), so no
-- server has to run. Run it from this folder with: luaws test
local t = require "luaws.test"

describe("relay.lua", function()
  it("relays both ways and closes the target when the client leaves", function()
    local target = t.connect_out("ws://127.0.0.1:9000/feed")
    local c = t.connect("relay.lua", { query = { target = "ws://127.0.0.1:9000/feed" } })
    assert.is_true(c.accepted)
    target:expect_connect()
    c:send("to the target")
    target:expect("to the target")
    target:send("to the client")
    c:expect("to the client")
    c:close(1000)
    assert.equal(1000, target:expect_disconnect())
  end)

  it("closes the client when the target closes", function()
    local target = t.connect_out("ws://127.0.0.1:9000/")
    local c = t.connect("relay.lua", { query = { target = "ws://127.0.0.1:9000/" } })
    target:expect_connect()
    target:close(4001, "bye")
    c:expect_close(4001)
  end)

  it("refuses targets that are not allowed", function()
    local c = t.connect("relay.lua", { query = { target = "ws://example.com/" } })
    assert.is_false(c.accepted)
    assert.equal(400, c.status)
    assert.matches("target host not allowed: example.com", c.body, 1, true)
  end)
end)
