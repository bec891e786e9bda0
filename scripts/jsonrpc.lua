-- A JSON-RPC 2.0 calculator (https://www.jsonrpc.org/specification): every
-- text message is one request or a batch (an array of requests).
--
--   → {"jsonrpc": "2.0", "method": "add", "params": [2, 3], "id": 1}
--   ← {"jsonrpc": "2.0", "result": 5, "id": 1}
--
-- Methods add, sub, mul and div take params [a, b] or {"a": a, "b": b}.
-- Errors: -32700 parse error, -32600 invalid request, -32601 method not
-- found, -32602 invalid params, and 1 "division by zero" (an application
-- error). Notifications (no "id") get no answer; neither does a batch of them.
local ws = require "luaws"
local json = ws.json

local methods = {
  add = function(a, b) return a + b end,
  sub = function(a, b) return a - b end,
  mul = function(a, b) return a * b end,
  div = function(a, b)
    if b == 0 then error({ code = 1, message = "division by zero" }, 0) end
    return a / b
  end,
}

local function failure(id, code, message)
  return { jsonrpc = "2.0", id = id, error = { code = code, message = message } }
end

local function is_number(x) return type(x) == "number" and x == x and math.abs(x) ~= math.huge end

-- The two operands from positional or named params, or nil.
local function operands(params)
  if type(params) ~= "table" then return nil end
  local a, b = params[1], params[2]
  if a == nil and b == nil then a, b = params.a, params.b end   -- named
  local n = 0
  for _ in pairs(params) do n = n + 1 end
  if n ~= 2 or not is_number(a) or not is_number(b) then return nil end
  return a, b
end

-- One request (already decoded): its response, or nil for a notification.
local function call(req)
  if type(req) ~= "table" then return failure(json.null, -32600, "Invalid Request") end
  local id = req.id
  local valid_id = id == nil or id == json.null or type(id) == "string" or type(id) == "number"
  if req.jsonrpc ~= "2.0" or type(req.method) ~= "string" or not valid_id
      or (req.params ~= nil and type(req.params) ~= "table") then
    return failure(valid_id and id or json.null, -32600, "Invalid Request")
  end
  local method = methods[req.method]
  local response
  if not method then
    response = failure(id, -32601, "Method not found")
  else
    local a, b = operands(req.params)
    if not a then
      response = failure(id, -32602, "Invalid params: give two numbers, [a, b] or {\"a\": a, \"b\": b}")
    else
      local ok, result = pcall(method, a, b)
      if ok and not is_number(result) then ok, result = false, { code = 2, message = "result out of range" } end
      if ok then
        response = { jsonrpc = "2.0", id = id, result = result }
      elseif type(result) == "table" then
        response = failure(id, result.code, result.message)
      else
        ws.log("error", "jsonrpc " .. req.method .. ": " .. tostring(result))
        response = failure(id, -32603, "Internal error")
      end
    end
  end
  if id == nil then return nil end   -- a notification: no answer, whatever happened
  return response
end

-- One message: the text to answer with, or nil.
local function handle(text)
  local ok, decoded = pcall(json.decode, text)
  if not ok then return json.encode(failure(json.null, -32700, "Parse error")) end
  -- lua-cjson decodes [] and {} alike: a batch is a message that starts with "[".
  if not text:match("^%s*%[") then
    local response = call(decoded)
    return response and json.encode(response)
  end
  if #decoded == 0 then return json.encode(failure(json.null, -32600, "Invalid Request")) end
  local responses = {}
  for _, req in ipairs(decoded) do responses[#responses + 1] = call(req) end
  if #responses == 0 then return nil end   -- only notifications
  return json.encode(responses)
end

return function(request)
  if not ws.upgrade_request(request) then return ws.console(request) end
  -- Agree on the "jsonrpc" subprotocol when the client offers it.
  local protocol
  for _, p in ipairs(ws.request_protocols(request)) do if p == "jsonrpc" then protocol = p end end
  return {
    protocol = protocol,
    listener = {
      on_message = function(socket, message)
        if type(message) ~= "string" then
          socket:close(1003, "JSON-RPC comes in text messages")
          return
        end
        local answer = handle(message)
        if answer then socket:send(answer) end
      end,
    },
  }
end
