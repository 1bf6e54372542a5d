-- Shared prelude, prepended to every script by latchkey-store (scripts.rs).
-- KEYS[1] is always the queue's base key, e.g. "latchkey:{apply}". Every key of
-- the queue is derived from it and shares its hash tag, so a queue lives in one
-- Redis Cluster slot.
local base = KEYS[1]
local K_READY = base .. ':ready'          -- LIST of job ids, LPUSH in, RPOP out (FIFO)
local K_SCHED = base .. ':scheduled'      -- ZSET id -> run_at (ms)
local K_LEASED = base .. ':leased'        -- ZSET id -> lease expiry (ms)
local K_DEAD = base .. ':dead'            -- ZSET id -> dead_at (ms)
local K_STATS = base .. ':stats'          -- HASH of counters
local K_WORKERS = base .. ':workers'      -- ZSET worker id -> last heartbeat (ms)
local K_WAKE = base .. ':wake'            -- pub/sub channel: message = earliest due time (ms)
local function job_key(id) return base .. ':job:' .. id end
-- Where a key that latchkey cannot read is moved (see set_aside).
local function aside_key(what, id) return base .. ':unreadable:' .. what .. ':' .. id end

-- Redis' clock is the queue's one clock: every worker and producer agree on it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Whether the run presenting `worker` and `fence` holds the job now: its
-- worker has the lease, and no fetch has handed the job out since (each fetch
-- increments `fence`). A run that lost its lease, even to a later run of the
-- same worker, fails this and must change nothing.
local function holds(jk, worker, fence)
  -- A key of another type (tampered with) is held by nobody: pcall, not call.
  local f = redis.pcall('HMGET', jk, 'lease', 'fence')
  return type(f) == 'table' and not f.err and f[1] == worker and f[2] == fence
end

-- --- Reading what others may have written --------------------------------
-- Redis keeps the writes a script made before it failed, so every script
-- checks what it reads before its first write. Anything in Redis may have been
-- written by hand, by another version, or by a hostile client: these helpers
-- decide what is readable, and what to do with what is not.

-- A value for an error message: at most 40 bytes, printable ASCII.
local function excerpt(v)
  v = tostring(v)
  if #v > 40 then v = v:sub(1, 40) .. '...' end
  return (v:gsub('[^%w%p ]', '?'))
end

-- Whether `v` is a decimal integer Redis' counters accept (HINCRBY).
local function is_int(v)
  return type(v) == 'string' and #v <= 18 and v:match('^%-?%d+$') ~= nil
end

-- The type of a key ('none' when missing).
local function key_type(k) return redis.call('TYPE', k).ok end

-- The queue's own keys must have their types. The lists of job ids cannot
-- be rebuilt: if one has another type (written by something else), every
-- script that touches them refuses before writing anything, naming it (the
-- check is guard.lua, which scripts.rs runs before the body of every script
-- but the few that touch no list: it costs four calls). The counters, the
-- worker registry, the event stream and the attention index can start over:
-- one of another type is set aside by the first write that meets it
-- (`rebuilt_call`).
local JOB_LISTS = {[K_READY] = 'list', [K_SCHED] = 'zset', [K_LEASED] = 'zset', [K_DEAD] = 'zset'}
local REBUILT = {[K_STATS] = 'stats', [K_WORKERS] = 'workers', [base .. ':events'] = 'events',
  [base .. ':attention'] = 'attention'}
-- The error for the first of `lists` (job lists) of the wrong type, or nil.
local function structure_error(lists)
  for _, k in ipairs(lists) do
    local kind = key_type(k)
    if kind ~= 'none' and kind ~= JOB_LISTS[k] then
      return redis.error_reply('UNREADABLE ' .. k .. ' is a ' .. kind .. ', not a ' .. JOB_LISTS[k]
        .. ': a queue key was written by something other than latchkey; rename it to look at it, then delete it')
    end
  end
  return nil
end

-- Whether a pcall's reply is Redis refusing a key of the wrong type (a write
-- refused so has written nothing).
local function wrong_type(r)
  return type(r) == 'table' and type(r.err) == 'string' and r.err:find('^WRONGTYPE') ~= nil
