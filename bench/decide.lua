-- wrk script for bench/load.sh: POSTs `/v1/decide` bodies, each with the next token of a rotating set.
--
-- Usage: wrk ... -s bench/decide.lua URL -- TOKENS_FILE [CALLER_KEY]
-- Every request is built once, in init(), so the load generator spends its CPU on sending, not on
-- formatting. Each thread starts at its own offset in the token list. There is no response()
-- function: wrk then skips parsing response bodies, which would take CPU from the server it shares
-- the machine with. done() prints one `RESULT key=value ...` line for load.sh to read.

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

local requests = {}
local next_request = 1

function init(args)
  local tokens_path = args[1] or error("usage: wrk ... -s decide.lua URL -- TOKENS_FILE [CALLER_KEY]")
  local caller_key = args[2] or "bench-caller-key-0123456789"
  local headers = {
    ["Content-Type"] = "application/json",
    ["x-verdict-key"] = caller_key,
  }
  local file = assert(io.open(tokens_path, "r"))
  for token in file:lines() do
    if token ~= "" then
      local number = #requests + 1
      local body = string.format(
        '{"authorization":"Bearer %s","method":"GET","path":"/orders/42","host":"api.example.com",'
          .. '"query":"","client_ip":"203.0.113.7","headers":{"user-agent":"wrk","accept":"application/json"},'
          .. '"apigee":{"proxy":"orders-v1","environment":"prod","organization":"example",'
          .. '"product":"orders","app":"bench","developer":"bench@example.com"},'
          .. '"message_id":"rrt-bench-%06d"}',
        token, number)
      requests[number] = wrk.format("POST", "/v1/decide", headers, body)
    end
  end
  file:close()
  if #requests == 0 then
    error("no tokens in " .. tokens_path)
  end
  -- Threads start far apart in the list, so they do not send the same token at the same time.
  next_request = ((thread_number or 1) - 1) * 499 % #requests + 1
end

function request()
  local chosen = requests[next_request]
  next_request = next_request % #requests + 1
  return chosen
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
