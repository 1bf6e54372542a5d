-- A worker's heartbeat: renews the leases it still holds and marks it alive.
-- ARGV: worker, lease_ms, id... Returns the ids whose lease it lost.
local worker, lease_ms = ARGV[1], tonumber(ARGV[2])
rebuilt_call('ZADD', K_WORKERS, now, worker)
redis.call('ZREMRANGEBYSCORE', K_WORKERS, '-inf', now - 3600000)
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.pcall('HGET', job_key(id), 'lease') == worker then
    redis.call('ZADD', K_LEASED, 'XX', now + lease_ms, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
