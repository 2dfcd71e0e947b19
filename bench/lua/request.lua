-- One request, described by the environment: BENCH_METHOD, BENCH_TOKEN, BENCH_BODY (optional).
wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = body
end

done = function(summary, latency, requests)
  io.write(string.format("p50_ms=%.2f p99_ms=%.2f non2xx=%d\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status))
end
