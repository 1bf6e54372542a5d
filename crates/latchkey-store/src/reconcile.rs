//! Desired states and outcomes in Redis: what producers and callers use
//! (`enqueue`, `outcome`, `wait_for_outcome`) and what the reconciler reads and
//! writes (`load`, `record`). An access code's records live beside its job in
//! the `reconcile` queue's partition its id hashes to, under that partition's
//! hash tag, so each change is one atomic script even on a cluster. What is
//! about every code (the rate limits, the catch-up cursor) lives under the
//! queue's own tag (`Queue::home`).
//!
//! One job per access code (its id is the access code id) carries the whole
//! reconciliation; a new desired state reuses or pulls that job forward, so two
//! reconciliations of one access code never run at once. When that job becomes
//! a dead letter (attempts exhausted, a panic, a payload that does not parse, a
//! lease that expired on the last attempt), the burial itself ends the newest
//! generation's record `failed` with error kind `gave_up` (`bury` in
//! `lua/common.lua`), so nobody waits for a generation that will not finish.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use latchkey_core::{DesiredState, DesiredStateInput, HistoryEntry, InvalidDesiredState, Outcome};
use redis::AsyncCommands;

use crate::{
    backend::{JobInfo, Lease},
    conn::Redis,
    error::{Error, Result},
    keys::QueueKeys,
    queue::{Queue, QueueConfig},
    scripts::SCRIPTS,
};

/// The queue every reconciliation job runs on.
pub const RECONCILE_QUEUE: &str = "reconcile";

/// Partitions of the reconcile queue unless configured otherwise
/// (`LATCHKEY_PARTITIONS`): enough for a cluster of 16 masters.
pub const DEFAULT_PARTITIONS: u32 = 16;

/// Most entries kept in the outcome event stream (approximately). The scripts
/// that append to it cap it with `EVENTS_CAP` in `lua/common.lua`, which a test
/// keeps equal to this.
pub const EVENTS_CAP: u64 = 100_000;

/// Why an enqueue was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The desired state breaks a rule; nothing was stored.
    #[error("invalid desired state: {0}")]
    Invalid(#[from] InvalidDesiredState),
    /// Redis failed; the state may or may not have been stored. Enqueue again:
    /// at worst it makes one more generation of the same state.
    #[error("could not store the desired state")]
    Store(#[from] Error),
    /// The idempotency key was used for another request; nothing was stored.
    #[error("idempotency key reused: {0}")]
    IdempotencyKeyReused(String),
}

/// How long an enqueue waits for a partition `repartition` is moving (its
/// codes move in seconds) before it fails and may be retried.
const REPARTITION_PATIENCE: Duration = Duration::from_secs(60);

/// How long an idempotency key is remembered ([`Reconciliations::enqueue_once`]).
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// What the reconciler reads at the start of a run.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The newest generation.
    pub generation: u64,
    /// Its desired state.
    pub desired: DesiredState,
    /// The outcome record, about `generation` (checked when loaded).
    pub outcome: Outcome,
}

/// What a compare-and-set write of an outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Written.
    Written,
    /// Not written: a newer generation exists.
    Superseded,
    /// Not written: this worker no longer holds the access code's job.
    LeaseLost,
}

/// The answer of [`Reconciliations::wait_for_outcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// The generation reached a terminal state.
    Finished(Outcome),
    /// A newer generation replaced it; here is the record, for the newer one.
    Superseded(Outcome),
    /// Not finished within the timeout; the record as it is.
    TimedOut(Option<Outcome>),
}

/// Desired states, outcomes and the reconcile queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reconciliations {
    queue: Queue,
    /// How long the records of a code whose life is over (deleted, expired)
    /// are kept before Redis forgets them.
    retention: Duration,
}

/// Most entries kept in an access code's history (`lua/common.lua` has the same).
pub const HISTORY_CAP: usize = 50;

