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

-- Redis' clock is the queue's one clock: every worker and producer agree on it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Whether the run presenting `worker` and `fence` holds the job now: its
-- worker has the lease, and no fetch has handed the job out since (each fetch
-- increments `fence`). A run that lost its lease, even to a later run of the
-- same worker, fails this and must change nothing.
local function holds(jk, worker, fence)
  local f = redis.call('HMGET', jk, 'lease', 'fence')
  return f[1] == worker and f[2] == fence
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
  redis.call('HINCRBY', K_STATS, 'requeued', 1)
  redis.call('PUBLISH', K_WAKE, now)
  return true
end

-- Outcome states after which nothing more happens to a generation; keep equal
-- to OutcomeState::is_terminal in latchkey-core.
local TERMINAL = {succeeded = true, failed = true, rejected = true, timed_out = true, superseded = true, expired = true}

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
  redis.call('XADD', base .. ':events', 'MAXLEN', '~', EVENTS_CAP, '*',
    'access_code_id', id, 'generation', generation, 'state', state)
  local K_HISTORY = base .. ':history:' .. id
  redis.call('LPUSH', K_HISTORY, entry)
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
  redis.call('HINCRBY', K_STATS, 'dead', 1)
  local over = redis.call('ZCARD', K_DEAD) - cap
  if over > 0 then
    local old = redis.call('ZPOPMIN', K_DEAD, over)
    for i = 1, #old, 2 do redis.call('DEL', job_key(old[i])) end
    redis.call('HINCRBY', K_STATS, 'dead_dropped', over)
  end
  if outcome then
    redis.call('SET', base .. ':outcome:' .. id, outcome)
    note_change(id, generation, 'failed', cjson.encode({at = rfc3339_ms(now), generation = generation,
      state = 'failed', error = 'gave_up: ' .. err}))
  end
end
