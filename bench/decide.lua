-- wrk script for bench/load.sh: POSTs `/v1/decide` bodies, each with the next token of a rotating set.
--
-- Usage: wrk ... -s bench/decide.lua URL -- TOKENS_FILE WORKLOAD [ROUTES] [CALLER_KEY]
--
-- WORKLOAD says what repeats:
--   repeat  token n always asks for route n (mod ROUTES): a (token, route) pair recurs once per pass
--           over the tokens. Every request is built once, in init(), so the load generator spends its
--           CPU on sending, not on formatting.
--   unique  each request asks for a route drawn at random from ROUTES, so a pair rarely recurs. The
--           body is assembled per request from two halves built in init(): the least formatting that
--           keeps the route random.
-- Each thread starts at its own offset in the token list. There is no response() function: wrk then
-- skips parsing response bodies, which would take CPU from the server it shares the machine with
-- (load.sh checks the answers from Verdict's metrics instead). done() prints one `RESULT key=value
-- ...` line for load.sh to read.

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

local workload = "repeat"
local routes = 1000
local headers
local requests = {}
local halves = {}
local next_token = 1

-- The body of a decide request, split around the route number.
local function halves_of(token, number)
  local before = string.format('{"authorization":"Bearer %s","method":"GET","path":"/orders/', token)
  local after = string.format(
    '","host":"api.example.com","query":"","client_ip":"203.0.113.7",'
      .. '"headers":{"user-agent":"wrk","accept":"application/json"},'
      .. '"apigee":{"proxy":"orders-v1","environment":"prod","organization":"example",'
      .. '"product":"orders","app":"bench","developer":"bench@example.com"},'
      .. '"message_id":"rrt-bench-%06d"}',
    number)
  return before, after
end

function init(args)
  local usage = "usage: wrk ... -s decide.lua URL -- TOKENS_FILE WORKLOAD [ROUTES] [CALLER_KEY]"
  local tokens_path = args[1] or error(usage)
  workload = args[2] or error(usage)
  if workload ~= "repeat" and workload ~= "unique" then
    error("WORKLOAD must be repeat or unique, not " .. workload)
  end
  routes = tonumber(args[3] or "1000")
  headers = {
    ["Content-Type"] = "application/json",
    ["x-verdict-key"] = args[4] or "bench-caller-key-0123456789",
  }
  local file = assert(io.open(tokens_path, "r"))
  for token in file:lines() do
    if token ~= "" then
      local number = #halves + 1
      local before, after = halves_of(token, number)
      halves[number] = { before, after }
      if workload == "repeat" then
        local body = before .. tostring((number - 1) % routes) .. after
        requests[number] = wrk.format("POST", "/v1/decide", headers, body)
      end
    end
  end
  file:close()
  if #halves == 0 then
    error("no tokens in " .. tokens_path)
  end
  -- Threads start far apart in the list, so they do not send the same token at the same time.
  next_token = ((thread_number or 1) - 1) * 499 % #halves + 1
  math.randomseed(thread_number or 1)
end

function request()
  local number = next_token
  next_token = next_token % #halves + 1
  if workload == "repeat" then
    return requests[number]
  end
  local half = halves[number]
  return wrk.format("POST", "/v1/decide", headers, half[1] .. tostring(math.random(0, routes - 1)) .. half[2])
end

function done(summary, latency, _)
  local errors = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d bytes=%d "
      .. "status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0), latency.max,
    summary.bytes, errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
