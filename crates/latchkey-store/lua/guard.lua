-- Run after the prelude by every script that touches the queue's lists of job
-- ids, but record.lua, which checks only the ones it touches: a list of
-- another type is refused before anything is written (see JOB_LISTS in
-- common.lua).
local broken = structure_error({K_READY, K_SCHED, K_LEASED, K_DEAD})
if broken then return broken end
