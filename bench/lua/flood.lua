-- A wrong-password flood: the body is BENCH_BODY, and every request claims a
-- different client address in X-Forwarded-For (10.0.0.0/8, random).
dofile(os.getenv("BENCH_LUA") .. "/common.lua")

local body = os.getenv("BENCH_BODY")

function init(args)
  math.randomseed(os.time() * 100 + id)
end

function request()
  local address = string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255), math.random(1, 254))
  local headers = {["Content-Type"] = "application/json", ["X-Forwarded-For"] = address}
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  tally(status)
end
