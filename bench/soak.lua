-- bench/soak.lua — the endpoint mix of bench/soak for one wrk connection:
-- each call of request() sends the next request of the list below, so a
-- connection goes round them all (keep-alive). Statuses other than 2xx are
-- part of the mix (a route that does not exist, a method not allowed); the
-- Node.js peer answers 404 to the /test/* routes, which only myriad has
-- (MYRIAD_TEST_ROUTES=1). No HEAD: wrk does not know a HEAD response has
-- no body and would wait for one.
--
--   wrk -t1 -c32 -d600s -s bench/soak.lua http://127.0.0.1:8080
--   wrk ... -s bench/soak.lua http://127.0.0.1:8080 -- 16   (16 requests per write)

local list = {
  { "GET", "/plaintext" },
  { "GET", "/json" },
  { "GET", "/plaintext" },
  { "GET", "/test/query?name=soak%20test&x=1" },
  { "GET", "/test/params/alpha/beta" },
  { "POST", "/test/echo", string.rep("b", 3000) },
  { "GET", "/test/stream?chunks=8&size=2000" },
  { "GET", "/test/delay?ms=2" },
  { "GET", "/no/such/route" },
  { "DELETE", "/plaintext" },
  { "GET", "/json" },
}
local reqs, batch, n = {}, nil, 0

function init(args)
  local depth = tonumber(args[1]) or 1
  for i, r in ipairs(list) do
    local headers = r[3] and { ["Content-Length"] = tostring(#r[3]) } or nil
    reqs[i] = wrk.format(r[1], r[2], headers, r[3])
  end
  if depth > 1 then   -- pipelined: the cheap requests only, depth per write
    batch = string.rep(reqs[1] .. reqs[2], math.floor(depth / 2))
  end
end

function request()
  if batch then
    return batch
  end
  n = n % #reqs + 1
  return reqs[n]
end
