-- batching_spec.lua — what a socket is sent outside its own events waits for
-- the end of the loop iteration and leaves in one writev (issue 17; a sweep of
-- at most 1,024 connections per iteration): publishes
-- and socket:send from other sockets' events and from timers, in order, with
-- --max-backpressure counting what waits. spec/scripts/batching.lua is the
-- script; luaws_socket_writes_total in /metrics counts the writes.
local wsc = require "spec.support.wsclient"
local H = require "spec.support.helpers"

local SCRIPT = "spec/scripts/batching.lua"

local function writes(srv)
  local r = assert(wsc.http(srv.host, srv.port, { path = "/metrics", headers = { Host = "x" } }))
  assert.equal(200, r.status)
  local n = r.body:match("\nluaws_socket_writes_total (%d+)")
  assert(n, r.body)
  return tonumber(n)
end

local function member(srv)
  local c = H.open(srv, "/sub")
  assert.equal("joined", (H.read(c)))
  return c
end

-- Reads rounds 1..n of "p<i>", "s<i>" (or the SIZE-byte form) in order.
local function expect_rounds(c, n, size)
  for i = 1, n do
    for _, kind in ipairs { "p", "s" } do
      local data = H.read(c)
      if size then
        assert.equal(size, #data)
        assert.equal(string.format("%08d%s", i, kind), data:sub(1, 9))
      else
        assert.equal(kind .. i, data)
      end
    end
  end
end

describe("batched sends", function()
  local srv
  lazy_setup(function() srv = H.start { script = SCRIPT, args = { "--metrics" } } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  for _, verb in ipairs { "burst", "later" } do
    it(verb .. ": 8 publishes and 8 sends to each of 20 members leave in one write per member, in order", function()
      local members = {}
      for i = 1, 20 do members[i] = member(srv) end
      local ctl = H.open(srv, "/ctl")
      local before = writes(srv)
      ctl:send_text(verb .. " 8")
      assert.equal("done " .. verb .. " 8", (H.read(ctl)))
      for _, c in ipairs(members) do expect_rounds(c, 8) end
      -- one writev per member, the "done" reply, the first scrape's answer
      -- (unbatched: 16 writes per member, 320 in all)
      local delta = writes(srv) - before
      assert.is_true(delta >= 20, "writes: " .. delta)
      assert.is_true(delta <= 20 + 3, "writes: " .. delta)
      for _, c in ipairs(members) do c:close(1000) end
      ctl:close(1000)
    end)
  end

  it("a burst bigger than the kernel takes: queued by reference and by copy, every message once, in order", function()
    local members = {}
    for i = 1, 3 do members[i] = member(srv) end
    local ctl = H.open(srv, "/ctl")
    -- 2.4 MB for each member while none of them reads
    ctl:send_text("big 400 3000")
    assert.equal("done big 400 3000", (H.read(ctl)))
    for _, c in ipairs(members) do expect_rounds(c, 400, 3000) end
    for _, c in ipairs(members) do c:close(1000) end
    ctl:close(1000)
  end)
end)

describe("batched sends to more sockets than one pass", function()
  local srv
  lazy_setup(function() srv = H.start { script = SCRIPT, args = { "--metrics" } } end)
  lazy_teardown(function() if srv then srv:stop() end end)

  -- A pass at the end of a loop iteration sends at most 1,024 batches; the
  -- rest go in the next iterations. 2,000 members, rounds from this event,
  -- then rounds from a timer (next iteration, after the first pass): the
  -- first 1,024 members get two writes, the other 976 get both rounds in one
  -- (without the sweep: 4,000 writes).
  it("a fan-out wider than one pass goes over several iterations; what is sent meanwhile joins the batches not yet sent", function()
    local members = {}
    for i = 1, 2000 do members[i] = member(srv) end
    local ctl = H.open(srv, "/ctl")
    local before = writes(srv)
    ctl:send_text("twice 8")
    assert.equal("done twice 8", (H.read(ctl)))
    for _, c in ipairs(members) do
      expect_rounds(c, 8)
      expect_rounds(c, 8)
    end
    local delta = writes(srv) - before
    assert.is_true(delta >= 2000, "writes: " .. delta)
    assert.is_true(delta <= 1024 * 2 + 976 + 3, "writes: " .. delta)
    for _, c in ipairs(members) do c:shutdown() end
    ctl:close(1000)
  end)
end)

describe("batched sends under --max-backpressure", function()
  local srv
  lazy_setup(function()
    -- 8,000 publishes in one event take seconds under ASan on a busy machine:
    -- no --script-timeout here, this is about the send queue
    srv = H.start { script = SCRIPT, args = { "--max-backpressure", "300000", "--high-water", "65536",
      "--script-timeout", "0" } }
  end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("count what waits in the batch: a member that does not read is cut (1008) after a prefix in order; others go on", function()
    local c = member(srv)
    local ctl = H.open(srv, "/ctl")
    local mark = srv:mark()
    ctl:send_text("pubs 8000 3000")   -- 24 MB at once; c does not read
    assert.equal("done pubs 8000 3000", (H.read(ctl)))
    srv:wait_log("send queue over the --max-backpressure limit (slow reader), closing with 1008",
      { after = mark, plain = true })
    -- what made it out is a prefix of the publishes, in order, then the close frame
    local i = 1
    while true do
      local data, what, info = c:read_message()
      if what == "close" then
        assert.equal(1008, data:byte(1) * 256 + data:byte(2))
        break
      end
      assert(data, what)
      assert.equal(3000, #data)
      assert.equal(string.format("%08dp", i), data:sub(1, 9))
      i = i + 1
    end
    assert.is_true(i < 8000, "the whole burst arrived: the cap did not hold")
    ctl:send_text("burst 1")
    assert.equal("done burst 1", (H.read(ctl)))
    ctl:close(1000)
  end)
end)