/// The most bytes of a desired state or an outcome record the scripts read
/// (`MAX_RECORD` in `lua/common.lua`); a real one is a few KB. Anything larger
/// was not written by latchkey and is refused as unreadable.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Default of [`Reconciliations::with_retention`]: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Reconciliations {
    /// On this Redis, with this queue configuration (its prefix and
    /// partitions apply), after checking that Redis records the same number
    /// of partitions ([`Queue::open`]).
    pub async fn open(redis: Redis, config: QueueConfig) -> Result<Self> {
        let queue = Queue { with_records: true, ..Queue::new(redis, RECONCILE_QUEUE, config)? };
        queue.check_layout().await?;
        Ok(Self { queue, retention: DEFAULT_RETENTION })
    }

    /// [`open`](Self::open) with the number of partitions Redis records
    /// (1 when nothing is recorded yet), whatever `config` says: for
    /// operators' tools, such as `repartition`, that follow the deployment.
    pub async fn open_recorded(redis: Redis, mut config: QueueConfig) -> Result<Self> {
        config.partitions = Queue::recorded_partitions(&redis, RECONCILE_QUEUE, &config.prefix).await?.unwrap_or(1);
        Self::open(redis, config).await
    }

    /// Keeps the records of a code whose life is over (deleted, or expired)
    /// for `retention` after that, then lets Redis forget them. Live codes
    /// are never forgotten.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention.max(Duration::from_millis(1));
        self
    }

    /// The history of an access code, newest first (at most [`HISTORY_CAP`]
    /// state changes).
    pub async fn history(&self, access_code_id: &str) -> Result<Vec<HistoryEntry>> {
        let raw: Vec<String> = self
            .find(access_code_id, |keys| async move {
                let mut conn = self.queue.redis.conn();
                let raw: Vec<String> = conn.lrange(keys.history(access_code_id), 0, -1).await?;
                Ok((!raw.is_empty()).then_some(raw))
            })
            .await?
            .unwrap_or_default();
        raw.iter().map(|r| decode("history entry", r)).collect()
    }

    /// What `read` finds of an access code in the partition it is in: the
    /// newest layout first, then the older one (around a `repartition`),
    /// then the newest again (the code may have moved in between).
    async fn find<T, F, Fut>(&self, access_code_id: &str, read: F) -> Result<Option<T>>
    where
        F: Fn(QueueKeys) -> Fut,
        Fut: Future<Output = Result<Option<T>>>,
    {
        for _ in 0..2 {
            let layouts = self.queue.layouts();
            for layout in layouts.iter().rev() {
                if let Some(found) = read(layout.of(access_code_id).clone()).await? {
                    return Ok(Some(found));
                }
            }
            if layouts.len() > 1
                && let Some(found) = read(layouts[layouts.len() - 1].of(access_code_id).clone()).await?
            {
                return Ok(Some(found));
            }
            // Not found: perhaps moved by a repartition this process has not
            // heard of. Once more if so.
            if !self.queue.refresh_layout(true).await? {
                break;
            }
        }
        Ok(None)
    }

    /// The queue the reconciliation jobs run on.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Validates a producer's desired state and records it as the newest
    /// generation of its access code; returns the generation. Nothing is stored
    /// when it is invalid.
    pub async fn enqueue(&self, input: DesiredStateInput) -> Result<u64, EnqueueError> {
        let now = Utc::now();
        let desired = input.validate(now)?;
        Ok(self.enqueue_valid(&desired, now).await?)
    }

    /// Like [`Reconciliations::enqueue`], once per `idempotency_key` (scoped
    /// by the caller, e.g. by the API token's name) for [`IDEMPOTENCY_WINDOW`]:
    /// the same request again returns the generation the first one made and
    /// changes nothing; the key with another request is refused.
    pub async fn enqueue_once(&self, input: DesiredStateInput, idempotency_key: &str) -> Result<u64, EnqueueError> {
        let now = Utc::now();
        let desired = input.validate(now)?;
        match self.desire(&desired, now, Some(idempotency_key)).await {
            Err(Error::Redis(e)) if e.code() == Some("IDEMPOTENCY") => {
                Err(EnqueueError::IdempotencyKeyReused(e.detail().unwrap_or_default().to_string()))
            }
            other => Ok(other?),
        }
    }

    /// Records an already validated desired state; returns the generation.
    pub async fn enqueue_valid(&self, desired: &DesiredState, now: DateTime<Utc>) -> Result<u64> {
        self.desire(desired, now, None).await
    }

    /// Records the desired state in the partition its code is in. Around a
    /// `repartition` that is the oldest layout that has not moved it: a
    /// partition being moved answers REPARTITIONING (wait a moment), one
    /// moved answers REPARTITIONED with the layout to go to.
    async fn desire(&self, desired: &DesiredState, now: DateTime<Utc>, idem: Option<&str>) -> Result<u64> {
        let id = &desired.access_code_id;
        let state = serde_json::to_string(desired).map_err(Error::Encode)?;
        let template = serde_json::to_string(&Outcome::pending(id, 0, now)).map_err(Error::Encode)?;
        let patience = Instant::now() + REPARTITION_PATIENCE;
        'layouts: loop {
            for layout in self.queue.layouts() {
                let mut conn = self.queue.redis.conn();
                let mut call = SCRIPTS.desire.key(layout.of(id).base());
                call.arg(id).arg(&state).arg(&template);
                if let Some(key) = idem {
                    call.arg(key).arg(IDEMPOTENCY_WINDOW.as_millis() as u64);
                }
                match call.invoke_async(&mut conn).await {
                    Ok(generation) => return Ok(generation),
                    Err(e) if e.code() == Some("REPARTITIONED") => {
                        let to = e.detail().and_then(|d| d.trim().parse().ok()).unwrap_or(0);
                        if self.queue.learn(to)? {
                            continue 'layouts;
                        }
                    }
                    Err(e) if e.code() == Some("REPARTITIONING") && Instant::now() < patience => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue 'layouts;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            return Err(Error::Protocol {
                script: "desire.lua",
                detail: format!("access code {id}: every layout of the queue says it moved it"),
            });
        }
    }

    /// The outcome record of an access code (about its newest generation).
    pub async fn outcome(&self, access_code_id: &str) -> Result<Option<Outcome>> {
        let raw: Option<String> = self
            .find(access_code_id, |keys| async move {
                let mut conn = self.queue.redis.conn();
                Ok(conn.get(keys.outcome(access_code_id)).await?)
            })
            .await?;
        raw.map(|r| decode("outcome record", &r)).transpose()
    }

    /// Waits until `generation` of the access code finishes (a generation
    /// whose job became a dead letter finishes `failed`) or is superseded, or
    /// `timeout` passes.
    pub async fn wait_for_outcome(&self, access_code_id: &str, generation: u64, timeout: Duration) -> Result<Waited> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(10);
        loop {
            let outcome = self.outcome(access_code_id).await?;
            match outcome {
                Some(o) if o.generation > generation => return Ok(Waited::Superseded(o)),
                Some(o) if o.generation == generation && o.state.is_terminal() => {
                    return Ok(Waited::Finished(o));
                }
                other if Instant::now() >= deadline => return Ok(Waited::TimedOut(other)),
                _ => {}
            }
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// The newest generation, its desired state and its outcome record, read
    /// in one script so they are from one instant. A record about another
    /// generation is refused (`Error::Protocol`): the scripts never store one,
    /// and a run must not act on a desired state with another one's progress.
    pub async fn load(&self, access_code_id: &str) -> Result<Option<Loaded>> {
        self.find(access_code_id, |keys| async move { self.load_in(&keys, access_code_id).await }).await
    }

    /// [`load`](Self::load), from the partition the run holding `lease`
    /// leased the code's job in.
    pub async fn load_leased(&self, access_code_id: &str, lease: &Lease) -> Result<Option<Loaded>> {
        self.load_in(&lease.partition, access_code_id).await
    }

    async fn load_in(&self, keys: &QueueKeys, access_code_id: &str) -> Result<Option<Loaded>> {
        let mut conn = self.queue.redis.conn();
        let read: Option<(u64, String, String)> =
            SCRIPTS.load.key(keys.base()).arg(access_code_id).invoke_async(&mut conn).await?;
        let Some((generation, desired, outcome)) = read else {
            return Ok(None);
        };
        loaded(access_code_id, generation, &desired, &outcome).map(Some)
    }

    /// What [`load`](Self::load) would read, from the records the job's fetch
    /// handed over (read at the instant of its lease, one round trip fewer);
    /// `load` itself when there are none (missing or unreadable: it then
    /// meets the error), or when they are about another access code. Only
    /// for a run's first read: a later step reads again.
    pub async fn load_fetched(&self, access_code_id: &str, info: &JobInfo) -> Result<Option<Loaded>> {
        match &info.records {
            Some(r) if info.id == access_code_id => {
                loaded(access_code_id, r.generation, &r.desired, &r.outcome).map(Some)
            }
            _ => self.load_leased(access_code_id, &info.lease).await,
        }
    }

    /// Writes `outcome` if it is still about the newest generation and the
    /// run holding `lease` still holds the access code's job (renewing the
    /// lease); appends the state change to the event stream.
    pub async fn record(&self, outcome: &Outcome, lease: &Lease) -> Result<Recorded> {
        self.record_inner(outcome, lease, None).await
    }

    /// [`record`](Self::record) as the run's last write, and, when written,
    /// the job put back to run again at `at_ms` in the same script (a
    /// continuation: its attempts start over; a job touched meanwhile runs
    /// at once). One round trip instead of two. The handler then returns
    /// [`Next::Settled`](crate::Next::Settled); after `Superseded` or
    /// `LeaseLost` nothing was put back.
    pub async fn record_then_continue(&self, outcome: &Outcome, lease: &Lease, at_ms: u64) -> Result<Recorded> {
        self.record_inner(outcome, lease, Some(at_ms)).await
    }

    async fn record_inner(&self, outcome: &Outcome, lease: &Lease, continue_at: Option<u64>) -> Result<Recorded> {
        let json = serde_json::to_string(outcome).map_err(Error::Encode)?;
        let mut conn = self.queue.redis.conn();
        let r: i64 = SCRIPTS
            .record
            .key(lease.partition.base())
            .arg(&outcome.access_code_id)
            .arg(outcome.generation)
            .arg(json)
            .arg(outcome.state.as_str())
            .arg(&*lease.worker)
            .arg(lease.fence)
            .arg(lease.duration.as_millis() as u64)
            .arg(serde_json::to_string(&HistoryEntry::of(outcome)).map_err(Error::Encode)?)
            .arg(if outcome.is_forgettable() { self.retention.as_millis() as u64 } else { 0 })
            .arg(outcome.device_id.as_deref().filter(|d| latchkey_core::id_rule_broken(d).is_none()).unwrap_or(""))
            .arg(continue_at.map(|at| at.to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await?;
        Ok(match r {
            1 => Recorded::Written,
            0 => Recorded::Superseded,
            _ => Recorded::LeaseLost,
        })
    }

    /// Whether the run holding `lease` still holds the access code's job;
    /// renews the lease if so. A run calls it right before it sends Seam
    /// something it cannot take back (a retried update): a run cut off from
    /// Redis fails it (the command times out well within the lease) and a run
    /// whose job was taken over gets `false`.
    pub async fn hold(&self, access_code_id: &str, lease: &Lease) -> Result<bool> {
        let mut conn = self.queue.redis.conn();
        let held: i64 = SCRIPTS
            .hold
            .key(lease.partition.base())
            .arg(access_code_id)
            .arg(&*lease.worker)
            .arg(lease.fence)
            .arg(lease.duration.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }
}

/// One change of an outcome's state, from the event stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct OutcomeChange {
    /// Where the stream stands right after this change: resume after it
    /// (one `<ms>-<seq>` stream entry id per partition, joined by `.`).
    pub id: String,
    /// The access code.
    pub access_code_id: String,
    /// Its generation.
    pub generation: u64,
    /// The state it entered.
    pub state: String,
}

impl Reconciliations {
    /// The access codes that need a human (newest generation ended `failed`,
    /// `rejected` or `timed_out`), most recent first: how many there are,
    /// and the outcome records of the first `limit`.
    pub async fn needing_attention(&self, limit: usize) -> Result<(u64, Vec<Outcome>)> {
        let limit = limit.max(1);
        let per = futures::future::try_join_all(self.queue.partitions().iter().map(|keys| {
            let key = keys.attention();
            let mut conn = self.queue.redis.conn();
            async move {
                let (total, ids): (u64, Vec<(String, f64)>) = redis::pipe()
                    .zcard(&key)
                    .zrevrange_withscores(&key, 0, limit as isize - 1)
                    .query_async(&mut conn)
                    .await?;
                Ok::<_, Error>((total, ids))
            }
        }))
        .await?;
        let total = per.iter().map(|(t, _)| t).sum();
        let mut newest: Vec<(String, f64)> = per.into_iter().flat_map(|(_, ids)| ids).collect();
        newest.sort_by(|a, b| b.1.total_cmp(&a.1));
        let ids: Vec<String> = newest.into_iter().take(limit).map(|(id, _)| id).collect();
        Ok((total, self.outcomes(&ids).await?))
    }

    /// The outcome records of the access codes whose state changed most
    /// recently (from the newest `scan` changes of each partition's stream),
    /// newest first, at most `limit`, each code once.
    pub async fn recent_outcomes(&self, scan: usize, limit: usize) -> Result<Vec<Outcome>> {
        let per = self.newest_entries(scan.max(1)).await?;
        let mut entries: Vec<(EntryId, Vec<(String, String)>)> =
            per.into_iter().flatten().filter_map(|(id, fields)| Some((EntryId::parse(&id)?, fields))).collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut ids: Vec<String> = Vec::new();
        for (_, fields) in entries {
            let Some((_, code)) = fields.into_iter().find(|(f, _)| f == "access_code_id") else { continue };
            if latchkey_core::id_rule_broken(&code).is_none() && !ids.contains(&code) {
                ids.push(code);
                if ids.len() == limit {
                    break;
                }
            }
        }
        self.outcomes(&ids).await
    }

    /// The outcome records of these access codes, in order; a missing one, or
    /// one that is not a record latchkey wrote (too large, not JSON), is left
    /// out.
    pub async fn outcomes(&self, ids: &[String]) -> Result<Vec<Outcome>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let groups = self.queue.by_partition(ids);
        let per = futures::future::try_join_all(groups.iter().map(|(p, ids)| {
            let keys: Vec<String> = ids.iter().map(|id| p.outcome(id)).collect();
            let mut conn = self.queue.redis.conn();
            // (MGET by hand: the typed `mget` sends GET for a single key)
            async move { redis::cmd("MGET").arg(keys).query_async::<Vec<Option<Vec<u8>>>>(&mut conn).await }
        }))
        .await?;
        let mut found: std::collections::HashMap<&str, Outcome> = std::collections::HashMap::new();
        for ((_, ids), raw) in groups.iter().zip(per) {
            for (id, r) in ids.iter().zip(raw) {
                if let Some(o) = r.filter(|r| r.len() <= MAX_RECORD_BYTES).and_then(|r| serde_json::from_slice(&r).ok())
                {
                    found.insert(id, o);
                }
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id.as_str())).collect())
    }

    /// Outcome changes after `after` (at most `count`), oldest first, and
    /// where the reading got to; `after: None` starts at the newest change
    /// (only later ones). Each partition has its own stream: the position is
    /// one stream entry id per partition, joined by `.` (with one
    /// partition, the entry id itself), and each change carries the position
    /// right after it, so a reader resumes exactly where it stopped. Reads
    /// without blocking: the connection is shared.
    pub async fn changes_after(&self, after: Option<&str>, count: usize) -> Result<(String, Vec<OutcomeChange>)> {
        self.queue.refresh_layout(false).await?;
        let mut positions: Vec<EntryId> = match after.and_then(|a| self.parse_position(a)) {
            Some(p) => p,
            None => self
                .newest_entries(1)
                .await?
                .into_iter()
                .map(|last| last.first().and_then(|(id, _)| EntryId::parse(id)).unwrap_or_default())
                .collect(),
        };
        let count = count.max(1);
        let per = self
            .read_streams(|p, key| {
                let mut cmd = redis::cmd("XRANGE");
                cmd.arg(key).arg(format!("({}", positions[p])).arg("+").arg("COUNT").arg(count);
                cmd
            })
            .await?;
        // (entry id, partition, fields)
        let mut entries: Vec<(EntryId, usize, Fields)> = per
            .into_iter()
            .enumerate()
            .flat_map(|(p, entries)| entries.into_iter().filter_map(move |(id, f)| Some((EntryId::parse(&id)?, p, f))))
            .collect();
        entries.sort_by_key(|e| e.0);
        entries.truncate(count);
        let mut out = Vec::with_capacity(entries.len());
        for (id, p, fields) in entries {
            positions[p] = id;
            let field = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
            // (an entry not written by latchkey is skipped, not trusted)
            let (Some(code), Some(generation), Some(state)) =
                (field("access_code_id"), field("generation").and_then(|g| g.parse().ok()), field("state"))
            else {
                continue;
            };
            if state.len() > 32 || latchkey_core::id_rule_broken(&code).is_some() {
                continue;
            }
            out.push(OutcomeChange { id: position(&positions), access_code_id: code, generation, state });
        }
        Ok((position(&positions), out))
    }

    /// The newest `count` entries of each partition's stream, newest first,
    /// in the order of the queue's partitions.
    async fn newest_entries(&self, count: usize) -> Result<Vec<Vec<Entry>>> {
        self.read_streams(|_, key| {
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(key).arg("+").arg("-").arg("COUNT").arg(count);
            cmd
        })
        .await
    }

    /// Runs the read `cmd(partition index, stream key)` on each partition's
    /// stream at once; the entries in the order of the queue's partitions.
    async fn read_streams(&self, cmd: impl Fn(usize, String) -> redis::Cmd) -> Result<Vec<Vec<Entry>>> {
        futures::future::try_join_all(self.queue.partitions().iter().enumerate().map(|(p, keys)| {
            let mut conn = self.queue.redis.conn();
            let cmd = cmd(p, keys.events());
            async move { Ok::<_, Error>(cmd.query_async::<Vec<Entry>>(&mut conn).await?) }
        }))
        .await
    }

    /// Reads a position [`changes_after`](Self::changes_after) handed out:
    /// one stream entry id per partition, joined by `.`. `None` when it is
    /// not one (another number of partitions, or not ids at all).
    pub fn parse_position(&self, position: &str) -> Option<Vec<EntryId>> {
        if position.len() > 48 * self.queue.partitions().len() {
            return None;
        }
        let ids: Vec<EntryId> = position.split('.').map(EntryId::parse).collect::<Option<_>>()?;
        (ids.len() == self.queue.partitions().len()).then_some(ids)
    }
}

