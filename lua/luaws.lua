-- luaws — the Lua half of the module (Ring's ring.websocket for Lua 5.4).
-- The C core registers luaws.core (buffers, logging); what is easier to
-- write and read in Lua lives here.
local core = require "luaws.core"

local M = {
  version = core.version,
  buffer = core.buffer,
  log = core.log,
}

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

return M
