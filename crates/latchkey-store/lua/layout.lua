-- A queue's layout: how many partitions its keys are split into. The first
-- process to use the queue records it; every other must agree (checked by
-- the caller). Self-contained (no prelude): it runs before anything else.
-- KEYS[1]: the queue's base as one whole (`<prefix>:{<queue>}`).
-- ARGV[1]: the partitions the caller is configured for (0: only read).
-- Returns {partitions recorded (0: none, when only reading), partitions
-- `repartition` is moving the queue to or 0}.
local base = KEYS[1]
local layout = base .. ':layout'
local kind = redis.call('TYPE', layout).ok
if kind ~= 'none' and kind ~= 'hash' then
  return redis.error_reply('UNREADABLE ' .. layout .. ' is a ' .. kind .. ', not a hash')
end
local function partitions(v, what)
  local n = tonumber(v)
  if not n or n ~= math.floor(n) or n < 1 or n > 1024 then
    error({ err = 'UNREADABLE ' .. layout .. ': ' .. what .. ' is not a whole number from 1 to 1024' })
  end
  return n
end
local f = redis.call('HMGET', layout, 'partitions', 'moving_to')
if f[1] then
  return { partitions(f[1], 'partitions'), f[2] and partitions(f[2], 'moving_to') or 0 }
end
local wanted = tonumber(ARGV[1])
if wanted == 0 then return { 0, 0 } end
wanted = partitions(wanted, 'the partitions asked for')
-- Nothing recorded. A queue used before partitions existed keeps its jobs
-- under the single tag, which is one partition: record that, so the caller
-- refuses to start and says how to move it.
for _, part in ipairs({ 'ready', 'scheduled', 'leased', 'dead' }) do
  if redis.call('EXISTS', base .. ':' .. part) == 1 then
    wanted = 1
    break
  end
end
redis.call('HSET', layout, 'partitions', wanted)
return { wanted, 0 }
