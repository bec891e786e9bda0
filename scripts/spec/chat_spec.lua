-- The chat room's spec. Run it from this folder with: luaws test
local t = require "luaws.test"

describe("chat.lua", function()
  it("relays a message to everyone in the room, with join and leave notices", function()
    local ann = t.connect("chat.lua", { query = { room = "lobby", name = "ann" } })
    ann:expect("* welcome to lobby, ann (0 others here)")
    local bob = t.connect("chat.lua", { query = { room = "lobby", name = "bob" } })
    bob:expect("* welcome to lobby, bob (1 other here)")
    ann:expect("* bob joined")

    bob:send("hi ann")
    ann:expect("bob: hi ann")
    bob:expect("bob: hi ann")
    assert.same({ "* ann joined", "* bob joined", "bob: hi ann" }, t.published("chat/lobby"))

    bob:close()
    ann:expect("* bob left")
  end)

  it("asks for a name first", function()
    local c = t.connect("chat.lua")
    c:expect("* your name?")
    c:send("zoe")
    c:expect("^%* welcome to lobby, zoe")
  end)

  it("keeps rooms apart", function()
    local a = t.connect("chat.lua", { query = { room = "a", name = "ann" } })
    local b = t.connect("chat.lua", { query = { room = "b", name = "bob" } })
    a:expect("^%* welcome")
    b:expect("^%* welcome")
    a:send("only for room a")
    a:expect("ann: only for room a")
    b:refute()
  end)
end)
