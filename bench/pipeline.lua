-- bench/pipeline.lua — makes wrk pipeline HTTP/1.1 requests: every write to
-- a connection carries DEPTH copies of the request for the URL's path, and
-- wrk counts each response it parses as one request.
--
--   wrk -t1 -c256 -d10s -s bench/pipeline.lua http://127.0.0.1:8080/plaintext -- 16
--
-- DEPTH is the first script argument (after "--"); it defaults to 16.
-- wrk measures latency per write, not per request, so its percentiles are
-- meaningless here: bench/compare does not report them for pipelined runs.

local batch

function init(args)
  local depth = tonumber(args[1]) or 16
  if depth < 1 then
    error("pipeline depth must be at least 1")
  end
  local one = wrk.format(nil, wrk.path)
  batch = string.rep(one, depth)
end

function request()
  return batch
end
