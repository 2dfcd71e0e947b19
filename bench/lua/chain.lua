-- Refresh-token chains: thread i starts from the i-th token of BENCH_TOKENS
-- (comma-separated) and swaps in the token each response returns, so with one
-- connection per thread every chain is strictly sequential.
-- BENCH_CHAIN=bastion: POST {"refresh_token": …}, the new one is "refresh_token".
-- BENCH_CHAIN=pocketbase: POST with "Authorization: <token>", the new one is "token".
dofile(os.getenv("BENCH_LUA") .. "/common.lua")

local kind = os.getenv("BENCH_CHAIN")
local key = kind == "bastion" and "refresh_token" or "token"
local token

function init(args)
  local tokens = {}
  for found in string.gmatch(os.getenv("BENCH_TOKENS"), "[^,]+") do
    table.insert(tokens, found)
  end
  token = tokens[id]
end

function request()
  if kind == "bastion" then
    return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, '{"refresh_token":"' .. token .. '"}')
  end
  return wrk.format("POST", nil, {["Authorization"] = token}, "")
end

function response(status, headers, body)
  tally(status)
  local found = string.match(body, '"' .. key .. '"%s*:%s*"([^"]+)"')
  if status == 200 and found then
    token = found
  end
end
