-- The JSON-RPC calculator's spec. Run it from this folder with: luaws test
local t = require "luaws.test"

describe("jsonrpc.lua", function()
  local c
  before_each(function() c = t.connect("jsonrpc.lua") end)

  it("adds", function()
    c:send_json({ jsonrpc = "2.0", method = "add", params = { 2, 3 }, id = 1 })
    c:expect_json({ jsonrpc = "2.0", result = 5, id = 1 })
  end)

  it("takes named params", function()
    c:send_json({ jsonrpc = "2.0", method = "sub", params = { a = 7, b = 2 }, id = "x" })
    c:expect_json({ result = 5, id = "x" })
  end)

  it("reports errors with their codes", function()
    c:send_json({ jsonrpc = "2.0", method = "div", params = { 1, 0 }, id = 2 })
    c:expect_json({ id = 2, error = { code = 1, message = "division by zero" } })
    c:send_json({ jsonrpc = "2.0", method = "pow", params = { 1, 2 }, id = 3 })
    c:expect_json({ id = 3, error = { code = -32601 } })
    c:send("{not json")
    c:expect_json({ error = { code = -32700 } })
  end)

  it("answers no notification", function()
    c:send_json({ jsonrpc = "2.0", method = "add", params = { 1, 1 } })
    c:refute()
  end)
end)
