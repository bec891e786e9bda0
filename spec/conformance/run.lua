-- run.lua — run the conformance suite from the command line (from the
-- repository root):
--
--   lua5.4 spec/conformance/run.lua                   luaws, every deflate mode
--   lua5.4 spec/conformance/run.lua --large           ... with the large 9.x cases and 100-message runs
--   lua5.4 spec/conformance/run.lua --target=node --deflate=dedicated 6.4 7.9
--   lua5.4 spec/conformance/run.lua --crosscheck      node and python, every mode, against CROSSCHECK
--   lua5.4 spec/conformance/run.lua --port=9001 --profile=any   a server that is already running
--
-- options: --target=luaws|node|python (default luaws), --deflate=off|shared|dedicated|all
-- (default all; for a luaws without --deflate: its default, judged as off), --large,
-- --verbose (every case, and a frame trace of non-OK ones), --host/--port/--profile
-- (an external server), --crosscheck. Positional arguments select cases by id prefix.
-- Exit status 0 when every selected case is OK everywhere (or, with --crosscheck,
-- when the peers differ from the suite exactly where CROSSCHECK.md says).
package.path = "./?.lua;./?/init.lua;" .. package.path
local suite = require "spec.conformance.suite"
local targets = require "spec.conformance.targets"

local opts = { only = {} }
for _, a in ipairs(arg) do
  local k, v = a:match("^%-%-([%w-]+)=(.*)$")
  if k then opts[k] = v
  elseif a:match("^%-%-") then opts[a:sub(3)] = true
  else opts.only[#opts.only + 1] = a end
end
if os.getenv("CONFORMANCE_LARGE") == "1" then opts.large = true end

local function run_against(name, mode, profile)
  local srv = targets.start(name, mode)
  io.write(string.format("== %s%s (port %d)\n", name, mode and (" --deflate=" .. mode) or "", srv.port))
  io.flush()
  local res = suite.run { host = srv.host, port = srv.port, profile = { deflate = profile or mode or "off" },
                          large = opts.large, only = opts.only, verbose = opts.verbose,
                          out = function(l) io.write(l, "\n"); io.flush() end }
  local ok, err = pcall(srv.stop, srv)
  if not ok then
    io.write("server problem: ", tostring(err), "\n")
    res.failed = res.failed + 1
  end
  return res
end

local all_ok = true

if opts.port then
  local res = suite.run { host = opts.host or "127.0.0.1", port = tonumber(opts.port),
                          profile = { deflate = opts.profile or "any" }, large = opts.large,
                          only = opts.only, verbose = opts.verbose }
  os.exit(res.nonstrict + res.failed == 0 and 0 or 1)
end

if opts.crosscheck then
  local cc = require "spec.conformance.crosscheck"
  for _, name in ipairs { "node", "python" } do
    for _, mode in ipairs(targets.MODES) do
      local res = run_against(name, mode)
      local diff = cc.compare(name, mode, res)
      for _, l in ipairs(diff) do io.write("  crosscheck: ", l, "\n") end
      if #diff > 0 then all_ok = false end
    end
  end
  io.write(all_ok and "crosscheck: the peers differ only where CROSSCHECK.md says\n"
                  or "crosscheck: differences not recorded in CROSSCHECK.md (see above)\n")
  os.exit(all_ok and 0 or 1)
end

local name = opts.target or "luaws"
local modes
if opts.deflate and opts.deflate ~= "all" then modes = { opts.deflate }
elseif name == "luaws" and not targets.luaws_has_deflate() then
  io.write("luaws has no --deflate option yet: running its default, judged as --deflate=off\n")
  modes = { false }
else modes = targets.MODES end

for _, mode in ipairs(modes) do
  local res = run_against(name, mode or nil, mode or "off")
  if res.failed + res.nonstrict > 0 then all_ok = false end
end
os.exit(all_ok and 0 or 1)
