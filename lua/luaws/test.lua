-- luaws.test — testing a luaws script in-process, with busted, under `luaws test`.
--
--   local t = require "luaws.test"
--   describe("echo", function()
--     it("echoes", function()
--       local c = t.connect("echo.lua")
--       c:send("hello")
--       c:expect("hello")
--     end)
--   end)
--
-- Connections are real WebSockets over in-memory socket pairs: the
-- handshake, framing (masking included), permessage-deflate, UTF-8 checks,
-- limits and the Lua event machinery are the server's own; no network is
-- used. Time is the spec's: t.clock:advance(seconds) fires luaws.after,
-- luaws.every, luaws.sleep, automatic pings and timeouts at once, in order.
-- Every wait has a timeout (t.timeout seconds, real time) and a failed wait
-- says what arrived instead. After each test, connections, timers and the
-- loaded script are dropped, so tests do not see each other.
local ws = require "luaws"
local core = require "luaws.core"

if not core.test_use then
  error("luaws.test works only inside `luaws test` (run your specs with: luaws test [PATH])", 2)
end

local M = {}

--- Seconds a wait (expect, expect_close, ...) lasts before it fails.
M.timeout = 1

-- State that must outlive busted's per-file insulation (which unloads
-- modules required inside a spec file, this one included).
local state = core.test_state
if not state then
  state = { remotes = {}, next_remote = 1 }
  core.test_state = state
end

local function fail(message, level)
  local ok, busted = pcall(require, "busted")
  if ok and busted.fail then busted.fail(message, (level or 1) + 1) end
  error(message, (level or 1) + 1)
end

---------------------------------------------------------------------------
-- printing what arrived, for failure messages

