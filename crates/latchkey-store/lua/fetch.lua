-- Lease up to max_jobs ready jobs to a worker, after two bounded chores:
-- reclaiming expired leases and promoting due scheduled jobs (at most `chunk` each).
-- ARGV: worker, lease_ms, max_jobs, chunk, default_max_attempts, dead_cap,
--       records ('1': the queue's jobs are reconciliations; each comes with
--       its records, read_records, at the instant of its lease)
-- Returns {now, next_wake_ms or -1, more (1: look again at once, for a chore
--          hit its bound or jobs are still ready after this lease), recovered,
--          moving_to (the partitions `repartition` moves this one's jobs to,
--          or 0; then no job is leased), id, payload, attempts, max_attempts, enqueued_at, fence,
--          [generation, desired, outcome: with records, '' when missing or
--          unreadable (the run then reads them itself and meets the error)], ...}
-- Each lease gets a new fence token (the job's `fence` counter): settling and
-- recording require it, so a run that lost its lease, even to a later run of
-- the same worker, can change nothing. A job whose record cannot be read
-- (see `unreadable`) is dead-lettered with the reason wherever it is met,
-- and the rest of the batch goes on.
local worker, lease_ms, max_jobs = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local chunk, default_max, dead_cap = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if not (lease_ms and max_jobs and chunk and default_max and dead_cap) then
  return redis.error_reply('fetch.lua: lease_ms, max_jobs, chunk, default_max_attempts and dead_cap must be numbers')
end
local with_records = ARGV[7] == '1'
local more = 0

-- 1. Leases that expired: their worker is gone (or stalled). Back to the front
--    of the line, attempts kept; a job that exhausted its attempts is buried.
local expired = redis.call('ZRANGE', K_LEASED, '-inf', now, 'BYSCORE', 'LIMIT', 0, chunk)
if #expired == chunk then more = 1 end
for _, id in ipairs(expired) do
  redis.call('ZREM', K_LEASED, id)
  local jk = job_key(id)
  local why = unreadable(id)
  if why then
    quarantine(id, why, dead_cap)
  else
    local f = redis.call('HMGET', jk, 'attempts', 'max_attempts', 'lease')
    if f[1] then
      local max = tonumber(f[2]) or default_max
      if tonumber(f[1]) >= max then
        bury(id, 'lease expired on attempt ' .. f[1] .. ' of ' .. max .. ' (worker ' .. excerpt(f[3]) .. ' presumed dead)', dead_cap)
      else
        redis.call('HSET', jk, 'state', 'ready')
        redis.call('HDEL', jk, 'lease')
        redis.call('RPUSH', K_READY, id)
      end
    end
  end
end
if #expired > 0 then count('recovered', #expired) end

-- A partition `repartition` is moving away from leases nothing (expired
-- leases still come back, above, so it drains); the worker learns where its
-- jobs go.
local moving = redis.call('GET', base .. ':moving')
if moving then
  return {now, -1, more, #expired, tonumber(tostring(moving):match(' (%d+)$')) or 0}
end

-- 2. Promote due jobs, only while the ready list is short: a backlog of due jobs
--    is moved a chunk at a time, never all at once.
if redis.call('LLEN', K_READY) < chunk then
  local due = redis.call('ZRANGE', K_SCHED, '-inf', now, 'BYSCORE', 'LIMIT', 0, chunk)
  if #due == chunk then more = 1 end
  for _, id in ipairs(due) do
    redis.call('ZREM', K_SCHED, id)
    local why, present = unreadable(id)
    if why then
      quarantine(id, why, dead_cap)
    elseif present then
      redis.call('HSET', job_key(id), 'state', 'ready')
      redis.call('LPUSH', K_READY, id)
    else
      count('orphan_ids', 1)
    end
  end
end

-- 3. Lease.
local out = {now, -1, more, #expired, 0}
local ids = redis.call('RPOP', K_READY, max_jobs)
if ids then
  local expiry = now + lease_ms
  for _, id in ipairs(ids) do
    local jk = job_key(id)
    local why, present = unreadable(id)
    if why then
      quarantine(id, why, dead_cap)
    elseif present then
      local attempts = redis.call('HINCRBY', jk, 'attempts', 1)
      local fence = redis.call('HINCRBY', jk, 'fence', 1)
      redis.call('HSET', jk, 'state', 'leased', 'lease', worker)
      -- This run will read the newest state: earlier touches are served.
      redis.call('HDEL', jk, 'touched')
      redis.call('ZADD', K_LEASED, expiry, id)
      local f = redis.call('HMGET', jk, 'payload', 'max_attempts', 'enqueued_at')
      out[#out + 1] = id
      out[#out + 1] = f[1] or ''
      out[#out + 1] = attempts
      out[#out + 1] = tonumber(f[2]) or default_max
      out[#out + 1] = tonumber(f[3]) or now
      out[#out + 1] = fence
      if with_records then
        local r = read_records(id)
        if type(r) ~= 'table' or r.err then r = {'', '', ''} end
        for i = 1, 3 do out[#out + 1] = r[i] end
      end
    else
      count('orphan_ids', 1)
    end
  end
end

-- 4. Jobs still ready: look again at once. Else tell the worker when to
--    look again (a push wakes it sooner), so that a partition this fetch
--    drained is not fetched again for nothing.
if ids and redis.call('LLEN', K_READY) > 0 then out[3] = 1 end
if out[3] == 0 then
  local nxt = -1
  local s = redis.call('ZRANGE', K_SCHED, 0, 0, 'WITHSCORES')
  if s[2] then nxt = tonumber(s[2]) end
  local l = redis.call('ZRANGE', K_LEASED, 0, 0, 'WITHSCORES')
  if l[2] and (nxt == -1 or tonumber(l[2]) < nxt) then nxt = tonumber(l[2]) end
  out[2] = nxt
end
return out