/// One stream entry as read: its id and its fields.
type Entry = (String, Fields);
type Fields = Vec<(String, String)>;

/// A stream entry's id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId(u64, u64);

impl EntryId {
    fn parse(id: &str) -> Option<Self> {
        let (ms, seq) = id.split_once('-')?;
        let num = |p: &str| {
            (!p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok()).flatten()
        };
        Some(Self(num(ms)?, num(seq)?))
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

fn position(ids: &[EntryId]) -> String {
    ids.iter().map(EntryId::to_string).collect::<Vec<_>>().join(".")
}

/// What an event did to one access code's job ([`Reconciliations::nudge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nudged {
    /// It was waiting; it runs now.
    Pulled,
    /// It was due or running already (a running one reads Seam again after
    /// its run).
    AlreadyDue,
    /// latchkey does not manage this code, or its reconciliation is over.
    NotManaged,
}

/// What an access code event says, which decides whose job it pulls
/// ([`Reconciliations::nudge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeEvent {
    /// The lock acted, or the code changed outside latchkey (set, scheduled,
    /// failed, removed, deleted, modified external to Seam, ...): the job
    /// runs now.
    Lock,
    /// Seam took a change to the code's settings (`access_code.changed`):
    /// the job runs now, unless latchkey's own update is in flight
    /// (`applying`). Then the event is that update's echo and the lock has
    /// not acted yet: reading the code would find it `setting`, a request
    /// spent for nothing. The lock's own event, set or failed, follows.
    Changed,
}

