-- luaws.reconnect — luaws.connect(url, listener, {reconnect = ...}): one
-- logical connection that reconnects with backoff.
--
-- The object returned stands for the connection across reconnects: the
-- listener's events get it (not the socket of the moment), its data table
-- is kept, sends made while it is down wait in a buffer (up to a limit),
-- and on_open runs again on every reconnect. It stops only when the script
-- closes it.
--
-- Reload: a reconnecting client made while the script loads belongs to
-- that version. When the next version loads and makes the same client (the
-- same URL, the n-th such call of its load), it gets the running one back,
-- now with its new listener: the connection moves instead of being
-- duplicated. Clients the new version no longer makes are closed (1001).
local core = require "luaws.core"

local M = {}

--- Defaults: backoff in ms (doubling from min to max, +/- jitter as a
--- fraction), and what may wait while the connection is down.
M.defaults = { min = 500, max = 30000, jitter = 0.2, buffer = 1024 * 1024 }

local clients = {}          -- key -> client, for clients made at load time
local claims = {}           -- during a load: key -> { client, listener, opts }
local made = {}             -- during a load: clients it created
local load_version, load_counts = nil, {}

local Client = {}
local client_mt = { __index = Client, __name = "luaws.reconnecting" }

function client_mt.__tostring(self)
  return "luaws reconnecting socket " .. tostring(self.id) .. " to " .. self.url
    .. (self.socket and self.socket:is_open() and " (open)" or " (down)")
end

local function call(self, name, ...)
  local fn = self.listener[name]
  if fn then return fn(self, ...) end
end

local function backoff(self)
  local o = self.backoff
  local delay = math.min(o.max, o.min * 2 ^ self.failures)
  local j = o.jitter or 0
  if j > 0 then delay = delay * (1 - j + 2 * j * math.random()) end
  return math.max(0, math.floor(delay))
end

local connect_now

local function schedule(self)
  if self.closing or self.timer then return end
  local delay = backoff(self)
  self.failures = self.failures + 1
  self.timer = self.ws.after(delay, function()
    self.timer = nil
    connect_now(self)
  end)
end

