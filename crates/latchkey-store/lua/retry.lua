-- Put a job back, to run at run_at. Two uses:
--   a failed attempt (error given): the attempt counts, the error is kept;
--   a continuation (error empty, e.g. "verify again in 5 s"): not a failure,
--   so the attempt count starts over and no error is recorded.
-- ARGV: id, worker, fence, run_at (ms), error. Returns 1, or 0 when the lease is not held.
local id, worker, fence, run_at, err = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local jk = job_key(id)
if not holds(jk, worker, fence) then return 0 end
if rerun_if_touched(id, jk) then return 1 end
redis.call('ZREM', K_LEASED, id)
redis.call('HDEL', jk, 'lease')
local counter = 'retried'
if err == '' then
  redis.call('HSET', jk, 'attempts', 0)
  redis.call('HDEL', jk, 'error')
  counter = 'requeued'
end
if run_at <= now then
  redis.call('HSET', jk, 'state', 'ready')
  redis.call('LPUSH', K_READY, id)
  run_at = now
else
  redis.call('HSET', jk, 'state', 'scheduled', 'run_at', run_at)
  redis.call('ZADD', K_SCHED, run_at, id)
end
if err ~= '' then redis.call('HSET', jk, 'error', err) end
redis.call('HINCRBY', K_STATS, counter, 1)
redis.call('PUBLISH', K_WAKE, run_at)
return 1
