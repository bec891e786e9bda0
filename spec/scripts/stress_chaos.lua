-- stress_chaos.lua — the subject of spec/stress_spec.lua. Everything it does
-- is chosen by the (seeded) driver through the text of the messages it sends,
-- so that the server sees sleeping events, cross-socket closes, publishes,
-- floods, outbound connections and reloads in many orders.
--
-- A text message is a list of commands separated by ";":
--   e TEXT                 echo TEXT
--   s MS                   sleep MS in the event, then send "slept"
--   sub | unsub            (un)subscribe to the topic "room"
--   pub N SIZE             publish N messages of SIZE bytes to "room"
--   flood N SIZE           N synchronous sends of SIZE bytes (wait under --high-water)
--   burst N SIZE           N asynchronous sends of SIZE bytes (1008 past --max-backpressure)
--   close CODE RLEN        socket:close(CODE, RLEN bytes of reason)
--   set KEY N              socket.data[KEY] = N; keys used by the events:
--                            close_sleep, close_pub, close_pub_size, close_pub_first,
--                            error_sleep, reload_sleep, msg_sleep
--   boom                   raise an error (on_error, then 1011)
--   after MS A,B,C         run the command "A B C" from a timer MS later
--   tick MS N              a repeating timer that publishes N times
--   poke K | kill K CODE   send to / close the K-th live socket (K modulo their count)
--   c URL MODE P CS CP     luaws.connect(URL): MODE now (close at once, before it
--                            opens), after (timer closes it P ms later), sleep (this
--                            event sleeps P ms, then closes it), owner (closed by this
--                            socket's on_close), keep (closed by its peer); the
--                            outbound socket's on_close sleeps CS ms and publishes
--                            CP messages; its on_error sleeps CS ms too
-- Binary messages are echoed. Paths: /up?life=MS&s=MS is the far end of the
-- outbound connections (closes itself after life ms, sleeps s ms per message).
-- Plain HTTP: GET /stats answers the counters below as JSON; GET /oc?port=P&s=MS
-- connects to port P from the handler and closes at once, with an on_close that
-- sleeps MS (issue 20, 1a).
--
-- The counters live in package.loaded, so they survive reloads:
--   inflight     sleeps under way (must come back to 0: every sleep resumes)
--   live         sockets seen open (or connected out) whose on_close has not run
--   dup_close    on_close ran twice for one socket
--   bugs         errors this script raised by mistake (a spec bug, not a server one)
-- and, for the spec's report: naps_WHERE (sleeps resumed in on_message,
-- on_error, on_close, on_reload, ...), code_N (on_close codes of the
-- server-side sockets), errors_backpressure and errors_ping (on_error for
-- those), closes_ping (on_close with a reason about pings), close_publishes
-- (on_close that publish), up_closes (on_close of outbound sockets), timer_runs.
local ws = require "luaws"

local VERSION = 0 -- the spec rewrites this number to make the file change

local S = package.loaded["stress_chaos.state"]
if not S then
  S = { inflight = 0, live = 0, opened = 0, closed = 0, dup_close = 0, bugs = 0, last_bug = "",
        sleep_errors = 0, last_sleep_error = "", reloads = 0, connects = 0, publishes = 0,
        seen = {}, socks = {} }
  package.loaded["stress_chaos.state"] = S
end

local function note_bug(where, err)
  S.bugs = S.bugs + 1
  S.last_bug = where .. ": " .. tostring(err)
  ws.log("error", "stress-bug " .. S.last_bug)
end

local function count(name) S[name] = (S[name] or 0) + 1 end

-- Every sleep is counted, so the spec can wait until all have resumed;
-- naps_WHERE counts the sleeps that resumed, by where they were.
local function nap(ms, where)
  ms = tonumber(ms) or 0
  if ms <= 0 then return end
  S.inflight = S.inflight + 1
  local ok, err = pcall(ws.sleep, ms)
  S.inflight = S.inflight - 1
  count("naps_" .. (where or "other"))
  if not ok then
    S.sleep_errors = S.sleep_errors + 1
    S.last_sleep_error = tostring(err)
    ws.log("error", "stress-sleep-error " .. tostring(err))
  end
end

local function key(s) return s.id or s end

