//! The queue handle used by producers and operators: push jobs, read depth and
//! counters, list and re-queue dead letters. Workers get their apalis backend
//! from it with [`Queue::backend`].

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::AsyncCommands;
use serde::Serialize;

use crate::{
    conn::Redis,
    error::{Error, Result},
    keys::{QueueKeys, validate_job_id},
    scripts::SCRIPTS,
};

/// Jobs per push script call: large enough to amortise the round trip, small
/// enough to keep Redis responsive (about a millisecond of work each).
const PUSH_CHUNK: usize = 1000;

/// Settings shared by everyone who uses a queue. Producers and workers of one
/// queue should agree on them.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// First part of every key (`latchkey` gives `latchkey:{apply}:ready`).
    pub prefix: String,
    /// Attempts a job gets unless it says otherwise; after the last one fails
    /// it becomes a dead letter.
    pub max_attempts: u32,
    /// Most dead letters kept; beyond it the oldest are dropped and counted in
    /// the `dead_dropped` counter.
    pub dead_letter_cap: u64,
    /// Keep a finished job's record this long (its id then still deduplicates
    /// pushes). `None`: delete it as soon as it is acknowledged.
    pub keep_finished: Option<Duration>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self { prefix: "latchkey".to_string(), max_attempts: 5, dead_letter_cap: 10_000, keep_finished: None }
    }
}

/// A job to push: its JSON payload, an optional id, and when it should run.
#[derive(Debug, Clone)]
pub struct NewJob {
    id: Option<String>,
    payload: String,
    run_at_ms: u64,
    max_attempts: Option<u32>,
}

impl NewJob {
    /// A job whose payload is `args` as JSON, to run now.
    pub fn new<T: Serialize + ?Sized>(args: &T) -> Result<Self> {
        Ok(Self::from_json(serde_json::to_string(args).map_err(Error::Encode)?))
    }

    /// A job with a payload that is already JSON.
    pub fn from_json(payload: impl Into<String>) -> Self {
        Self { id: None, payload: payload.into(), run_at_ms: 0, max_attempts: None }
    }

    /// Gives the job an id: pushing a second job with the same id while the
    /// first one exists does nothing (the push reports a duplicate).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Run at this time (millisecond precision); a time in the past means now.
    pub fn run_at(self, at: SystemTime) -> Self {
        self.run_at_ms(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
    }

    /// Run at this Unix time in milliseconds; 0 means now.
    pub fn run_at_ms(mut self, ms: u64) -> Self {
        self.run_at_ms = ms;
        self
    }

    /// Run after this delay from now.
    pub fn run_after(self, delay: Duration) -> Self {
        self.run_at(SystemTime::now() + delay)
    }

    /// Attempts this job gets, instead of the queue's default.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n.max(1));
        self
    }
}

/// What a push did with one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The job's id (given, or generated).
    pub id: String,
    /// False when a job with this id already existed and nothing was pushed.
    pub created: bool,
}

/// How many jobs are in each state. Each number is one O(1) Redis read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Depth {
    /// Due and waiting for a worker.
    pub ready: u64,
    /// Waiting for their due time (including retries in backoff).
    pub scheduled: u64,
    /// Leased to a worker (running, or about to).
    pub leased: u64,
    /// Dead letters.
    pub dead: u64,
}

/// A dead letter: the job as it was when it was given up on.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Job id.
    pub id: String,
    /// The job's JSON payload, as pushed.
    pub payload: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why it died: the last error.
    pub error: String,
    /// When it died, Unix ms.
    pub dead_at_ms: u64,
}

/// A job's record as stored, for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    /// `ready`, `scheduled`, `leased`, `done` or `dead`.
    pub state: String,
    /// Attempts started so far.
    pub attempts: u32,
    /// The JSON payload.
    pub payload: String,
    /// The last error, if an attempt failed.
    pub error: Option<String>,
    /// The worker identity holding the lease, while leased.
    pub lease: Option<String>,
}

