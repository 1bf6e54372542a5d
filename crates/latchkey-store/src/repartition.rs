//! Moving the reconcile queue to another number of partitions while workers
//! run (`latchkey repartition --to N`).
//!
//! The layout record says where the queue moves (`moving_to`); every process
//! that opens the queue then knows both layouts, and one already running
//! learns of the move from the partitions themselves. The old partitions are
//! moved one at a time:
//!
//! 1. **Freeze** (`<base>:moving` = `frozen N`): `fetch.lua` leases nothing
//!    from it (expired leases still come back, so it drains) and `desire.lua`
//!    answers REPARTITIONING, so a producer waits a moment.
//! 2. **Drain**: wait until no job of it is leased (the runs under way
//!    finish and put their jobs back, as always).
//! 3. **Copy** every record of every code to the code's partition in the new
//!    layout (`DUMP`/`RESTORE`, TTLs kept), and its place in the job lists
//!    (a ready job becomes due now), the device index, the codes needing a
//!    human, the idempotency keys and the counters. Nothing else writes a
//!    frozen, drained partition, and the new partitions hold none of its
//!    codes (the tag names the number of partitions, so layouts share no
//!    key), so copying again after a crash gives the same result.
//! 4. **Forward** (`moved N`) and delete the rest of the old partition:
//!    desired states go to the new layout (REPARTITIONED), wake-ups bring
//!    the workers to the copied jobs.
//!
//! When every old partition is moved, the record names the new layout alone.
//! Each step is idempotent: after a crash, run the command again. The one
//! thing not carried over is the event stream's history (`GET /v1/events`
//! positions from before the move are refused; a client starts from now).

use std::time::{Duration, Instant};

use redis::{AsyncCommands, Value};

use crate::{
    error::{Error, Result},
    keys::QueueKeys,
    queue::Layout,
    reconcile::Reconciliations,
    scripts::SCRIPTS,
};

/// What one `repartition` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    /// Partitions before.
    pub from: u32,
    /// Partitions after.
    pub to: u32,
    /// Access codes whose records moved.
    pub codes: u64,
    /// Old partitions moved by this run (a run that resumes counts only its own).
    pub partitions: u32,
}

/// Longest wait for a frozen partition's runs to finish.
const DRAIN: Duration = Duration::from_secs(300);

/// A key of a code's, moved whole: `<base>:<kind>:<id>`.
const RECORDS: [&str; 4] = ["desired", "outcome", "history", "job"];

/// What a partition holds, by the first part of the key after its base:
/// deleted once moved.
const PARTITION_KEYS: [&str; 14] = [
    "ready",
    "scheduled",
    "leased",
    "dead",
    "stats",
    "events",
    "attention",
    "desired",
    "outcome",
    "history",
    "job",
    "idem",
    "device",
    "delivery",
];

impl Reconciliations {
    /// Moves the reconcile queue to `to` partitions while workers and
    /// producers run; `progress` hears what it does. Resumes a move that
    /// stopped half way (to the same `to`); refuses to start another.
    pub async fn repartition(&self, to: u32, progress: impl Fn(&str)) -> Result<Moved> {
        crate::keys::validate_partitions(to)?;
        let q = self.queue();
        let (from, moving_to) = q.read_layout(None).await?;
        match moving_to {
            Some(m) if m != to => {
                return Err(Error::Config(format!(
                    "a move from {from} to {m} partitions is under way: finish it first (latchkey repartition --to {m})"
                )));
            }
            None if from == to => return Ok(Moved { from, to, ..Moved::default() }),
            _ => {}
        }
        let mut conn = q.redis.conn();
        let _: () = conn.hset(q.home().layout(), "moving_to", to).await?;
        q.learn(to)?;
        let layouts = q.layouts();
        let old = layouts.iter().find(|l| l.partitions == from).expect("the recorded layout").clone();
        let new = layouts.iter().find(|l| l.partitions == to).expect("learnt above").clone();
        // A forwarding address left on the new layout by an earlier move away
        // from it is stale: that layout is the destination now.
        for part in new.parts.iter() {
            let _: () = conn.del(part.moving()).await?;
        }
        progress(&format!("moving the reconcile queue from {from} to {to} partitions"));
        let mut moved = Moved { from, to, ..Moved::default() };
        for part in old.parts.iter() {
            let state: Option<String> = conn.get(part.moving()).await?;
            if state.is_some_and(|s| s.starts_with("moved")) {
                // (an earlier run may have stopped before deleting it all:
                // what is left must not be found by a read that falls back)
                self.clear(part).await?;
                continue;
            }
            let _: () = conn.set(part.moving(), format!("frozen {to}")).await?;
            self.drain(part).await?;
            let codes = self.copy(part, &new).await?;
            let _: () = conn.set(part.moving(), format!("moved {to}")).await?;
            self.clear(part).await?;
            for target in new.parts.iter() {
                let _: () = conn.publish(target.wake(), 0).await?;
            }
            moved.codes += codes;
            moved.partitions += 1;
            progress(&format!("{}: {codes} codes moved", part.base()));
        }
        let _: () = redis::pipe()
            .hset(q.home().layout(), "partitions", to)
            .hdel(q.home().layout(), "moving_to")
            .query_async(&mut conn)
            .await?;
        progress(&format!("done: the reconcile queue has {to} partitions; set LATCHKEY_PARTITIONS={to}"));
        Ok(moved)
    }

