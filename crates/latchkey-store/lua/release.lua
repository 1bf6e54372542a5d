-- Hand back jobs a worker leased but never started (shutdown). They go to the
-- front of the line and the attempt the lease counted is given back.
-- ARGV: worker, id... Returns the number released.
local worker = ARGV[1]
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local jk = job_key(id)
  -- (a job that cannot be read is left to its lease's expiry, which buries it)
  if redis.pcall('HGET', jk, 'lease') == worker and not unreadable(id) then
    redis.call('ZREM', K_LEASED, id)
    redis.call('HINCRBY', jk, 'attempts', -1)
    redis.call('HSET', jk, 'state', 'ready')
    redis.call('HDEL', jk, 'lease')
    redis.call('RPUSH', K_READY, id)
    n = n + 1
  end
end
if n > 0 then redis.call('PUBLISH', K_WAKE, now) end
return n
