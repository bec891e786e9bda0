-- permessage-deflate with clients nobody here wrote: Python websockets and
-- node ws negotiate it with luaws in each --deflate mode and round-trip
-- text and binary messages of 0 B to 16 MiB (the default --max-message).
local server = require "spec.support.server"
local cjson = require "cjson"

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  p:close()
  local line = out:match("(%b{})%s*$")
  assert(line, "no JSON from " .. cmd .. ":\n" .. out:sub(-2000))
  return cjson.decode(line)
end

local clients = {
  { name = "Python websockets", cmd = function(url) return "/usr/bin/python3 spec/support/py_deflate.py " .. url end },
  { name = "node ws", cmd = function(url) return "NODE_PATH=/usr/share/nodejs node spec/support/node_deflate.js " .. url end },
}

for _, mode in ipairs { "shared", "dedicated" } do
  describe("permessage-deflate (--deflate=" .. mode .. ")", function()
    local srv
    lazy_setup(function()
      srv = server.start { script = "spec/scripts/conformance_echo.lua", args = { "--deflate", mode } }
    end)
    lazy_teardown(function() if srv then srv:stop() end end)

    for _, client in ipairs(clients) do
      it(client.name .. " negotiates it and round-trips 0 B to 16 MiB", function()
        local r = run(client.cmd("ws://127.0.0.1:" .. srv.port .. "/"))
        assert.is_nil(r.error)
        assert.truthy(r.extensions and r.extensions:find("permessage%-deflate"), tostring(r.extensions))
        if mode == "shared" then
          assert.truthy(r.extensions:find("server_no_context_takeover", 1, true), r.extensions)
        end
        assert.same({}, r.bad)
        assert.equal(16, #r.ok)
      end)
    end
  end)
end
