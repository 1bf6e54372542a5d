-- What a reconciliation run reads first: the newest desired state and the
-- outcome record, in one script so both are seen at the same instant (two
-- reads could straddle a producer's new generation and pair a desired state
-- with another generation's record). Read-only.
-- ARGV: access_code_id
-- Returns {generation, desired JSON, outcome JSON}, or nil when any is missing;
-- an error naming the key when one cannot be read (another type, a generation
-- that is no integer, more than MAX_RECORD bytes): enqueueing the code again
-- sets such a record aside (desire.lua).
local id = ARGV[1]
local K_DESIRED, K_OUTCOME = base .. ':desired:' .. id, base .. ':outcome:' .. id
local function unreadable_reply(k, why)
  return redis.error_reply('UNREADABLE ' .. k .. ' ' .. why .. '; enqueue the access code again to start it afresh')
end
local dk, ok = key_type(K_DESIRED), key_type(K_OUTCOME)
if dk == 'none' or ok == 'none' then return false end
if dk ~= 'hash' then return unreadable_reply(K_DESIRED, 'is a ' .. dk .. ', not a hash') end
if ok ~= 'string' then return unreadable_reply(K_OUTCOME, 'is a ' .. ok .. ', not a string') end
for _, k in ipairs({{K_DESIRED, redis.call('HSTRLEN', K_DESIRED, 'state')}, {K_OUTCOME, redis.call('STRLEN', K_OUTCOME)}}) do
  if k[2] > MAX_RECORD then return unreadable_reply(k[1], 'is ' .. k[2] .. ' bytes, over the cap of ' .. MAX_RECORD) end
end
local desired = redis.call('HMGET', K_DESIRED, 'generation', 'state')
if not (desired[1] and desired[2]) then return false end
if not is_int(desired[1]) then return unreadable_reply(K_DESIRED, 'has a generation that is not an integer: ' .. excerpt(desired[1])) end
return {desired[1], desired[2], redis.call('GET', K_OUTCOME)}