/// How long a delivery id is remembered, so a delivery Seam repeats
/// (Svix retries for about a day) changes nothing the second time.
pub const DELIVERY_DEDUP: Duration = Duration::from_secs(24 * 3600);

impl Reconciliations {
    /// An event from Seam about these access codes (a webhook delivery):
    /// their jobs run now instead of at their next poll, as `event` says.
    /// `delivery` is the delivery's id: a delivery seen within
    /// [`DELIVERY_DEDUP`] changes nothing (`None` returned). Ids that break
    /// the id rule are not managed.
    pub async fn nudge(
        &self,
        delivery: Option<&str>,
        event: CodeEvent,
        access_code_ids: &[&str],
    ) -> Result<Option<Vec<Nudged>>> {
        let valid: Vec<&str> =
            access_code_ids.iter().copied().filter(|id| latchkey_core::id_rule_broken(id).is_none()).collect();
        let groups = self.queue.by_partition(&valid);
        let kind = match event {
            CodeEvent::Lock => "codes",
            CodeEvent::Changed => "changed",
        };
        let replies =
            futures::future::try_join_all(groups.iter().map(|(p, ids)| self.nudge_script(p, delivery, kind, ids)))
                .await?;
        // A partition that saw the delivery before changed nothing.
        if !groups.is_empty() && replies.iter().all(Option::is_none) {
            return Ok(None);
        }
        // (around a repartition a code is asked after in two partitions:
        // where it is says more than where it is not)
        let mut results: std::collections::HashMap<&str, Nudged> = std::collections::HashMap::new();
        for ((_, ids), reply) in groups.iter().zip(replies) {
            for (i, id) in ids.iter().enumerate() {
                let n =
                    reply.as_ref().map_or(Nudged::AlreadyDue, |r| r.get(i).copied().map_or(Nudged::NotManaged, nudged));
                let best = results.entry(id).or_insert(Nudged::NotManaged);
                if *best == Nudged::NotManaged || n == Nudged::Pulled {
                    *best = n;
                }
            }
        }
        Ok(Some(access_code_ids.iter().map(|id| results.get(id).copied().unwrap_or(Nudged::NotManaged)).collect()))
    }

