-- Write an access code's outcome record, but only if it is still about the
-- newest generation AND the calling run still holds the access code's job
-- (worker and fence token, `holds`). A stale run can therefore never
-- overwrite a newer outcome. A write renews the lease: a run records
-- `applying` right before it calls Seam, and the lease then outlasts the call.
-- ARGV: access_code_id, generation, outcome JSON, state, worker, fence, lease_ms
-- Returns 1 written, 0 superseded (a newer generation exists), -1 lease lost.
local id, gen, outcome, state, worker, fence = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local lease_ms = tonumber(ARGV[7])
if not gen or not lease_ms then return redis.error_reply('record.lua: generation and lease_ms must be numbers') end
local K_DESIRED = base .. ':desired:' .. id
local K_OUTCOME = base .. ':outcome:' .. id
if tonumber(redis.call('HGET', K_DESIRED, 'generation')) ~= gen then return 0 end
if not holds(job_key(id), worker, fence) then return -1 end
-- Decided before the write (Redis keeps the writes of a script that fails): a
-- previous record that does not decode counts as a change of state.
local prev_ok, prev = pcall(cjson.decode, redis.call('GET', K_OUTCOME) or 'null')
local changed = not (prev_ok and type(prev) == 'table' and prev.state == state)
redis.call('SET', K_OUTCOME, outcome)
redis.call('ZADD', K_LEASED, 'XX', now + lease_ms, id)
if changed then
  redis.call('XADD', base .. ':events', 'MAXLEN', '~', EVENTS_CAP, '*', 'access_code_id', id, 'generation', gen, 'state', state)
end
return 1
