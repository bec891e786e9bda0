-- A relay bot: for each client it opens a WebSocket to the target given in
-- the query string and relays messages both ways, text as text and binary as
-- binary; when either side closes, it closes the other.
--
--   luaws --port 8081 scripts/relay.lua
--   ws://127.0.0.1:8081/?target=ws://127.0.0.1:8080/       (echo.lua on 8080)
--
-- Only loopback targets are allowed unless RELAY_HOSTS lists others
-- ("127.0.0.1 localhost ::1" by default; "*" allows any host, which turns
-- the relay into an open proxy). A target that cannot be reached closes the
-- client with 1014 (bad gateway).
local ws = require "luaws"

local HOSTS = {}
for host in (os.getenv("RELAY_HOSTS") or "127.0.0.1 localhost ::1"):gmatch("[^,%s]+") do HOSTS[host] = true end

-- The target URL from the request, or nil and why not.
local function target_of(request)
  local url = request.query.target
  if not url then return nil, "give the target: /?target=ws://HOST:PORT/PATH" end
  local authority = url:match("^ws://([^/?#]+)")
  if not authority or authority:find("@") then return nil, "the target must be a ws:// URL" end
  local host = authority:match("^%[(.-)%]") or authority:match("^[^:]+")
  if not (HOSTS["*"] or HOSTS[host]) then return nil, "target host not allowed: " .. host end
  return url
end

-- The code to pass on: 1005 (no code given) becomes 1000; 1006 and 1015 only
-- describe what happened (abnormal end, TLS failure) and are never sent.
local function relayable(code)
  if code == 1005 then return 1000 end
  if code >= 1000 and code <= 1003 or code >= 1007 and code <= 1014 or code >= 3000 and code <= 4999 then return code end
end

local listener = {
  on_open = function(client)
    local data = client.data
    data.target = target_of(client.request)   -- checked before the upgrade
    data.pending = {}   -- what the client says before the target answers
    data.upstream = ws.connect(data.target, {
      on_open = function(upstream)
        if not client:is_open() then upstream:close(1001, "client left") return end
        for _, message in ipairs(data.pending) do upstream:send(message) end
        data.pending = nil
      end,
      on_message = function(upstream, message)
        client:send(message)   -- waits (yields) while the client reads slowly
      end,
      on_error = function(upstream, why)
        ws.log("warn", "relay to " .. data.target .. ": " .. tostring(why))
      end,
      on_close = function(upstream, code, reason)
        if not client:is_open() then return end
        if relayable(code) then client:close(relayable(code), reason)
        else client:close(1014, ("relay target: " .. (reason ~= "" and reason or "gone")):sub(1, 120)) end
      end,
    })
  end,

  on_message = function(client, message)
    if client.data.pending then table.insert(client.data.pending, message)
    else client.data.upstream:send(message) end
  end,

  on_close = function(client, code, reason)
    local upstream = client.data.upstream
    if upstream and upstream:is_open() then upstream:close(relayable(code) or 1001, reason) end
  end,
}

return function(request)
  if not ws.upgrade_request(request) then return ws.console(request) end
  local target, why = target_of(request)
  if not target then
    return { status = 400, headers = { ["content-type"] = "text/plain; charset=utf-8" }, body = why .. "\n" }
  end
  return { listener = listener }
end
