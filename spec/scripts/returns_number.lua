-- A script that returns neither a handler nor a listener table.
return 42
