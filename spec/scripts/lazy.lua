-- lazy.lua — for spec/lazy_spec.lua: a socket's own fields (request, data)
-- are made when first used, and a script cannot tell.
--
-- Upgrade paths (the client sends X-Tag: a name for its connection):
--   /plain, /query?..   the handler reads the request (and request.query on
--                       /query) and keeps only a dump of it and a weak box
--   /changed            the handler adds request.user and changes a header
--   /held               the listener's closures hold the request
--   /held_headers       ... hold only request.headers
--   /protocol           the handler picks the subprotocol "chat"
--   /idle               nothing kept at all (the heap figure)
-- Plain GET /gc: a full collection; the body is the Lua heap in bytes.
-- Messages: "check TAG", "ident", "set K V", "get K", "dataid", "override",
-- "fields", "held".
local ws = require "luaws"
local V = "v1"

-- A canonical text of a value: keys sorted, tables nested.
local function dump(v)
  if type(v) ~= "table" then return type(v) .. ":" .. tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = tostring(k) .. "=" .. dump(v[k]) end
  return "{" .. table.concat(out, ",") .. "}"
end

local dumps, boxes, addrs = {}, {}, {}   -- by X-Tag
local first = setmetatable({}, { __mode = "k" })   -- socket -> tostring(socket.request)

local function full_gc()
  collectgarbage()
  collectgarbage()
end

local shared = {
  on_message = function(socket, m)
    local cmd, a, b = m:match("^(%S+) ?(%S*) ?(%S*)$")
    if cmd == "check" then
      full_gc()
      -- the handler's table: collected unless something holds it
      local collected = boxes[a][1] == nil
      local r = socket.request
      first[socket] = first[socket] or tostring(r)
      socket:send(string.format("%s collected=%s same=%s handlers=%s", V, collected, dump(r) == dumps[a],
        tostring(r) == addrs[a]))
    elseif cmd == "ident" then
      full_gc()
      local r = socket.request
      socket.data.req_addr = socket.data.req_addr or tostring(r)
      socket:send(string.format("%s ident=%s twice=%s", V, tostring(r) == socket.data.req_addr,
        rawequal(socket.request, r)))
    elseif cmd == "set" then
      socket.data[a] = b
      socket:send(V .. " set")
    elseif cmd == "get" then
      socket:send(string.format("%s %s=%s", V, a, tostring(socket.data[a])))
    elseif cmd == "dataid" then
      full_gc()
      socket:send(tostring(socket.data))
    elseif cmd == "fields" then
      socket:send(ws.json.encode({ request = socket.request, protocol = socket.protocol or "none",
        id = socket.id, tostring = tostring(socket) }))
    elseif cmd == "override" then
      socket.data = nil
      socket.request = "mine"
      socket.id = "seven"
      socket.protocol = false
      full_gc()
      socket:send(string.format("%s %s %s %s %s", tostring(socket.data), tostring(socket.request),
        tostring(socket.id), tostring(socket.protocol), tostring(socket)))
    end
  end,
}

local idle = { on_message = function(socket, m) socket:send(m) end }

return function(request)
  if request.uri == "/gc" then
    full_gc()
    return { status = 200, body = string.format("%d", math.floor(collectgarbage("count") * 1024)) }
  end
  if request.uri == "/idle" then return { listener = idle } end
  local tag = request.headers["x-tag"] or "-"
  if request.uri == "/query" then local _ = request.query.room end
  if request.uri == "/changed" then
    request.user = "ann"
    request.headers["x-seen"] = "yes"
  end
  if request.uri == "/held" then
    return { listener = {
      on_message = function(socket)
        full_gc()
        socket:send("held=" .. tostring(rawequal(socket.request, request)))
      end,
    } }
  end
  if request.uri == "/held_headers" then
    local headers = request.headers
    return { listener = {
      on_message = function(socket)
        full_gc()
        headers["x-later"] = "1"
        socket:send(string.format("held=%s later=%s", rawequal(socket.request.headers, headers),
          tostring(socket.request.headers["x-later"])))
      end,
    } }
  end
  dumps[tag] = dump(request)
  boxes[tag] = setmetatable({ request }, { __mode = "v" })
  addrs[tag] = tostring(request)
  if request.uri == "/protocol" then return { listener = shared, protocol = "chat" } end
  return { listener = shared }
end