end

-- Writes `cmd k ...` to a key that may start over: when `k` has another type
-- (written by hand), `aside()` moves it out of the way and the write is made
-- on a fresh key. One call where checking the type first would take two; a
-- write refused for its type writes nothing, and moving a key that exists
-- cannot fail, so this may come after the script's other writes. Any other
-- error is raised as Redis gave it.
local function write_or(aside, cmd, k, ...)
  local r = redis.pcall(cmd, k, ...)
  if wrong_type(r) then
    aside()
  elseif not (type(r) == 'table' and r.err) then
    return r
  end
  return redis.call(cmd, k, ...)
end

-- write_or for the REBUILT keys: renamed aside, not counted (a counter or a
-- registry that starts over is no code's record).
local function rebuilt_call(cmd, k, ...)
  return write_or(function() redis.call('RENAME', k, aside_key(REBUILT[k], now)) end, cmd, k, ...)
end

-- Adds n to a queue counter. A counter that is not a number (written by hand)
-- starts over at n rather than failing the script.
local function count(field, n)
  local r = redis.pcall('HINCRBY', K_STATS, field, n)
  if wrong_type(r) then
    rebuilt_call('HINCRBY', K_STATS, field, n)
  elseif type(r) == 'table' and r.err then
    redis.call('HSET', K_STATS, field, n)
  end
end

-- Moves a key latchkey cannot read out of the way, to `<base>:unreadable:<what>:<id>`
-- (kept for an operator to look at, never read again), and counts it.
local function set_aside(k, what, id)
  if key_type(k) == 'none' then return end
  redis.call('RENAME', k, aside_key(what, id))
  count('unreadable', 1)
end

-- The most bytes of a job's payload a fetch hands to a worker.
local MAX_PAYLOAD = 1048576
-- The most bytes of a desired state or an outcome record a script reads (a
-- real one is a few KB). Keep equal to MAX_RECORD_BYTES in reconcile.rs.
local MAX_RECORD = 1048576
-- Fields of a job hash that must be integers when present.
local JOB_INTS = {'attempts', 'fence', 'max_attempts', 'enqueued_at'}
local JOB_STATES = {ready = true, scheduled = true, leased = true, dead = true, done = true}

-- Whether a job id can be handed to a worker: 1 to 200 bytes of UTF-8 (no
-- overlong forms or surrogates) without ASCII control characters or spaces.
local function valid_id(id)
  if #id == 0 or #id > 200 or id:find('[%c ]') then return false end
  -- (printable ASCII, as every id latchkey and Seam make is, is valid UTF-8:
  -- one pattern match, where the walk below costs about 4 us for 40 bytes)
  if id:find('^[!-~]+$') then return true end
  local i, n = 1, #id
  while i <= n do
    local c = id:byte(i)
    local len, lo, hi = 1, 0x80, 0xBF
    if c < 0x80 then len = 1
    elseif c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    else return false end
    if i + len - 1 > n then return false end
    for j = i + 1, i + len - 1 do
      local b = id:byte(j)
      if j == i + 1 then
        if b < lo or b > hi then return false end
      elseif b < 0x80 or b > 0xBF then return false end
    end
    i = i + len
  end
  return true
end

-- What makes job `id`'s record unreadable, or nil when it can be read (or is
-- missing): it must be a hash, its counters integers and its payload at most
-- MAX_PAYLOAD bytes. The second value says whether the record exists (so a
-- caller need not ask again). One HMGET and one HSTRLEN for a job as latchkey
-- writes it: the key's type is asked only to name a refusal, or when no field
-- was found. Read-only.
local function unreadable(id)
  if not valid_id(id) then return 'its id is not 1 to 200 bytes of UTF-8 without control characters or spaces', true end
  local jk = job_key(id)
  -- (the state, then the integers: one HMGET, which a key of another type refuses)
  local f = redis.pcall('HMGET', jk, 'state', unpack(JOB_INTS))
  if wrong_type(f) then return 'the job record is a ' .. key_type(jk) .. ', not a hash', true end
  if type(f) ~= 'table' or f.err then return 'it cannot be read: ' .. excerpt(tostring(f.err)), true end
  if not f[1] and key_type(jk) == 'none' then return nil, false end
  for i, name in ipairs(JOB_INTS) do
    if f[i + 1] and not is_int(f[i + 1]) then return 'its ' .. name .. ' is not an integer: ' .. excerpt(f[i + 1]), true end
  end
  local state = f[1]
  if state and not JOB_STATES[state] then
    return 'its state is not one of ready, scheduled, leased, dead, done: ' .. excerpt(state), true
  end
  local len = redis.call('HSTRLEN', jk, 'payload')
  if len > MAX_PAYLOAD then return 'its payload is ' .. len .. ' bytes, over the cap of ' .. MAX_PAYLOAD, true end
  return nil, true