    /// Waits until nothing of `part` is leased. Leases that expired (their
    /// worker is gone) are reclaimed with a fetch that leases nothing.
    async fn drain(&self, part: &QueueKeys) -> Result<()> {
        let q = self.queue();
        let deadline = Instant::now() + DRAIN;
        let mut conn = q.redis.conn();
        loop {
            let leased: u64 = conn.zcard(part.leased()).await?;
            if leased == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Config(format!(
                    "{}: {leased} jobs still leased after {} s; run the command again to go on",
                    part.base(),
                    DRAIN.as_secs()
                )));
            }
            let _: Value = SCRIPTS
                .fetch
                .key(part.base())
                .arg("repartition")
                .arg(1)
                .arg(0)
                .arg(1000)
                .arg(q.config().max_attempts)
                .arg(q.config().dead_letter_cap)
                .arg("0")
                .invoke_async(&mut conn)
                .await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Copies every code of the frozen, drained partition `part` to its
    /// partition in `new`; returns how many codes.
    async fn copy(&self, part: &QueueKeys, new: &Layout) -> Result<u64> {
        let q = self.queue();
        let mut conn = q.redis.conn();
        let prefix = format!("{}:", part.base());
        let mut codes = std::collections::HashSet::new();
        let mut keys: Vec<String> =
            q.redis.keys_under(part.base()).await?.into_iter().filter_map(|k| String::from_utf8(k).ok()).collect();
        keys.sort();
        keys.dedup();
        for key in &keys {
            let Some(rest) = key.strip_prefix(&prefix) else { continue };
            let Some((kind, name)) = rest.split_once(':') else { continue };
            if RECORDS.contains(&kind) {
                let target = format!("{}:{kind}:{name}", new.of(name).base());
                restore(&mut conn, key, &target).await?;
                codes.insert(name.to_string());
            } else if kind == "idem" {
                // (the value starts with the access code it was for)
                let value: Option<String> = conn.get(key).await?;
                if let Some(code) = value.as_deref().and_then(|v| v.split('\n').next()) {
                    restore(&mut conn, key, &format!("{}:idem:{name}", new.of(code).base())).await?;
                }
            } else if kind == "device" {
                let members: Vec<String> = conn.smembers(key).await?;
                for code in members {
                    let _: () = conn.sadd(format!("{}:device:{name}", new.of(&code).base()), &code).await?;
                }
            }
        }
        // Places in the job lists: a ready job is due now, a scheduled or dead
        // one keeps its time; the job's `state` says which.
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let now = secs * 1000 + micros / 1000;
        let ready: Vec<String> = conn.lrange(part.ready(), 0, -1).await?;
        let scheduled: Vec<(String, f64)> = conn.zrange_withscores(part.scheduled(), 0, -1).await?;
        for (code, at) in ready.into_iter().map(|c| (c, now as f64)).chain(scheduled) {
            let target = new.of(&code);
            let _: () = redis::pipe()
                .zadd(target.scheduled(), &code, at)
                .hset(target.job(&code), "state", "scheduled")
                .query_async(&mut conn)
                .await?;
        }
        let dead: Vec<(String, f64)> = conn.zrange_withscores(part.dead(), 0, -1).await?;
        for (code, at) in dead {
            let _: () = conn.zadd(new.of(&code).dead(), &code, at).await?;
        }
        let attention: Vec<(String, f64)> = conn.zrange_withscores(part.attention(), 0, -1).await?;
        for (code, at) in attention {
            let _: () = conn.zadd(new.of(&code).attention(), &code, at).await?;
        }
        // The counters add up over partitions: they join the new first
        // partition's, once (the old ones go at once, so a run that starts
        // again does not count them twice).
        let stats: std::collections::HashMap<String, String> = conn.hgetall(part.stats()).await?;
        let mut add = redis::pipe();
        for (counter, n) in &stats {
            if let Ok(n) = n.parse::<i64>() {
                add.hincr(new.parts[0].stats(), counter, n).ignore();
            }
        }
        if !stats.is_empty() {
            let _: () = add.query_async(&mut conn).await?;
            let _: () = conn.del(part.stats()).await?;
        }
        Ok(codes.len() as u64)
    }

    /// Deletes the moved partition `part`'s jobs, records and lists. Its
    /// forwarding address stays, and so does what is not the partition's
    /// (the single-tag layout's base is also the queue's own: its layout
    /// record, worker registry, rate limits and catch-up cursor), and
    /// records set aside as unreadable (for an operator).
    async fn clear(&self, part: &QueueKeys) -> Result<()> {
        let q = self.queue();
        let mut conn = q.redis.conn();
        let prefix = format!("{}:", part.base());
        for key in q.redis.keys_under(part.base()).await? {
            let kind =
                key.strip_prefix(prefix.as_bytes()).map(|rest| rest.split(|b| *b == b':').next().unwrap_or(rest));
            if kind.is_some_and(|k| PARTITION_KEYS.iter().any(|p| p.as_bytes() == k)) {
                let _: () = conn.unlink(key).await?;
            }
        }
        Ok(())
    }
}

/// Copies `from` to `to` whole (any type), with its time to live.
async fn restore(conn: &mut crate::RedisConn, from: &str, to: &str) -> Result<()> {
    let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(from).query_async(conn).await?;
    let Some(dump) = dump else { return Ok(()) };
    let ttl: i64 = conn.pttl(from).await?;
    if ttl == -2 {
        // (it expired between the two reads: the code's life was over)
        return Ok(());
    }
    let _: () = redis::cmd("RESTORE").arg(to).arg(ttl.max(0)).arg(dump).arg("REPLACE").query_async(conn).await?;
    Ok(())
}
