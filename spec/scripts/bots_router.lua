-- bots_spec: luaws.router. Every route answers with its own name, so a spec
-- can tell which one a request reached.
local ws = require "luaws"

local function named(name)
  return function(request)
    return { status = 200, headers = { ["x-route"] = name }, body = name .. " " .. request.uri }
  end
end

return ws.router {
  -- a listener table: upgrades only, plain HTTP gets 426
  ["/echo"] = {
    on_open = function(socket) socket:send("echo route " .. socket.request.uri) end,
    on_message = function(socket, message) socket:send(message) end,
  },
  -- a function: sees every request, plain or upgrade
  ["/fn"] = function(request)
    if ws.upgrade_request(request) then
      return { listener = { on_open = function(socket) socket:send("fn route upgraded") end,
                            on_message = function(socket, message) socket:send("fn: " .. message) end } }
    end
    return named("fn")(request)
  end,
  ["/api"] = named("api-exact"),
  ["/api/*"] = named("api-prefix"),
  ["/api/v2/*"] = named("api-v2-prefix"),
  ["/api/v2/special"] = named("api-v2-special"),
  ["/ws/*"] = { on_open = function(socket) socket:send("ws prefix " .. socket.request.uri) end },
  -- a router without default, mounted under a prefix: its misses are 404s
  ["/strict/*"] = ws.router { ["/strict/known"] = named("strict-known") },
  default = function(request)
    if ws.upgrade_request(request) then
      return { listener = { on_open = function(socket) socket:send("default route upgraded") end } }
    end
    return { status = 200, headers = { ["x-route"] = "default" }, body = "default " .. request.uri }
  end,
}
