-- wss:// — luaws behind its own TLS (OpenSSL), checked from the outside:
-- a throwaway CA made with the openssl CLI signs the server's certificate
-- (SAN DNS:localhost, IP:127.0.0.1); python's websockets / ssl and node's ws
-- are the clients (spec/support/tls_client.py, tls_node_client.js); raw TCP
-- (luasocket) sends what is not TLS.
local server = require "spec.support.server"
local H = require "spec.support.helpers"
local T = require "spec.support.tls"
local wsc = require "spec.support.wsclient"

local ECHO = "spec/scripts/echo.lua"

-- The first bytes of a TLS 1.2/1.3 ClientHello: a handshake record header
-- announcing 512 bytes, the handshake header, client_version and half of
-- the random. The rest never comes.
local PARTIAL_CLIENT_HELLO = "\22\3\1\2\0" .. "\1\0\1\252" .. "\3\3" .. string.rep("\171", 16)

local function check_echo(r, raw, greeting_expected)
  assert.is_nil(r.error, raw)
  assert.is_nil(r.unexpected, raw)
  assert.equal(greeting_expected or "I will echo your messages", r.greeting, raw)
  assert.truthy(r.text and r.text:find("over TLS ✓", 1, true), raw)
  assert.is_true(r.binary_ok, "76800-byte binary echo differs\n" .. raw)
  assert.equal(1048576, r.big_binary_len, raw)
  assert.is_true(r.big_binary_ok, "1 MiB binary echo differs\n" .. raw)
  assert.equal(1048576, r.big_text_len, raw)
  assert.is_true(r.big_text_ok, "1 MiB text echo differs\n" .. raw)
  assert.equal(1000, r.close_code, raw)
  assert.truthy(r.tls_version == "TLSv1.3" or r.tls_version == "TLSv1.2", raw)
end

