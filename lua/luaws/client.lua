-- luaws client URL — an interactive WebSocket client, like wscat.
-- Lines typed (or piped in) go as text messages; what arrives is printed,
-- one message per line. Commands: /ping [data], /close [code [reason]],
-- /binary HEX. At the end of input the client closes with 1000 and exits
-- once the server answered: 0 after a normal close, 1 otherwise.
local ws = require "luaws"
local core = require "luaws.core"

local url = os.getenv("LUAWS_CLIENT_URL")
local closing = false

local function out(text)
  io.stdout:write(text, "\n")
  io.stdout:flush()
end

local function note(text)
  io.stderr:write(text, "\n")
  io.stderr:flush()
end

local function hex(bytes)
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function unhex(text)
  text = text:gsub("%s", "")
  if #text % 2 == 1 or text:find("[^%x]") then return nil end
  return (text:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

local function command(socket, line)
  local cmd, rest = line:match("^/(%a+)%s*(.*)$")
  if cmd == "ping" then
    socket:ping(rest ~= "" and rest or nil)
  elseif cmd == "close" then
    local code, reason = rest:match("^(%d*)%s*(.*)$")
    closing = true
    socket:close(tonumber(code) or 1000, reason)
  elseif cmd == "binary" then
    local bytes = unhex(rest)
    if bytes then socket:send(ws.buffer(bytes)) else note("/binary wants hex digits, e.g. /binary 00ff10") end
  else
    socket:send(line)
  end
end

local listener = {
  on_open = function(socket)
    note("connected to " .. url .. " (Ctrl-D or /close to end)")
    core.read_stdin(function(line)
      if not socket:is_open() then return end
      if line == nil then
        closing = true
        socket:close(1000)
      elseif line:sub(1, 1) == "/" and not line:find("^//") then
        command(socket, line)
      else
        socket:send((line:gsub("^//", "/")))
      end
    end)
  end,
  on_message = function(socket, message)
    if type(message) == "string" then out(message)
    else out("[binary " .. #message .. " bytes] " .. hex(message:string())) end
  end,
  on_ping = function(socket, data)
    socket:pong(data)
  end,
  on_pong = function(socket, data)
    note("[pong" .. (#data > 0 and " " .. data:string() or "") .. "]")
  end,
  on_error = function(socket, err)
    note("error: " .. tostring(err))
  end,
  on_close = function(socket, code, reason)
    note("closed " .. code .. (reason ~= "" and " " .. reason or ""))
    -- core.exit lets the loop turn first: our reply to the server's close
    -- frame leaves before the process ends.
    core.exit((code == 1000 or code == 1001) and 0 or 1)
  end,
}

-- Connect once the loop runs (loading happens first).
ws.after(0, function()
  local ok, err = pcall(ws.connect, url, listener)
  if not ok then
    note("luaws client: " .. tostring(err))
    core.exit(2)
  end
end)

-- No server side: any request gets 404.
return function() return { status = 404 } end