-- The listener of each physical connection: forwards to the client's own.
local function physical_listener(self)
  return {
    on_open = function(socket)
      if self.closing then socket:close(1000) return end
      self.socket = socket
      self.failures = 0
      self.opens = self.opens + 1
      call(self, "on_open")
      -- What was sent while down goes now, in order.
      local pending = self.pending
      self.pending, self.pending_bytes = {}, 0
      for _, msg in ipairs(pending) do
        if not (self.socket and self.socket:is_open()) then
          self.pending[#self.pending + 1] = msg
          self.pending_bytes = self.pending_bytes + #msg
        else
          socket:send(msg)
        end
      end
    end,
    on_message = function(socket, message) return call(self, "on_message", message) end,
    on_ping = function(socket, data)
      if self.listener.on_ping then return call(self, "on_ping", data) end
      socket:pong(data)
    end,
    on_pong = function(socket, data) return call(self, "on_pong", data) end,
    on_error = function(socket, err) return call(self, "on_error", err) end,
    on_close = function(socket, code, reason)
      if self.socket == socket then self.socket = nil end
      call(self, "on_close", code, reason)
      if not self.closing then schedule(self) end
    end,
  }
end

connect_now = function(self)
  if self.closing then return end
  local ok, socket = pcall(self.ws.connect, self.url, physical_listener(self), self.connect_opts)
  if not ok then
    -- A URL that cannot work never will: say so once, and stop (quietly
    -- while only checking the script: nothing runs then).
    self.closing = true
    if not tostring(socket):find("not running yet", 1, true) then
      self.ws.log("error", "reconnecting client " .. self.url .. ": " .. tostring(socket))
    end
    return
  end
  self.attempt = socket
end

--- Sends a message, or keeps it (in order) while the connection is down.
--- Past opts.buffer bytes waiting: nil, message, "ENOBUFS".
function Client:send(message, ...)
  if self.socket and self.socket:is_open() then return self.socket:send(message, ...) end
  if self.closing then return nil, "closed", "EPIPE" end
  local text = type(message) == "string" and message or tostring(message)
  if self.pending_bytes + #text > self.backoff.buffer then
    return nil, "reconnecting: send buffer full (" .. self.backoff.buffer .. " bytes while down)", "ENOBUFS"
  end
  self.pending[#self.pending + 1] = message
  self.pending_bytes = self.pending_bytes + #text
  return true
end

function Client:send_json(value, ...) return self:send(self.ws.json.encode(value), ...) end

function Client:ping(data)
  if not (self.socket and self.socket:is_open()) then return nil, "closed", "EPIPE" end
  return self.socket:ping(data)
end

function Client:pong(data)
  if not (self.socket and self.socket:is_open()) then return nil, "closed", "EPIPE" end
  return self.socket:pong(data)
end

function Client:is_open() return self.socket ~= nil and self.socket:is_open() end

--- Open now, or down and trying again.
function Client:is_reconnecting() return not self.closing and not self:is_open() end

--- Closes for good: no more reconnects.
function Client:close(code, reason)
  if self.closing then return nil, "closed", "EPIPE" end
  self.closing = true
  if self.timer then self.timer:cancel() self.timer = nil end
  if self.key and clients[self.key] == self then clients[self.key] = nil end
  if self.socket and self.socket:is_open() then return self.socket:close(code or 1000, reason) end
  if self.attempt then pcall(self.attempt.close, self.attempt, code or 1000, reason) end
  return true
end

local function options(o)
  local b = {}
  for k, v in pairs(M.defaults) do b[k] = v end
  if type(o) == "table" then
    for k, v in pairs(o) do
      if b[k] == nil then error("luaws.connect: unknown reconnect option '" .. tostring(k) .. "'", 4) end
      b[k] = v
    end
  end
  assert(b.min >= 0 and b.max >= b.min, "luaws.connect: reconnect wants 0 <= min <= max")
  return b
end

--- luaws.connect(url, listener, opts) with opts.reconnect (true or a table).
function M.connect(ws, url, listener, opts)
  local connect_opts = {}
  for k, v in pairs(opts) do if k ~= "reconnect" then connect_opts[k] = v end end
  local version = core.loading()
  local key
  if version then
    if version ~= load_version then load_version, load_counts, claims, made = version, {}, {}, {} end
    load_counts[url] = (load_counts[url] or 0) + 1
    key = url .. "#" .. load_counts[url]
    local running = clients[key]
    if running and not running.closing then
      -- The new version's listener takes over once it has loaded.
      claims[key] = { client = running, listener = listener, opts = options(opts.reconnect),
                      connect_opts = connect_opts }
      return running
    end
  end
  local self = setmetatable({
    ws = ws, url = url, listener = listener, connect_opts = connect_opts,
    backoff = options(opts.reconnect), failures = 0, opens = 0,
    pending = {}, pending_bytes = 0, data = {}, key = key,
  }, client_mt)
  if key then
    clients[key] = self
    made[#made + 1] = self
  end
  connect_now(self)
  self.id = self.attempt and self.attempt.id
  return self
end

--- Called by luaws.loader once a version of the script loaded (ok) or
--- failed: claimed clients move to the new listeners, unclaimed ones of
--- older versions close; a failed version's own clients close.
function M.loaded(ok)
  local version = core.loading()
  if version ~= load_version then load_version, load_counts, claims, made = version, {}, {}, {} end
  if ok then
    for key, claim in pairs(claims) do
      claim.client.listener = claim.listener
      claim.client.backoff = claim.opts
      claim.client.connect_opts = claim.connect_opts
      claim.client.version = version
    end
    for _, client in ipairs(made) do client.version = version end
    for key, client in pairs(clients) do
      if client.version ~= version and not client.closing then
        client:close(1001, "the script no longer makes this connection")
      end
    end
  else
    for _, client in ipairs(made) do client:close(1001, "the script failed to load") end
  end
  load_version, load_counts, claims, made = nil, {}, {}, {}
end

--- Forgets every client, closing them (luaws test, between tests).
function M.reset()
  for _, client in pairs(clients) do if not client.closing then client:close(1001) end end
  clients, claims, made, load_version, load_counts = {}, {}, {}, nil, {}
end

--- Reconnecting clients moved by the last reload (for the reload log).
function M.count()
  local n = 0
  for _, client in pairs(clients) do if not client.closing then n = n + 1 end end
  return n
end

return M
