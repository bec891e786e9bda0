-- luaws.loader — loads a script into a fresh environment and keeps track of
-- the modules it requires from its own directory, so that a hot reload can
-- load those again too (system modules stay loaded).
local M = {}
local core = require "luaws.core" 

local dir = "."          -- the script's directory
local own = {}           -- module name -> file path, for the script's own modules
local missing = {}       -- paths a failed require looked for: watched, so creating one reloads
local env                -- the environment of the version being loaded
local captured = {}      -- path -> text: what the version being loaded was loaded from
local snapshot           -- path -> text of the last version that loaded, while loading from it
local loaded_once = false

-- A script's or module's text: from the file, or from the snapshot a
-- replacement worker starts with. The file is asked about first without
-- opening it: opening a FIFO would block the worker.
local function read_source(path)
  local text
  if snapshot then
    text = snapshot[path]
    if not text then return nil, path .. ": not in the last code that loaded" end
  else
    local kind = core.file_type(path)
    if kind == nil then return nil, "cannot open " .. path .. ": No such file or directory" end
    if kind ~= "file" then return nil, path .. ": not a regular file (a FIFO or a device?)" end
    local f, err = io.open(path, "rb")
    if not f then return nil, "cannot open " .. tostring(err) end
    text = f:read("a")
    f:close()
  end
  captured[path] = text
  return text
end

-- Compiles a script's or module's text (a first "#!" line is skipped, as loadfile does).
local function compile(path, text)
  return load((text:gsub("^#[^\n]*", "", 1)), "@" .. path, "bt", env)
end