    /// An event from Seam about a device (it came back, or went away): the
    /// jobs of its codes whose reconciliation is under way run now (a code
    /// that succeeded is left to its watch). Its codes are in every
    /// partition: one script each. `None` for a delivery seen before; else
    /// how many were pulled forward.
    pub async fn nudge_device(&self, delivery: Option<&str>, device_id: &str) -> Result<Option<usize>> {
        if latchkey_core::id_rule_broken(device_id).is_some() {
            return Ok(Some(0));
        }
        let device = [device_id];
        let parts = self.queue.partitions();
        let replies =
            futures::future::try_join_all(parts.iter().map(|p| self.nudge_script(p, delivery, "device", &device)))
                .await?;
        if replies.iter().all(Option::is_none) {
            return Ok(None);
        }
        Ok(Some(replies.into_iter().flatten().flatten().filter(|n| nudged(*n) == Nudged::Pulled).count()))
    }

    async fn nudge_script(
        &self,
        partition: &QueueKeys,
        delivery: Option<&str>,
        kind: &str,
        args: &[&str],
    ) -> Result<Option<Vec<i64>>> {
        if let Some(d) = delivery {
            crate::keys::validate_job_id(d)?;
        }
        let mut conn = self.queue.redis.conn();
        let r: Vec<i64> = SCRIPTS
            .nudge
            .key(partition.base())
            .arg(delivery.unwrap_or(""))
            .arg(DELIVERY_DEDUP.as_millis() as u64)
            .arg(kind)
            .arg(args)
            .invoke_async(&mut conn)
            .await?;
        Ok((r.first() != Some(&-1)).then_some(r))
    }
}

