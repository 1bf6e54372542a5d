-- An event from Seam (a webhook, or the workers' catch-up from /events/list):
-- run the jobs it concerns now, so they read Seam at once instead of at their
-- next poll. An event is a trigger, never the truth: the run reads Seam and
-- judges as always. Done once per `delivery` id (an event id): one seen
-- within `dedup_ms` changes nothing.
-- ARGV: delivery id ('' for none), dedup_ms, kind, then
--   kind 'codes': access_code_id...   (an access code event: those codes)
--   kind 'device': device_id          (a device event: the device's codes
--                                      whose reconciliation is under way, from
--                                      the index record.lua keeps)
-- Returns {-1} for a delivery already seen, else one integer per code:
--   1 pulled forward (it was waiting), 2 already due or running (a running
--   job is marked touched, so it reads Seam again after this run), 0 not
--   managed here (no desired state), finished (its job is done or dead) or,
--   for a device event, not under way.
local delivery, dedup_ms, kind = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if not dedup_ms or dedup_ms < 1 then return redis.error_reply('nudge.lua: dedup_ms must be a positive number') end
if kind ~= 'codes' and kind ~= 'device' then return redis.error_reply('nudge.lua: kind must be codes or device') end
local ids = {}
local under_way_only = kind == 'device'
if under_way_only then
  local K_DEVICE = base .. ':device:' .. (ARGV[4] or '')
  if key_type(K_DEVICE) == 'set' then ids = redis.call('SMEMBERS', K_DEVICE) end
else
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
end

-- Whether access code `id`'s newest generation is still under way (its
-- outcome record is readable and not terminal).
local function under_way(id)
  local K_OUTCOME = base .. ':outcome:' .. id
  if key_type(K_OUTCOME) ~= 'string' or redis.call('STRLEN', K_OUTCOME) > MAX_RECORD then return false end
  local ok, o = pcall(cjson.decode, redis.call('GET', K_OUTCOME))
  return ok and type(o) == 'table' and type(o.state) == 'string' and not TERMINAL[o.state]
end

if delivery ~= '' then
  if not redis.call('SET', base .. ':delivery:' .. delivery, 1, 'NX', 'PX', dedup_ms) then return {-1} end
end
local out = {}
local woke = false
for _, id in ipairs(ids) do
  local r = 0
  if key_type(base .. ':desired:' .. id) == 'hash' and not unreadable(id) and (not under_way_only or under_way(id)) then
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
