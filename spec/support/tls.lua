-- tls.lua — certificates and TLS clients for spec/tls_spec.lua.
--
--   local T = require "spec.support.tls"
--   local pki = T.pki()                        -- a throwaway CA in a temp dir
--   local leaf = pki:issue { cn = "luaws test 1", serial = "1001" }
--   -- leaf.cert, leaf.key (PEM paths), leaf.serial ("1001")
--   local srv = T.start { cert = leaf.cert, key = leaf.key, script = "spec/scripts/echo.lua" }
--   srv.port (the wss port); with { both = true }: srv.ws_port, srv.wss_port
--   local r = T.py("echo", "wss://127.0.0.1:" .. srv.port .. "/", "--ca", pki.ca)
--
-- Certificates are made with the openssl CLI; the clients are Debian's
-- python3 (ssl + websockets, spec/support/tls_client.py) and node's ws
-- (spec/support/tls_node_client.js). Everything prints JSON, decoded here.
local cjson = require "cjson"
local socket = require "socket"
local server = require "spec.support.server"
local H = require "spec.support.helpers"

local T = {}
T.PY = "/usr/bin/python3"
T.NODE = "/usr/bin/node"
T.NODE_PATH = "/usr/share/nodejs"
T.OPENSSL = "openssl"
local quote = server.quote

-- Run a shell command (argv list, quoted here), guard-timed; returns the
-- exit status and the combined output. opts.stdin: text fed to its stdin.
function T.exec(argv, opts)
  opts = opts or {}
  local q = {}
  for i, a in ipairs(argv) do q[i] = quote(a) end
  local input = "/dev/null"
  if opts.stdin then
    input = os.tmpname()
    server.write_file(input, opts.stdin)
  end
  local cmd = string.format("timeout -s KILL %d %s <%s 2>&1", opts.timeout or 30, table.concat(q, " "), quote(input))
  local h = assert(io.popen(cmd))
  local out = h:read("a")
  local _, how, code = h:close()
  if opts.stdin then os.remove(input) end
  if how == "signal" then code = 128 + code end
  return code, out, cmd
end

function T.openssl(...)
  local argv = { T.OPENSSL, ... }
  local code, out, cmd = T.exec(argv)
  assert(code == 0, "openssl failed (" .. tostring(code) .. "): " .. cmd .. "\n" .. out)
  return out
end

local function json_of(code, out, cmd)
  local line
  for l in out:gmatch("[^\n]+") do if l:match("^%s*{.*}%s*$") then line = l end end
  assert(line, "client printed no JSON (exit " .. tostring(code) .. "): " .. cmd .. "\n" .. out)
  local r = cjson.decode(line)
  for k, v in pairs(r) do if v == cjson.null then r[k] = nil end end   -- JSON null -> nil
  return r, out
end

-- The python helper: T.py("echo", uri, "--ca", file) -> decoded JSON, raw output.
function T.py(...)
  return json_of(T.exec({ T.PY, server.ROOT .. "/spec/support/tls_client.py", ... }))
end

