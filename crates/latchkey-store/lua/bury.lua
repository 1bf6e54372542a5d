-- Dead-letter a job: it keeps its payload, attempts and this error.
-- ARGV: id, worker, fence, error, dead_cap. Returns 1, or 0 when the lease is not held.
local id, worker, fence, err, cap = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if not holds(job_key(id), worker, fence) then return 0 end
if rerun_if_touched(id, job_key(id)) then return 1 end
redis.call('ZREM', K_LEASED, id)
bury(id, err, cap)
return 1
