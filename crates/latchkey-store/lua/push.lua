-- Push jobs onto a latchkey queue. This file is self-contained (it does not use
-- common.lua) so that producers in any language can run it as is with EVAL.
-- KEYS[1]: the queue's base key, e.g. "latchkey:{apply}".
-- ARGV[1]: number of fields per job (4; the format can grow)
-- then per job: id, payload (JSON), run_at (epoch ms; 0 or past = now), max_attempts (0 = queue default)
-- Returns one integer per job: 1 created, 0 duplicate (a job with this id exists).
local base = KEYS[1]
local K_READY, K_SCHED = base .. ':ready', base .. ':scheduled'
local K_STATS, K_WAKE = base .. ':stats', base .. ':wake'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stride = tonumber(ARGV[1])
local out = {}
local created = 0
local min_due = nil
for i = 2, #ARGV, stride do
  local id, payload, run_at, max = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local jk = base .. ':job:' .. id
  if redis.call('EXISTS', jk) == 1 then
    out[#out + 1] = 0
  else
    if run_at <= now then
      redis.call('HSET', jk, 'payload', payload, 'attempts', 0, 'enqueued_at', now, 'state', 'ready')
      redis.call('LPUSH', K_READY, id)
      run_at = now
    else
      redis.call('HSET', jk, 'payload', payload, 'attempts', 0, 'enqueued_at', now, 'state', 'scheduled', 'run_at', run_at)
      redis.call('ZADD', K_SCHED, run_at, id)
    end
    if max ~= '0' then redis.call('HSET', jk, 'max_attempts', max) end
    if min_due == nil or run_at < min_due then min_due = run_at end
    created = created + 1
    out[#out + 1] = 1
  end
end
if created > 0 then
  redis.call('HINCRBY', K_STATS, 'pushed', created)
  redis.call('PUBLISH', K_WAKE, min_due)
end
return out
