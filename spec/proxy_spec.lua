-- The client's address behind a balancer: the PROXY protocol (v1, v2, in
-- front of TLS too) and trusted forwarding headers. Headers are written by
-- hand here; spec/haproxy_spec.lua has the real HAProxy send them.
local server = require "spec.support.server"
local ws = require "spec.support.wsclient"
local T = require "spec.support.tls"

local ADDR = [[
  return { on_open = function(s) s:send(s.request.remote_addr) end }
]]

local function be16(n) return string.char((n >> 8) & 255, n & 255) end
local V2_SIG = "\r\n\r\n\0\r\nQUIT\n"

-- A v2 PROXY header for a TCP client at ip4 (dotted) or ip6 (16 bytes given as text via inet) : port.
local function v2_inet(src, sport, dst, dport)
  local function octets(a) local t = {}; for n in a:gmatch("%d+") do t[#t + 1] = string.char(tonumber(n)) end; return table.concat(t) end
  local body = octets(src) .. octets(dst) .. be16(sport) .. be16(dport)
  return V2_SIG .. "\33\17" .. be16(#body) .. body
end
local function v2_inet6(src16, sport, dst16, dport)
  local body = src16 .. dst16 .. be16(sport) .. be16(dport)
  return V2_SIG .. "\33\33" .. be16(#body) .. body
end

-- Opens a WebSocket after sending prefix raw; returns the first message.
local function remote_addr(srv, prefix, opts)
  local c = assert(ws.tcp(srv.host, srv.port, opts))
  if prefix ~= "" then assert(c:send_raw(prefix)) end
  local req = ws.format_request { method = "GET", path = "/", headers = {
    { "Host", "x" }, { "Upgrade", "websocket" }, { "Connection", "Upgrade" },
    { "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==" }, { "Sec-WebSocket-Version", "13" },
    table.unpack(opts and opts.headers or {}) } }
  assert(c:send_raw(req))
  local resp = assert(c:read_response())
  assert.equal(101, resp.status)
  local data, kind = c:read_message()
  assert.equal("text", kind)
  c:shutdown()
  return data
end

local function fds_of(pid)
  local h = io.popen("ls /proc/" .. pid .. "/fd | wc -l")
  local n = tonumber(h:read("l")); h:close()
  return n
end

describe("PROXY protocol", function()
  after_each(function() server.stop_all() end)

  it("v1 and v2 (IPv4, IPv6) give the script, the logs and the limits the client's address", function()
    local srv = server.start { source = ADDR, args = { "--proxy-protocol", "any" } }
    assert.equal("203.0.113.7", remote_addr(srv, "PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n"))
    srv:wait_log("PROXY v1 from 127%.0%.0%.1:%d+: client 203%.0%.113%.7:5555")
    assert.equal("2001:db8::1", remote_addr(srv, "PROXY TCP6 2001:db8::1 2001:db8::2 4711 443\r\n"))
    assert.equal("198.51.100.9", remote_addr(srv, v2_inet("198.51.100.9", 4444, "10.0.0.1", 80)))
    srv:wait_log("conn %d+ open 198%.51%.100%.9:4444 /")
    local six = "\32\1\13\184" .. string.rep("\0", 11) .. "\9"   -- 2001:db8::9
    assert.equal("2001:db8::9", remote_addr(srv, v2_inet6(six, 1, six, 2)))
    -- LOCAL (a balancer's own health check) and UNKNOWN keep the socket's address.
    assert.equal("127.0.0.1", remote_addr(srv, "PROXY UNKNOWN\r\n"))
    assert.equal("127.0.0.1", remote_addr(srv, V2_SIG .. "\32\0" .. be16(0)))
  end)

  it("only the version asked for; a listener without ?proxy= beside one with", function()
    local p2 = server.start { source = ADDR, args = { "--listen", "ws://127.0.0.1:0?proxy=v2" } }
    local c = assert(ws.tcp(p2.host, p2.port))
    c:send_raw("PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n")
    assert.truthy(c:tcp_closed())
    p2:wait_log("no valid PROXY header %(")
    assert.equal("198.51.100.9", remote_addr(p2, v2_inet("198.51.100.9", 4444, "10.0.0.1", 80)))
    local plain = server.start { source = ADDR }
    assert.equal("127.0.0.1", remote_addr(plain, ""))
  end)

  it("a malformed, truncated or slow header is closed without an answer, logged, and nothing leaks", function()
    local srv = server.start { source = ADDR, args = { "--proxy-protocol", "any", "--handshake-timeout", "1000" } }
    local fds0 = fds_of(srv.pid)
    for _, bad in ipairs {
      "GET / HTTP/1.1\r\n\r\n",                          -- no header at all
      "PROXY TCP4 203.0.113.7 10.0.0.1 5555 65536\r\n",  -- port out of range
      "PROXY TCP4 999.0.113.7 10.0.0.1 5555 80\r\n",     -- not an address
      "PROXY TCP4 " .. string.rep("1", 120),             -- a line that never ends
      V2_SIG .. "\49\17" .. be16(12),                    -- v2 header of version 3
      V2_SIG .. "\33\17" .. be16(4) .. "1234",           -- too short for AF_INET
      "\22\3\1\2\0",                                     -- a TLS ClientHello first
    } do
      local c = assert(ws.tcp(srv.host, srv.port))
      c:send_raw(bad)
      local got = c:receive_bytes(1)
      assert.is_nil(got, "an answer to " .. ("%q"):format(bad))
      c:shutdown()
    end
    assert.truthy(#srv:grep("no valid PROXY header %(") >= 7)
    -- Truncated: the client gives up half-way.
    local t = assert(ws.tcp(srv.host, srv.port))
    t:send_raw("PROXY TCP4 203.0.")
    t:shutdown()
    -- Slow: one byte at a time, never complete within --handshake-timeout.
    local mark = srv:mark()
    local slow = assert(ws.tcp(srv.host, srv.port))
    local header = "PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n"
    local closed = false
    for i = 1, #header do
      if not slow:send_raw(header:sub(i, i)) then closed = true; break end
      if srv:grep("none complete within 1000 ms", { after = mark })[1] then closed = true; break end
      require("socket").sleep(0.1)
    end
    assert.truthy(closed, "a 4 s header was not cut at 1 s")
    srv:wait_log("no valid PROXY header %(none complete within 1000 ms%), closing", { after = mark })
    slow:shutdown()
    local fds
    for _ = 1, 200 do
      fds = fds_of(srv.pid)
      if fds <= fds0 then break end
      require("socket").sleep(0.01)
    end
    assert.truthy(fds <= fds0, fds0 .. " descriptors before, " .. fds .. " after")
    -- And the server still serves.
    assert.equal("203.0.113.7", remote_addr(srv, header))
  end)

  it("in front of TLS: the header comes before the ClientHello", function()
    local pki = T.pki()
    finally(function() pki:cleanup() end)
    local leaf = pki:issue { cn = "luaws test server", serial = "5EC0DE09" }
    local srv = server.start { source = ADDR, args = { "--tls-cert", leaf.cert, "--tls-key", leaf.key,
                                                       "--proxy-protocol", "v2" } }
    local py = [==[
import socket, ssl, sys, struct
port, ca = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11" + struct.pack(">H", 12) + bytes([192, 0, 2, 33, 10, 0, 0, 1]) + struct.pack(">HH", 7777, 443))
ctx = ssl.create_default_context(cafile=ca)
t = ctx.wrap_socket(s, server_hostname="localhost")
t.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
data = b""
while b"\r\n\r\n" not in data: data += t.recv(4096)
head, rest = data.split(b"\r\n\r\n", 1)
while len(rest) < 2 or len(rest) < 2 + rest[1]: rest += t.recv(4096)
print(head.split(b"\r\n")[0].decode(), rest[2:2 + rest[1]].decode(), t.version())
]==]
    local f = server.tmpdir() .. "/tls_proxy.py"
    server.write_file(f, py)
    local h = io.popen("/usr/bin/python3 " .. f .. " " .. srv.port .. " " .. pki.ca .. " 2>&1")
    local out = h:read("a"); h:close()
    assert.truthy(out:find("HTTP/1.1 101 Switching Protocols 192.0.2.33 TLSv1", 1, true), out)
  end)
end)

describe("trusted forwarding headers (--trust-proxy)", function()
  after_each(function() server.stop_all() end)

  it("X-Forwarded-For and Forwarded from a trusted peer name the client; from an untrusted one they change nothing", function()
    local srv = server.start { source = ADDR, args = { "--trust-proxy", "127.0.0.1", "--trust-proxy", "10.0.0.0/8" } }
    local xff = { { "X-Forwarded-For", "6.6.6.6, 198.51.100.1, 10.1.2.3" } }
    -- From 127.0.0.1 (trusted): right to left, 10.1.2.3 is trusted too, so 198.51.100.1.
    assert.equal("198.51.100.1", remote_addr(srv, "", { headers = xff }))
    assert.equal("2001:db8::1", remote_addr(srv, "", { headers = { { "Forwarded", 'for="[2001:db8::1]:4711";proto=https' } } }))
    -- From 127.0.0.2 (untrusted): the header is a spoof; the socket's address stands.
    assert.equal("127.0.0.2", remote_addr(srv, "", { bind = "127.0.0.2", headers = xff }))
    assert.equal("127.0.0.2", remote_addr(srv, "", { bind = "127.0.0.2", headers = { { "X-Forwarded-For", "1.2.3.4" } } }))
    -- Without --trust-proxy nobody is trusted.
    local plain = server.start { source = ADDR }
    assert.equal("127.0.0.1", remote_addr(plain, "", { headers = xff }))
  end)

  it("a bad --trust-proxy is a usage error that says why", function()
    local code, out = server.run { "--trust-proxy", "10.1.0.0/8", "spec/scripts/echo.lua" }
    assert.equal(2, code, out)
    assert.truthy(out:find("--trust-proxy 10.1.0.0/8:", 1, true), out)
  end)
end)