-- Finds the script's own modules; placed before Lua's own searchers.
local function searcher(name)
  local pattern = dir .. "/?.lua;" .. dir .. "/?/init.lua"
  -- Like package.searchpath, but by stat: opening a FIFO would block.
  local file, path = name:gsub("%.", "/"), nil
  for candidate in pattern:gmatch("[^;]+") do
    local p = candidate:gsub("%?", file)
    if not path and core.file_type(p) then path = p end
  end
  if not path then
    for candidate in pattern:gmatch("[^;]+") do missing[#missing + 1] = (candidate:gsub("%?", file)) end
    return "\n\tno module '" .. name .. "' beside the script in " .. dir
  end
  own[name] = path   -- watched even if broken: fixing it must reload
  local text, err = read_source(path)
  if not text then error(err, 0) end
  local chunk, cerr = compile(path, text)
  if not chunk then error(cerr, 0) end
  return chunk, path
end

local options = {}
local searcher_installed = false

--- luaws test: the text of the next load of the script itself (t.reload(text)).
M.source = nil

local function is_dir(path) return core.file_type(path) == "directory" end

function M.setup(script, opts)
  options = opts or {}
  script = script:gsub("/+$", "")
  if is_dir(script) then
    options.directory = true
    dir = script
  else
    dir = script:match("^(.*)/[^/]*$") or "."
  end
  -- Once: luaws test sets up each script it loads.
  if not searcher_installed then table.insert(package.searchers, 2, searcher) end
  searcher_installed = true
end

-- Loads one script file: its handler (function or listener table), or nil
-- and a message with file:line.
local function load_file(path)
  local chunk, err
  if M.source then
    chunk, err = load(M.source, "@" .. path .. " (reloaded text)", "t", env)
    M.source = nil
  else
    local text
    text, err = read_source(path)
    if text then chunk, err = compile(path, text) end
  end
  local ok, result = false, err
  if chunk then ok, result = xpcall(chunk, debug.traceback) end
  if ok and type(result) ~= "function" and type(result) ~= "table" then
    ok, result = false, path .. ": the script must return a handler function or a listener table, not "
      .. type(result)
  end
  -- Typos (on_mesage): a warning with file:line, an error with --strict.
  if ok and type(result) == "table" then
    local checked, err = pcall(core.check_listener, result)
    if not checked then ok, result = false, err end
  end
  if not ok then return nil, tostring(result) end
  return result
end

local route_files = {}   -- directory mode: the scripts served, for watching

-- Directory mode: /name serves name.lua, / serves index.lua.
local function load_directory(path)
  local routes, files = {}, {}
  local names = {}
  if snapshot then   -- the routes of the last code that loaded
    for p in pairs(snapshot) do
      local name = p:sub(1, #path + 1) == path .. "/" and p:sub(#path + 2)
      if name and not name:find("/", 1, true) then names[#names + 1] = name end
    end
    table.sort(names)
  else
    names = core.scandir(path)
  end
  for _, name in ipairs(names) do
    local base = name:match("^(.+)%.lua$")
    if base then
      local file = path .. "/" .. name
      local handler, err = load_file(file)
      if not handler then return nil, err end
      files[#files + 1] = file
      routes[base == "index" and "/" or "/" .. base] = handler
    end
  end
  route_files = files
  return require("luaws").router(routes)
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
-- --workers N: every worker that loads a version keeps its text in the
-- run directory, so that a worker started later (a replacement) can start
-- with it when the files on disk do not load.
local function write_snapshot()
  local rundir = os.getenv("LUAWS_RUNDIR")
  if not rundir then return end
  local parts = { "return {\n" }
  for path, text in pairs(captured) do parts[#parts + 1] = string.format("[%q] = %q,\n", path, text) end
  parts[#parts + 1] = "}\n"
  local tmp = rundir .. "/snapshot.lua." .. core.pid()
  local f = io.open(tmp, "wb")
  if not f then return end
  f:write(table.concat(parts))
  f:close()
  os.rename(tmp, rundir .. "/snapshot.lua")
end

local function read_snapshot()
  local rundir = os.getenv("LUAWS_RUNDIR")
  local chunk = rundir and loadfile(rundir .. "/snapshot.lua", "t", {})
  local ok, snap = pcall(chunk or error)
  return ok and type(snap) == "table" and snap or nil
end

function M.load(script)
  local result, err = M.load_once(script)
  if result then
    loaded_once = true
    write_snapshot()
  elseif not loaded_once and not snapshot then
    -- A worker starting (a replacement) while the files do not load: the
    -- last code that loaded, if the other workers kept it.
    snapshot = read_snapshot()
    if snapshot then
      core.log("warn", "the script on disk does not load (" .. tostring(err):gsub("\n.*", "")
        .. "); starting with the last code that loaded")
      result, err = M.load_once(script)
      snapshot = nil
      if result then loaded_once = true end
    end
  end
  return result, err
end

function M.load_once(script)
  local saved, before = forget_own_modules(), own
  own, missing, captured = {}, {}, {}
  env = setmetatable({}, { __index = _G })
  local result, err
  if options.directory then result, err = load_directory(dir)
  else result, err = load_file(script) end
  local ok = result ~= nil
  if not ok then result = err end
  -- Reconnecting clients of this version take over (or end): luaws.reconnect.
  local reconnect = package.loaded["luaws.reconnect"]
  if reconnect then reconnect.loaded(ok) end
  if ok and options.console then
    -- --console: GET / (not an upgrade) shows the browser console.
    local handler, ws = result, require "luaws"
    if type(handler) == "table" then
      local listener = handler
      handler = function(request)
        if ws.upgrade_request(request) then return { listener = listener } end
        return { status = 426, body = "426 Upgrade Required\n" }
      end
    end
    result = function(request)
      if request.uri == "/" and request.method == "GET" and not ws.upgrade_request(request) then
        return ws.console(request)
      end
      return handler(request)
    end
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
  if options.directory then list = {} for i, f in ipairs(route_files) do list[i] = f end end
  for _, path in pairs(own) do list[#list + 1] = path end
  for _, path in ipairs(missing) do list[#list + 1] = path end
  table.sort(list, function(a, b) return a == script or (b ~= script and a < b) end)
  return list
end

return M
