-- bots_spec: luaws.json and socket:send_json. A text message is decoded and
-- sent back as {got = value, kind = type}; bad JSON gets {error = ...}.
local ws = require "luaws"
local json = ws.json

return {
  on_open = function(socket)
    socket:send_json { hello = "json", empty = {}, slash = "a/b", null = json.null, list = { 1, 2, 3 } }
  end,
  on_message = function(socket, message)
    if message == "encodings" then
      socket:send(table.concat({ json.encode({}), json.encode("a/b"), json.encode({ 1, "x", true }),
        json.encode(json.null), json.encode(1.5), json.encode("é\n\"") }, " "))
    elseif message == "async" then
      socket:send_json({ async = true }, function() socket:send("succeed ran") end,
                                         function(err) socket:send("fail ran " .. tostring(err)) end)
    elseif message == "unencodable" then
      local ok, err = pcall(socket.send_json, socket, { f = print })
      socket:send("unencodable " .. tostring(ok) .. " " .. tostring(err ~= nil))
    elseif type(message) ~= "string" then
      socket:send_json { error = "binary" }
    else
      local ok, value = pcall(json.decode, message)
      if ok then
        socket:send_json { got = value, kind = type(value), is_null = (value == json.null) }
      else
        socket:send_json { error = tostring(value) }
      end
    end
  end,
  on_close = function(socket)
    local ok, err = socket:send_json { too = "late" }
    ws.log("info", "bots-json send_json after close:", tostring(ok), tostring(err))
  end,
}
