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
    ann:refute()   -- no notice of her own join

    bob:send("/who")
    bob:expect("* here: ann, bob")

    bob:close()
    ann:expect("* bob left")
  end)

  it("/who forgets a member whose worker stopped refreshing the name (a crashed worker leaves no ghost)", function()
    local ann = t.connect("chat.lua", { query = { name = "ann" } })
    ann:expect("^%* welcome")
    -- A ghost: an entry no worker refreshes, as a killed worker would leave.
    require("luaws").store("chat"):set("lobby\0ghost", "casper", 60)
    ann:send("/who")
    ann:expect("* here: ann, casper")
    t.clock:advance(61)   -- ann's entry is refreshed every 20 s; the ghost's is not
    ann:send("/who")
    ann:expect("* here: ann")
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
