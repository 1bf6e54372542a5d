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

-- Moves a job to the dead-letter set, keeping its hash (payload, attempts, error),
-- and trims the set to `cap` entries, oldest first.
local function bury(id, err, cap)
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
end
