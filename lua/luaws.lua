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
  -- This worker's Lua state that outlives hot reloads: the luaws module is
  -- never reloaded, so neither is this table. For what cannot be stored in
  -- luaws.store: sockets, outbound connections, functions.
  state = {},
}

-- JSON through Debian's lua-cjson.
local cjson = require "cjson"
M.json = { decode = cjson.decode, null = cjson.null }

--- luaws.store(name): key/value state shared by every worker of the machine
--- (LMDB, src/store.c); tables are stored as JSON.
M.store = core.store

-- Lua has one table type: an empty table encodes as {}. Tables marked with
-- json.array encode as arrays, the empty one as [].
local array_mt = { __name = "luaws.json.array" }
local arrays_made = false
local EMPTY = "\0luaws-empty-array\0"
local EMPTY_JSON = '"\\u0000luaws-empty-array\\u0000"'

--- Marks t (default: a new table) as a JSON array: encoded as [] when empty.
function M.json.array(t)
  arrays_made = true
  return setmetatable(t or {}, array_mt)
end
M.json.empty_array = M.json.array({})

-- value with every empty marked array replaced by the marker (copies only
-- the tables on the way to one).
local function mark_empty(v, depth)
  if type(v) ~= "table" or depth > 100 then return v, false end
  if getmetatable(v) == array_mt and next(v) == nil then return EMPTY, true end
  local copy
  for k, x in pairs(v) do
    local nx, changed = mark_empty(x, depth + 1)
    if changed then
      if not copy then copy = {} for k2, x2 in pairs(v) do copy[k2] = x2 end end
      copy[k] = nx
    end
  end
  return copy or v, copy ~= nil
end

function M.json.encode(value)
  if not arrays_made then return cjson.encode(value) end
  local marked, changed = mark_empty(value, 0)
  local text = cjson.encode(marked)
  if changed then text = text:gsub(EMPTY_JSON:gsub("%p", "%%%0"), "[]") end
  return text
end

-- luaws.store keeps tables as JSON. cjson decodes every number as a float
-- (and encodes 1.0 as 1): integral ones come back as integers.
local function integers(v)
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = integers(x) end
  elseif math.type(v) == "float" then
    return math.tointeger(v) or v
  end
  return v
end
core.store_codec(M.json.encode, function(text) return integers(cjson.decode(text)) end)

--- Decodes a query string ("name=J%C3%BCrgen&room=a+b") into a table
--- ({name = "Jürgen", room = "a b"}); the first value of a repeated name wins.
function M.parse_query(qs)
  local q = {}
  local function unescape(s)
    return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
  end
  for k, v in (qs or ""):gmatch("([^&=]+)=?([^&]*)") do
    k = unescape(k)
    if q[k] == nil then q[k] = unescape(v) end
  end
  return q
end

-- request.query: the parsed query string, made on first use.
core.request_mt.__index = function(request, key)
  if key == "query" then
    local q = M.parse_query(rawget(request, "query_string"))
    rawset(request, "query", q)
    return q
  end
end

--- socket:send_json(value [, succeed, fail]): send value as a JSON text message.
core.socket_methods.send_json = function(socket, value, ...)
  return socket:send(M.json.encode(value), ...)
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
  if port < 1 or port > 65535 then error("luaws.connect: port out of range in " .. url, 2) end
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
  local req = setmetatable({
    method = "GET", uri = path:match("^[^?]*"), query_string = path:match("%?(.*)$"),
    protocol = "HTTP/1.1", scheme = scheme, headers = headers,
    server_name = host, server_port = port, url = url,
  }, core.request_mt)
  -- wss://: the server's certificate is checked against the system's CAs
  -- (or opts.ca, a PEM file) and its name; opts.verify = false skips that.
  return core.connect(host, port, request, key, protocols, deflate, listener, req,
                      scheme == "wss", opts.ca, opts.verify ~= false)
end

return M
