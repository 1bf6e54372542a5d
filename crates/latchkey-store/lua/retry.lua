-- Put a job back, to run at run_at. Three uses:
--   a failed attempt (error given): the attempt counts, the error is kept;
--   a continuation (error empty, e.g. "verify again in 5 s"): not a failure,
--     so the attempt count starts over and no error is recorded;
--   a wait (error empty, defer = '1', e.g. a rate limit or the spacing of
--     updates): no progress and no failure, so the attempt this run's fetch
--     counted is given back and the count of failures stands (a job that
--     keeps failing between waits still runs out of attempts).
-- ARGV: id, worker, fence, run_at (ms), error, defer ('1' or absent).
-- Returns 1, or 0 when the lease is not held.
local id, worker, fence, run_at, err, defer = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6] == '1'
if not run_at then return redis.error_reply('retry.lua: run_at must be a number') end
local jk = job_key(id)
if not holds(jk, worker, fence) then return 0 end
if rerun_if_touched(id, jk) then return 1 end
redis.call('ZREM', K_LEASED, id)
redis.call('HDEL', jk, 'lease')
local counter = 'retried'
if err == '' then
  counter = 'requeued'
  if defer then
    -- (holds passed: the record is a hash; its attempts were counted by a fetch)
    local attempts = tonumber(redis.call('HGET', jk, 'attempts')) or 1
    redis.call('HSET', jk, 'attempts', math.max(attempts - 1, 0))
    counter = 'deferred'
  else
    redis.call('HSET', jk, 'attempts', 0)
    redis.call('HDEL', jk, 'error')
  end
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
count(counter, 1)
redis.call('PUBLISH', K_WAKE, run_at)
return 1