local function seen(s)
  local k = key(s)
  if S.seen[k] == nil then
    S.seen[k] = "open"
    S.live = S.live + 1
    S.opened = S.opened + 1
  end
end

local function gone(s)
  local k = key(s)
  if S.seen[k] == "closed" then
    S.dup_close = S.dup_close + 1
    ws.log("error", "stress-dup-close " .. tostring(k))
    return
  end
  if S.seen[k] == "open" then S.live = S.live - 1 end
  S.seen[k] = "closed"
  S.closed = S.closed + 1
  S.socks[k] = nil
end

-- Runs fn(s, ...) and counts any error it raises as a bug of this script,
-- except the deliberate "stress-boom", which goes on to the server.
local function guard(where, fn)
  return function(s, ...)
    local ok, err = pcall(fn, s, ...)
    if not ok then
      if tostring(err):find("stress-boom", 1, true) then error(err, 0) end
      note_bug(where, err)
    end
  end
end

local function num(x, default) return math.tointeger(tonumber(x)) or default or 0 end

local function words(s)
  local t = {}
  for w in s:gmatch("%S+") do t[#t + 1] = w end
  return t
end

local function publish(n, size, fill)
  for _ = 1, n do
    ws.publish("room", string.rep(fill or "p", size))
    S.publishes = S.publishes + 1
  end
end

-- The k-th live server-side socket (by id), or nil.
local function nth(k)
  local ids = {}
  for id in pairs(S.socks) do ids[#ids + 1] = id end
  if #ids == 0 then return nil end
  table.sort(ids)
  return S.socks[ids[k % #ids + 1]]
end

local run

local function up_listener(owner, cs, cp)
  return {
    on_open = guard("up on_open", function(u)
      seen(u)
      u:send("up hello " .. tostring(owner.id))
    end),
    on_message = guard("up on_message", function(u, m)
      if cs > 0 and #m % 3 == 0 then nap(cs // 2 + 1, "up_message") end
      if owner:is_open() then owner:send("up said " .. #m) end
    end),
    on_error = guard("up on_error", function(u) nap(cs, "up_error") end),
    on_close = guard("up on_close", function(u, code)
      gone(u)
      count("up_closes")
      if cp > 0 and cs % 2 == 0 then publish(cp, 50, "u") end
      nap(cs, "up_close")
      if cp > 0 and cs % 2 == 1 then publish(cp, 50, "u") end
      if owner:is_open() then owner:send("up closed " .. tostring(code)) end
    end),
  }
end

local cmds = {}
function cmds.e(s, w) s:send(w[2] or "") end
function cmds.s(s, w) nap(num(w[2]), "message"); s:send("slept") end
function cmds.sub(s) s:subscribe("room") end
function cmds.unsub(s) s:unsubscribe("room") end
function cmds.pub(s, w) publish(num(w[2]), num(w[3])) end
function cmds.flood(s, w)
  local chunk = string.rep("f", num(w[3]))
  for _ = 1, num(w[2]) do
    if not s:send(chunk) then return end
  end
end
function cmds.burst(s, w)
  local chunk = string.rep("b", num(w[3]))
  for _ = 1, num(w[2]) do
    if not s:send(chunk, nil, function() end) then return end
  end
end
function cmds.close(s, w) s:close(num(w[2], 1000), string.rep("r", num(w[3]))) end
function cmds.set(s, w) s.data[w[2]] = num(w[3]) end
function cmds.boom() error("stress-boom", 0) end
function cmds.after(s, w)
  local line = (w[3] or ""):gsub(",", " ")
  ws.after(num(w[2]), function()
    count("timer_runs")
    local ok, err = pcall(run, s, line)
    if not ok then note_bug("after " .. line, err) end
  end)
end
function cmds.tick(s, w)
  local left = num(w[3])
  local t
  t = ws.every(math.max(1, num(w[2])), function()
    left = left - 1
    publish(1, 20, "t")
    if left <= 0 then t:cancel() end
  end)
end
function cmds.poke(s, w)
  local other = nth(num(w[2]))
  if other then other:send("poke from " .. tostring(s.id)) end
end
function cmds.kill(s, w)
  local other = nth(num(w[2]))
  if other then other:close(num(w[3], 4000), "killed") end
end
function cmds.c(s, w)
  local url, mode, p, cs, cp = w[2], w[3], num(w[4]), num(w[5]), num(w[6])
  local up = ws.connect(url, up_listener(s, cs, cp), { deflate = false })
  S.connects = S.connects + 1
  seen(up)
  s.data.ups = s.data.ups or {}
  s.data.ups[#s.data.ups + 1] = up
  if mode == "now" then
    up:close(4001, "now")
  elseif mode == "after" then
    ws.after(p, function() up:close(4002, "after") end)
  elseif mode == "sleep" then
    nap(p, "message")
    up:close(4003, "slept")
  end
  -- "owner" and "keep": closed by this socket's on_close or by the far end
end

run = function(s, line)
  local w = words(line)
  local f = cmds[w[1] or ""]
  if not f then note_bug("command", "unknown command " .. line); return end
  f(s, w)
end

local main = {
  on_open = guard("on_open", function(s)
    seen(s)
    S.socks[key(s)] = s
    s:send("hi " .. tostring(s.id))
  end),
  on_message = guard("on_message", function(s, m)
    if type(m) ~= "string" then s:send(m); return end
    nap(s.data.msg_sleep, "message")
    for line in m:gmatch("[^;]+") do run(s, line) end
  end),
  on_error = guard("on_error", function(s, err)
    err = tostring(err)
    if err:find("backpressure", 1, true) then count("errors_backpressure") end
    if err:find("ping", 1, true) then count("errors_ping") end
    nap(s.data.error_sleep, "error")
  end),
  on_close = guard("on_close", function(s, code, reason)
    gone(s)
    count("code_" .. tostring(code))
    if tostring(reason):find("ping", 1, true) then count("closes_ping") end
    local d = s.data
    if (d.close_pub or 0) > 0 then count("close_publishes") end
    if (d.close_pub or 0) > 0 and (d.close_pub_first or 0) > 0 then publish(d.close_pub, d.close_pub_size or 10, "c") end
    nap(d.close_sleep, "close")
    if (d.close_pub or 0) > 0 and (d.close_pub_first or 0) == 0 then publish(d.close_pub, d.close_pub_size or 10, "c") end
    for _, up in ipairs(d.ups or {}) do up:close(4004, "owner closed") end
  end),
  on_reload = guard("on_reload", function(s)
    S.reloads = S.reloads + 1
    nap(s.data.reload_sleep, "reload")
    s:send("reloaded " .. VERSION)
  end),
}

-- The far end of the outbound connections.
local function up_side(life, sl)
  return {
    on_open = guard("up-side on_open", function(s)
      seen(s)
      ws.after(life, function() s:close(4005, "life over") end)
    end),
    on_message = guard("up-side on_message", function(s, m)
      nap(sl, "up_side")
      s:send("up-side echo " .. #m)
    end),
    on_close = guard("up-side on_close", function(s) gone(s) end),
  }
end

local function query(req, name)
  return (req.query_string or ""):match("%f[%w]" .. name .. "=(%d+)")
end

return function(req)
  if ws.upgrade_request(req) then
    if req.uri == "/up" then
      return { listener = up_side(num(query(req, "life"), 200), num(query(req, "s"))) }
    end
    return { listener = main }
  end
  if req.uri == "/stats" then
    local t = {}
    for k, v in pairs(S) do if type(v) ~= "table" then t[k] = v end end
    t.version = VERSION
    return { headers = { ["content-type"] = "application/json" }, body = ws.json.encode(t) }
  end
  if req.uri == "/oc" then
    local ok, err = pcall(function()
      local sl = num(query(req, "s"))
      local up = ws.connect("ws://127.0.0.1:" .. num(query(req, "port")) .. "/up?life=100", {
        on_error = guard("oc on_error", function() nap(sl, "up_error") end),
        on_close = guard("oc on_close", function(u) gone(u); count("up_closes"); nap(sl, "up_close") end),
      })
      S.connects = S.connects + 1
      seen(up)
      up:close()
    end)
    if not ok then note_bug("GET /oc", err) end
    return { body = "ok\n" }
  end
  return { status = 404, body = "no such path\n" }
end
