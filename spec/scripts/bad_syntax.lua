-- A script that does not compile: the error is on line 4.
return function(request)
  local x = 1
  return {status = 200 body = "missing comma"}
end
