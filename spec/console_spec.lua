-- The browser console (lua/luaws/console.html): served as plain HTML at GET /
-- by scripts/echo.lua and by `--console`, and driven in headless Debian
-- chromium over the DevTools protocol on a pipe (spec/support/browser.js:
-- plain node, no npm packages). It loads, connects to its own host, shows the
-- greeting, sends text (Enter), refuses bad JSON, echoes JSON and binary
-- (hex), and shows close code 1000 after Disconnect.
--
-- chromium is installed with apt-get when missing (a minute the first time);
-- the browser specs are pending, with the reason, only if it cannot start.
-- CHROMIUM=/path/to/chrome picks another browser (never installed).
local cjson = require "cjson"
local wsc = require "spec.support.wsclient"
local server = require "spec.support.server"
local H = require "spec.support.helpers"

local NODE = "/usr/bin/node"
local CHROMIUM = os.getenv("CHROMIUM") or "/usr/bin/chromium"
local PAGE_FILE = server.ROOT .. "/lua/luaws/console.html"
local IDS = { "url", "protocols", "connect", "disconnect", "status", "mode-text", "mode-json",
              "mode-hex", "message", "send", "message-error", "log", "clear" }

-- Installs chromium (no recommends) if it is missing; returns nil or why not.
local chromium_problem
local function ensure_chromium()
  if server.exists(CHROMIUM) then return nil end
  if chromium_problem ~= nil then return chromium_problem or nil end
  if os.getenv("CHROMIUM") then
    chromium_problem = "CHROMIUM=" .. CHROMIUM .. " does not exist"
    return chromium_problem
  end
  io.stderr:write("console_spec: installing chromium with apt-get (once; may take a minute)\n")
  local sudo = ""
  local h = io.popen("id -u"); local uid = h:read("l"); h:close()
  if uid ~= "0" then sudo = "sudo -n " end
  local cmd = "export DEBIAN_FRONTEND=noninteractive; (" .. sudo .. "apt-get install -y -qq --no-install-recommends chromium"
    .. " || (" .. sudo .. "apt-get update -qq && " .. sudo .. "apt-get install -y -qq --no-install-recommends chromium))"
    .. " >/tmp/luaws-chromium-install.log 2>&1"
  os.execute(cmd)
  if server.exists(CHROMIUM) then chromium_problem = false; return nil end
  chromium_problem = "chromium is not installed and `apt-get install chromium` failed (see /tmp/luaws-chromium-install.log)"
  return chromium_problem
end

-- Runs the browser scenario against page_url; returns the result table.
local function run_browser(page_url)
  local cmd = string.format("cd %s && timeout -s KILL 150 %s spec/support/browser.js %s %s 2>&1",
    server.quote(server.ROOT), NODE, server.quote(page_url), server.quote(CHROMIUM))
  local h = assert(io.popen(cmd))
  local out = h:read("a")
  h:close()
  local line = out:match("(%b{})%s*$")
  assert(line, "browser.js printed no JSON:\n" .. out)
  return cjson.decode(line), out
end

local function http_get(srv, path)
  local resp, err = wsc.http(srv.host, srv.port, { path = path or "/", headers = { Host = srv.host .. ":" .. srv.port } })
  assert(resp, err)
  return resp
end

describe("the console page file", function()
  local page
  lazy_setup(function() page = assert(server.read_file(PAGE_FILE), "missing " .. PAGE_FILE) end)

  it("is one self-contained HTML document", function()
    assert.truthy(page:find("^<!DOCTYPE html>"))
    assert.truthy(page:find('<html lang="en">', 1, true))
    assert.truthy(page:find('<meta charset="utf-8">', 1, true))
    -- no external scripts, styles, images or fonts
    assert.falsy(page:find("<script[^>]+src="))
    assert.falsy(page:find("<link[^>]+stylesheet"))
    assert.falsy(page:find("url%(%s*['\"]?https?:"))
    assert.falsy(page:find("src=[\"']https?:"))
    assert.falsy(page:find("@import"))
  end)

  it("keeps its stable element ids, each once", function()
    for _, id in ipairs(IDS) do
      local n = select(2, page:gsub('id="' .. id:gsub("%-", "%%-") .. '"', ""))
      assert.equal(1, n, "id " .. id)
    end
  end)

  it("labels its inputs and announces the log and status", function()
    for _, id in ipairs { "url", "protocols", "message" } do
      assert.truthy(page:find('<label for="' .. id .. '"', 1, true), "label for " .. id)
    end
    assert.truthy(page:find('id="log" role="log"', 1, true))
    assert.truthy(page:find('id="status" role="status"', 1, true))
  end)
end)

