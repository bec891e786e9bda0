-- bots_spec: a timer started at load time logs a tick with the number of
-- the version that started it (counted in the worker's real _G, which every
-- version shares). A reload must end the old version's timer.
local ws = require "luaws"

local version = (rawget(_G, "bots_versions") or 0) + 1
rawset(_G, "bots_versions", version)

ws.every(20, function() ws.log("info", "bots-load-tick v" .. version) end)

return {
  on_open = function(socket) socket:send("version " .. version) end,
  on_message = function(socket, message) socket:send("v" .. version .. " " .. message) end,
}
