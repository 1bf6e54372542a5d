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
-- A record of this code that cannot be read (another type, not JSON, over
-- MAX_RECORD, a counter that is not a number) is set aside (`set_aside`, kept
-- for an operator) and started afresh, so enqueueing again always heals a code.
-- With an idempotency key (an HTTP client's `Idempotency-Key`, scoped by the
-- caller), the same request repeated within `idem_ms` returns the generation
-- the first made, and changes nothing; the key used for another code or
-- another desired state is refused (error IDEMPOTENCY).
-- ARGV: access_code_id, desired JSON, pending outcome JSON (generation filled
--       in here)[, idempotency key, idem_ms]
-- Returns the new generation (or the one the key's first request made).
-- A partition `repartition` is moving away from takes no desired state: it
-- answers REPARTITIONING while its codes move (try again shortly), then
-- REPARTITIONED <partitions> (the layout the code is in now).
local moving = redis.call('GET', base .. ':moving')
if moving then
  moving = tostring(moving)
  if moving:sub(1, 5) == 'moved' then
    return redis.error_reply('REPARTITIONED ' .. (moving:match(' (%d+)$') or '0'))
  end
  return redis.error_reply('REPARTITIONING this partition is being moved by latchkey repartition; try again shortly')
end
local id, desired, template = ARGV[1], ARGV[2], ARGV[3]
local idem, idem_ms = ARGV[4], tonumber(ARGV[5])
local K_IDEM = idem and (base .. ':idem:' .. idem)
local fingerprint = idem and (id .. '\n' .. redis.sha1hex(desired))
if idem then
  if not idem_ms or idem_ms < 1 then return redis.error_reply('desire.lua: idem_ms must be a positive number') end
  local seen = key_type(K_IDEM) == 'string' and redis.call('GET', K_IDEM)
  if seen then
    local fp, gen = seen:match('^(.*)\n(%d+)$')
    if fp == fingerprint then return tonumber(gen) end
    return redis.error_reply('IDEMPOTENCY this Idempotency-Key was used within 24 h for another request (another access code or desired state)')
  end
end
local K_DESIRED = base .. ':desired:' .. id
local K_OUTCOME = base .. ':outcome:' .. id
local jk = job_key(id)

-- 1. Read and check everything before the first write (Redis keeps the
--    writes of a script that fails).
local o = cjson.decode(template)
local prev, outcome_bad = nil, false
local kind = key_type(K_OUTCOME)
if kind == 'string' then
  if redis.call('STRLEN', K_OUTCOME) > MAX_RECORD then
    outcome_bad = true
  else
    local ok, p = pcall(cjson.decode, redis.call('GET', K_OUTCOME))
    if ok and type(p) == 'table' and tonumber(p.generation) then prev = p else outcome_bad = true end
  end
elseif kind ~= 'none' then
  outcome_bad = true
end
kind = key_type(K_DESIRED)
local desired_bad = kind ~= 'none'
  and (kind ~= 'hash' or not is_int(redis.call('HGET', K_DESIRED, 'generation') or '0'))
local job_bad = unreadable(id) ~= nil

-- Fields carried over from the previous record, only in the form the worker writes them.
local function time_or_nil(v)
  if type(v) == 'string' and #v <= 40 and v:match('^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d') then return v end
  return nil
end
local function id_or_nil(v)
  if type(v) == 'string' and #v > 0 and #v <= 200 and not v:find('[%c%s]') then return v end
  return nil
end

-- 2. Set aside what cannot be read.
if outcome_bad then set_aside(K_OUTCOME, 'outcome', id) end
if desired_bad then
  set_aside(K_DESIRED, 'desired', id)
  -- Generations only grow: carry on from the record's, if it has one.
  redis.call('HSET', K_DESIRED, 'generation', prev and math.floor(tonumber(prev.generation)) or 0)
end
if job_bad then
  set_aside(jk, 'job', id)
  redis.call('ZREM', K_SCHED, id)
  redis.call('ZREM', K_LEASED, id)
  redis.call('ZREM', K_DEAD, id)
  redis.call('LREM', K_READY, 0, id)
end

-- 3. The new generation.
local gen = redis.call('HINCRBY', K_DESIRED, 'generation', 1)
redis.call('HSET', K_DESIRED, 'state', desired, 'enqueued_at', now)

o.generation = gen
if prev then
  if not TERMINAL[prev.state] then
    note_change(id, tonumber(prev.generation), 'superseded',
      cjson.encode({at = rfc3339_ms(now), generation = tonumber(prev.generation), state = 'superseded'}))
  end
  -- Updates are spaced out per access code across generations.
  o.last_update_at = time_or_nil(prev.last_update_at)
  -- The device is learned once (for its rate limit) and kept.
  o.device_id = id_or_nil(prev.device_id)
  -- An update of a code that was deleted must say so, not just "404".
  o.deleted_at = time_or_nil(prev.deleted_at)
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

-- 4. The job.
local st = redis.call('HGET', jk, 'state')
local payload = cjson.encode({access_code_id = id})
if not st or st == 'done' then
  redis.call('DEL', jk)
  redis.call('HSET', jk, 'payload', payload, 'attempts', 0, 'enqueued_at', now, 'state', 'ready')
  -- A job rebuilt after it was set aside: fences from Redis' clock, above any
  -- count the old record reached, so no run of before can match them.
  if job_bad then redis.call('HSET', jk, 'fence', now) end
  redis.call('LPUSH', K_READY, id)
  count('pushed', 1)
elseif st == 'scheduled' then
  redis.call('ZREM', K_SCHED, id)
  redis.call('HSET', jk, 'state', 'ready')
  redis.call('LPUSH', K_READY, id)
elseif st == 'dead' then
  -- (a dead letter's payload may be one a fetch could not read)
  redis.call('ZREM', K_DEAD, id)
  redis.call('HSET', jk, 'state', 'ready', 'attempts', 0, 'payload', payload)
  redis.call('LPUSH', K_READY, id)
elseif st == 'leased' and not redis.call('ZSCORE', K_LEASED, id) then
  -- Leased to nobody (its lease entry is gone): it would never run again.
  redis.call('HSET', jk, 'state', 'ready')
  redis.call('HDEL', jk, 'lease')
  redis.call('LPUSH', K_READY, id)
elseif st == 'leased' then
  -- Running now: whatever the run ends with, the job runs again (common.lua).
  redis.call('HSET', jk, 'touched', 1)
end
redis.call('PUBLISH', K_WAKE, now)
if idem then
  if key_type(K_IDEM) ~= 'none' then set_aside(K_IDEM, 'idem', idem) end
  redis.call('SET', K_IDEM, fingerprint .. '\n' .. gen, 'PX', idem_ms)
end
return gen
