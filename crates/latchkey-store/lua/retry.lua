-- Put a failed job back, to run at run_at. ARGV: id, worker, run_at (ms), error
-- Returns 1, or 0 when the worker no longer holds the lease.
local id, worker, run_at, err = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local jk = job_key(id)
if redis.call('HGET', jk, 'lease') ~= worker then return 0 end
redis.call('ZREM', K_LEASED, id)
redis.call('HDEL', jk, 'lease')
if run_at <= now then
  redis.call('HSET', jk, 'state', 'ready', 'error', err)
  redis.call('LPUSH', K_READY, id)
  run_at = now
else
  redis.call('HSET', jk, 'state', 'scheduled', 'error', err, 'run_at', run_at)
  redis.call('ZADD', K_SCHED, run_at, id)
end
redis.call('HINCRBY', K_STATS, 'retried', 1)
redis.call('PUBLISH', K_WAKE, run_at)
return 1
