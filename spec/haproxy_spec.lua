-- A real HAProxy (Debian's haproxy) in front of two luaws nodes, as the
-- README's "Deploying behind a load balancer" shows: PROXY v2 to the nodes,
-- HTTP health checks on --health, a chat across both nodes through Redis
-- (--redis topics, --store redis:// for /who), and SIGTERM on one node moving
-- new connections to the other with none refused.
local server = require "spec.support.server"
local ws = require "spec.support.wsclient"
local socket = require "socket"
local quote = server.quote

local free_port, closefds = server.free_port, server.closefds

local function read_text(c)
  local data, kind = c:read_message()
  assert(kind == "text", "expected a text message, got " .. tostring(kind) .. " " .. tostring(data))
  return data
end

-- The nodes' script: /addr tells who the client is and which node answers;
-- everything else is scripts/chat.lua.
local NODE = [[
local ws = require "luaws"
local chat = dofile(os.getenv("CHAT"))
local addr = { on_open = function(s) s:send(s.request.remote_addr .. " " .. os.getenv("NODE")) end }
return function(request)
  if request.uri == "/addr" then return { listener = addr } end
  return chat(request)
end
]]

local HAPROXY_CFG = [[
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout check 1s
frontend ws
    bind 127.0.0.1:%d
    default_backend luaws
backend luaws
    balance roundrobin
    option httpchk
    http-check send meth GET uri /health ver HTTP/1.1 hdr Host luaws
    http-check expect status 200
    default-server check inter 100ms fall 1 rise 1 send-proxy-v2 check-send-proxy
    server n1 127.0.0.1:%d
    server n2 127.0.0.1:%d
frontend stats
    mode http
    bind 127.0.0.1:%d
    stats enable
    stats uri /stats
]]

-- HAProxy's view of server name: "UP", "DOWN", ...
local function status(stats_port, name)
  local r = ws.http("127.0.0.1", stats_port, { method = "GET", path = "/stats;csv" })
  for line in (r and r.body or ""):gmatch("[^\n]+") do
    local f = {}
    for v in (line .. ","):gmatch("([^,]*),") do f[#f + 1] = v end
    if f[1] == "luaws" and f[2] == name then return f[18] end
  end
end

local function wait_status(stats_port, name, want)
  local deadline = socket.gettime() + server.TIMEOUT
  local got
  repeat
    got = status(stats_port, name)
    if got and got:find("^" .. want) then return got end
    socket.sleep(0.02)
  until socket.gettime() > deadline
  error(name .. " is " .. tostring(got) .. ", not " .. want)
end

describe("behind a real HAProxy", function()
  local redis, haproxy, nodes, front, stats
  after_each(function()
    server.stop_all()
    if redis then os.execute("rm -rf " .. quote(redis.redis_dir)) end
  end)

  before_each(function()
    local rport = free_port()
    redis = server.start_redis(rport)
    nodes = {}
    for i, name in ipairs { "n1", "n2" } do
      nodes[i] = server.start { source = NODE, env = { CHAT = server.ROOT .. "/scripts/chat.lua", NODE = name },
        args = { "--listen", "ws://127.0.0.1:0?proxy=v2", "--health", "/health", "--drain-delay", "3000",
                 "--redis", "redis://127.0.0.1:" .. rport, "--store", "redis://127.0.0.1:" .. rport } }
    end
    front, stats = free_port(), free_port()
    local dir = server.tmpdir()
    server.write_file(dir .. "/haproxy.cfg", HAPROXY_CFG:format(front, nodes[1].port, nodes[2].port, stats))
    haproxy = server.start { command = closefds { "haproxy", "-db", "-f", dir .. "/haproxy.cfg" }, no_wait = true }
    wait_status(stats, "n1", "UP")
    wait_status(stats, "n2", "UP")
  end)

  it("the script sees each client's own address, on both nodes", function()
    local seen = {}
    for i = 2, 9 do
      local c = assert(ws.connect("127.0.0.1", front, { path = "/addr", bind = "127.0.0." .. i }))
      assert.equal(101, c.status)
      local addr, node = read_text(c):match("^(%S+) (%S+)$")
      assert.equal("127.0.0." .. i, addr)
      seen[node] = true
      c:shutdown()
    end
    assert.truthy(seen.n1 and seen.n2, "roundrobin used one node only")
    nodes[1]:wait_log("PROXY v2 from 127%.0%.0%.1:%d+: client 127%.0%.0%.%d:%d+")
  end)

  it("a chat across both nodes: Redis topics carry the messages, the Redis store the member list", function()
    local people = {}
    for i, name in ipairs { "ann", "bob", "cid", "dee" } do
      local c = assert(ws.connect("127.0.0.1", front, { path = "/?room=lobby&name=" .. name }))
      assert.equal(101, c.status)
      local line
      repeat line = read_text(c) until line:find("^%* welcome")
      people[i] = c
    end
    -- roundrobin: ann and cid on one node, bob and dee on the other
    assert.truthy(nodes[1]:grep("conn %d+ open .*name=ann")[1] or nodes[2]:grep("conn %d+ open .*name=ann")[1])
    people[1]:send_text("hello from ann")
    for i = 2, 4 do
      local line
      repeat line = read_text(people[i]) until not line:find("^%* ")
      assert.equal("ann: hello from ann", line)
    end
    people[4]:send_text("/who")
    local who
    repeat who = read_text(people[4]) until who:find("^%* here:")
    assert.equal("* here: ann, bob, cid, dee", who)
  end)

  it("SIGTERM on one node: its /health says 503, HAProxy moves new connections to the other, none is refused", function()
    local mark = nodes[1]:mark()
    nodes[1]:signal("TERM")
    nodes[1]:wait_log("signal 15: draining for 3000 ms", { after = mark })
    local refused, on = 0, { n1 = 0, n2 = 0 }
    local down = false
    local deadline = socket.gettime() + 2.5   -- within the drain: the node still accepts
    while socket.gettime() < deadline do
      local c = ws.connect("127.0.0.1", front, { path = "/addr" })
      if not c or c.status ~= 101 then refused = refused + 1
      else
        local node = read_text(c):match(" (%S+)$")
        on[node] = on[node] + 1
        if down and node == "n1" then error("a connection went to n1 after HAProxy marked it down") end
        c:shutdown()
      end
      if not down and (status(stats, "n1") or ""):find("^DOWN") then down = true; on.n2 = 0 end
      if down and on.n2 >= 20 then break end
    end
    assert.equal(0, refused)
    assert.truthy(down, "HAProxy never marked n1 down")
    assert.truthy(on.n2 >= 20, "after n1 went down only " .. on.n2 .. " connections reached n2")
    nodes[1]:wait_log("%-> 503", { after = mark })
    assert.truthy(nodes[1]:wait_exit(server.TIMEOUT + 3))
  end)
end)
