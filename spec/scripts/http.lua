-- http.lua — handler behaviours for the HTTP specs.
--
-- Plain HTTP routes (by uri):
--   /hello            200 "hello world", text/plain, X-Custom: yes
--   /count            200, body = number of handler calls so far (this one included)
--   /error            the handler raises -> 500
--   /status/NNN       status NNN, body "status NNN"
--   /big              200, 1 MiB body
--   /empty            204, no body
--   /is-upgrade       200, body = tostring(ws.upgrade_request(req))
--   /protocols        200, body = offered subprotocols joined with ","
--   /websocket-response  200, body = checks of ws.websocket_response
--   anything else     200, body = the request dumped (same format as control.lua)
-- Upgrade routes:
--   /protocol-first   choose the first offered subprotocol
--   /protocol-bad     choose a subprotocol the client did not offer -> 500
--   /upgrade-headers  101 with X-Extra: yes
--   /error            the handler raises -> 500
--   /refuse           answer the upgrade with a plain 403
--   anything else     an echo listener
local ws = require "luaws"

local calls = 0

local function hex(s)
  if s == nil then return "nil" end
  if s == "" then return "-" end
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function dump_request(r)
  local out = {}
  local keys = { "method", "uri", "query_string", "protocol", "scheme", "remote_addr",
                 "server_name", "server_port", "body" }
  for _, k in ipairs(keys) do
    out[#out + 1] = string.format("%s %s %s", k, type(r[k]), hex(r[k] ~= nil and tostring(r[k]) or nil))
  end
  out[#out + 1] = "headers " .. type(r.headers) .. " -"
  if type(r.headers) == "table" then
    local names = {}
    for name in pairs(r.headers) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      local v = r.headers[name]
      out[#out + 1] = string.format("header:%s %s %s", hex(name), type(v), hex(tostring(v)))
    end
  end
  return table.concat(out, "\n")
end

local echo = {
  on_open = function(s) s:send("upgraded " .. s.request.uri) end,
  on_message = function(s, m) s:send(m) end,
}

return function(req)
  calls = calls + 1
  local uri = req.uri
  if ws.upgrade_request(req) then
    if uri == "/protocol-first" then
      return { listener = echo, protocol = ws.request_protocols(req)[1] }
    elseif uri == "/protocol-bad" then
      return { listener = echo, protocol = "not-offered" }
    elseif uri == "/upgrade-headers" then
      return { listener = echo, headers = { ["X-Extra"] = "yes" } }
    elseif uri == "/error" then
      error("handler boom on upgrade")
    elseif uri == "/refuse" then
      return { status = 403, headers = { ["Content-Type"] = "text/plain" }, body = "refused" }
    end
    return { listener = echo }
  end
  if uri == "/hello" then
    return { status = 200, headers = { ["Content-Type"] = "text/plain", ["X-Custom"] = "yes" },
             body = "hello world" }
  elseif uri == "/count" then
    return { status = 200, headers = { ["Content-Type"] = "text/plain" }, body = tostring(calls) }
  elseif uri == "/error" then
    error("handler boom")
  elseif uri:match("^/status/%d+$") then
    local code = tonumber(uri:match("%d+$"))
    return { status = code, headers = { ["Content-Type"] = "text/plain" }, body = "status " .. code }
  elseif uri == "/big" then
    return { status = 200, headers = { ["Content-Type"] = "application/octet-stream" },
             body = string.rep("0123456789abcdef", 65536) }
  elseif uri == "/empty" then
    return { status = 204, headers = {} }
  elseif uri == "/is-upgrade" then
    return { status = 200, headers = {}, body = tostring(not not ws.upgrade_request(req)) }
  elseif uri == "/protocols" then
    return { status = 200, headers = {}, body = table.concat(ws.request_protocols(req), ",") }
  elseif uri == "/websocket-response" then
    local checks = {
      tostring(not not ws.websocket_response({ listener = {} })),
      tostring(not not ws.websocket_response({ status = 200, body = "x" })),
    }
    return { status = 200, headers = {}, body = table.concat(checks, ",") }
  end
  return { status = 200, headers = { ["Content-Type"] = "text/plain" }, body = dump_request(req) }
end
