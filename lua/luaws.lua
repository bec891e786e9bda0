-- luaws — the Lua half of the module (Ring's ring.websocket for Lua 5.4).
-- The C core registers luaws.core (buffers, logging); what is easier to
-- write and read in Lua lives here.
local core = require "luaws.core"

local M = {
  version = core.version,
  buffer = core.buffer,
  log = core.log,
  after = core.after,
  every = core.every,
  sleep = core.sleep,
  publish = core.publish,
  subscribers = core.subscribers,
}

-- JSON through Debian's lua-cjson.
local cjson = require "cjson"
M.json = { encode = cjson.encode, decode = cjson.decode, null = cjson.null }

--- socket:send_json(value [, succeed, fail]): send value as a JSON text message.
core.socket_methods.send_json = function(socket, value, ...)
  return socket:send(cjson.encode(value), ...)
end

-- Does the comma-separated header value contain token (case-insensitive)?
local function has_token(value, token)
  if type(value) ~= "string" then return false end
  token = token:lower()
  for item in value:gmatch("[^,]+") do
    if item:match("^%s*(.-)%s*$"):lower() == token then return true end
  end
  return false
end

--- upgrade-request?: a GET whose Upgrade lists "websocket" and whose
--- Connection lists "upgrade".
function M.upgrade_request(request)
  if type(request) ~= "table" or request.method ~= "GET" then return false end
  local headers = request.headers or {}
  return has_token(headers.upgrade, "websocket") and has_token(headers.connection, "upgrade")
end

--- websocket-response?: a response table that carries a listener.
function M.websocket_response(response)
  return type(response) == "table" and type(response.listener) == "table"
end

--- The subprotocols the client offered, in its order of preference.
function M.request_protocols(request)
  local list = {}
  local value = request and request.headers and request.headers["sec-websocket-protocol"]
  if value then
    for item in value:gmatch("[^,]+") do
      local p = item:match("^%s*(.-)%s*$")
      if p ~= "" then list[#list + 1] = p end
    end
  end
  return list
end

--- A handler that dispatches on request.uri. routes maps a path ("/echo")
--- or a prefix ending in "*" ("/api/*", longest wins) to a handler function
--- or a listener table; routes.default catches the rest (else 404).
function M.router(routes)
  local prefixes = {}
  for pattern in pairs(routes) do
    if type(pattern) == "string" and pattern:sub(-1) == "*" then prefixes[#prefixes + 1] = pattern:sub(1, -2) end
  end
  table.sort(prefixes, function(a, b) return #a > #b end)
  return function(request)
    local target = routes[request.uri]
    if target == nil then
      for _, prefix in ipairs(prefixes) do
        if request.uri:sub(1, #prefix) == prefix then target = routes[prefix .. "*"] break end
      end
    end
    if target == nil then target = routes.default end
    if target == nil then
      return { status = 404, body = "404 Not Found: no route for " .. request.uri .. "\n" }
    end
    if type(target) == "function" then return target(request) end
    if M.upgrade_request(request) then return { listener = target } end
    return { status = 426, headers = { upgrade = "websocket", ["sec-websocket-version"] = "13" },
             body = "426 Upgrade Required: " .. request.uri .. " speaks WebSocket\n" }
  end
end

--- The browser console page (lua/luaws/console.html) as a response.
function M.console(request)
  local dir = package.searchpath("luaws.loader", package.path):match("^(.*)/[^/]*$")
  local f = assert(io.open(dir .. "/console.html", "rb"))
  local page = f:read("a")
  f:close()
  return { status = 200, headers = { ["content-type"] = "text/html; charset=utf-8",
    ["cache-control"] = "no-store" }, body = page }
end

--- Opens a WebSocket to another server and drives listener's events with
--- the same socket object as server-side ones. url: ws://host[:port][/path].
--- opts: protocols = {..}, headers = {name = value}, deflate = false,
--- and for wss://: ca = "ca.pem", verify = false.
function M.connect(url, listener, opts)
  opts = opts or {}
  assert(type(listener) == "table", "luaws.connect: the listener must be a table")
  if opts.reconnect then return require("luaws.reconnect").connect(M, url, listener, opts) end
  local scheme, rest = tostring(url):match("^(wss?)://(.+)$")
  if not scheme then error("luaws.connect: not a ws:// URL: " .. tostring(url), 2) end
  local authority, path = rest:match("^([^/?#]+)(.*)$")
  if not authority then error("luaws.connect: no host in " .. url, 2) end
  local host, port = authority:match("^%[(.+)%]:(%d+)$")
  if not host then host, port = authority:match("^%[(.+)%]$"), nil end
  if not host then host, port = authority:match("^([^:]+):(%d+)$") end
  if not host then host = authority end
  port = tonumber(port) or (scheme == "wss" and 443 or 80)
  if path == "" then path = "/" end
  if path:find("[%s]") or host:find("[%s]") then error("luaws.connect: bad URL " .. url, 2) end

  local key = core.client_key()
  local lines = {
    "GET " .. path .. " HTTP/1.1",
    "Host: " .. authority,
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: " .. key,
  }
  local headers, protocols = {}, nil
  if opts.protocols and #opts.protocols > 0 then
    protocols = table.concat(opts.protocols, ", ")
    lines[#lines + 1] = "Sec-WebSocket-Protocol: " .. protocols
    headers["sec-websocket-protocol"] = protocols
  end
  for name, value in pairs(opts.headers or {}) do
    name, value = tostring(name), tostring(value)
    if name:find("[\r\n:]") or value:find("[\r\n]") then
      error("luaws.connect: header " .. name .. " has a forbidden character", 2)
    end
    lines[#lines + 1] = name .. ": " .. value
    headers[name:lower()] = value
  end
  local deflate = opts.deflate ~= false
  if deflate then lines[#lines + 1] = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits" end
  local request = table.concat(lines, "\r\n") .. "\r\n\r\n"
  local req = {
    method = "GET", uri = path:match("^[^?]*"), query_string = path:match("%?(.*)$"),
    protocol = "HTTP/1.1", scheme = scheme, headers = headers,
    server_name = host, server_port = port, url = url,
  }
  -- wss://: the server's certificate is checked against the system's CAs
  -- (or opts.ca, a PEM file) and its name; opts.verify = false skips that.
  return core.connect(host, port, request, key, protocols, deflate, listener, req,
                      scheme == "wss", opts.ca, opts.verify ~= false)
end

return M
