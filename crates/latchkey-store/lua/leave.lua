-- A worker leaves: every job still leased to it goes back to the front of the
-- line (it is not being worked on any more), and it leaves the registry.
-- Bounded by the leased set, which holds at most each worker's concurrency
-- plus fetch batch. ARGV: worker. Returns the number handed back.
local worker = ARGV[1]
local n = 0
for _, id in ipairs(redis.call('ZRANGE', K_LEASED, 0, -1)) do
  local jk = job_key(id)
  -- (a job that cannot be read is left to its lease's expiry, which buries it)
  if redis.pcall('HGET', jk, 'lease') == worker and not unreadable(id) then
    redis.call('ZREM', K_LEASED, id)
    redis.call('HDEL', jk, 'lease')
    redis.call('HSET', jk, 'state', 'ready')
    redis.call('RPUSH', K_READY, id)
    n = n + 1
  end
end
rebuilt_call('ZREM', K_WORKERS, worker)
if n > 0 then redis.call('PUBLISH', K_WAKE, now) end
return n