local function show(v)
  if type(v) == "string" then return string.format("%q", #v > 200 and v:sub(1, 200) .. "..." or v) end
  if type(v) == "table" and v.kind then
    if v.kind == "message" then return show(v.value) end
    if v.kind == "binary" then return "binary(" .. show(v.value) .. ")" end
    return v.kind .. (v.value ~= nil and "(" .. show(v.value) .. ")" or "")
  end
  return tostring(v)
end

local function show_list(list)
  if #list == 0 then return "nothing" end
  local parts = {}
  for i, item in ipairs(list) do parts[i] = show(item) end
  return table.concat(parts, ", ")
end

---------------------------------------------------------------------------
-- waiting

local function now_ms() return core.test_monotime() end

-- Runs the loop until check() returns a value or timeout (seconds, real
-- time) passes. Everything in memory is done at once; real time matters
-- only for real I/O (a luaws.connect to the network, say).
local function wait_for(check, timeout)
  core.test_settle()
  local found = check()
  if found ~= nil then return found end
  local deadline = now_ms() + math.floor((timeout or M.timeout) * 1000)
  while true do
    local left = deadline - now_ms()
    if left <= 0 then return nil end
    core.test_poll(math.min(left, 50))
    found = check()
    if found ~= nil then return found end
  end
end

local function matches(match, item)
  local value = item.value
  if type(match) == "function" then return match(value) and true or false end
  if type(value) ~= "string" then value = tostring(value) end
  if type(match) == "string" then
    -- Plain text matches exactly; text with a magic character ^$()%.[]*+-?
    -- is a Lua pattern (anchor it with ^ and $ to match the whole message).
    if value == match then return true end
    return match:find("[%^%$%(%)%%%.%[%]%*%+%-%?]") ~= nil and value:find(match) ~= nil
  end
  return false
end

-- An inbox: what one end received, in order, each {kind=, value=}.
local function take(inbox, pred)
  for i, item in ipairs(inbox) do
    if pred(item) then
      table.remove(inbox, i)
      return item
    end
  end
  return nil
end

---------------------------------------------------------------------------
-- a peer (test client or fake remote's end): common methods

local Peer = {}
Peer.__index = Peer

local function new_peer(kind)
  return setmetatable({ kind = kind, inbox = {}, seen = {}, closed = false }, Peer)
end

local function record(peer, kind, value)
  local item = { kind = kind, value = value }
  peer.inbox[#peer.inbox + 1] = item
  peer.seen[#peer.seen + 1] = item
end

-- The listener the socket of a peer runs: it records everything.
local function peer_listener(peer, auto_pong)
  local listener = {
    on_open = function(socket) peer.socket = socket; peer.open = true end,
    on_message = function(socket, message)
      if type(message) == "string" then record(peer, "message", message)
      else record(peer, "binary", message:string()) end
    end,
    on_pong = function(socket, data) record(peer, "pong", data:string()) end,
    on_error = function(socket, err) peer.error = err; record(peer, "error", tostring(err)) end,
    on_close = function(socket, code, reason)
      peer.closed = true
      peer.open = false
      peer.close_code, peer.close_reason = code, reason
      record(peer, "close", code)
    end,
  }
  if not auto_pong then
    listener.on_ping = function(socket, data) record(peer, "ping", data:string()) end
  end
  return listener
end

function Peer:_socket(what)
  if not self.socket or not self.socket:is_open() then
    fail(string.format("%s: %s is not open%s", what, self.kind,
      self.close_code and " (closed " .. self.close_code .. (self.close_reason ~= "" and " " .. self.close_reason or "") .. ")" or ""), 3)
  end
  return self.socket
end

--- Sends a text message.
function Peer:send(text)
  assert(type(text) == "string", "send: a string (use send_binary for bytes)")
  self:_socket("send"):send(text)
  core.test_settle()
  return self
end

--- Sends a binary message.
function Peer:send_binary(bytes)
  self:_socket("send_binary"):send(ws.buffer(bytes))
  core.test_settle()
  return self
end

--- Sends a JSON text message.
function Peer:send_json(value)
  return self:send(ws.json.encode(value))
end

--- Sends a ping (the answer: expect_pong).
function Peer:ping(data)
  self:_socket("ping"):ping(data)
  core.test_settle()
  return self
end

--- Starts the closing handshake (expect_close waits for its end).
function Peer:close(code, reason)
  if self.socket and self.socket:is_open() then self.socket:close(code or 1000, reason) end
  core.test_settle()
  return self
end

--- Vanishes without a close frame, as a lost network would.
function Peer:drop()
  if self.socket then core.test_drop(self.socket) end
  return self
end

local function is_message(item) return item.kind == "message" or item.kind == "binary" end

--- Waits for a message matching match: the text itself, a Lua pattern, or
--- a predicate function(message) -> truthy. Returns the message. Messages
--- that arrived before it and do not match stay for later expects.
function Peer:expect(match, timeout)
  local item = wait_for(function()
    return take(self.inbox, function(i) return is_message(i) and matches(match, i) end)
  end, timeout)
  if not item then
    fail(string.format("%s: expected a message matching %s within %gs; received %s", self.kind,
      type(match) == "function" and "the predicate" or show(match), timeout or M.timeout,
      show_list(self:_messages_now())), 2)
  end
  return item.value
end

function Peer:_messages_now()
  local list = {}
  for _, item in ipairs(self.inbox) do list[#list + 1] = item end
  if #list == 0 and #self.seen > 0 then
    list[1] = "nothing new (earlier: " .. show_list(self.seen) .. ")"
  end
  return list
end

--- Waits for the next message, whatever it is.
function Peer:receive(timeout)
  return self:expect(function() return true end, timeout)
end

-- Does a decoded JSON value contain every field of want (recursively)?
local function contains(have, want)
  if type(want) ~= "table" then return have == want end
  if type(have) ~= "table" then return false end
  for k, v in pairs(want) do
    if not contains(have[k], v) then return false end
  end
  return true
end

--- Waits for a JSON message containing every field of tbl; returns it decoded.
function Peer:expect_json(tbl, timeout)
  local decoded
  local item = wait_for(function()
    return take(self.inbox, function(i)
      if i.kind ~= "message" then return false end
      local ok, v = pcall(ws.json.decode, i.value)
      if ok and contains(v, tbl) then decoded = v return true end
      return false
    end)
  end, timeout)
  if not item then
    fail(string.format("%s: expected a JSON message containing %s within %gs; received %s", self.kind,
      ws.json.encode(tbl), timeout or M.timeout, show_list(self:_messages_now())), 2)
  end
  return decoded
end

--- Asserts that no message is waiting, after letting everything in flight
--- arrive (and waiting timeout seconds more, real time, if given).
function Peer:refute(timeout)
  core.test_settle()
  if timeout and timeout > 0 then
    local deadline = now_ms() + math.floor(timeout * 1000)
    while now_ms() < deadline and not self.inbox[1] do core.test_poll(deadline - now_ms()) end
  end
  for _, item in ipairs(self.inbox) do
    if is_message(item) then
      fail(string.format("%s: expected no message; received %s", self.kind, show_list(self.inbox)), 2)
    end
  end
end

--- Waits until the connection is closed; checks the code if given. Returns
--- code and reason.
function Peer:expect_close(code, timeout)
  local ok = wait_for(function() return self.closed or nil end, timeout)
  if not ok then
    fail(string.format("%s: expected the connection to close%s within %gs; it is still open; received %s",
      self.kind, code and " with " .. code or "", timeout or M.timeout, show_list(self.inbox)), 2)
  end
  if code and self.close_code ~= code then
    fail(string.format("%s: expected close code %d, got %d%s", self.kind, code, self.close_code,
      self.close_reason ~= "" and " (" .. self.close_reason .. ")" or ""), 2)
  end
  return self.close_code, self.close_reason
end

-- Waits for an item of a kind (not a message): "pong", "ping", "connect",
-- "disconnect"; fails at the caller's caller with what, else returns it.
local function expect_kind(self, kind, what, timeout)
  local item = wait_for(function() return take(self.inbox, function(i) return i.kind == kind end) end, timeout)
  if not item then
    fail(string.format("%s: expected %s within %gs; received %s", self.kind, what, timeout or M.timeout,
      show_list(self.inbox)), 3)
  end
  return item
end

--- Waits for the pong answering our ping; returns its data.
function Peer:expect_pong(timeout) return expect_kind(self, "pong", "a pong", timeout).value end

--- With {pong = false}: waits for a ping from the other side; returns its data.
function Peer:expect_ping(timeout) return expect_kind(self, "ping", "a ping", timeout).value end

--- Everything received so far, in order ({kind=, value=} items).
function Peer:history() return self.seen end

---------------------------------------------------------------------------
-- connecting to the server under test

local LINK_SERVER, LINK_REMOTE = 1, 2

-- What luaws.connect does for a URL under luaws test: the server under
-- test, a fake remote (t.connect_out), else the real network.
local real_connect = state.real_connect or core.connect
state.real_connect = real_connect
core.connect = function(host, port, request, key, protocols, deflate, listener, req, tls, ca, verify)
  local link = 0
  if state.linking then link = LINK_SERVER
  else
    local remote = state.remotes[(req.url or ""):gsub("^wss", "ws"):gsub("[?#].*$", "")]
    if remote then link = LINK_REMOTE; remote.pending = remote.pending + 1 end
  end
  return real_connect(host, port, request, key, protocols, deflate, listener, req, tls, ca, verify, link)
end

local function query_string(q)
  if type(q) ~= "table" then return q end
  local keys, parts = {}, {}
  for k in pairs(q) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local function esc(s)
    return (tostring(s):gsub("[^%w%-_%.~]", function(ch) return string.format("%%%02X", ch:byte()) end))
  end
  for _, k in ipairs(keys) do parts[#parts + 1] = esc(k) .. "=" .. esc(q[k]) end
  return table.concat(parts, "&")
end

-- Loads the script under test (its load error is raised at the spec's
-- line) and returns the request path with opts.path and opts.query.
local function target(script, opts)
  local ok, err = pcall(core.test_use, script)
  if not ok then error(err, 3) end
  local path = opts.path or "/"
  local q = query_string(opts.query)
  if q and q ~= "" then path = path .. (path:find("?", 1, true) and "&" or "?") .. q end
  return path
end

--- Connects a client to script (a path, loaded once per test) or to a
--- handler (a function or a listener table). opts: path, query (string or
--- table), headers, origin, protocols, deflate (default true), pong
--- (default true: answer pings; false: record them for expect_ping).
--- Returns the client: c.accepted, c.status, c.headers, c.body,
--- c.protocol, and the methods above. A refused upgrade is not an error:
--- c.accepted is false and c.status, c.body say why.
function M.connect(script, opts)
  opts = opts or {}
  local path = target(script, opts)
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  if opts.origin then headers.Origin = opts.origin end
  local c = new_peer("client")
  state.linking = true
  local ok, socket = pcall(ws.connect, "ws://luaws.test" .. path, peer_listener(c, opts.pong ~= false),
    { headers = headers, protocols = opts.protocols, deflate = opts.deflate })
  state.linking = false
  if not ok then error(socket, 2) end
  c.socket = socket
  local done = wait_for(function() return (c.open or c.closed) or nil end)
  local response = socket.response or {}
  c.status, c.headers, c.body = response.status, response.headers or {}, response.body
  c.accepted = c.open == true
  c.protocol = c.accepted and socket.protocol or nil
  if not done then fail("connect: no answer to the upgrade request within " .. M.timeout .. "s", 2) end
  return c
end

--- One plain HTTP request to script (or a handler); returns the answer
--- {status=, headers=, body=}. opts: method (GET), path (/), query,
--- headers, body.
function M.request(script, opts)
  opts = opts or {}
  local path = target(script, opts)
  local lines = { (opts.method or "GET") .. " " .. path .. " HTTP/1.1", "Host: luaws.test" }
  for k, v in pairs(opts.headers or {}) do lines[#lines + 1] = k .. ": " .. tostring(v) end
  if opts.body then lines[#lines + 1] = "Content-Length: " .. #opts.body end
  local text = table.concat(lines, "\r\n") .. "\r\n\r\n" .. (opts.body or "")
  return core.test_http(text, math.floor(M.timeout * 1000))
end

---------------------------------------------------------------------------
-- fake remote servers, for scripts that use luaws.connect

local Remote = setmetatable({}, { __index = Peer })
Remote.__index = Remote

-- The handler of every fake remote: finds the remote by URL, upgrades.
core.test_remote_handler(function(request)
  local url = "ws://" .. (request.headers.host or "") .. request.uri
  local remote = state.remotes[url]
  if not remote then return { status = 404, body = "no fake remote at " .. url } end
  remote.pending = math.max(0, remote.pending - 1)
  if remote.refuse then return { status = remote.refuse } end
  local peer = new_peer("remote " .. url)
  peer.request = request
  remote.peers[#remote.peers + 1] = peer
  local listener = peer_listener(peer, true)
  local on_open, on_message, on_close = listener.on_open, listener.on_message, listener.on_close
  listener.on_open = function(socket) on_open(socket); record(remote, "connect", nil) end
  listener.on_message = function(socket, m)
    on_message(socket, m)
    record(remote, type(m) == "string" and "message" or "binary", type(m) == "string" and m or m:string())
  end
  listener.on_close = function(socket, code, reason) on_close(socket, code, reason); record(remote, "disconnect", code) end
  local protocol
  local offered = request.headers["sec-websocket-protocol"]
  if remote.protocol and offered and offered:find(remote.protocol, 1, true) then protocol = remote.protocol end
  return { listener = listener, protocol = protocol }
end)

--- Fakes a WebSocket server at url (ws://host[:port]/path) for the script's
--- luaws.connect. The remote's expect/refute see what the script sent over
--- any of its connections; send/close act on the latest open one.
--- opts: protocol (chosen when offered), refuse (an HTTP status to answer).
function M.connect_out(url, opts)
  opts = opts or {}
  local scheme, rest = url:match("^(wss?)://(.+)$")
  assert(scheme, "connect_out: a ws:// URL")
  local authority, path = rest:match("^([^/?#]+)(.*)$")
  if path == "" then path = "/" end
  local key = "ws://" .. authority .. path:gsub("[?#].*$", "")
  local remote = setmetatable(new_peer("remote " .. url), Remote)
  remote.url, remote.peers, remote.pending = url, {}, 0
  remote.protocol, remote.refuse = opts.protocol, opts.refuse
  state.remotes[key] = remote
  return remote
end

function Remote:_latest(what)
  for i = #self.peers, 1, -1 do
    local p = self.peers[i]
    if p.socket and p.socket:is_open() then return p end
  end
  fail(string.format("%s: %s: the script has no open connection to it", what, self.kind), 3)
end

function Remote:send(text) self:_latest("send"):send(text) return self end
function Remote:send_binary(bytes) self:_latest("send_binary"):send_binary(bytes) return self end
function Remote:send_json(value) self:_latest("send_json"):send_json(value) return self end
--- Closes the latest connection with a close frame (code, reason).
function Remote:close(code, reason) self:_latest("close"):close(code, reason) return self end
--- Drops every connection without a close frame, as a crashed server would.
function Remote:drop()
  for _, p in ipairs(self.peers) do
    if p.socket and p.socket:is_open() then core.test_drop(p.socket) end
  end
  return self
end

--- Open connections from the script to this remote.
function Remote:connections()
  local n = 0
  for _, p in ipairs(self.peers) do if p.socket and p.socket:is_open() then n = n + 1 end end
  return n
end

--- Waits until the script has connected (once more); returns the request.
function Remote:expect_connect(timeout)
  expect_kind(self, "connect", "the script to connect", timeout)
  return self.peers[#self.peers].request
end

--- Waits until a connection of the script to this remote closed; returns its code.
function Remote:expect_disconnect(timeout)
  return expect_kind(self, "disconnect", "a connection to close", timeout).value
end

---------------------------------------------------------------------------
-- the clock, topics, reload

--- The spec's clock: time stands still unless advanced.
M.clock = {}

--- Moves time forward; every timer due fires, in order, at its own time.
function M.clock:advance(seconds)
  assert(type(seconds) == "number" and seconds >= 0, "clock:advance(seconds >= 0)")
  core.test_advance(seconds * 1000)
end

--- Seconds since the test run started, on the spec's clock.
function M.clock:now() return core.test_now() / 1000 end

--- Everything published to topic since the test started (strings; binary
--- messages as luaws.buffer).
function M.published(topic)
  core.test_settle()
  local list = core.test_published()[topic] or {}
  return table.move(list, 1, #list, 1, {})   -- a copy: the record goes on
end

--- Reloads the script as the server does on a file change: new code from
--- path (or the same path again), or from Lua source text. Open sockets move
--- to the new listener and get on_reload; socket.data survives. A script
--- that does not load raises its error (the old code keeps serving).
function M.reload(text_or_path)
  if text_or_path then
    local f = not text_or_path:find("\n") and io.open(text_or_path, "r")
    if f then
      f:close()
      local okr, errr = core.test_reload(text_or_path)
      if not okr then error(errr, 2) end
      return true
    end
    require("luaws.loader").source = text_or_path
  end
  local ok, err = core.test_reload()
  require("luaws.loader").source = nil
  if not ok then error(err, 2) end
  return true
end

--- Lets everything in flight happen (no time passes).
function M.settle() core.test_settle() end

--- Drops every connection, timer and the loaded script (done after each test).
function M.reset()
  local reconnect = package.loaded["luaws.reconnect"]
  if reconnect then reconnect.reset() end
  core.test_reset()
  state.remotes = {}
  local ws = package.loaded["luaws"]
  if ws then for k in pairs(ws.state) do ws.state[k] = nil end end
end

-- After every test: a clean server for the next one.
if not state.subscribed then
  local ok, busted = pcall(require, "busted")
  if ok and busted.subscribe then
    busted.subscribe({ "test", "end" }, function()
      M.reset()
      return nil, true
    end)
    state.subscribed = true
  end
end

return M