/// A handle on one queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Queue {
    pub(crate) redis: Redis,
    pub(crate) name: Arc<str>,
    pub(crate) keys: Arc<QueueKeys>,
    pub(crate) config: Arc<QueueConfig>,
    /// Its jobs are reconciliations: a fetch hands each over with its
    /// records (see [`Reconciliations`](crate::Reconciliations)).
    pub(crate) with_records: bool,
}

impl Queue {
    /// The queue `name` on this Redis.
    pub fn new(redis: Redis, name: &str, config: QueueConfig) -> Result<Self> {
        let keys = QueueKeys::new(&config.prefix, name)?;
        Ok(Self { redis, name: name.into(), keys: Arc::new(keys), config: Arc::new(config), with_records: false })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue's key names.
    pub fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    /// The queue's settings.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Pushes one job.
    pub async fn push(&self, job: NewJob) -> Result<Pushed> {
        let mut out = self.push_many(std::iter::once(job)).await?;
        out.pop().ok_or(Error::Protocol { script: "push.lua", detail: "no result".into() })
    }

    /// Pushes many jobs in one round trip (one script call per 1,000 jobs, all
    /// pipelined on the connection). Each job is created atomically or, if its
    /// id exists, left alone; results come back in order.
    pub async fn push_many(&self, jobs: impl IntoIterator<Item = NewJob>) -> Result<Vec<Pushed>> {
        let mut ids = Vec::new();
        let mut args: Vec<Vec<String>> = Vec::new();
        for (i, job) in jobs.into_iter().enumerate() {
            if i % PUSH_CHUNK == 0 {
                args.push(vec!["4".to_string()]);
            }
            let id = match job.id {
                Some(id) => {
                    validate_job_id(&id)?;
                    id
                }
                None => uuid::Uuid::new_v4().simple().to_string(),
            };
            let chunk = args.last_mut().expect("chunk pushed above");
            chunk.push(id.clone());
            chunk.push(job.payload);
            chunk.push(job.run_at_ms.to_string());
            chunk.push(job.max_attempts.unwrap_or(0).to_string());
            ids.push(id);
        }
        let calls = args.iter().map(|chunk| {
            let mut conn = self.redis.conn();
            async move { SCRIPTS.push.key(self.keys.base()).arg(chunk).invoke_async::<Vec<i64>>(&mut conn).await }
        });
        let replies = futures::future::try_join_all(calls).await?;
        let created = replies.into_iter().flatten().map(|c| c == 1);
        Ok(ids.into_iter().zip(created).map(|(id, created)| Pushed { id, created }).collect())
    }

    /// Hands back every job still leased to `worker` and removes it from the
    /// registry: for a worker process that is leaving, once nothing in it runs
    /// any more. Returns how many jobs went back.
    pub async fn leave(&self, worker: &str) -> Result<u64> {
        let mut conn = self.redis.conn();
        Ok(SCRIPTS.leave.key(self.keys.base()).arg(worker).invoke_async(&mut conn).await?)
    }

    /// Jobs by state.
    pub async fn depth(&self) -> Result<Depth> {
        let mut conn = self.redis.conn();
        let (ready, scheduled, leased, dead): (u64, u64, u64, u64) = redis::pipe()
            .llen(self.keys.ready())
            .zcard(self.keys.scheduled())
            .zcard(self.keys.leased())
            .zcard(self.keys.dead())
            .query_async(&mut conn)
            .await?;
        Ok(Depth { ready, scheduled, leased, dead })
    }

    /// Jobs that could run now: ready ones plus scheduled ones whose time has
    /// come by Redis' clock (not promoted yet). What an autoscaler should follow.
    pub async fn due(&self) -> Result<u64> {
        let mut conn = self.redis.conn();
        Ok(SCRIPTS.due.key(self.keys.base()).invoke_async(&mut conn).await?)
    }

    /// The queue's counters since it was created: `pushed`, `completed`,
    /// `retried`, `dead`, `dead_dropped`, `recovered` (leases that expired).
    /// A counter that is not a number (written by hand) is left out.
    pub async fn counters(&self) -> Result<HashMap<String, u64>> {
        let mut conn = self.redis.conn();
        let raw: HashMap<String, String> = conn.hgetall(self.keys.stats()).await?;
        Ok(raw.into_iter().filter_map(|(k, v)| Some((k, v.parse().ok()?))).collect())
    }

    /// How long the oldest ready job has waited since it was pushed, if any.
    pub async fn oldest_ready_age(&self) -> Result<Option<Duration>> {
        let mut conn = self.redis.conn();
        let Some(id): Option<String> = conn.lindex(self.keys.ready(), -1).await? else { return Ok(None) };
        let enqueued: Option<u64> = conn.hget(self.keys.job(&id), "enqueued_at").await?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        Ok(enqueued.map(|e| Duration::from_millis(now.saturating_sub(e))))
    }

    /// Worker identities that sent a heartbeat within `window`.
    pub async fn workers_alive(&self, window: Duration) -> Result<Vec<String>> {
        let mut conn = self.redis.conn();
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().saturating_sub(window);
        Ok(conn.zrangebyscore(self.keys.workers(), since.as_millis() as u64, "+inf").await?)
    }

    /// One job's record, if it exists.
    pub async fn job(&self, id: &str) -> Result<Option<JobView>> {
        let mut conn = self.redis.conn();
        let mut h: HashMap<String, String> = conn.hgetall(self.keys.job(id)).await?;
        if h.is_empty() {
            return Ok(None);
        }
        Ok(Some(JobView {
            state: h.remove("state").unwrap_or_default(),
            attempts: h.get("attempts").and_then(|a| a.parse().ok()).unwrap_or(0),
            payload: h.remove("payload").unwrap_or_default(),
            error: h.remove("error"),
            lease: h.remove("lease"),
        }))
    }

    /// The oldest `limit` dead letters.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let mut conn = self.redis.conn();
        // Ids as bytes: a dead letter may be a job whose id was not UTF-8
        // (fetch.lua buries those); it is shown lossily.
        let entries: Vec<(Vec<u8>, f64)> =
            conn.zrange_withscores(self.keys.dead(), 0, limit.max(1) as isize - 1).await?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, _) in &entries {
            let mut key = self.keys.job("").into_bytes();
            key.extend_from_slice(id);
            pipe.cmd("HMGET").arg(key).arg(&["payload", "attempts", "error"]);
        }
        type Bytes = Option<Vec<u8>>;
        let fields: Vec<(Bytes, Bytes, Bytes)> = pipe.query_async(&mut conn).await?;
        let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        Ok(entries
            .into_iter()
            .zip(fields)
            .map(|((id, score), (payload, attempts, error))| DeadLetter {
                id: String::from_utf8_lossy(&id).into_owned(),
                payload: text(payload),
                attempts: text(attempts).parse().unwrap_or(0),
                error: text(error),
                dead_at_ms: score as u64,
            })
            .collect())
    }

    /// Re-queues these dead letters with a fresh attempt budget; returns the
    /// ids that were dead and are now ready.
    pub async fn requeue_dead(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut conn = self.redis.conn();
        Ok(SCRIPTS.requeue_dead.key(self.keys.base()).arg(ids.len()).arg(ids).invoke_async(&mut conn).await?)
    }

    /// Re-queues up to `limit` dead letters, oldest first.
    pub async fn requeue_all_dead(&self, limit: usize) -> Result<Vec<String>> {
        let mut conn = self.redis.conn();
        Ok(SCRIPTS.requeue_dead.key(self.keys.base()).arg(limit).invoke_async(&mut conn).await?)
    }
}
