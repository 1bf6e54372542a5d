-- Record a new desired state of an access code, atomically:
--   1. bump its generation (it only grows) and store the state;
--   2. if the previous generation had not finished, announce it `superseded`;
--   3. reset the outcome record to `pending` for the new generation (keeping
--      `last_update_at`, which spaces update calls out across generations,
--      the device, and `deleted_at`); a code whose records were set to be
--      forgotten (deleted or expired) is live again: they are kept;
--   4. make sure the access code's one job will run now: create it, or pull it
--      forward if it waits (scheduled, dead, done); if it is ready, its run
--      will read the new generation; if it is running (leased), mark it
--      touched so it runs again however that run ends.
-- ARGV: access_code_id, desired JSON, pending outcome JSON (generation filled in here)
-- Returns the new generation.
local id, desired, template = ARGV[1], ARGV[2], ARGV[3]
local K_DESIRED = base .. ':desired:' .. id
local K_OUTCOME = base .. ':outcome:' .. id

-- Everything read is checked before the first write (Redis keeps the writes
-- of a script that fails). A previous record that does not decode, or has no
-- generation, is not carried over: the new generation starts from the template.
local o = cjson.decode(template)
local prev_ok, prev = pcall(cjson.decode, redis.call('GET', K_OUTCOME) or 'null')
if not prev_ok or type(prev) ~= 'table' or not tonumber(prev.generation) then prev = nil end

local gen = redis.call('HINCRBY', K_DESIRED, 'generation', 1)
redis.call('HSET', K_DESIRED, 'state', desired, 'enqueued_at', now)

o.generation = gen
if prev then
  if not TERMINAL[prev.state] then
    note_change(id, prev.generation, 'superseded',
      cjson.encode({at = rfc3339_ms(now), generation = tonumber(prev.generation), state = 'superseded'}))
  end
  -- Updates are spaced out per access code across generations.
  o.last_update_at = prev.last_update_at
  -- The device is learned once (for its rate limit) and kept.
  o.device_id = prev.device_id
  -- An update of a code that was deleted must say so, not just "404".
  o.deleted_at = prev.deleted_at
end
redis.call('SET', K_OUTCOME, cjson.encode(o))
-- Only the final record of a deleted or expired code (it has `deleted_at`)
-- sets its keys to expire (record.lua): a new generation keeps them. (SET
-- already cleared the outcome's.)
if o.deleted_at then
  redis.call('PERSIST', K_DESIRED)
  redis.call('PERSIST', base .. ':history:' .. id)
end
note_change(id, gen, 'pending', cjson.encode({at = rfc3339_ms(now), generation = gen, state = 'pending'}))

local jk = job_key(id)
local st = redis.call('HGET', jk, 'state')
if not st or st == 'done' then
  redis.call('DEL', jk)
  redis.call('HSET', jk, 'payload', cjson.encode({access_code_id = id}), 'attempts', 0, 'enqueued_at', now, 'state', 'ready')
  redis.call('LPUSH', K_READY, id)
  redis.call('HINCRBY', K_STATS, 'pushed', 1)
elseif st == 'scheduled' then
  redis.call('ZREM', K_SCHED, id)
  redis.call('HSET', jk, 'state', 'ready')
  redis.call('LPUSH', K_READY, id)
elseif st == 'dead' then
  redis.call('ZREM', K_DEAD, id)
  redis.call('HSET', jk, 'state', 'ready', 'attempts', 0)
  redis.call('LPUSH', K_READY, id)
elseif st == 'leased' then
  -- Running now: whatever the run ends with, the job runs again (common.lua).
  redis.call('HSET', jk, 'touched', 1)
end
redis.call('PUBLISH', K_WAKE, now)
return gen
