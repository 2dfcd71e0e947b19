-- OAuth token requests (scenario 8): POST application/x-www-form-urlencoded to
-- /oauth2/token with client_secret_basic (BENCH_AUTH, the whole Authorization value).
-- BENCH_GRANT=client_credentials: the same request every time (BENCH_SCOPE).
-- BENCH_GRANT=refresh_token: thread i starts from the i-th refresh token of
-- BENCH_TOKENS (comma-separated) and swaps in the one each response returns,
-- so with one connection per thread every rotation chain is sequential.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")

local grant = os.getenv("BENCH_GRANT")
local headers = {
  ["Authorization"] = os.getenv("BENCH_AUTH"),
  ["Content-Type"] = "application/x-www-form-urlencoded",
}
local token

function init(args)
  if grant == "refresh_token" then
    local tokens = {}
    for found in string.gmatch(os.getenv("BENCH_TOKENS"), "[^,]+") do
      table.insert(tokens, found)
    end
    token = tokens[id]
  end
end

function request()
  if grant == "refresh_token" then
    return wrk.format("POST", nil, headers, "grant_type=refresh_token&refresh_token=" .. token)
  end
  return wrk.format("POST", nil, headers, "grant_type=client_credentials&scope=" .. (os.getenv("BENCH_SCOPE") or ""))
end

function response(status, headers, body)
  tally(status)
  if grant == "refresh_token" then
    local found = string.match(body, '"refresh_token"%s*:%s*"([^"]+)"')
    if status == 200 and found then
      token = found
    end
  end
end
