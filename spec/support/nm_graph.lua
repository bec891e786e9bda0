-- The link-level dependency graph of a build's objects, read with nm(1).
--
--   local G = require "spec.support.nm_graph"
--   local g = assert(G.load("build/normal", "src"))
--   g.objects                -- sorted names: { "client.o", "conn.o", ... }
--   g.defs["conn.o"]         -- set of the global symbols conn.o defines
--   g.undefs["conn.o"]       -- set of the symbols conn.o leaves undefined
--   g.edges["conn.o"]["log.o"] -- sorted list of symbols conn.o takes from log.o
--   G.sccs(g)                -- strongly connected components (Tarjan)
--
-- A depends on B when A has an undefined symbol that B defines (globally).
-- When a source directory is given, only the objects the Makefile links are
-- kept (OBJS = src/*.c -> build/<kind>/*.o): an object left behind by a
-- source that was deleted or renamed is reported in g.stale and ignored, and
-- a source without its object is reported in g.missing, and an object
-- older than its source in g.older.
local M = {}

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function lines(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"exit=$?\""))
  local out = p:read("a")
  p:close()
  local status = tonumber(out:match("exit=(%d+)%s*$"))
  out = out:gsub("exit=%d+%s*$", "")
  return out, status
end

local function basenames(dir, suffix)
  local out, status = lines("ls -1 " .. sh_quote(dir))
  local names = {}
  if status ~= 0 then return names end
  for name in out:gmatch("[^\n]+") do
    if name:sub(-#suffix) == suffix then names[#names + 1] = name:sub(1, -#suffix - 1) end
  end
  table.sort(names)
  return names
end

-- nm letters: uppercase = global. U = undefined; w/v = weak undefined
-- (lowercase w/v in nm -g output); every other uppercase letter (T, D, B, R,
-- C, W, V, G, S, A, ...) plus u (unique global) and i (GNU ifunc) = defined.
local function classify(letter)
  if letter == "U" or letter == "w" or letter == "v" then return "undef" end
  if letter:match("%u") or letter == "u" or letter == "i" then return "def" end
  return nil
end

-- The symbols of some objects, in one nm run (nm is slow to start):
-- { [path] = { defs = set, undefs = set } }.
function M.symbols(paths)
  local quoted = {}
  for i, p in ipairs(paths) do quoted[i] = sh_quote(p) end
  local out, status = lines("nm -A -P -g " .. table.concat(quoted, " "))
  if status ~= 0 then return nil, "nm failed:\n" .. out end
  local result = {}
  for _, p in ipairs(paths) do result[p] = { defs = {}, undefs = {} } end
  for line in out:gmatch("[^\n]+") do
    local path, name, letter = line:match("^(.-%.o):%s+(%S+)%s+(%a)")
    local kind = letter and classify(letter)
    local r = path and result[path]
    if r and kind == "def" then r.defs[name] = true elseif r and kind == "undef" then r.undefs[name] = true end
  end
  return result
end

-- { [path] = mtime } in one stat run.
local function mtimes(paths)
  local quoted = {}
  for i, p in ipairs(paths) do quoted[i] = sh_quote(p) end
  local out = lines("stat -c '%Y %n' " .. table.concat(quoted, " "))
  local t = {}
  for secs, path in out:gmatch("(%d+) ([^\n]+)") do t[path] = tonumber(secs) end
  return t
end

function M.load(objdir, srcdir)
  local names = basenames(objdir, ".o")
  if #names == 0 then
    return nil, "no objects in " .. objdir .. "/*.o: build them first (run `make`)"
  end
  local g = { dir = objdir, objects = {}, defs = {}, undefs = {}, edges = {},
              stale = {}, missing = {}, older = {}, providers = {} }
  local linked
  if srcdir then
    linked = {}
    for _, s in ipairs(basenames(srcdir, ".c")) do linked[s] = true end
    local have = {}
    for _, n in ipairs(names) do have[n] = true end
    for s in pairs(linked) do
      if not have[s] then g.missing[#g.missing + 1] = s .. ".o" end
    end
    table.sort(g.missing)
  end
  local paths, stamp_paths = {}, {}
  for _, n in ipairs(names) do
    local obj = n .. ".o"
    if linked and not linked[n] then
      g.stale[#g.stale + 1] = obj
    else
      g.objects[#g.objects + 1] = obj
      paths[#paths + 1] = objdir .. "/" .. obj
      if linked then
        stamp_paths[#stamp_paths + 1] = objdir .. "/" .. obj
        stamp_paths[#stamp_paths + 1] = srcdir .. "/" .. n .. ".c"
      end
    end
  end
  if #g.objects == 0 then
    return nil, "no object in " .. objdir .. "/ has a source in " .. srcdir .. "/: build them first (run `make`)"
  end
  local syms, err = M.symbols(paths)
  if not syms then return nil, err end
  local stamps = #stamp_paths > 0 and mtimes(stamp_paths) or {}
  for _, obj in ipairs(g.objects) do
    local r = syms[objdir .. "/" .. obj]
    g.defs[obj], g.undefs[obj] = r.defs, r.undefs
    if next(r.defs) == nil and next(r.undefs) == nil then
      return nil, "nm listed no global symbol for " .. objdir .. "/" .. obj .. " (unreadable object?)"
    end
    local mo, ms = stamps[objdir .. "/" .. obj], stamps[srcdir .. "/" .. obj:sub(1, -3) .. ".c"]
    if mo and ms and mo < ms then g.older[#g.older + 1] = obj end
  end
  -- symbol -> objects defining it
  for _, obj in ipairs(g.objects) do
    for sym in pairs(g.defs[obj]) do
      local list = g.providers[sym] or {}
      list[#list + 1] = obj
      g.providers[sym] = list
    end
  end
  local nedges = 0
  for _, a in ipairs(g.objects) do
    local out = {}
    for sym in pairs(g.undefs[a]) do
      for _, b in ipairs(g.providers[sym] or {}) do
        if b ~= a then
          if not out[b] then out[b] = {}; nedges = nedges + 1 end
          table.insert(out[b], sym)
        end
      end
    end
    for _, syms in pairs(out) do table.sort(syms) end
    g.edges[a] = out
  end
  g.nedges = nedges
  return g
end

-- Sorted list of { from, to, symbols } for every edge.
function M.edge_list(g)
  local list = {}
  for _, a in ipairs(g.objects) do
    for b, syms in pairs(g.edges[a]) do list[#list + 1] = { from = a, to = b, symbols = syms } end
  end
  table.sort(list, function(x, y)
    if x.from ~= y.from then return x.from < y.from end
    return x.to < y.to
  end)
  return list
end

-- Tarjan's strongly connected components; each sorted, largest first.
function M.sccs(g)
  local index, low, onstack, stack, comps, counter = {}, {}, {}, {}, {}, 0
  local function succ(v)
    local s = {}
    for w in pairs(g.edges[v]) do s[#s + 1] = w end
    table.sort(s)
    return s
  end
  local function connect(v)
    counter = counter + 1
    index[v], low[v] = counter, counter
    stack[#stack + 1], onstack[v] = v, true
    for _, w in ipairs(succ(v)) do
      if not index[w] then
        connect(w)
        low[v] = math.min(low[v], low[w])
      elseif onstack[w] then
        low[v] = math.min(low[v], index[w])
      end
    end
    if low[v] == index[v] then
      local comp = {}
      repeat
        local w = table.remove(stack)
        onstack[w] = nil
        comp[#comp + 1] = w
      until w == v
      table.sort(comp)
      comps[#comps + 1] = comp
    end
  end
  for _, v in ipairs(g.objects) do
    if not index[v] then connect(v) end
  end
  table.sort(comps, function(a, b)
    if #a ~= #b then return #a > #b end
    return a[1] < b[1]
  end)
  return comps
end

-- The edges inside one component, for printing a cycle.
function M.inner_edges(g, comp)
  local inside = {}
  for _, o in ipairs(comp) do inside[o] = true end
  local list = {}
  for _, e in ipairs(M.edge_list(g)) do
    if inside[e.from] and inside[e.to] then list[#list + 1] = e end
  end
  return list
end

function M.format_edge(e, max)
  max = max or 8
  local syms = {}
  for i = 1, math.min(#e.symbols, max) do syms[i] = e.symbols[i] end
  local more = #e.symbols > max and (", ... (+" .. (#e.symbols - max) .. ")") or ""
  return ("%s -> %s: %s%s"):format(e.from, e.to, table.concat(syms, ", "), more)
end

return M
