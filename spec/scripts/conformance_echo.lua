-- The server under test of spec/conformance: echoes every message in kind
-- (text as text, binary as binary), no greeting, no special words. Pings are
-- answered by the server itself (no on_ping).
return {
  on_message = function(socket, message)
    socket:send(message)
  end,
}
