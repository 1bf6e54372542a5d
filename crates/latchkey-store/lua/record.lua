-- Write an access code's outcome record, but only if it is still about the
-- newest generation AND the calling run still holds the access code's job
-- (worker and fence token, `holds`). A stale run can therefore never
-- overwrite a newer outcome. A write renews the lease: a run records
-- `applying` right before it calls Seam, and the lease then outlasts the call.
-- A change of state goes to the event stream and the code's history, and a
-- terminal one is counted in the queue's stats (`outcome_<state>`). A record
-- that ends the code's life (deleted or expired, final) makes the code's
-- records expire after `forget_ms`; a new generation keeps them (desire.lua).
-- The code is kept in its device's index (`<base>:device:<device_id>`, a set;
-- a device event pulls the device's codes forward, nudge.lua) while its
-- records live, and leaves it when they are set to be forgotten.
-- With continue_at, the record is the run's last write before its job runs
-- again at that time: the job is put back in this same script (as retry.lua
-- does for a continuation), one round trip instead of two.
-- ARGV: access_code_id, generation, outcome JSON, state, worker, fence,
--       lease_ms, history entry JSON, forget_ms (0: keep), device_id ('' unknown),
--       continue_at (ms; absent or '': the run goes on)
-- Returns 1 written (and put back, with continue_at), 0 superseded (a newer
-- generation exists; nothing written or put back), -1 lease lost.
local id, gen, outcome, state, worker, fence = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local lease_ms, entry, forget_ms, device = tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9]), ARGV[10] or ''
local continue_at = ARGV[11] or ''
if not gen or not lease_ms or not forget_ms then
  return redis.error_reply('record.lua: generation, lease_ms and forget_ms must be numbers')
end
if continue_at ~= '' then
  continue_at = tonumber(continue_at)
  if not continue_at then return redis.error_reply('record.lua: continue_at must be a number') end
end
-- (the job lists this script touches, checked before anything is written:
-- the leased set, and with continue_at the lists a job is put back on)
local broken = structure_error(continue_at == '' and {K_LEASED} or {K_LEASED, K_READY, K_SCHED})
if broken then return broken end
local K_DESIRED = base .. ':desired:' .. id
local K_OUTCOME = base .. ':outcome:' .. id
-- (read with pcall: a key of another type, written by hand, is nobody's)
if tonumber(redis.pcall('HGET', K_DESIRED, 'generation')) ~= gen then return 0 end
if not holds(job_key(id), worker, fence) then return -1 end
-- Decided before the write (Redis keeps the writes of a script that fails): a
-- previous record that does not decode counts as a change of state.
local raw = redis.pcall('GET', K_OUTCOME)
if type(raw) ~= 'string' or #raw > MAX_RECORD then raw = 'null' end
-- The previous state, read off the front of the record as latchkey writes it
-- (its first fields in order; an id with an escape in it does not match),
-- else decoded whole.
local prev_state = raw:match('^{"access_code_id":"[^"\\]*","generation":%d+,"state":"([%a_]+)"')
if not prev_state then
  local prev_ok, prev = pcall(cjson.decode, raw)
  prev_state = prev_ok and type(prev) == 'table' and prev.state
end
local changed = prev_state ~= state
local K_DEVICE = base .. ':device:' .. device
redis.call('SET', K_OUTCOME, outcome)
if continue_at == '' then redis.call('ZADD', K_LEASED, 'XX', now + lease_ms, id) end
if changed then
  note_change(id, gen, state, entry)
  -- Finished reconciliations by how they ended (`queue stats`; the benchmark
  -- waits on them, since a code watched to its end of stay is not acked).
  if TERMINAL[state] then count('outcome_' .. state, 1) end
end
if device ~= '' then
  -- (an index of another type, written by hand, is set aside and started over)
  write_or(function() set_aside(K_DEVICE, 'device', device) end, forget_ms > 0 and 'SREM' or 'SADD', K_DEVICE, id)
end
if forget_ms > 0 then
  for _, k in ipairs({K_DESIRED, K_OUTCOME, base .. ':history:' .. id}) do redis.call('PEXPIRE', k, forget_ms) end
end
if continue_at ~= '' then
  local jk = job_key(id)
  if not rerun_if_touched(id, jk) then put_back(id, jk, continue_at, '', false) end
end
return 1
