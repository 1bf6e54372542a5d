-- Shared rate limits, one script for both (all worker processes see the same state).
-- ARGV: device_key ('' for none), device_limit, device_window_ms,
--       key_interval_ms (0 for no key budget), key_burst
-- Per device: an exact sliding window (at most `limit` in any `window`), the way
-- Seam limits access-code updates per device. For the whole API key: GCRA with
-- `interval` between requests on average and `burst` at once.
-- Takes a slot only when both allow it. Returns 0 when the request may go now,
-- else how many ms to wait.
local device, limit, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local interval, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
if not (limit and window and interval and burst) then
  return redis.error_reply('throttle.lua: device_limit, device_window_ms, key_interval_ms and key_burst must be numbers')
end
local wait = 0
local K_DEV = base .. ':rate:device:' .. device
local K_KEY, K_SEQ = base .. ':rate:key', base .. ':rate:seq'
-- Rate state of another type or value (written by hand) is set aside: the
-- limits start over rather than fail every call.
-- (each key read once: this runs before every Seam call)
-- A string's value, or false when the key is missing; a key of another type
-- or a value `valid` refuses is set aside (counts as missing).
local function readable(k, what, valid)
  local v = redis.pcall('GET', k)
  if type(v) == 'string' and valid(v) then return v end
  if v then set_aside(k, 'rate', what) end
  return false
end
local key_tat = interval > 0 and readable(K_KEY, 'key', tonumber)
if device ~= '' then readable(K_SEQ, 'seq', is_int) end
if device ~= '' then
  write_or(function() set_aside(K_DEV, 'rate', device) end, 'ZREMRANGEBYSCORE', K_DEV, '-inf', now - window)
  if redis.call('ZCARD', K_DEV) >= limit then
    local oldest = redis.call('ZRANGE', K_DEV, 0, 0, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + window - now)
  end
end
local tat = now
if interval > 0 then
  tat = math.max(tonumber(key_tat) or now, now)
  local allow_at = tat - interval * (burst - 1)
  if allow_at > now then wait = math.max(wait, allow_at - now) end
end
if wait > 0 then return wait end
if device ~= '' then
  redis.call('ZADD', K_DEV, now, now .. ':' .. redis.call('INCR', K_SEQ))
  if redis.call('PTTL', K_DEV) < window then redis.call('PEXPIRE', K_DEV, window) end
end
if interval > 0 then
  redis.call('SET', K_KEY, tat + interval, 'PX', math.ceil(interval * burst) + 1000)
end
return 0
