-- One fixed request: BENCH_METHOD, BENCH_AUTH (the whole Authorization value) and BENCH_BODY, all optional.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")

wrk.method = os.getenv("BENCH_METHOD") or "GET"
local auth = os.getenv("BENCH_AUTH") or ""
if auth ~= "" then
  wrk.headers["Authorization"] = auth
end
local body = os.getenv("BENCH_BODY") or ""
if body ~= "" then
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = body
end

function response(status, headers, body)
  tally(status)
end
