-- wrk script: sends the same request on every connection, built once per thread.
-- Arguments (after `--` on the wrk command line): METHOD BODY_FILE CONTENT_TYPE [HEADER: VALUE]...
-- A BODY_FILE of "-" sends no body (for GET). Building the request once keeps wrk's own CPU cost
-- per request low, which matters when wrk and the server share two cores.
local req

function init(args)
  local method = args[1] or "GET"
  local body = nil
  if args[2] and args[2] ~= "-" then
    local f = assert(io.open(args[2], "rb"))
    body = f:read("*a")
    f:close()
  end
  local headers = {}
  if args[3] and args[3] ~= "-" then headers["Content-Type"] = args[3] end
  for i = 4, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    if name then headers[name] = value end
  end
  req = wrk.format(method, nil, headers, body)
end

function request()
  return req
end
