-- targets.lua — start a server for the conformance suite: luaws with
-- spec/scripts/conformance_echo.lua, or one of the independent peers under
-- spec/conformance/peers/, through spec/support/server.lua (free port, taken
-- from the server's "listening on ws://HOST:PORT" line).
--
--   local targets = require "spec.conformance.targets"
--   local srv = targets.start("luaws", "shared")   -- or "node", "python"
--   ... srv.host, srv.port ...
--   srv:stop()
local server = require "spec.support.server"

local T = {}

T.NAMES = { "luaws", "node", "python" }
T.MODES = { "off", "shared", "dedicated" }

-- Does this luaws know --deflate? (Until it does, it speaks no extension.)
function T.luaws_has_deflate()
  local _, out = server.run { "--help" }
  return out:find("--deflate", 1, true) ~= nil
end

local PEERS = server.ROOT .. "/spec/conformance/peers/"

function T.available(name)
  if name == "luaws" then return server.available() end
  if name == "node" then
    return os.execute("NODE_PATH=/usr/share/nodejs node -e \"require('ws')\" >/dev/null 2>&1") == true
  end
  if name == "python" then
    return os.execute("/usr/bin/python3 -c 'import websockets' >/dev/null 2>&1") == true
  end
  return false
end

-- mode: "off" | "shared" | "dedicated" | nil (luaws without --deflate).
function T.start(name, mode, extra)
  extra = extra or {}
  if name == "luaws" then
    local args = {}
    if mode then args[#args + 1] = "--deflate=" .. mode end
    for _, a in ipairs(extra.args or {}) do args[#args + 1] = a end
    return server.start { script = "spec/scripts/conformance_echo.lua", args = args,
                          log_level = extra.log_level or "info" }
  elseif name == "node" then
    return server.start { command = { "node", PEERS .. "node_echo.js", "--deflate=" .. (mode or "dedicated") },
                          env = { NODE_PATH = "/usr/share/nodejs" } }
  elseif name == "python" then
    return server.start { command = { "/usr/bin/python3", PEERS .. "python_echo.py", "--deflate=" .. (mode or "dedicated") } }
  end
  error("unknown target " .. tostring(name))
end

return T