fn nudged(n: i64) -> Nudged {
    match n {
        1 => Nudged::Pulled,
        2 => Nudged::AlreadyDue,
        _ => Nudged::NotManaged,
    }
}

impl Reconciliations {
    /// Whether `holder` may catch up from Seam's events now: at most one
    /// worker per `every` (a lease that expires by itself).
    pub async fn catch_up_turn(&self, holder: &str, every: Duration) -> Result<bool> {
        let mut conn = self.queue.redis.conn();
        let took: Option<String> = redis::cmd("SET")
            .arg(self.queue.home().catch_up("lease"))
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(every.as_millis().max(1) as u64)
            .query_async(&mut conn)
            .await?;
        Ok(took.is_some())
    }

    /// How far the catch-up from Seam's events has got; `None` before the
    /// first, or when what Redis holds is not a time (then it starts over).
    pub async fn catch_up_cursor(&self) -> Result<Option<DateTime<Utc>>> {
        let mut conn = self.queue.redis.conn();
        let raw: Option<Vec<u8>> = conn.get(self.queue.home().catch_up("since")).await?;
        Ok(raw
            .filter(|b| b.len() <= 64)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    /// Records how far the catch-up has got.
    pub async fn set_catch_up_cursor(&self, at: DateTime<Utc>) -> Result<()> {
        let mut conn = self.queue.redis.conn();
        let _: () = conn
            .set(self.queue.home().catch_up("since"), at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .await?;
        Ok(())
    }
}

/// A desired state and its outcome record, decoded; the record must be about
/// `generation`.
fn loaded(access_code_id: &str, generation: u64, desired: &str, outcome: &str) -> Result<Loaded> {
    let outcome: Outcome = decode("outcome record", outcome)?;
    if outcome.generation != generation {
        return Err(Error::Protocol {
            script: "load.lua",
            detail: format!(
                "access code {access_code_id}: the desired state is generation {generation} \
                 but the outcome record is about generation {}",
                outcome.generation
            ),
        });
    }
    Ok(Loaded { generation, desired: decode("desired state", desired)?, outcome })
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, raw: &str) -> Result<T> {
    serde_json::from_str(raw).map_err(|e| Error::Protocol { script: what, detail: e.to_string() })
}
