-- Seam answered 429 for a device: fill its window so nothing is sent to it for
-- `hold_ms` (the limiter learns from the server). ARGV: device, limit, hold_ms, window_ms
-- The caller clamps hold_ms (Seam's Retry-After is not trusted); this script
-- refuses anything outside 1 ms to a day before it writes.
local K_DEV = base .. ':rate:device:' .. ARGV[1]
local limit, hold, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if not (limit and hold and window) or limit < 1 or limit > 100000 or hold < 1 or hold > 86400000
  or window < 1 or window > 86400000 then
  return redis.error_reply('backoff_device.lua: limit must be 1 to 100000, hold_ms and window_ms 1 to 86400000')
end
if not ({none = true, zset = true})[key_type(K_DEV)] then set_aside(K_DEV, 'rate', ARGV[1]) end
-- An entry at time t blocks until t + window; to block until now + hold, date them now + hold - window.
local at = now + hold - window
for i = 1, limit do
  redis.call('ZADD', K_DEV, at, 'backoff:' .. now .. ':' .. i)
end
redis.call('PEXPIRE', K_DEV, math.max(hold, window))
return limit
