-- An event from Seam (a webhook) about access codes: run their jobs now, so
-- they read Seam at once instead of at their next poll. An event is a
-- trigger, never the truth: the run reads Seam and judges as always.
-- Delivered once per `delivery` id (Svix retries deliveries for about a day):
-- a delivery seen within `dedup_ms` changes nothing.
-- ARGV: delivery id ('' for none), dedup_ms, access_code_id...
-- Returns {-1} for a delivery already seen, else one integer per id:
--   1 pulled forward (it was waiting), 2 already due or running (a running
--   job is marked touched, so it reads Seam again after this run), 0 not
--   managed here (no desired state) or finished (its job is done or dead).
local delivery, dedup_ms = ARGV[1], tonumber(ARGV[2])
if not dedup_ms or dedup_ms < 1 then return redis.error_reply('nudge.lua: dedup_ms must be a positive number') end
if delivery ~= '' then
  if not redis.call('SET', base .. ':delivery:' .. delivery, 1, 'NX', 'PX', dedup_ms) then return {-1} end
end
local out = {}
local woke = false
for i = 3, #ARGV do
  local id = ARGV[i]
  local r = 0
  if key_type(base .. ':desired:' .. id) == 'hash' and not unreadable(id) then
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
