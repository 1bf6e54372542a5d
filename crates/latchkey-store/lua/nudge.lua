-- An event from Seam (a webhook, or the workers' catch-up from /events/list):
-- run the jobs it concerns now, so they read Seam at once instead of at their
-- next poll. An event is a trigger, never the truth: the run reads Seam and
-- judges as always. Done once per `delivery` id (an event id): one seen
-- within `dedup_ms` changes nothing.
-- ARGV: delivery id ('' for none), dedup_ms, kind, then
--   kind 'codes': access_code_id...   (an access code event: those codes)
--   kind 'changed': access_code_id    (`access_code.changed`: Seam took a
--                                      change to the code's settings. While
--                                      latchkey's own update is in flight
--                                      (`applying`) it is that update's echo,
--                                      and the lock has not acted yet: the
--                                      code is not pulled. The lock's own
--                                      event, set or failed, pulls it.)
--   kind 'device': device_id          (a device event: the device's codes
--                                      whose reconciliation is under way, from
--                                      the index record.lua keeps)
-- Returns {-1} for a delivery already seen, else one integer per code:
--   1 pulled forward (it was waiting), 2 already due or running (a running
--   job is marked touched, so it reads Seam again after this run), 0 not
--   managed here (no desired state), finished (its job is done or dead) or,
--   for a device event, not under way or, for a settings change, its own
--   update in flight.
local delivery, dedup_ms, kind = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if not dedup_ms or dedup_ms < 1 then return redis.error_reply('nudge.lua: dedup_ms must be a positive number') end
if kind ~= 'codes' and kind ~= 'changed' and kind ~= 'device' then
  return redis.error_reply('nudge.lua: kind must be codes, changed or device')
end
local ids = {}
if kind == 'device' then
  local K_DEVICE = base .. ':device:' .. (ARGV[4] or '')
  if key_type(K_DEVICE) == 'set' then ids = redis.call('SMEMBERS', K_DEVICE) end
else
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
end

-- The state of access code `id`'s newest generation, from its outcome record
-- (nil when there is none, or it cannot be read).
local function state_of(id)
  local K_OUTCOME = base .. ':outcome:' .. id
  if key_type(K_OUTCOME) ~= 'string' or redis.call('STRLEN', K_OUTCOME) > MAX_RECORD then return nil end
  local ok, o = pcall(cjson.decode, redis.call('GET', K_OUTCOME))
  if ok and type(o) == 'table' and type(o.state) == 'string' then return o.state end
  return nil
end

-- Whether this event pulls code `id`: a device event only a code whose
-- reconciliation is under way (not terminal), a settings change any code but
-- one whose own update is in flight.
local function pulls(id)
  if kind == 'device' then
    local st = state_of(id)
    return st ~= nil and not TERMINAL[st]
  elseif kind == 'changed' then
    return state_of(id) ~= 'applying'
  end
  return true
end

if delivery ~= '' then
  if not redis.call('SET', base .. ':delivery:' .. delivery, 1, 'NX', 'PX', dedup_ms) then return {-1} end
end
local out = {}
local woke = false
for _, id in ipairs(ids) do
  local r = 0
  if key_type(base .. ':desired:' .. id) == 'hash' and not unreadable(id) and pulls(id) then
    local jk = job_key(id)
    local st = redis.call('HGET', jk, 'state')
    if st == 'scheduled' then
      redis.call('ZREM', K_SCHED, id)
      redis.call('HSET', jk, 'state', 'ready')
      redis.call('LPUSH', K_READY, id)
      count('nudged', 1)
      woke, r = true, 1
    elseif st == 'leased' then
      redis.call('HSET', jk, 'touched', 1)
      r = 2
    elseif st == 'ready' then
      r = 2
    end
  end
  out[#out + 1] = r
end
if woke then redis.call('PUBLISH', K_WAKE, now) end
return out
