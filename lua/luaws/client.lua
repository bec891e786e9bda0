-- luaws client URL — an interactive WebSocket client, like wscat.
-- Lines typed (or piped in) go as text messages; what arrives is printed,
-- one message per line. Commands: /ping [data], /close [code [reason]],
-- /binary HEX. At the end of input the client closes with 1000 and exits
-- once the server answered. Options (luaws client --help) come from main.c
-- in LUAWS_CLIENT_OPTS, one "name<TAB>value" per line.
--
-- Exit status: 0 after a close with 1000 or 1001, 1 after any other close
-- code, 2 when no connection was made (refused handshake, bad URL, no host).
local ws = require "luaws"
local core = require "luaws.core"

local url = os.getenv("LUAWS_CLIENT_URL")
local opts = { subprotocol = {}, header = {}, execute = {} }
for name, value in (os.getenv("LUAWS_CLIENT_OPTS") or ""):gmatch("([^\t\n]+)\t([^\n]*)") do
  if type(opts[name]) == "table" then table.insert(opts[name], value) else opts[name] = value end
end
local wait = tonumber(opts.wait) or (#opts.execute > 0 and 2 or 0)
local count = tonumber(opts.count)
local color = not opts["no-color"] and core.isatty(2) and os.getenv("TERM") ~= "dumb"
local closing, opened, received = false, false, 0

local function out(text)
  io.stdout:write(text, "\n")
  io.stdout:flush()
end

local function note(text)
  if color then text = "\27[2m" .. text .. "\27[0m" end
  io.stderr:write(text, "\n")
  io.stderr:flush()
end

local function fail(text, code)
  -- One line, without the Lua file:line of where it was raised.
  text = tostring(text):gsub("^[^\n]-%.lua:%d+: ", ""):gsub("\n.*", "")
  io.stderr:write("luaws client: ", text, "\n")
  io.stderr:flush()
  core.exit(code or 2)
end

local function hex(bytes)
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function unhex(text)
  text = text:gsub("%s", "")
  if #text % 2 == 1 or text:find("[^%x]") then return nil end
  return (text:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

local function close(socket, code, reason)
  if closing then return end
  local ok, err = pcall(socket.close, socket, code or 1000, reason)
  if ok then closing = true else note("cannot close: " .. tostring(err):gsub("^.-: ", "")) end
end

-- Closes after `wait` seconds (now if 0).
local function close_after_wait(socket)
  if wait <= 0 then close(socket) return end
  ws.after(math.floor(wait * 1000), function() if socket:is_open() then close(socket) end end)
end

local function send_line(socket, line)
  if opts.binary then
    local bytes = unhex(line)
    if bytes then socket:send(ws.buffer(bytes)) else note("--binary wants hex digits, e.g. 00ff10") end
  else
    socket:send(line)
  end
end

local function command(socket, line)
  local cmd, rest = line:match("^/(%a+)%s*(.*)$")
  if cmd == "ping" then
    socket:ping(rest ~= "" and rest or nil)
  elseif cmd == "close" then
    local code, reason = rest:match("^(%d*)%s*(.*)$")
    close(socket, tonumber(code) or 1000, reason)
  elseif cmd == "binary" then
    local bytes = unhex(rest)
    if bytes then socket:send(ws.buffer(bytes)) else note("/binary wants hex digits, e.g. /binary 00ff10") end
  else
    send_line(socket, line)
  end
end

local listener = {
  on_open = function(socket)
    opened = true
    note("connected to " .. url .. (socket.protocol and " (subprotocol " .. socket.protocol .. ")" or "")
      .. (#opts.execute > 0 and "" or " (Ctrl-D or /close to end)"))
    if #opts.execute > 0 then
      for _, message in ipairs(opts.execute) do send_line(socket, message) end
      if not count or opts.wait then close_after_wait(socket) end
      return
    end
    core.read_stdin(function(line)
      if not socket:is_open() then return end
      if line == nil then
        close_after_wait(socket)
      elseif line:sub(1, 1) == "/" and not line:find("^//") then
        command(socket, line)
      else
        send_line(socket, (line:gsub("^//", "/")))
      end
    end)
  end,
  on_message = function(socket, message)
    if type(message) == "string" then out(message)
    else out("[binary " .. #message .. " bytes] " .. hex(message:string())) end
    received = received + 1
    if count and received >= count then close(socket) end
  end,
  on_ping = function(socket, data)
    if opts["show-ping-pong"] then note("[ping" .. (#data > 0 and " " .. data:string() or "") .. "]") end
    socket:pong(data)
  end,
  on_pong = function(socket, data)
    -- Always: the answer to a /ping.
    note("[pong" .. (#data > 0 and " " .. data:string() or "") .. "]")
  end,
  on_error = function(socket, err)
    local res = socket.response
    if not opened and res and res.status and res.status ~= 101 then
      -- A refused handshake: the status and what the server said.
      io.stderr:write("luaws client: the server refused the WebSocket handshake: HTTP ", res.status, " ",
        core.http_reason(res.status), "\n")
      if res.body and res.body ~= "" then io.stderr:write(res.body, res.body:sub(-1) == "\n" and "" or "\n") end
      io.stderr:flush()
      return
    end
    if not opened then
      io.stderr:write("luaws client: cannot connect to ", url, ": ", tostring(err), "\n")
      io.stderr:flush()
      return
    end
    note("error: " .. tostring(err))
  end,
  on_close = function(socket, code, reason)
    if opened then note("closed " .. code .. (reason ~= "" and " " .. reason or "")) end
    -- core.exit lets the loop turn first: our reply to the server's close
    -- frame leaves before the process ends.
    if not opened then core.exit(2)
    else core.exit((code == 1000 or code == 1001) and 0 or 1) end
  end,
}

-- Connect once the loop runs (loading happens first).
ws.after(0, function()
  local ok, err = pcall(ws.connect, url, listener, { protocols = opts.subprotocol, headers = (function()
    local h = {}
    for _, line in ipairs(opts.header) do
      local name, value = line:match("^%s*([^:%s]+)%s*:%s*(.-)%s*$")
      if not name then fail("--header wants 'Name: value', not '" .. line .. "'") return h end
      h[name] = value
    end
    return h
  end)() })
  if not ok then fail(err) end
end)

-- No server side: any request gets 404.
return function() return { status = 404 } end
