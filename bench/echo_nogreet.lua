-- bench/echo_nogreet.lua: the luaws benchmark bot.  Echoes every message and
-- does nothing else: no greeting on open, so luaws does the same work per
-- message as the peer servers.  (scripts/echo.lua greets first; wsload's
-- --skip-greeting copes with that too.)
--
-- A listener table (the bot shortcut of the script API): used for every
-- upgrade request; plain HTTP gets 426.  A text message arrives as a Lua
-- string and goes back as text; a binary one arrives as a luaws.buffer and
-- goes back as binary.
return {
  on_message = function(socket, message)
    socket:send(message)
  end,
}
