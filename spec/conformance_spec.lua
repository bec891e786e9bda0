-- The conformance suite (spec/conformance, Autobahn|Testsuite-style cases 1-7,
-- 9, 12, 13) against luaws with spec/scripts/conformance_echo.lua, once per
-- --deflate mode. Every case must be OK: NON-STRICT counts as a failure.
--
--   CONFORMANCE_LARGE=1   also the large 9.x cases (up to 16 MiB) and 100
--                         messages per compression case
--   CONFORMANCE_ONLY="6.4 7.9"   only these cases (id prefixes)
--   CONFORMANCE_PEERS=1   also check the suite itself against node ws and
--                         Python websockets (differences: CROSSCHECK.md)
--
-- The same from the command line: lua5.4 spec/conformance/run.lua [options]
-- (see the top of spec/conformance/run.lua and spec/conformance/README.md).
assert(pcall(require, "zlib"), "the conformance suite needs lua-zlib (Debian package lua-zlib)")
local suite = require "spec.conformance.suite"
local targets = require "spec.conformance.targets"
local crosscheck = require "spec.conformance.crosscheck"

local LARGE = os.getenv("CONFORMANCE_LARGE") == "1"
local ONLY = {}
for sel in (os.getenv("CONFORMANCE_ONLY") or ""):gmatch("%S+") do ONLY[#ONLY + 1] = sel end

local function run(name, mode, profile)
  local srv = targets.start(name, mode)
  local lines = {}
  local function out(l)
    lines[#lines + 1] = l
    io.write(l, "\n"); io.flush()
  end
  out(string.format("== conformance: %s --deflate=%s%s", name, mode or "(default)", LARGE and " (large)" or ""))
  local ok, res = pcall(suite.run, { host = srv.host, port = srv.port, profile = { deflate = profile or mode },
                                     large = LARGE, only = ONLY, out = out })
  local stopped, err = pcall(srv.stop, srv)
  assert(ok, res)
  assert(stopped, err)   -- the server died or wrote a sanitizer report
  return res, table.concat(lines, "\n")
end

describe("conformance suite (spec/conformance)", function()
  local has_deflate = targets.available("luaws") and targets.luaws_has_deflate()

  for _, mode in ipairs(targets.MODES) do
    it("luaws --deflate=" .. mode .. ": every case OK", function()
      assert(targets.available("luaws"), "luaws binary not built (make luaws)")
      if not has_deflate then
        if mode ~= "off" then pending("luaws has no --deflate option yet") return end
        local res, text = run("luaws", nil, "off")
        assert(res.failed + res.nonstrict == 0, text)
        return
      end
      local res, text = run("luaws", mode)
      assert(res.failed + res.nonstrict == 0, text)
    end)
  end

  if os.getenv("CONFORMANCE_PEERS") == "1" then
    for _, peer in ipairs { "node", "python" } do
      for _, mode in ipairs(targets.MODES) do
        it(string.format("crosscheck: %s --deflate=%s differs only where CROSSCHECK.md says", peer, mode), function()
          if not targets.available(peer) then pending(peer .. " peer not installed") return end
          local res = run(peer, mode)
          local diff = crosscheck.compare(peer, mode, res)
          assert(#diff == 0, table.concat(diff, "\n"))
        end)
      end
    end
  end
end)
