-- crosscheck.lua — where the independent servers (node `ws` 8.11 and Python
-- `websockets` 10.4, see peers/) are known to differ from the suite's
-- expectations, and why (the reasons are written out in CROSSCHECK.md).
-- run.lua --crosscheck (and conformance_spec.lua with CONFORMANCE_PEERS=1)
-- run both peers in every mode and report any case whose verdict is not the
-- one listed here (not listed = OK): a new difference means either a peer
-- changed or the suite is wrong about something, and must be looked at.
local C = {}

local ALL = { off = true, shared = true, dedicated = true }
local DEFLATE = { shared = true, dedicated = true }

local function ids(prefix, from, to)
  local t = {}
  for i = from, to do t[#t + 1] = prefix .. i end
  return t
end

-- { peer, modes, ids, verdicts (a set: any of them matches), reason key }
C.KNOWN = {
  { "node", ALL, { "1.3.2" }, { FAILED = true }, "msb-length" },
  { "node", ALL, ids("6.4.", 1, 4), { ["NON-STRICT"] = true }, "fail-fast" },
  { "node", DEFLATE, { "12.6.9" }, { FAILED = true }, "node-bomb" },
  { "node", DEFLATE, ids("13.22.", 1, 18), { FAILED = true }, "node-400" },
  { "node", DEFLATE, ids("13.24.", 1, 11), { FAILED = true }, "node-400" },
  { "node", DEFLATE, { "13.24.13" }, { FAILED = true }, "node-400" },
  { "node", DEFLATE, { "13.24.12" }, { FAILED = true }, "leading-zero" },

  { "python", ALL, { "1.3.2" }, { FAILED = true }, "msb-length" },
  { "python", ALL, { "3.2", "3.3", "3.4", "4.1.3", "4.1.4", "4.1.5", "4.2.3", "4.2.4", "4.2.5", "5.15" },
    { OK = true, ["NON-STRICT"] = true }, "python-no-echo" },
  { "python", ALL, { "6.4.3", "6.4.4" }, { ["NON-STRICT"] = true }, "fail-fast-frame" },
  { "python", DEFLATE, ids("13.3.", 1, 18), { FAILED = true }, "python-window-8" },
  { "python", DEFLATE, ids("13.5.", 1, 18), { FAILED = true }, "python-window-8" },
  { "python", DEFLATE, ids("13.7.", 1, 18), { FAILED = true }, "python-window-8" },
  { "python", { dedicated = true }, { "12.6.12" }, { FAILED = true }, "python-bfinal" },
}

-- The verdicts allowed for a case on a peer in a mode (nil: only OK).
function C.expected(peer, mode, id)
  for _, k in ipairs(C.KNOWN) do
    if k[1] == peer and k[2][mode] then
      for _, kid in ipairs(k[3]) do
        if kid == id then return k[4], k[5] end
      end
    end
  end
  return nil
end

-- Lines describing every difference between a run (suite.run's result) and
-- the table above; empty when they agree.
function C.compare(peer, mode, res)
  local out = {}
  for _, r in ipairs(res.results) do
    local allowed, why = C.expected(peer, mode, r.id)
    if allowed then
      if not allowed[r.verdict] then
        out[#out + 1] = string.format("%s --deflate=%s %s: %s, but CROSSCHECK.md expects %s (%s)", peer, mode, r.id,
          r.verdict, next(allowed), why)
      end
    elseif r.verdict ~= "OK" then
      out[#out + 1] = string.format("%s --deflate=%s %s: %s (%s) — not recorded in CROSSCHECK.md", peer, mode, r.id,
        r.verdict, r.msg or "")
    end
  end
  return out
end

return C
