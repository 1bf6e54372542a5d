-- Re-queue dead letters with a fresh attempt budget. The last error is kept.
-- ARGV: limit, id... (no ids: the oldest `limit` dead letters). Returns the ids re-queued.
local limit = tonumber(ARGV[1])
if not limit then return redis.error_reply('requeue_dead.lua: limit must be a number') end
local ids = {}
if #ARGV > 1 then
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('ZRANGE', K_DEAD, 0, limit - 1)
end
local done = {}
for _, id in ipairs(ids) do
  -- (a record that is no hash cannot be re-queued; it stays a dead letter)
  if key_type(job_key(id)) == 'hash' and redis.call('ZREM', K_DEAD, id) == 1 then
    redis.call('HSET', job_key(id), 'state', 'ready', 'attempts', 0)
    redis.call('HDEL', job_key(id), 'finished_at')
    redis.call('LPUSH', K_READY, id)
    done[#done + 1] = id
  end
end
if #done > 0 then redis.call('PUBLISH', K_WAKE, now) end
return done
