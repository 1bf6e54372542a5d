-- Seam answered 429 for a device: fill its window so nothing is sent to it for
-- `hold_ms` (the limiter learns from the server). ARGV: device, limit, hold_ms, window_ms
local K_DEV = base .. ':rate:device:' .. ARGV[1]
local limit, hold, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- An entry at time t blocks until t + window; to block until now + hold, date them now + hold - window.
local at = now + hold - window
for i = 1, limit do
  redis.call('ZADD', K_DEV, at, 'backoff:' .. now .. ':' .. i)
end
redis.call('PEXPIRE', K_DEV, math.max(hold, window))
return limit