end

-- An access code's newest desired state and its outcome record, read at one
-- instant (two reads could straddle a producer's new generation and pair a
-- desired state with another generation's record): {generation, desired JSON,
-- outcome JSON}, or false when either is missing; an error reply naming the
-- key when one cannot be read (another type, a generation that is no integer,
-- more than MAX_RECORD bytes): enqueueing the code again sets such a record
-- aside (desire.lua). Read-only. Used by load.lua, and by fetch.lua to hand a
-- reconciliation's records over with its job.
local function read_records(id)
  local K_DESIRED, K_OUTCOME = base .. ':desired:' .. id, base .. ':outcome:' .. id
  local function unreadable_reply(k, why)
    return redis.error_reply('UNREADABLE ' .. k .. ' ' .. why .. '; enqueue the access code again to start it afresh')
  end
  -- The sizes first (a key of another type refuses them; a missing key or
  -- field is 0): nothing over the cap is read into the script.
  local sizes = {{K_DESIRED, redis.pcall('HSTRLEN', K_DESIRED, 'state'), 'hash'},
    {K_OUTCOME, redis.pcall('STRLEN', K_OUTCOME), 'string'}}
  for _, k in ipairs(sizes) do
    if type(k[2]) ~= 'number' then return unreadable_reply(k[1], 'is a ' .. key_type(k[1]) .. ', not a ' .. k[3]) end
    if k[2] > MAX_RECORD then return unreadable_reply(k[1], 'is ' .. k[2] .. ' bytes, over the cap of ' .. MAX_RECORD) end
  end
  -- (an outcome record that exists but is empty is unreadable, not missing:
  -- the run meets the decoding error)
  if sizes[2][2] == 0 and redis.call('EXISTS', K_OUTCOME) == 0 then return false end
  local desired = redis.call('HMGET', K_DESIRED, 'generation', 'state')
  if not (desired[1] and desired[2]) then return false end
  if not is_int(desired[1]) then return unreadable_reply(K_DESIRED, 'has a generation that is not an integer: ' .. excerpt(desired[1])) end
  return {desired[1], desired[2], redis.call('GET', K_OUTCOME)}
end

-- A job touched while leased (a newer desired state arrived mid-run) must run
-- again: settling it puts it back to the front of the line with a fresh budget
-- instead of finishing, retrying or burying it. Returns true if it did.
local function rerun_if_touched(id, jk)
  if not redis.call('HGET', jk, 'touched') then return false end
  redis.call('HDEL', jk, 'touched', 'lease', 'error')
  redis.call('ZREM', K_LEASED, id)
  redis.call('HSET', jk, 'state', 'ready', 'attempts', 0)
  redis.call('RPUSH', K_READY, id)
  count('requeued', 1)
  redis.call('PUBLISH', K_WAKE, now)
  return true
end

