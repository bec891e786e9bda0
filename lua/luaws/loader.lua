-- luaws.loader — loads a script into a fresh environment and keeps track of
-- the modules it requires from its own directory, so that a hot reload can
-- load those again too (system modules stay loaded).
local M = {}

local dir = "."          -- the script's directory
local own = {}           -- module name -> file path, for the script's own modules
local missing = {}       -- paths a failed require looked for: watched, so creating one reloads
local env                -- the environment of the version being loaded

-- Finds the script's own modules; placed before Lua's own searchers.
local function searcher(name)
  local pattern = dir .. "/?.lua;" .. dir .. "/?/init.lua"
  local path = package.searchpath(name, pattern)
  if not path then
    local file = name:gsub("%.", "/")
    for candidate in pattern:gmatch("[^;]+") do missing[#missing + 1] = (candidate:gsub("%?", file)) end
    return "\n\tno module '" .. name .. "' beside the script in " .. dir
  end
  own[name] = path   -- watched even if broken: fixing it must reload
  local chunk, err = loadfile(path, "bt", env)
  if not chunk then error(err, 0) end
  return chunk, path
end

function M.setup(script)
  dir = script:match("^(.*)/[^/]*$") or "."
  table.insert(package.searchers, 2, searcher)
end

local function forget_own_modules()
  local saved = {}
  for name in pairs(own) do
    saved[name] = package.loaded[name]
    package.loaded[name] = nil
  end
  return saved
end

--- Loads script; returns its handler (function or listener table), or nil
--- and a message that starts with file:line.
function M.load(script)
  local saved, before = forget_own_modules(), own
  own, missing = {}, {}
  env = setmetatable({}, { __index = _G })
  local chunk, err = loadfile(script, "bt", env)
  local ok, result = false, err
  if chunk then ok, result = xpcall(chunk, debug.traceback) end
  if ok and type(result) ~= "function" and type(result) ~= "table" then
    ok, result = false, script .. ": the script must return a handler function or a listener table, not "
      .. type(result)
  end
  if not ok then
    -- The old version keeps serving with the modules it had; keep watching
    -- every file either version used, so fixing any of them reloads.
    for name in pairs(own) do package.loaded[name] = nil end
    for name, mod in pairs(saved) do package.loaded[name] = mod end
    for name, path in pairs(before) do own[name] = own[name] or path end
    return nil, tostring(result)
  end
  return result
end

--- The files a reload depends on: the script and its own modules.
function M.files(script)
  local list = { script }
  for _, path in pairs(own) do list[#list + 1] = path end
  for _, path in ipairs(missing) do list[#list + 1] = path end
  table.sort(list, function(a, b) return a == script or (b ~= script and a < b) end)
  return list
end

return M
