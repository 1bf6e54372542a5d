-- Run after the prelude by every script that touches the queue's lists of job
-- ids (all but the reads of records and the rate limiter): a list of another
-- type is refused before anything is written (see JOB_LISTS in common.lua).
local broken = structure_error()
if broken then return broken end