describe("wss:// with a certificate signed by a throwaway CA", function()
  local pki, leaf, srv

  lazy_setup(function()
    pki = T.pki()
    leaf = pki:issue { cn = "luaws test server", serial = "5EC0DE01" }
    srv = T.start { cert = leaf.cert, key = leaf.key, script = ECHO }
  end)
  lazy_teardown(function()
    if srv then srv:stop() end
    if pki then pki:cleanup() end
  end)

  it("python websockets: greeting, text, binary, 1 MiB binary and text, permessage-deflate negotiated", function()
    local r, raw = T.py("echo", T.uri(srv), "--ca", pki.ca)
    check_echo(r, raw)
    assert.truthy(r.extensions and r.extensions:find("permessage-deflate", 1, true),
      "permessage-deflate not negotiated: " .. tostring(r.extensions))
    assert.truthy(T.same_serial(leaf.serial, r.serial), raw)
    assert.equal("luaws test server", r.cn)
  end)

  it("python websockets without compression: the same session, uncompressed", function()
    local r, raw = T.py("echo", T.uri(srv), "--ca", pki.ca, "--no-deflate")
    check_echo(r, raw)
    assert.is_nil(r.extensions, raw)
  end)

  it("node ws: greeting, text, binary, 1 MiB binary and text, permessage-deflate negotiated", function()
    local r, raw = T.node(T.uri(srv), pki.ca)
    check_echo(r, raw)
    assert.is_false(r.text_binary)
    assert.truthy(r.extensions and r.extensions:find("permessage-deflate", 1, true),
      "permessage-deflate not negotiated: " .. tostring(r.extensions))
    assert.truthy(r.negotiated and r.negotiated:find("permessage-deflate", 1, true), raw)
    assert.truthy(T.same_serial(leaf.serial, r.serial), raw)
  end)

  it("SNI: a client naming localhost (on 127.0.0.1) is served and verified against the DNS SAN", function()
    local mark = srv:mark()
    local r, raw = T.py("echo", T.uri(srv), "--ca", pki.ca, "--servername", "localhost")
    check_echo(r, raw)
    assert.equal("localhost", r.sni)
    srv:wait_log("sni=localhost", { after = mark, plain = true })
    local n, nraw = T.node(T.uri(srv), pki.ca, "localhost")
    check_echo(n, nraw)
  end)

  it("certificate verification succeeds with the CA and fails without it", function()
    local ok, raw = T.py("verify", T.uri(srv), "--ca", pki.ca)
    assert.is_true(ok.ok, raw)
    assert.equal("I will echo your messages", ok.greeting)

    -- only the system's CAs: the chain does not lead to a trusted root
    local bad, braw = T.py("verify", T.uri(srv))
    assert.is_false(bad.ok, braw)
    assert.equal("SSLCertVerificationError", bad.error_type, braw)
    assert.equal(20, bad.verify_code, braw)   -- X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY

    local n, nraw = T.node(T.uri(srv), nil)
    assert.is_nil(n.greeting, nraw)
    assert.truthy(n.code == "UNABLE_TO_VERIFY_LEAF_SIGNATURE" or n.code == "UNABLE_TO_GET_ISSUER_CERT_LOCALLY", nraw)

    -- with the CA but another name: the hostname check is on too, so the
    -- successes above also vouch for the SAN
    local wrong, wraw = T.py("verify", T.uri(srv), "--ca", pki.ca, "--servername", "not-localhost.example")
    assert.is_false(wrong.ok, wraw)
    assert.equal(62, wrong.verify_code, wraw)  -- X509_V_ERR_HOSTNAME_MISMATCH
    assert.is_true(srv:alive())
  end)

  it("offers TLS 1.2 and 1.3, chooses ALPN http/1.1, and refuses TLS 1.1", function()
    local r12, raw12 = T.py("handshake", "127.0.0.1", srv.wss_port, "--ca", pki.ca, "--max", "1.2")
    assert.is_true(r12.ok, raw12)
    assert.equal("TLSv1.2", r12.tls_version)
    assert.truthy(r12.cipher:find("ECDHE", 1, true), raw12)   -- forward secrecy
    local r13, raw13 = T.py("handshake", "127.0.0.1", srv.wss_port, "--ca", pki.ca, "--min", "1.3",
      "--alpn", "h2,http/1.1")
    assert.is_true(r13.ok, raw13)
    assert.equal("TLSv1.3", r13.tls_version)
    assert.equal("http/1.1", r13.alpn)

    local mark = srv:mark()
    local r11, raw11 = T.py("handshake", "127.0.0.1", srv.wss_port, "--ca", pki.ca, "--min", "1", "--max", "1.1")
    assert.is_false(r11.ok, "a TLS 1.1 handshake succeeded:\n" .. raw11)
    -- the client did offer 1.1 (its security level lowered) and the server said no
    assert.equal("TLSV1_ALERT_PROTOCOL_VERSION", r11.reason, raw11)
    srv:wait_log("TLS error: .*unsupported protocol", { after = mark })
    assert.is_true(T.py("verify", T.uri(srv), "--ca", pki.ca).ok)
  end)

  it("refuses a TLS 1.2 renegotiation (openssl s_client's R command)", function()
    local mark = srv:mark()
    local _, out = T.exec({ T.OPENSSL, "s_client", "-connect", "127.0.0.1:" .. srv.wss_port, "-tls1_2",
      "-CAfile", pki.ca, "-servername", "localhost" }, { stdin = "R\n", timeout = 10 })
    assert.truthy(out:find("RENEGOTIATING", 1, true), "s_client did not try:\n" .. out)
    srv:wait_log("TLS error: client attempted renegotiation", { after = mark, plain = true })
    assert.is_nil(out:find("Verify return code: [1-9]"), out)
    assert.is_true(T.py("verify", T.uri(srv), "--ca", pki.ca).ok)
  end)

  it("resumes sessions from its tickets", function()
    local mark = srv:mark()
    local r, raw = T.py("handshake", "127.0.0.1", srv.wss_port, "--ca", pki.ca, "--resume")
    assert.is_true(r.ok, raw)
    assert.truthy((r.ticket_lifetime or 0) > 0, "no session ticket: " .. raw)
    assert.is_true(r.session_reused, raw)
    assert.equal("HTTP/1.1 101 Switching Protocols", r.second_status, raw)
    srv:wait_log("conn %d+: TLSv1%.%d %S+.* resumed", { after = mark })
  end)

  it("garbage bytes: closed without an HTTP answer, a TLS error logged, other connections unaffected", function()
    local hold = T.hold(T.uri(srv), pki.ca)
    finally(function() T.drop(hold) end)
    assert.is_true(hold.first.binary_ok)
    local mark = srv:mark()
    local garbage = H.bytes(600, 77)
    local reply, how = T.raw_exchange(srv.wss_port, garbage)
    assert.equal("closed", how)
    assert.is_nil(reply:find("HTTP/", 1, true), "garbage got an HTTP answer: " .. reply)
    srv:wait_log("TLS error: ", { after = mark, plain = true })
    -- the connection that was open goes on, new ones are served
    local after, raw = T.release(hold)
    assert.is_true(after.binary_ok, raw)
    assert.equal("hello over TLS ✓ (after)", after.text)
    assert.equal(1000, after.close_code)
    assert.is_true(T.py("verify", T.uri(srv), "--ca", pki.ca).ok)
  end)

  it("plain HTTP to the TLS port gets a 400 and is closed; the server goes on", function()
    local mark = srv:mark()
    local reply, how = T.raw_exchange(srv.wss_port,
      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      .. "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert.equal("closed", how)
    assert.truthy(reply:match("^HTTP/1%.1 400 "), "expected a 400, got: " .. reply)
    srv:wait_log("plain HTTP on the TLS port", { after = mark, plain = true })
    -- an HTTP request trickling in byte by byte is recognised as well
    local s = assert(require("socket").tcp())
    s:settimeout(5)
    assert(s:connect("127.0.0.1", srv.wss_port))
    for ch in ("GET /x HTTP/1.1\r\n"):gmatch(".") do assert(s:send(ch)) end
    assert(s:send("Host: a\r\n\r\n"))
    local line = s:receive("*l")
    s:close()
    assert.truthy(line and line:match("^HTTP/1%.1 400 "), "byte-wise plain HTTP: " .. tostring(line))
    local r, raw = T.py("echo", T.uri(srv), "--ca", pki.ca)
    check_echo(r, raw)
  end)

  it("a plain ws:// client on the TLS port fails cleanly (no 101)", function()
    local c = wsc.connect("127.0.0.1", srv.wss_port, { path = "/" })
    assert.truthy(not c or c.status ~= 101, "a plaintext upgrade was accepted on the TLS port")
    if c and c.status then assert.equal(400, c.status) end
    assert.is_true(srv:alive())
  end)
end)

describe("wss:// with a certificate chain (leaf + intermediate in the cert file)", function()
  it("sends the intermediate, so clients that trust only the root verify", function()
    local pki = T.pki()
    local srv
    finally(function()
      if srv then srv:stop() end
      pki:cleanup()
    end)
    local inter = pki:issue { cn = "luaws test intermediate", ca = true }
    local leaf = pki:issue { cn = "luaws chained leaf", issuer = inter }
    srv = T.start { cert = leaf.chain, key = leaf.key, script = ECHO }
    local r, raw = T.py("verify", T.uri(srv), "--ca", pki.ca)
    assert.is_true(r.ok, "chain not served? " .. raw)
    assert.truthy(T.same_serial(leaf.serial, r.serial), raw)
    local n, nraw = T.node(T.uri(srv), pki.ca)
    check_echo(n, nraw)
  end)
end)

describe("wss:// handshake timeout", function()
  local pki, leaf, srv

  lazy_setup(function()
    pki = T.pki()
    leaf = pki:issue {}
    srv = T.start { cert = leaf.cert, key = leaf.key, script = ECHO, args = { "--handshake-timeout", "500" } }
  end)
  lazy_teardown(function()
    if srv then srv:stop() end
    if pki then pki:cleanup() end
  end)

  it("closes a half-finished ClientHello after --handshake-timeout 500, without a 408 in clear", function()
    local reply, how, elapsed = T.raw_exchange(srv.wss_port, PARTIAL_CLIENT_HELLO, { timeout = 5 })
    assert.equal("closed", how, "still open after " .. elapsed .. " s")
    assert.equal("", reply)   -- no plaintext 408 (nor anything) before TLS is up
    assert.truthy(elapsed >= 0.45, "closed too early: " .. elapsed .. " s")
    assert.truthy(elapsed < 3, "closed late (the default is 10 s): " .. elapsed .. " s")
    srv:wait_log("TLS handshake not finished within 500 ms", { plain = true })
    assert.is_true(srv:alive())
  end)

  it("closes a connection that sends nothing at all", function()
    local reply, how, elapsed = T.raw_exchange(srv.wss_port, "", { timeout = 5 })
    assert.equal("closed", how)
    assert.equal("", reply)
    assert.truthy(elapsed >= 0.45 and elapsed < 3, "closed after " .. elapsed .. " s")
  end)

  it("answers 408 over TLS when TLS is up but the HTTP request stalls", function()
    local r, raw = T.py("raw", "127.0.0.1", tostring(srv.wss_port), "GET / HTTP/1.1\\r\\nHost: local", "--ca", pki.ca)
    assert.truthy(r.reply:match("^HTTP/1%.1 408 "), "expected a 408 over TLS: " .. raw)
    assert.truthy(r.elapsed >= 0.45 and r.elapsed < 3, "answered after " .. r.elapsed .. " s")
  end)

  it("a complete handshake within the timeout is not affected", function()
    local r, raw = T.py("echo", T.uri(srv), "--ca", pki.ca)
    check_echo(r, raw)
  end)
end)

describe("SIGHUP reloads the certificate and key", function()
  local pki, certs, srv, dir, cert_file, key_file

  local function put(c, key)
    server.write_file(cert_file, server.read_file(c.cert))
    server.write_file(key_file, server.read_file(key or c.key))
  end
  local function serial_now()
    local r, raw = T.py("handshake", "127.0.0.1", srv.wss_port, "--ca", pki.ca)
    assert.is_true(r.ok, raw)
    return r.serial, r.cn
  end

  lazy_setup(function()
    pki = T.pki()
    certs = {
      pki:issue { cn = "luaws first", serial = "A1", key = "ec" },
      pki:issue { cn = "luaws second", serial = "B2", key = "rsa" },
      pki:issue { cn = "luaws third", serial = "C3", key = "ec" },
    }
    dir = server.tmpdir()
    cert_file, key_file = dir .. "/server.pem", dir .. "/server.key"
    put(certs[1])
    srv = T.start { cert = cert_file, key = key_file, script = ECHO }
  end)
  lazy_teardown(function()
    if srv then srv:stop() end
    if pki then pki:cleanup() end
    if dir then os.execute("rm -rf " .. server.quote(dir)) end
  end)

  it("new connections get the new certificate; a connection opened before keeps echoing", function()
    local hold = T.hold(T.uri(srv), pki.ca)
    finally(function() T.drop(hold) end)
    assert.truthy(T.same_serial("A1", hold.first.serial), "before: " .. tostring(hold.first.serial))
    assert.equal("luaws first", hold.first.cn)

    put(certs[2])   -- another CN, serial and key type (RSA instead of EC)
    local mark = srv:mark()
    srv:signal("HUP")
    srv:wait_log("TLS certificate and key reloaded", { after = mark, plain = true })

    local serial, cn = serial_now()
    assert.truthy(T.same_serial("B2", serial), "after reload the server still shows serial " .. tostring(serial))
    assert.equal("luaws second", cn)
    local r, raw = T.node(T.uri(srv), pki.ca)
    check_echo(r, raw)
    assert.truthy(T.same_serial("B2", r.serial), raw)

    local after, hraw = T.release(hold)
    assert.is_true(after.got_go)
    assert.equal("hello over TLS ✓ (after)", after.text, hraw)
    assert.is_true(after.binary_ok, hraw)
    assert.truthy(T.same_serial("A1", after.serial), hraw)   -- still the old session
    assert.equal(1000, after.close_code)
    assert.equal(0, #srv:grep("TLS reload failed", { after = mark, plain = true }))
  end)

  it("a failed reload (key not matching, or not PEM) keeps the old certificate", function()
    assert.truthy(T.same_serial("B2", (serial_now())))

    put(certs[3], certs[1].key)   -- third cert with the first cert's key
    local mark = srv:mark()
    srv:signal("HUP")
    srv:wait_log("TLS reload failed", { after = mark, plain = true })
    assert.equal(0, #srv:grep("TLS certificate and key reloaded", { after = mark, plain = true }))
    assert.truthy(T.same_serial("B2", (serial_now())), "a mismatched key was taken")

    server.write_file(cert_file, "not a certificate\n")
    mark = srv:mark()
    srv:signal("HUP")
    srv:wait_log("TLS reload failed", { after = mark, plain = true })
    assert.truthy(T.same_serial("B2", (serial_now())))
    local r, raw = T.py("echo", T.uri(srv), "--ca", pki.ca)
    check_echo(r, raw)

    put(certs[3])   -- and a good pair is taken again
    mark = srv:mark()
    srv:signal("HUP")
    srv:wait_log("TLS certificate and key reloaded", { after = mark, plain = true })
    local serial, cn = serial_now()
    assert.truthy(T.same_serial("C3", serial), tostring(serial))
    assert.equal("luaws third", cn)
  end)

  it("session tickets issued before a reload still resume after it", function()
    local sess = dir .. "/session.pem"
    local how, out = T.s_client12(srv.wss_port, pki.ca, { sess_out = sess })
    assert.equal("New", how, out)
    local again, aout = T.s_client12(srv.wss_port, pki.ca, { sess_in = sess })
    assert.equal("Reused", again, aout)
    put(certs[1])
    local mark = srv:mark()
    srv:signal("HUP")
    srv:wait_log("TLS certificate and key reloaded", { after = mark, plain = true })
    assert.truthy(T.same_serial("A1", (serial_now())))
    local after, rout = T.s_client12(srv.wss_port, pki.ca, { sess_in = sess })
    assert.equal("Reused", after, rout)
  end)
end)

describe("request.scheme", function()
  local pki, leaf, srv
  local SCRIPT = [[
local ws = require "luaws"
return function(request)
  if not ws.upgrade_request(request) then
    return { status = 200, headers = { ["content-type"] = "text/plain" }, body = "scheme=" .. tostring(request.scheme) }
  end
  return { listener = {
    on_open = function(socket) socket:send("scheme=" .. tostring(socket.request.scheme)) end,
    on_message = function(socket, m) if m == "exit" then socket:close() else socket:send(m) end end,
  } }
end
]]

  lazy_setup(function()
    pki = T.pki()
    leaf = pki:issue {}
    srv = T.start { cert = leaf.cert, key = leaf.key, source = SCRIPT, both = true }
  end)
  lazy_teardown(function()
    if srv then srv:stop() end
    if pki then pki:cleanup() end
  end)

  it("is wss on the TLS listener and ws on the plain one of the same server", function()
    assert.are_not.equal(srv.ws_port, srv.wss_port)
    local r, raw = T.py("verify", T.uri(srv), "--ca", pki.ca)
    assert.is_true(r.ok, raw)
    assert.equal("scheme=wss", r.greeting)
    local c = H.open({ host = "127.0.0.1", port = srv.ws_port }, "/")
    assert.equal("scheme=ws", H.read(c))
    c:shutdown()
  end)

  it("is https for plain HTTP over TLS and http on the plain listener", function()
    local r, raw = T.py("raw", "127.0.0.1", tostring(srv.wss_port),
      "GET /page HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n", "--ca", pki.ca)
    assert.truthy(r.reply:match("^HTTP/1%.1 200 "), raw)
    assert.truthy(r.reply:find("\r\n\r\nscheme=https", 1, true), raw)
    local reply = T.raw_exchange(srv.ws_port, "GET /page HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert.truthy(reply:find("\r\n\r\nscheme=http", 1, true), reply)
  end)
end)

describe("TLS session tickets with two workers", function()
  local pki, leaf, srv, sess
  local SCRIPT = [[
return function(request)
  return { status = 200, headers = { ["content-type"] = "text/plain" }, body = "ok\n" }
end
]]

  lazy_setup(function()
    pki = T.pki()
    leaf = pki:issue { cn = "luaws tickets 1" }
    sess = pki.dir .. "/session.pem"
    srv = T.start { cert = leaf.cert, key = leaf.key, source = SCRIPT, workers = 2 }
  end)
  lazy_teardown(function()
    if srv then srv:stop() end
    if pki then pki:cleanup() end
  end)

  -- tls.c creates the ticket keys with the context; they are shared only
  -- if every worker has the same ones.
  it("a ticket from one worker resumes on either worker", function()
    local how, out = T.s_client12(srv.wss_port, pki.ca, { sess_out = sess, request = true })
    assert.equal("New", how, out)
    -- the kernel spreads connections over the workers: resume until both
    -- have done it (each attempt must resume)
    local seen, tries = {}, 0
    local mark = srv:mark()
    while not (seen.w1 and seen.w2) do
      tries = tries + 1
      assert.truthy(tries <= 60, "only one worker took connections in 60 tries")
      local h = T.s_client12(srv.wss_port, pki.ca, { sess_in = sess, request = true })
      local line, w = srv:wait_log("%[(w%d)%] conn %d+: TLSv1%.2 ", { after = mark })
      assert(h == "Reused", string.format("attempt %d: worker %s made a full handshake (%s) instead of "
        .. "resuming the ticket; TLS lines:\n%s", tries, w, tostring(h),
        table.concat(srv:grep("conn %d+: TLSv1%.2 "), "\n")))
      assert.truthy(line:find(" resumed", 1, true), line)
      seen[w] = true
      mark = srv:mark()
    end
  end)
end)
