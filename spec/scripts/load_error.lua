-- A script that raises while loading, on line 3.
local ws = require "luaws"
error("load-time failure on purpose")
return function() end
