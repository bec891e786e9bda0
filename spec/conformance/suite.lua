-- suite.lua — the conformance case registry and runner.
--
--   local suite = require "spec.conformance.suite"
--   local res = suite.run { host = "127.0.0.1", port = 9001,
--                           profile = { deflate = "shared" },   -- off|shared|dedicated|any
--                           large = false, only = {"6.4", "7.9.3"}, out = print }
--   res.ok, res.nonstrict, res.failed, res.results[i] = {id=, verdict=, msg=, desc=}
--
-- Cases are numbered after Autobahn|Testsuite's categories: 1 framing, 2
-- ping/pong, 3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8, 7 close,
-- 9 limits/large messages, 12/13 permessage-deflate. Each case runs on its
-- own connection and ends OK, NON-STRICT or FAILED.
local socket = require "socket"
local J = require "spec.conformance.judge"

local S = {}

S.CATEGORIES = {
  "spec.conformance.cases.c1_framing",
  "spec.conformance.cases.c2_pingpong",
  "spec.conformance.cases.c3_reserved_bits",
  "spec.conformance.cases.c4_opcodes",
  "spec.conformance.cases.c5_fragmentation",
  "spec.conformance.cases.c6_utf8",
  "spec.conformance.cases.c7_close",
  "spec.conformance.cases.c9_limits",
  "spec.conformance.cases.c12_deflate",
  "spec.conformance.cases.c13_deflate_params",
}

local cases_cache
-- All cases, in order: list of {id=, desc=, fn=, large=bool}.
function S.cases()
  if cases_cache then return cases_cache end
  local list, seen = {}, {}
  local function case(id, desc, fn, opts)
    assert(not seen[id], "duplicate case id " .. id)
    seen[id] = true
    opts = opts or {}
    list[#list + 1] = { id = id, desc = desc, fn = fn, large = opts.large or false }
  end
  for _, m in ipairs(S.CATEGORIES) do require(m)(case) end
  cases_cache = list
  return list
end

-- Does id match one of the selectors? "6.4" selects 6.4 and 6.4.*.
local function selected(id, only)
  if not only or #only == 0 then return true end
  for _, sel in ipairs(only) do
    sel = sel:gsub("%.?%*$", "")
    if id == sel or id:sub(1, #sel + 1) == sel .. "." then return true end
  end
  return false
end
S.selected = selected

-- Run one case. Returns verdict ("OK" | "NON-STRICT" | "FAILED"), message, t.
function S.run_case(target, c)
  local t = J.new(target, c)
  local ok, err = xpcall(c.fn, function(e)
    if J.is_failure(e) then return e end
    return { suite_error = true, msg = tostring(e), tb = debug.traceback("", 2) }
  end, t)
  t:cleanup()
  if not ok then
    if J.is_failure(err) then return "FAILED", err.msg, t end
    return "FAILED", "suite error: " .. err.msg .. (os.getenv("CONFORMANCE_DEBUG") and err.tb or ""), t
  end
  if #t.nonstrict_msgs > 0 then return "NON-STRICT", table.concat(t.nonstrict_msgs, "; "), t end
  return "OK", nil, t
end

-- opts: host, port, profile, large, only (list of selectors), out (line
-- printer; default print), verbose (print every case; trace non-OK ones).
function S.run(opts)
  local out = opts.out or print
  local target = { host = opts.host or "127.0.0.1", port = opts.port, large = opts.large or false,
                   profile = opts.profile or { deflate = "any" } }
  local res = { ok = 0, nonstrict = 0, failed = 0, skipped = 0, results = {} }
  local t0 = socket.gettime()
  for _, c in ipairs(S.cases()) do
    if selected(c.id, opts.only) and (opts.large or not c.large) then
      local c0 = socket.gettime()
      local verdict, msg, t = S.run_case(target, c)
      local r = { id = c.id, desc = c.desc, verdict = verdict, msg = msg, notes = t.notes,
                  seconds = socket.gettime() - c0 }
      res.results[#res.results + 1] = r
      if verdict == "OK" then res.ok = res.ok + 1
      elseif verdict == "NON-STRICT" then res.nonstrict = res.nonstrict + 1
      else res.failed = res.failed + 1 end
      if verdict ~= "OK" or opts.verbose then
        out(string.format("  %-9s %-10s %s%s", c.id, verdict, msg or c.desc,
          (opts.verbose and #t.notes > 0) and (" [" .. table.concat(t.notes, "; ") .. "]") or ""))
        if verdict ~= "OK" and opts.verbose then
          out("            case: " .. c.desc)
          for _, l in ipairs(t:trace_lines()) do out("            | " .. l) end
        end
      end
    else
      res.skipped = res.skipped + 1
    end
  end
  res.seconds = socket.gettime() - t0
  res.summary = string.format("conformance: %d ok, %d non-strict, %d failed", res.ok, res.nonstrict, res.failed)
  out(res.summary .. string.format(" (%d cases in %.1fs%s)", #res.results, res.seconds,
    res.skipped > 0 and string.format(", %d not selected", res.skipped) or ""))
  return res
end

return S
