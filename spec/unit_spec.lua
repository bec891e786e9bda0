-- C unit tests of the pure parts of src/ (frame, UTF-8, HTTP, deflate
-- parsers; the TLS engine; the Redis bus), run from busted so that
-- `make test` counts them. Each runner prints "N passed, N failed" last.
local function run(cmd)
  local p = assert(io.popen("cd " .. (os.getenv("PWD") or ".") .. " && " .. cmd .. " 2>&1; echo \"exit=$?\""))
  local out = p:read("a")
  p:close()
  return out
end

local function check(name, cmd)
  it(name, function()
    local out = run(cmd)
    local passed, failed = out:match("(%d+) passed, (%d+) failed%s*\nexit=")
    assert(passed, "no summary line from " .. cmd .. ":\n" .. out:sub(-3000))
    assert.are.equal("0", failed, out:sub(-3000))
    assert.truthy(tonumber(passed) > 0, out:sub(-3000))
    assert.truthy(out:find("exit=0", 1, true), out:sub(-3000))
  end)
end

describe("C unit tests", function()
  check("frame, UTF-8, HTTP, deflate and PROXY/forwarded parsers; the session", "make -s -C spec/unit")
  check("TLS engine", "sh spec/unit/build_tls.sh")
  check("Redis bus (against a throwaway redis-server)", "sh spec/unit/build_redis.sh")
end)
