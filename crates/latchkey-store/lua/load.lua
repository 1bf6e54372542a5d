-- What a reconciliation run reads first: the newest desired state and the
-- outcome record, in one script so both are seen at the same instant (two
-- reads could straddle a producer's new generation and pair a desired state
-- with another generation's record). Read-only.
-- ARGV: access_code_id
-- Returns {generation, desired JSON, outcome JSON}, or nil when any is missing.
local id = ARGV[1]
local desired = redis.call('HMGET', base .. ':desired:' .. id, 'generation', 'state')
local outcome = redis.call('GET', base .. ':outcome:' .. id)
if not (desired[1] and desired[2] and outcome) then return false end
return {desired[1], desired[2], outcome}
