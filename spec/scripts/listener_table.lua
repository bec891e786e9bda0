-- The shortcut: a listener table instead of a handler. Every upgrade gets
-- this listener; plain HTTP gets 426.
return {
  on_open = function(socket)
    socket:send("hello from a listener table")
  end,
  on_message = function(socket, message)
    socket:send(message)
  end,
}