-- The node ws helper: T.node(uri, cafile or "-", servername?) -> JSON, raw output.
function T.node(uri, ca, servername)
  local argv = { "env", "NODE_PATH=" .. T.NODE_PATH, T.NODE, server.ROOT .. "/spec/support/tls_node_client.js", uri, ca or "-" }
  if servername then argv[#argv + 1] = servername end
  return json_of(T.exec(argv))
end

---------------------------------------------------------------------------
-- A throwaway PKI: root CA, optional intermediate, leaf certificates with
-- SAN DNS:localhost, IP:127.0.0.1.
---------------------------------------------------------------------------
local PKI = {}
PKI.__index = PKI

local function newkey(alg)
  if alg == "rsa" then return { "-newkey", "rsa:2048" } end
  return { "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256" }
end

local function append(t, more) for _, v in ipairs(more) do t[#t + 1] = v end; return t end

function T.pki(dir)
  local self = setmetatable({ dir = dir or server.tmpdir(), n = 0 }, PKI)
  self.ca = self.dir .. "/ca.pem"
  self.ca_key = self.dir .. "/ca.key"
  T.openssl(table.unpack(append(append({ "req", "-x509", "-new" }, newkey("ec")), {
    "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "2",
    "-subj", "/CN=luaws throwaway test CA", "-set_serial", "1" })))
  return self
end

-- opts: cn, serial (hex digits), key = "ec" | "rsa", issuer = another issued
-- cert with ca = true (default: the root), ca = true (an intermediate).
-- Returns { cert, key, serial (upper-case hex as python shows it), cn, chain? }.
function PKI:issue(opts)
  opts = opts or {}
  self.n = self.n + 1
  local base = string.format("%s/cert%d", self.dir, self.n)
  local r = { cert = base .. ".pem", key = base .. ".key", cn = opts.cn or ("luaws test " .. self.n) }
  local serial = opts.serial or string.format("%04X", 0x1000 + self.n)
  r.serial = serial:upper()
  local ext = base .. ".ext"
  if opts.ca then
    server.write_file(ext, "basicConstraints=critical,CA:TRUE,pathlen:0\n"
      .. "keyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
  else
    server.write_file(ext, "basicConstraints=critical,CA:FALSE\n"
      .. "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
      .. "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
      .. "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
  end
  T.openssl(table.unpack(append(append({ "req", "-new" }, newkey(opts.key)), {
    "-nodes", "-keyout", r.key, "-out", base .. ".csr", "-subj", "/CN=" .. r.cn })))
  local issuer = opts.issuer or { cert = self.ca, key = self.ca_key }
  T.openssl("x509", "-req", "-in", base .. ".csr", "-CA", issuer.cert, "-CAkey", issuer.key,
    "-set_serial", "0x" .. serial, "-days", "2", "-extfile", ext, "-out", r.cert)
  if opts.issuer then
    -- the file a server is given: leaf first, then the intermediate
    r.chain = base .. ".chain.pem"
    server.write_file(r.chain, server.read_file(r.cert) .. server.read_file(issuer.cert))
  end
  return r
end

function PKI:cleanup() os.execute("rm -rf " .. quote(self.dir)) end

-- Serials as hex strings, compared without case or leading zeros (python's
-- getpeercert() and node print them padded to whole bytes).
function T.same_serial(a, b)
  local function norm(s) return (tostring(s):upper():gsub("^0+", "")) end
  return norm(a) == norm(b)
end

---------------------------------------------------------------------------
-- Servers
---------------------------------------------------------------------------

-- opts: cert, key (paths); script | source; args = {...} more flags; workers;
-- both = true: a ws:// and a wss:// listener (srv.ws_port, srv.wss_port),
-- else the one listener of --port 0 is wss (srv.port == srv.wss_port).
function T.start(opts)
  local args = {}
  if opts.both then
    append(args, { "--listen", "ws://127.0.0.1:0", "--listen", "wss://127.0.0.1:0" })
  end
  append(args, { "--tls-cert", opts.cert, "--tls-key", opts.key })
  append(args, opts.args or {})
  local srv = H.start { script = opts.script, source = opts.source, args = args, workers = opts.workers }
  if opts.both then
    local _, p = srv:wait_log("listening on ws://[^%s,]-:(%d+)")
    srv.ws_port = tonumber(p)
    _, p = srv:wait_log("listening on wss://[^%s,]-:(%d+)")
    srv.wss_port = tonumber(p)
  else
    assert(srv.ready_line:find("listening on wss://", 1, true), "not a wss listener: " .. srv.ready_line)
    srv.wss_port = srv.port
  end
  return srv
end

function T.uri(srv, path, host)
  return "wss://" .. (host or "127.0.0.1") .. ":" .. srv.wss_port .. (path or "/")
end

-- openssl s_client -tls1_2 (its session ticket arrives in the handshake);
-- opts.sess_out / sess_in: session files; opts.request: send one plain HTTP
-- GET (so the server reads plaintext and logs the connection's TLS line).
-- Returns "New" or "Reused" (nil if no handshake) and the output.
function T.s_client12(port, ca, opts)
  local argv = { T.OPENSSL, "s_client", "-connect", "127.0.0.1:" .. port, "-tls1_2", "-CAfile", ca,
    "-servername", "localhost" }
  if opts.sess_out then argv[#argv + 1] = "-sess_out"; argv[#argv + 1] = opts.sess_out end
  if opts.sess_in then argv[#argv + 1] = "-sess_in"; argv[#argv + 1] = opts.sess_in end
  local _, out = T.exec(argv, { stdin = opts.request and "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n" or "",
    timeout = 10 })
  return out:match("\n(%a+), TLSv1%.2, Cipher is"), out
end

---------------------------------------------------------------------------
-- Raw TCP to the TLS port (luasocket), for bytes that are not TLS.
---------------------------------------------------------------------------

-- Send data, then read until the server closes. Returns what came back,
-- how the read ended ("closed", or "timeout" after the guard), seconds taken.
function T.raw_exchange(port, data, opts)
  opts = opts or {}
  local s = socket.tcp()
  s:settimeout(opts.timeout or 5)
  assert(s:connect("127.0.0.1", port))
  local t0 = socket.gettime()
  if data and data ~= "" then assert(s:send(data)) end
  local got = {}
  local how
  while true do
    local chunk, err, partial = s:receive(4096)
    local piece = chunk or partial
    if piece and piece ~= "" then got[#got + 1] = piece end
    if not chunk then how = err; break end
  end
  local elapsed = socket.gettime() - t0
  s:close()
  return table.concat(got), how, elapsed
end

-- Poll a file until a line matches pattern (guard timeout); for outputs of
-- background helpers, as server:wait_log does for the server's log.
function T.wait_file(path, pattern, timeout)
  local deadline = socket.gettime() + (timeout or 20)
  while true do
    local text = server.read_file(path) or ""
    for l in text:gmatch("[^\n]+") do
      if l:find(pattern) then return l end
    end
    if socket.gettime() > deadline then
      error("wait_file(" .. pattern .. ") timed out; " .. path .. ":\n" .. text, 2)
    end
    socket.sleep(0.005)
  end
end

-- A python `hold` helper in the background: opens a wss session and waits
-- for T.release(). Returns a handle { out = file, first = decoded JSON }.
function T.hold(uri, ca)
  local dir = server.tmpdir()
  local out = dir .. "/hold.out"
  local cmd = string.format("exec timeout -s KILL 60 %s %s hold %s --ca %s >%s 2>&1", T.PY,
    quote(server.ROOT .. "/spec/support/tls_client.py"), quote(uri), quote(ca), quote(out))
  local h = assert(io.popen(cmd, "w"))
  local line = T.wait_file(out, '^{"phase": "open"')
  return { h = h, out = out, dir = dir, first = cjson.decode(line) }
end

-- Let a hold helper go on; waits for it to finish and returns its last JSON.
function T.release(hold)
  hold.h:write("go\n")
  hold.h:flush()
  hold.h:close()
  hold.released = true
  local text = server.read_file(hold.out) or ""
  os.execute("rm -rf " .. quote(hold.dir))
  local last
  for l in text:gmatch("[^\n]+") do if l:match("^{") then last = l end end
  assert(last and last:find('"phase": "after"', 1, true), "hold helper did not finish:\n" .. text)
  return cjson.decode(last), text
end

-- For finally(): end a hold helper that was not released (its stdin closes,
-- it finishes on its own) and remove its files.
function T.drop(hold)
  if not hold or hold.released then return end
  hold.released = true
  pcall(hold.h.close, hold.h)
  os.execute("rm -rf " .. quote(hold.dir))
end

return T