-- Puts back a job this run holds, to run at run_at (a held lease checked by
-- the caller, and a touched job already rerun):
--   a failed attempt (err given): the attempt counts, the error is kept;
--   a continuation (err empty, e.g. "verify again in 5 s"): not a failure,
--     so the attempt count starts over and no error is recorded;
--   a wait (err empty, defer true, e.g. a rate limit or the spacing of
--     updates): no progress and no failure, so the attempt this run's fetch
--     counted is given back and the count of failures stands (a job that
--     keeps failing between waits still runs out of attempts).
-- Used by retry.lua, and by record.lua to settle a continuation in the same
-- script as the run's last record.
local function put_back(id, jk, run_at, err, defer)
  redis.call('ZREM', K_LEASED, id)
  -- (the job's fields written in one HSET and one HDEL)
  local set, del = {}, {'lease'}
  local counter = 'retried'
  if err == '' then
    counter = 'requeued'
    if defer then
      -- (held: the record is a hash; its attempts were counted by a fetch)
      local attempts = tonumber(redis.call('HGET', jk, 'attempts')) or 1
      set = {'attempts', math.max(attempts - 1, 0)}
      counter = 'deferred'
    else
      set = {'attempts', 0}
      del[#del + 1] = 'error'
    end
  else
    set = {'error', err}
  end
  if run_at <= now then
    set[#set + 1], set[#set + 2] = 'state', 'ready'
    redis.call('LPUSH', K_READY, id)
    run_at = now
  else
    set[#set + 1], set[#set + 2], set[#set + 3], set[#set + 4] = 'state', 'scheduled', 'run_at', run_at
    redis.call('ZADD', K_SCHED, run_at, id)
  end
  redis.call('HSET', jk, unpack(set))
  redis.call('HDEL', jk, unpack(del))
  count(counter, 1)
  redis.call('PUBLISH', K_WAKE, run_at)
end

-- Outcome states after which nothing more happens to a generation; keep equal
-- to OutcomeState::is_terminal in latchkey-core.
local TERMINAL = {succeeded = true, failed = true, rejected = true, timed_out = true, superseded = true, expired = true}
local NEEDS_HUMAN = {failed = true, rejected = true, timed_out = true}

-- Most entries kept in `<base>:events`, approximately (XADD MAXLEN ~): the one
-- cap of every script that appends to the stream. Keep equal to EVENTS_CAP in
-- reconcile.rs (a test in scripts.rs checks).
local EVENTS_CAP = 100000

-- Most entries kept in an access code's history (`<base>:history:<id>`, a
-- list, newest first). Keep equal to HISTORY_CAP in reconcile.rs.
local HISTORY_CAP = 50

-- A state change of access code `id`'s outcome: appended to the event stream
-- and to the code's capped history (`entry`: the JSON of a history entry).
local function note_change(id, generation, state, entry)
  rebuilt_call('XADD', base .. ':events', 'MAXLEN', '~', EVENTS_CAP, '*',
    'access_code_id', id, 'generation', generation, 'state', state)
  -- The codes that need a human (the console's list): in it while their
  -- newest generation ended failed, rejected or timed out.
  if NEEDS_HUMAN[state] then
    rebuilt_call('ZADD', base .. ':attention', now, id)
  else
    rebuilt_call('ZREM', base .. ':attention', id)
  end
  local K_HISTORY = base .. ':history:' .. id
  write_or(function() set_aside(K_HISTORY, 'history', id) end, 'LPUSH', K_HISTORY, entry)
  redis.call('LTRIM', K_HISTORY, 0, HISTORY_CAP - 1)
end

-- Unix ms as RFC 3339 UTC with milliseconds ("2026-03-01T12:00:00.123Z"), the
-- form chrono reads outcome times in. Civil date from days since 1970-01-01
-- (Howard Hinnant's civil_from_days), with floor division throughout.
local function rfc3339_ms(ms)
  local days = math.floor(ms / 86400000)
  local rem = ms - days * 86400000
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    math.floor(rem / 3600000), math.floor(rem / 60000) % 60, math.floor(rem / 1000) % 60, rem % 1000)
end

-- JSON of a value cjson decoded, with one difference from cjson.encode: an
-- empty table is written `[]`. This Redis' cjson decodes `[]` and `{}` alike
-- and encodes both as `{}`, which serde refuses where a list belongs (an
-- access code's `errors: []`). Every object of an outcome record has required
-- fields, so an empty table in one can only have been a list.
local function json_encode(v)
  if type(v) ~= 'table' then return cjson.encode(v) end
  local parts = {}
  if next(v) == nil or #v > 0 then
    for i = 1, #v do parts[i] = json_encode(v[i]) end
    return '[' .. table.concat(parts, ',') .. ']'
  end
  for k, x in pairs(v) do parts[#parts + 1] = cjson.encode(k) .. ':' .. json_encode(x) end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- A reconciliation job that dies will not finish its generation any more, so
-- its outcome record must not stay pending/applying/verifying: callers would
-- wait for it forever. Returns the JSON of access code `id`'s record ended
-- `failed` (error `gave_up`, the dead-letter reason as message) and its
-- generation; or nil when there is nothing to end: no record (a job of another
-- queue), a finished one, one about another generation than the newest desired
-- state (an old burial never overwrites a newer generation's record), or one
-- that does not decode (not ours to repair). It only reads, and any failure
-- means "leave the record": a script keeps the writes it made before an error,
-- so nothing may fail half-way through a burial.
local function gave_up_outcome(id, err)
  local raw = redis.pcall('GET', base .. ':outcome:' .. id)
  if type(raw) ~= 'string' then return nil end
  local decoded, o = pcall(cjson.decode, raw)
  if not decoded or type(o) ~= 'table' or type(o.state) ~= 'string' or TERMINAL[o.state] then return nil end
  local gen = tonumber((redis.pcall('HGET', base .. ':desired:' .. id, 'generation')))
  if gen == nil or tonumber(o.generation) ~= gen then return nil end
  local at = rfc3339_ms(now)
  o.state, o.updated_at, o.finished_at = 'failed', at, at
  o.error = {kind = 'gave_up', message = err}
  local encoded, json = pcall(json_encode, o)
  if not encoded then return nil end
  return json, gen
end

-- Moves a job to the dead-letter set, keeping its hash (payload, attempts, error),
-- and trims the set to `cap` entries, oldest first. A reconciliation's outcome
-- record is ended `failed` (see gave_up_outcome) and the change goes to the stream.
local function bury(id, err, cap)
  local outcome, generation = gave_up_outcome(id, err)
  local jk = job_key(id)
  redis.call('HSET', jk, 'state', 'dead', 'error', err, 'finished_at', now)
  redis.call('HDEL', jk, 'lease')
  redis.call('ZADD', K_DEAD, now, id)
  count('dead', 1)
  local over = redis.call('ZCARD', K_DEAD) - cap
  if over > 0 then
    local old = redis.call('ZPOPMIN', K_DEAD, over)
    for i = 1, #old, 2 do redis.call('DEL', job_key(old[i])) end
    count('dead_dropped', over)
  end
  if outcome then
    redis.call('SET', base .. ':outcome:' .. id, outcome)
    note_change(id, generation, 'failed', cjson.encode({at = rfc3339_ms(now), generation = generation,
      state = 'failed', error = 'gave_up: ' .. err}))
  end
end

-- Job `id` cannot be read (`why`, from unreadable): it becomes a dead letter
-- with the reason, and nothing else in the batch that found it is held up. A
-- key of another type is set aside (kept for an operator) and replaced by a
-- job hash with an empty payload; a counter that is not an integer is kept
-- as `unreadable_<field>` and starts over (the fence from Redis' clock in ms,
-- above any count a fetch reached, so no run of before can match it). For
-- the reconciliation queue, enqueueing the access code again rewrites the
-- payload and runs it (desire.lua).
local function quarantine(id, why, cap)
  local jk = job_key(id)
  if key_type(jk) ~= 'hash' then
    set_aside(jk, 'job', id)
    redis.call('HSET', jk, 'payload', '', 'attempts', 0, 'enqueued_at', now)
  else
    local f = redis.call('HMGET', jk, unpack(JOB_INTS))
    for i, name in ipairs(JOB_INTS) do
      if f[i] and not is_int(f[i]) then
        redis.call('HSET', jk, 'unreadable_' .. name, f[i])
        redis.call('HDEL', jk, name)
      end
    end
    redis.call('HSET', jk, 'fence', now)
    local state = redis.call('HGET', jk, 'state')
    if state and not JOB_STATES[state] then redis.call('HSET', jk, 'unreadable_state', state) end
  end
  redis.call('ZREM', K_SCHED, id)
  redis.call('ZREM', K_LEASED, id)
  bury(id, 'unreadable job record: ' .. why, cap)
end
