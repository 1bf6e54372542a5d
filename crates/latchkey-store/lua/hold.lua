-- Right before a run sends something it cannot take back (an update to Seam),
-- it checks that it still holds its job and renews the lease, so the lease
-- outlasts the call by a known margin. ARGV: id, worker, fence, lease_ms.
-- Returns 1 held (and renewed), 0 lost.
local id, worker, fence, lease_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if not lease_ms then return redis.error_reply('hold.lua: lease_ms must be a number') end
if not holds(job_key(id), worker, fence) then return 0 end
redis.call('ZADD', K_LEASED, 'XX', now + lease_ms, id)
return 1
