//! Renewing this worker's leases and its registry entry while it runs, and
//! handing back what it holds when it leaves.

use std::{collections::HashMap, sync::Weak};

use super::{Held, Shared};
use crate::{
    error::{Error, Result, error_chain},
    queue::grouped,
    scripts::SCRIPTS,
};

impl Shared {
    /// Renews this worker's leases and registry entry until the backend closes.
    pub(super) async fn heartbeat_loop(shared: Weak<Shared>) {
        let Some(period) = shared.upgrade().map(|s| s.opts.heartbeat) else {
            return;
        };
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if shared.is_closing() {
                return;
            }
            if let Err(e) = shared.heartbeat().await {
                tracing::warn!(queue = %shared.queue.name(), error = %error_chain(&e), "heartbeat failed; leases not renewed this time");
            }
        }
    }

    /// One script per partition this worker holds jobs in, and one on the
    /// queue as a whole (its registry; the same when there is one partition).
    async fn heartbeat(&self) -> Result<()> {
        let runs: HashMap<String, Held> =
            self.inflight.lock().expect("inflight lock").iter().map(|(id, held)| (id.clone(), held.clone())).collect();
        let q = &self.queue;
        let mut calls = grouped(runs.iter().map(|(id, held)| (held.partition.base(), id.as_str())));
        if !calls.iter().any(|(base, _)| *base == q.home.base()) {
            calls.push((q.home.base(), Vec::new()));
        }
        let lost: Vec<Vec<String>> = futures::future::try_join_all(calls.iter().map(|(base, ids)| {
            let mut conn = q.redis.conn();
            async move {
                SCRIPTS
                    .heartbeat
                    .key(*base)
                    .arg(&self.opts.identity)
                    .arg(self.opts.lease.as_millis() as u64)
                    .arg(ids)
                    .invoke_async::<Vec<String>>(&mut conn)
                    .await
            }
        }))
        .await?;
        let lost: Vec<String> = lost.into_iter().flatten().collect();
        // A job settled during this heartbeat is no longer ours, as expected
        // (even if this worker has fetched it again since); only a run still in
        // flight, not settling, from before the heartbeat has really lost its lease.
        let inflight = self.inflight.lock().expect("inflight lock");
        let really_lost = lost
            .iter()
            .filter(|id| {
                let (before, now) = (runs.get(*id), inflight.get(*id));
                before.is_some_and(|b| !b.settling)
                    && now.is_some_and(|n| !n.settling && Some(n.newest) == before.map(|b| b.newest))
            })
            .count();
        drop(inflight);
        if really_lost > 0 {
            tracing::warn!(queue = %q.name(), count = really_lost, "leases lost (expired during a stall); those jobs may run twice");
        }
        Ok(())
    }

    /// On shutdown: hands back jobs leased but not started, and leaves the
    /// worker registry.
    pub(super) async fn close(&self, unstarted: Vec<String>) {
        let q = &self.queue;
        if !unstarted.is_empty() {
            let groups = {
                let inflight = self.inflight.lock().expect("inflight lock");
                grouped(unstarted.iter().filter_map(|id| Some((inflight.get(id)?.partition.clone(), id.as_str()))))
            };
            let released: Result<i64> = futures::future::try_join_all(groups.into_iter().map(|(p, ids)| {
                let mut conn = q.redis.conn();
                async move {
                    SCRIPTS.release.key(p.base()).arg(&self.opts.identity).arg(ids).invoke_async::<i64>(&mut conn).await
                }
            }))
            .await
            .map(|n| n.into_iter().sum())
            .map_err(Error::from);
            match released {
                Ok(n) => {
                    tracing::info!(queue = %q.name(), released = n, "handed back prefetched jobs")
                }
                Err(e) => {
                    tracing::warn!(queue = %q.name(), error = %error_chain(&e), "could not hand back prefetched jobs; they return when their lease expires")
                }
            }
        }
        let mut conn = q.redis.conn();
        let left: redis::RedisResult<i64> =
            redis::cmd("ZREM").arg(q.home.workers()).arg(&self.opts.identity).query_async(&mut conn).await;
        if let Err(e) = left {
            tracing::warn!(queue = %q.name(), error = %e, "could not deregister worker");
        }
    }
}
