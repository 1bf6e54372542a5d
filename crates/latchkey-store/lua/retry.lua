-- Put a job back, to run at run_at: a failed attempt (error given), a
-- continuation (error empty) or a wait (error empty, defer = '1'); see
-- put_back in common.lua.
-- ARGV: id, worker, fence, run_at (ms), error, defer ('1' or absent).
-- Returns 1, or 0 when the lease is not held.
local id, worker, fence, run_at, err, defer = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6] == '1'
if not run_at then return redis.error_reply('retry.lua: run_at must be a number') end
local jk = job_key(id)
if not holds(jk, worker, fence) then return 0 end
if rerun_if_touched(id, jk) then return 1 end
put_back(id, jk, run_at, err, defer)
return 1