-- Where the page is served, and how to start that server.
local servers = {
  { name = "scripts/echo.lua at GET /", start = function() return H.start { script = "scripts/echo.lua" } end },
  { name = "--console with a listener-table bot", start = function()
      return H.start { args = { "--console" }, source = [[
        return { on_open = function(socket) socket:send("I will echo your messages") end,
                 on_message = function(socket, message) socket:send(message) end }
      ]] }
    end },
}

for _, s in ipairs(servers) do
  describe("the console served by " .. s.name, function()
    local srv
    lazy_setup(function() srv = s.start() end)
    lazy_teardown(function() if srv then srv:stop() end end)

    it("is a 200 text/html page that is not cached", function()
      local resp = http_get(srv, "/")
      assert.equal(200, resp.status)
      assert.truthy(resp.headers["content-type"]:find("^text/html"), resp.headers["content-type"])
      assert.equal("no-store", resp.headers["cache-control"])
      assert.equal(server.read_file(PAGE_FILE), resp.body)
    end)

    it("leaves WebSocket upgrades on / to the script", function()
      local c = H.open(srv, "/")
      assert.equal("I will echo your messages", (H.read(c)))
      c:close(1000)
    end)

    describe("in headless chromium", function()
      local result, raw, why
      lazy_setup(function()
        why = ensure_chromium()
        if why then return end
        result, raw = run_browser("http://127.0.0.1:" .. srv.port .. "/")
        if result.skip then why = result.skip end
      end)

      -- The steps browser.js ran, by name.
      local function value(name)
        -- (the first spec above shows the whole output when the scenario failed)
        assert.is_nil(result.error, "the browser scenario failed: " .. tostring(result.error))
        for _, st in ipairs(result.steps) do if st.name == name then return st.value end end
        error("step not run: " .. name)
      end
      local function check()
        if why then pending("browser specs skipped: " .. why); return false end
        return true
      end

      it("runs the whole scenario with no page errors", function()
        if not check() then return end
        assert.is_true(result.ok, tostring(result.error) .. "\n--- page log:\n"
          .. table.concat(result.log or {}, "\n") .. "\n--- browser.js output:\n" .. tostring(raw))
        assert.same({}, result.exceptions)
      end)

      it("defaults the URL to its own host", function()
        if not check() then return end
        assert.equal("ws://127.0.0.1:" .. srv.port .. "/", value("the URL field defaults to the page's own ws:// URL"))
        assert.equal("luaws console", value("load the page"))
      end)

      it("connects and shows the greeting", function()
        if not check() then return end
        assert.equal("connected", value("connect"))
        assert.is_true(value("the greeting shows in the log"))
      end)

      it("sends on Enter and shows the echo with a timestamp", function()
        if not check() then return end
        assert.truthy(value("Enter sends a text message and its echo comes back"):match("^%d%d:%d%d:%d%d%.%d%d%d$"))
        assert.is_true(value("the log entries carry timestamps"))
      end)

      it("refuses invalid JSON and sends valid JSON", function()
        if not check() then return end
        assert.truthy(value("invalid JSON is refused before sending"):find("^Not valid JSON"))
        assert.equal('{"a": [1, 2, {"b": null}]}', value("valid JSON is sent and echoed"))
      end)

      it("shows binary messages as hex and length", function()
        if not check() then return end
        assert.same({ hex = "00 ff 68 69", length = "4" }, value("binary messages show as hex with their length"))
      end)

      it("disconnects with close code 1000", function()
        if not check() then return end
        local closed = value("disconnect shows close code 1000")
        assert.equal(1000, closed.code)
        assert.truthy(closed.text:find("code 1000", 1, true), closed.text)
      end)
    end)
  end)
end
