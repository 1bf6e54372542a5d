-- Jobs that could run now, by Redis' clock: ready ones plus scheduled ones
-- whose time has come (not promoted yet). What an autoscaler follows. Read-only.
return redis.call('LLEN', K_READY) + redis.call('ZCOUNT', K_SCHED, '-inf', now)
