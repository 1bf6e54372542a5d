-- Settle a finished job. ARGV: id, worker, fence, keep_ms (0 = delete now)
-- Returns 1, or 0 when this run no longer holds the lease (it expired and the
-- job was handed to another run: that run will settle it).
local id, worker, fence, keep_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local jk = job_key(id)
if not holds(jk, worker, fence) then return 0 end
if rerun_if_touched(id, jk) then return 1 end
redis.call('ZREM', K_LEASED, id)
if keep_ms > 0 then
  redis.call('HSET', jk, 'state', 'done', 'finished_at', now)
  redis.call('HDEL', jk, 'lease')
  redis.call('PEXPIRE', jk, keep_ms)
else
  redis.call('DEL', jk)
end
count('completed', 1)
return 1
