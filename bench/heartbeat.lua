-- wrk script: POST /v1/heartbeat with a different agent token on each request.
-- Arguments (after `--`): TOKENS_FILE BODY_FILE [once=THREADS] [close] [every=N:BODY2_FILE]
--   once=THREADS: thread k of THREADS sends one heartbeat for every THREADS-th token from k,
--                 then stops (warms the collector's token cache with every token once)
--   close:        ask for a new connection per request (Connection: close)
--   every=N:FILE: every Nth request of a thread sends FILE's body instead (a heartbeat with a
--                 network section, as agents send one at most every 15 minutes)
-- done() prints one JSON line with the totals and latency percentiles (microseconds).

local count = 0

function setup(thread)
  thread:set("id", count)
  count = count + 1
end

function init(args)
  tokens = {}
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
  local file = assert(io.open(args[2], "rb"))
  body = file:read("*a")
  file:close()
  headers = { ["Content-Type"] = "application/json" }
  step = 1
  -- Threads start at different places in the token list.
  cursor = 1 + (id * 7919) % #tokens
  for i = 3, #args do
    local threads = string.match(args[i], "^once=(%d+)$")
    if threads then
      step = tonumber(threads)
      cursor = id + 1
      remaining = math.floor((#tokens - id + step - 1) / step)
      function response(status, response_headers, response_body)
        remaining = remaining - 1
        if remaining <= 0 then wrk.thread:stop() end
      end
    end
    if args[i] == "close" then headers["Connection"] = "close" end
    local n, path = string.match(args[i], "^every=(%d+):(.+)$")
    if n then
      every = tonumber(n)
      local other = assert(io.open(path, "rb"))
      other_body = other:read("*a")
      other:close()
    end
  end
  sent = 0
end

function request()
  local token = tokens[cursor]
  cursor = cursor + step
  if cursor > #tokens then cursor = cursor - #tokens end
  headers["Authorization"] = "Bearer " .. token
  sent = sent + 1
  if every and sent % every == 0 then
    return wrk.format("POST", "/v1/heartbeat", headers, other_body)
  end
  return wrk.format("POST", "/v1/heartbeat", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"p50": %d, "p90": %d, ' ..
    '"p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
