-- Write an access code's outcome record, but only if it is still about the
-- newest generation AND the caller still holds the access code's job lease.
-- A stale worker can therefore never overwrite a newer outcome.
-- ARGV: access_code_id, generation, outcome JSON, state, worker, stream cap
-- Returns 1 written, 0 superseded (a newer generation exists), -1 lease lost.
local id, gen, outcome, state, worker, cap = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local K_DESIRED = base .. ':desired:' .. id
local K_OUTCOME = base .. ':outcome:' .. id
if tonumber(redis.call('HGET', K_DESIRED, 'generation')) ~= gen then return 0 end
if redis.call('HGET', job_key(id), 'lease') ~= worker then return -1 end
local prev = redis.call('GET', K_OUTCOME)
redis.call('SET', K_OUTCOME, outcome)
if not prev or cjson.decode(prev).state ~= state then
  redis.call('XADD', base .. ':events', 'MAXLEN', '~', cap, '*', 'access_code_id', id, 'generation', gen, 'state', state)
end
return 1
