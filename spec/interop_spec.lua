-- Independent clients: Python's `websockets` and node's `ws` run a
-- greeting / text / binary / fragmented / ping / "exit" session against
-- scripts with the semantics of scripts/echo.lua. The node reference server
-- runs the same session as a control for the clients themselves.
local cjson = require "cjson"
local server = require "spec.support.server"
local H = require "spec.support.helpers"

local PY = "/usr/bin/python3"
local NODE = "/usr/bin/node"
local NODE_PATH = "/usr/share/nodejs"

local function run_client(cmd)
  local h = assert(io.popen("timeout -s KILL 30 " .. cmd .. " 2>&1"))
  local out = h:read("a")
  local ok, how, code = h:close()
  local line = out:match("(%b{})%s*$")
  assert(line, "client printed no JSON (" .. tostring(how) .. " " .. tostring(code) .. "):\n" .. out)
  return cjson.decode(line), out
end

local clients = {
  python = function(uri)
    return run_client(PY .. " " .. server.quote(server.ROOT .. "/spec/support/py_client.py") .. " " .. uri)
  end,
  node = function(uri)
    return run_client("env NODE_PATH=" .. NODE_PATH .. " " .. NODE .. " "
      .. server.quote(server.ROOT .. "/spec/support/node_client.js") .. " " .. uri)
  end,
}

local function check(r, raw, who)
  assert.is_nil(r.error, raw)
  assert.is_nil(r.unexpected, raw)
  assert.equal("I will echo your messages", r.greeting)
  assert.equal("hello from " .. who .. " ✓", r.text)
  assert.is_true(r.binary_ok, "binary echo differs")
  if who == "python" then assert.equal("bytes", r.binary_type) else assert.is_true(r.binary_is_binary) end
  assert.is_true(r.big_text_ok, "big text echo differs")
  assert.equal("fragmented", r.fragmented)
  assert.truthy(r.pong, "no pong")
  assert.equal(1000, r.close_code)
end

local targets = {
  { name = "luaws with spec/scripts/echo.lua", start = function() return H.start { script = "spec/scripts/echo.lua" } end },
  { name = "luaws with scripts/echo.lua", start = function() return H.start { script = "scripts/echo.lua" } end,
    optional = "scripts/echo.lua" },
  { name = "the node ws reference server (control)", start = function()
      return server.start { command = { "env", "NODE_PATH=" .. NODE_PATH, NODE, "spec/support/node_echo_server.js" } }
    end },
}

for _, t in ipairs(targets) do
  describe("interop with " .. t.name, function()
    local srv
    lazy_setup(function()
      if t.optional and not server.exists(server.ROOT .. "/" .. t.optional) then return end
      srv = t.start()
    end)
    lazy_teardown(function() if srv then srv:stop() end end)

    for who, client in pairs(clients) do
      it(who .. " client: greeting, echo of text and binary, fragments, ping, close 1000 on exit", function()
        if not srv then pending(t.optional .. " does not exist"); return end
        local r, raw = client("ws://127.0.0.1:" .. srv.port .. "/")
        check(r, raw, who)
      end)
    end
  end)
end
