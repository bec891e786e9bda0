-- 2.x Pings and pongs (RFC 6455 5.5.2, 5.5.3).
return function(case)
  local function ping_case(id, desc, payload, chop)
    case(id, desc, function(t)
      t:connect()
      t:send(t:ping_frame(payload), { chop = chop })
      t:expect_pong(payload)
      t:finish()
    end)
  end

  ping_case("2.1", "Send a ping without payload; expect a pong without payload", "")
  ping_case("2.2", "Send a ping with a small text payload; expect the pong to echo it", "Hello, world!")
  ping_case("2.3", "Send a ping with a small binary (non UTF-8) payload; expect the pong to echo it",
    "\0\255\254\253\252\251\0\255")
  ping_case("2.4", "Send a ping with a 125-byte binary payload; expect the pong to echo it", ("\254"):rep(125))

  case("2.5", "Send a ping with a 126-byte payload (control frames are at most 125); expect close 1002", function(t)
    t:connect()
    t:send(t:ping_frame(("\254"):rep(126)))
    t:expect_fail(1002)
  end)

  ping_case("2.6", "Send a ping with a 125-byte payload in writes of 1 byte; expect the pong", ("\254"):rep(125), 1)

  case("2.7", "Send an unsolicited pong without payload; expect nothing in return", function(t)
    t:connect()
    t:send(t:pong_frame(""))
    t:finish()   -- the next frame from the server must be the close answer
  end)

  case("2.8", "Send an unsolicited pong with payload; expect nothing in return", function(t)
    t:connect()
    t:send(t:pong_frame("unsolicited pong payload"))
    t:finish()
  end)

  case("2.9", "Send an unsolicited pong, then a ping; expect only the pong for the ping", function(t)
    t:connect()
    t:send { t:pong_frame("unsolicited pong payload"), t:ping_frame("ping payload") }
    t:expect_pong("ping payload")
    t:finish()
  end)

  -- RFC 6455 5.5.3 lets an endpoint answer only the most recent of several
  -- pings; answering each one is the strict behaviour (Autobahn asks the same).
  local function ten_pings(t, chop)
    t:connect()
    local frames, want = {}, {}
    for i = 0, 9 do
      want[#want + 1] = "payload-" .. i
      frames[#frames + 1] = t:ping_frame("payload-" .. i)
    end
    t:send(frames, { chop = chop })
    t:send(t:close_frame(1000)); t.sent_close = true
    local got = {}
    t:close(1000, nil, { sent = true, allow = function(ev)
      if ev.type == "pong" then got[#got + 1] = ev.data; return true end
    end })
    local all = #got == #want
    for i = 1, #got do if got[i] ~= want[i] then all = false end end
    if not all then
      -- a subsequence ending with the last ping is allowed, but not strict
      local j = 1
      for _, g in ipairs(got) do
        while j <= #want and want[j] ~= g do j = j + 1 end
        if j > #want then t:fail("unexpected pongs: %s", table.concat(got, ",")) end
        j = j + 1
      end
      if got[#got] ~= want[#want] then t:fail("no pong for the last ping (got %s)", table.concat(got, ",")) end
      t:nonstrict("only %d pongs for 10 pings", #got)
    end
  end

  case("2.10", "Send 10 pings with payload; expect 10 pongs in order", function(t) ten_pings(t) end)
  case("2.11", "Send 10 pings with payload in writes of 1 byte; expect 10 pongs in order",
    function(t) ten_pings(t, 1) end)
end
