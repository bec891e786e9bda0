-- The layering of src/ at link level (issue 13), read from the built objects
-- with nm(1) so that it cannot rot:
--   protocol  frame, utf8, http, deflate, ws_session, xalloc, store,
--             proxy_proto, forwarded                                 (pure: no libuv, no Lua)
--   transport conn, ws, client, server, tls, workers, reload, static, ...
--   binding   every lua_*.o
--   program   main.o (may use anything)
-- A depends on B when A has an undefined symbol that B defines. Asserted:
--   1. no object other than lua_*.o and main.o uses a symbol of a lua_*.o;
--   2. no strongly connected component (dependency cycle) has more than 2
--      objects;
--   3. the protocol objects take symbols only from one another, and none of
--      uv_*, lua_*, luaL_*, luaopen_*.
-- The objects are build/normal/*.o as `make` leaves them (build first); only
-- those with a source in src/ are counted, as the Makefile links them.
-- LUAWS_LAYERING_OBJDIR / LUAWS_LAYERING_SRCDIR point it at another build.
local G = require "spec.support.nm_graph"

-- The objects of the binary under test: build/asan for luaws-asan.
local BIN = os.getenv("LUAWS_BIN") or ""
local OBJDIR = os.getenv("LUAWS_LAYERING_OBJDIR") or (BIN:match("luaws%-asan$") and "build/asan" or "build/normal")
local SRCDIR = os.getenv("LUAWS_LAYERING_SRCDIR") or "src"
local MAX_CYCLE = 2
local PROTOCOL = { "frame.o", "utf8.o", "http.o", "deflate.o", "ws_session.o", "xalloc.o", "store.o",
                   "proxy_proto.o", "forwarded.o" }
local FOREIGN = { "^uv_", "^lua_", "^luaL_", "^luaopen_" }

local function is_binding(obj) return obj:match("^lua_.*%.o$") ~= nil end
local function is_program(obj) return obj == "main.o" end

local loaded, load_err
local function graph()
  if not loaded and not load_err then
    loaded, load_err = G.load(OBJDIR, SRCDIR)
  end
  assert(loaded, load_err)
  return loaded
end

local function upward_edges(g)
  local bad = {}
  for _, e in ipairs(G.edge_list(g)) do
    if not is_binding(e.from) and not is_program(e.from) and is_binding(e.to) then
      bad[#bad + 1] = e
    end
  end
  return bad
end

local function cycles(g)
  local list = {}
  for _, comp in ipairs(G.sccs(g)) do
    if #comp > 1 then list[#list + 1] = comp end
  end
  return list
end

local function describe_cycles(g, comps)
  local out = {}
  for _, comp in ipairs(comps) do
    out[#out + 1] = ("%d objects: %s"):format(#comp, table.concat(comp, " "))
    for _, e in ipairs(G.inner_edges(g, comp)) do out[#out + 1] = "    " .. G.format_edge(e) end
  end
  return table.concat(out, "\n")
end

describe("link-level layering (nm of " .. OBJDIR .. ")", function()
  it("finds every object the Makefile links", function()
    local g = graph()
    assert(#g.missing == 0, ("no object in %s for: %s (run `make`)")
      :format(OBJDIR, table.concat(g.missing, " ")))
  end)

  it("prints the summary", function()
    local g = graph()
    local comps = cycles(g)
    local largest = comps[1] and #comps[1] or 0
    print(("layering: %d objects, %d edges, %d upward edges, largest cycle %d")
      :format(#g.objects, g.nedges, #upward_edges(g), largest))
    if #comps > 0 then
      local names = {}
      for i, comp in ipairs(comps) do names[i] = "{" .. table.concat(comp, " ") .. "}" end
      print("layering: cycles " .. table.concat(names, " "))
    end
    if #g.stale > 0 then
      print("layering: ignored (no source in " .. SRCDIR .. "/): " .. table.concat(g.stale, " "))
    end
    if #g.older > 0 then
      print("layering: warning, older than their source (rebuild): " .. table.concat(g.older, " "))
    end
  end)

  it("has no edge from outside the Lua binding (and main.o) into a lua_*.o", function()
    local g = graph()
    local bad = upward_edges(g)
    local msg = {}
    for i, e in ipairs(bad) do msg[i] = "  " .. G.format_edge(e, 1000) end
    assert(#bad == 0, ("%d upward edge(s) into the Lua binding:\n%s")
      :format(#bad, table.concat(msg, "\n")))
  end)

  it("has no dependency cycle of more than " .. MAX_CYCLE .. " objects", function()
    local g = graph()
    local big = {}
    for _, comp in ipairs(cycles(g)) do
      if #comp > MAX_CYCLE then big[#big + 1] = comp end
    end
    assert(#big == 0, ("%d strongly connected component(s) larger than %d:\n%s")
      :format(#big, MAX_CYCLE, describe_cycles(g, big)))
  end)

  it("keeps the protocol objects pure (only each other; no libuv, no Lua)", function()
    local g = graph()
    local proto = {}
    for _, o in ipairs(PROTOCOL) do proto[o] = true end
    local problems = {}
    for _, obj in ipairs(PROTOCOL) do
      if g.undefs[obj] then
        for to, syms in pairs(g.edges[obj]) do
          if not proto[to] then
            problems[#problems + 1] = "  " .. G.format_edge({ from = obj, to = to, symbols = syms }, 1000)
          end
        end
        local foreign = {}
        for sym in pairs(g.undefs[obj]) do
          for _, pat in ipairs(FOREIGN) do
            if sym:match(pat) then foreign[#foreign + 1] = sym; break end
          end
        end
        table.sort(foreign)
        if #foreign > 0 then
          problems[#problems + 1] = ("  %s uses libuv/Lua: %s"):format(obj, table.concat(foreign, ", "))
        end
      end
    end
    table.sort(problems)
    assert(#problems == 0, "protocol objects are not pure:\n" .. table.concat(problems, "\n"))
  end)
end)
