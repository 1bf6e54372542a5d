//! The queue handle used by producers and operators: push jobs, read depth and
//! counters, list and re-queue dead letters. Workers get their apalis backend
//! from it with [`Queue::backend`].

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::AsyncCommands;
use serde::Serialize;

use crate::{
    conn::Redis,
    error::{Error, Result},
    keys::{QueueKeys, partition_of, validate_job_id},
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
    /// Partitions the queue's keys are split into, each under its own hash
    /// tag, so a Redis Cluster spreads them over its masters (1 to
    /// [`MAX_PARTITIONS`](crate::keys::MAX_PARTITIONS); see
    /// [`partition_of`](crate::keys::partition_of)). Every process of a queue
    /// must agree: [`Queue::open`] refuses another number than Redis records.
    pub partitions: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            prefix: "latchkey".to_string(),
            max_attempts: 5,
            dead_letter_cap: 10_000,
            keep_finished: None,
            partitions: 1,
        }
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

/// One way of splitting a queue: its number of partitions and their keys, by
/// index ([`partition_of`]).
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub partitions: u32,
    pub parts: Arc<[QueueKeys]>,
}

impl Layout {
    fn new(prefix: &str, queue: &str, partitions: u32) -> Result<Self> {
        Ok(Self { partitions, parts: QueueKeys::partitions(prefix, queue, partitions)?.into() })
    }

    /// The partition of `id` in this layout.
    pub fn of(&self, id: &str) -> &QueueKeys {
        &self.parts[partition_of(id, self.partitions) as usize]
    }
}

/// A handle on one queue, all its partitions. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Queue {
    pub(crate) redis: Redis,
    pub(crate) name: Arc<str>,
    /// The queue as one whole: its layout record and worker registry, and,
    /// when it has one partition, that partition.
    pub(crate) home: Arc<QueueKeys>,
    /// The layouts its jobs may be in, oldest first: one, or, while (or
    /// since) `repartition` moves the queue, the one it moves from and the
    /// one it moves to.
    pub(crate) layouts: Arc<RwLock<Vec<Layout>>>,
    /// When the layout record was last read for news of a `repartition`.
    pub(crate) refreshed: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    pub(crate) config: Arc<QueueConfig>,
    /// Its jobs are reconciliations: a fetch hands each over with its
    /// records (see [`Reconciliations`](crate::Reconciliations)).
    pub(crate) with_records: bool,
}

impl Queue {
    /// The queue `name` on this Redis, as `config` describes it. Does not
    /// check the layout Redis records: [`Queue::open`] does.
    pub fn new(redis: Redis, name: &str, config: QueueConfig) -> Result<Self> {
        let home = QueueKeys::new(&config.prefix, name)?;
        let layout = Layout::new(&config.prefix, name, config.partitions)?;
        Ok(Self {
            redis,
            name: name.into(),
            home: Arc::new(home),
            layouts: Arc::new(RwLock::new(vec![layout])),
            refreshed: Arc::default(),
            config: Arc::new(config),
            with_records: false,
        })
    }

    /// [`Queue::new`], after checking that Redis records the same number of
    /// partitions for the queue (recording it if nothing does yet), or that
    /// `repartition` is moving the queue to that number. A queue used before
    /// partitions existed, with jobs under its single tag, is one partition.
    pub async fn open(redis: Redis, name: &str, config: QueueConfig) -> Result<Self> {
        let queue = Self::new(redis, name, config)?;
        queue.check_layout().await?;
        Ok(queue)
    }

    /// The layout Redis records for this queue: its partitions (`None` when
    /// it records none), and the number `repartition` is moving it to, if a
    /// move is under way.
    pub async fn recorded_layout(&self) -> Result<(Option<u32>, Option<u32>)> {
        let (partitions, moving_to) = self.read_layout(None).await?;
        Ok((Some(partitions).filter(|p| *p > 0), moving_to))
    }

    /// The number of partitions Redis records for the queue `name` under
    /// `prefix`, if it records one: what an operator's tool follows.
    pub async fn recorded_partitions(redis: &Redis, name: &str, prefix: &str) -> Result<Option<u32>> {
        let probe =
            Self::new(redis.clone(), name, QueueConfig { prefix: prefix.to_string(), ..QueueConfig::default() })?;
        Ok(Some(probe.read_layout(None).await?.0).filter(|p| *p > 0))
    }

    pub(crate) async fn check_layout(&self) -> Result<()> {
        let (recorded, moving_to) = self.read_layout(Some(self.config.partitions)).await?;
        let configured = self.config.partitions;
        if recorded != configured && moving_to != Some(configured) {
            return Err(Error::Layout { queue: self.name.to_string(), recorded, configured });
        }
        let mut layouts = vec![Layout::new(&self.config.prefix, &self.name, recorded)?];
        if let Some(to) = moving_to {
            layouts.push(Layout::new(&self.config.prefix, &self.name, to)?);
        }
        *self.layouts.write().expect("layouts lock") = layouts;
        Ok(())
    }

    /// Reads the layout record for news of a `repartition` (a process that
    /// started before it knows only the old layout): at most once a second
    /// unless `now`. Returns whether the queue learnt of a layout.
    pub(crate) async fn refresh_layout(&self, now: bool) -> Result<bool> {
        {
            let mut last = self.refreshed.lock().expect("refreshed lock");
            if !now && last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return Ok(false);
            }
            *last = Some(std::time::Instant::now());
        }
        let (recorded, moving_to) = self.read_layout(None).await?;
        let mut learnt = false;
        for p in [recorded].into_iter().chain(moving_to).filter(|p| *p > 0) {
            learnt |= self.learn(p)?;
        }
        Ok(learnt)
    }

    /// The layout Redis records: partitions (0 when nothing is recorded and
    /// `record` is `None`), and where `repartition` is moving the queue to,
    /// if it is. With `record`, records that number of partitions when
    /// nothing is recorded yet.
    pub(crate) async fn read_layout(&self, record: Option<u32>) -> Result<(u32, Option<u32>)> {
        let mut conn = self.redis.conn();
        let (recorded, moving_to): (i64, i64) =
            SCRIPTS.layout.key(self.home.base()).arg(record.unwrap_or(0)).invoke_async(&mut conn).await?;
        let bad = |n: i64| Error::Protocol { script: "layout.lua", detail: format!("partitions {n}") };
        let recorded = u32::try_from(recorded).map_err(|_| bad(recorded))?;
        let moving_to = (moving_to > 0).then(|| u32::try_from(moving_to).map_err(|_| bad(moving_to))).transpose()?;
        Ok((recorded, moving_to))
    }

    /// The queue is being moved (or was) to a layout of `partitions`: its
    /// jobs may be there too. Returns whether that was news.
    pub(crate) fn learn(&self, partitions: u32) -> Result<bool> {
        let mut layouts = self.layouts.write().expect("layouts lock");
        if layouts.iter().any(|l| l.partitions == partitions) {
            return Ok(false);
        }
        layouts.push(Layout::new(&self.config.prefix, &self.name, partitions)?);
        Ok(true)
    }

    /// The layouts the queue's jobs may be in, oldest first.
    pub(crate) fn layouts(&self) -> Vec<Layout> {
        self.layouts.read().expect("layouts lock").clone()
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn newest(&self) -> Layout {
        self.layouts.read().expect("layouts lock").last().expect("a queue has a layout").clone()
    }

    /// The key names of the partition job `id` belongs to (in the newest
    /// layout the queue knows).
    pub fn keys_of(&self, id: &str) -> QueueKeys {
        self.newest().of(id).clone()
    }

    /// The index of the partition job `id` belongs to (in the newest layout).
    pub fn partition_of(&self, id: &str) -> usize {
        partition_of(id, self.newest().partitions) as usize
    }

    /// The key names of every partition, of every layout the queue's jobs
    /// may be in (one, except around a `repartition`).
    pub fn partitions(&self) -> Vec<QueueKeys> {
        self.layouts.read().expect("layouts lock").iter().flat_map(|l| l.parts.iter().cloned()).collect()
    }

    /// The queue's key names as one whole (its layout record, its worker
    /// registry); with one partition, that partition's.
    pub fn home(&self) -> &QueueKeys {
        &self.home
    }

    /// The queue's settings.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Runs `f` on every partition at once; the results in the order of
    /// [`partitions`](Self::partitions).
    async fn each<T, F, Fut>(&self, f: F) -> Result<Vec<T>>
    where
        F: Fn(QueueKeys) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.refresh_layout(false).await?;
        futures::future::try_join_all(self.partitions().into_iter().map(f)).await
    }

    /// Groups ids by their partition in every layout the queue knows (an id
    /// is in one of them): (partition, ids in their given order).
    pub(crate) fn by_partition<'i, S: AsRef<str>>(&self, ids: &'i [S]) -> Vec<(QueueKeys, Vec<&'i str>)> {
        let layouts = self.layouts();
        grouped(layouts.iter().flat_map(|l| ids.iter().map(|id| (l.of(id.as_ref()).clone(), id.as_ref()))))
    }

    /// Pushes one job.
    pub async fn push(&self, job: NewJob) -> Result<Pushed> {
        let mut out = self.push_many(std::iter::once(job)).await?;
        out.pop().ok_or(Error::Protocol { script: "push.lua", detail: "no result".into() })
    }

    /// Pushes many jobs in one round trip (one script call per partition and
    /// 1,000 jobs, all pipelined on the connection). Each job is created
    /// atomically or, if its id exists, left alone; results come back in order.
    pub async fn push_many(&self, jobs: impl IntoIterator<Item = NewJob>) -> Result<Vec<Pushed>> {
        let mut ids = Vec::new();
        // Per partition: chunks of arguments, and the position of each job.
        // (a queue of the library is never repartitioned: the newest layout is its one)
        let layout = self.newest();
        let mut calls: Vec<(usize, Vec<String>, Vec<usize>)> = Vec::new();
        let mut open_chunk: Vec<Option<usize>> = vec![None; layout.parts.len()];
        for job in jobs {
            let id = match job.id {
                Some(id) => {
                    validate_job_id(&id)?;
                    id
                }
                None => uuid::Uuid::new_v4().simple().to_string(),
            };
            let p = partition_of(&id, layout.partitions) as usize;
            let c = match open_chunk[p] {
                Some(c) if calls[c].2.len() < PUSH_CHUNK => c,
                _ => {
                    calls.push((p, vec!["4".to_string()], Vec::new()));
                    open_chunk[p] = Some(calls.len() - 1);
                    calls.len() - 1
                }
            };
            let (_, args, positions) = &mut calls[c];
            args.push(id.clone());
            args.push(job.payload);
            args.push(job.run_at_ms.to_string());
            args.push(job.max_attempts.unwrap_or(0).to_string());
            positions.push(ids.len());
            ids.push(id);
        }
        let replies = futures::future::try_join_all(calls.iter().map(|(p, args, _)| {
            let mut conn = self.redis.conn();
            let base = layout.parts[*p].base();
            async move { SCRIPTS.push.key(base).arg(args).invoke_async::<Vec<i64>>(&mut conn).await }
        }))
        .await?;
        let mut created = vec![false; ids.len()];
        for ((_, _, positions), reply) in calls.iter().zip(replies) {
            for (at, c) in positions.iter().zip(reply) {
                created[*at] = c == 1;
            }
        }
        Ok(ids.into_iter().zip(created).map(|(id, created)| Pushed { id, created }).collect())
    }

    /// Hands back every job still leased to `worker` (a worker that stopped
    /// for good): they go to the front of the line. Returns how many.
    pub async fn leave(&self, worker: &str) -> Result<u64> {
        let per = self
            .each(|keys| async move {
                let mut conn = self.redis.conn();
                Ok::<u64, Error>(SCRIPTS.leave.key(keys.base()).arg(worker).invoke_async(&mut conn).await?)
            })
            .await?;
        let mut conn = self.redis.conn();
        let _: i64 = conn.zrem(self.home.workers(), worker).await?;
        Ok(per.into_iter().sum())
    }

    /// Jobs in each state, over all partitions.
    pub async fn depth(&self) -> Result<Depth> {
        let per = self
            .each(|keys| async move {
                let mut conn = self.redis.conn();
                let (ready, scheduled, leased, dead): (u64, u64, u64, u64) = redis::pipe()
                    .llen(keys.ready())
                    .zcard(keys.scheduled())
                    .zcard(keys.leased())
                    .zcard(keys.dead())
                    .query_async(&mut conn)
                    .await?;
                Ok(Depth { ready, scheduled, leased, dead })
            })
            .await?;
        Ok(per.into_iter().fold(Depth::default(), |a, d| Depth {
            ready: a.ready + d.ready,
            scheduled: a.scheduled + d.scheduled,
            leased: a.leased + d.leased,
            dead: a.dead + d.dead,
        }))
    }

    /// Jobs that could run now, by Redis' clock: ready ones plus scheduled
    /// ones whose time has come. What an autoscaler follows.
    pub async fn due(&self) -> Result<u64> {
        let per = self
            .each(|keys| async move {
                let mut conn = self.redis.conn();
                Ok::<u64, Error>(SCRIPTS.due.key(keys.base()).invoke_async(&mut conn).await?)
            })
            .await?;
        Ok(per.into_iter().sum())
    }

    /// The queue's counters (pushed, completed, retried, dead, ...), summed
    /// over its partitions.
    pub async fn counters(&self) -> Result<HashMap<String, u64>> {
        let per = self
            .each(|keys| async move {
                let mut conn = self.redis.conn();
                let raw: HashMap<String, String> = conn.hgetall(keys.stats()).await?;
                Ok::<_, Error>(raw)
            })
            .await?;
        let mut sum = HashMap::new();
        for (k, v) in per.into_iter().flatten() {
            if let Ok(v) = v.parse::<u64>() {
                *sum.entry(k).or_insert(0) += v;
            }
        }
        Ok(sum)
    }

    /// How long the job that has waited longest in `ready` has waited, over
    /// all partitions.
    pub async fn oldest_ready_age(&self) -> Result<Option<Duration>> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let per = self
            .each(|keys| async move {
                let mut conn = self.redis.conn();
                let Some(id): Option<String> = conn.lindex(keys.ready(), -1).await? else { return Ok(None) };
                let enqueued: Option<u64> = conn.hget(keys.job(&id), "enqueued_at").await?;
                Ok::<_, Error>(enqueued.map(|e| Duration::from_millis(now.saturating_sub(e))))
            })
            .await?;
        Ok(per.into_iter().flatten().max())
    }

    /// Identities of the workers that renewed their registration within `window`.
    pub async fn workers_alive(&self, window: Duration) -> Result<Vec<String>> {
        let mut conn = self.redis.conn();
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().saturating_sub(window);
        Ok(conn.zrangebyscore(self.home.workers(), since.as_millis() as u64, "+inf").await?)
    }

    /// A job's record, for inspection.
    pub async fn job(&self, id: &str) -> Result<Option<JobView>> {
        let mut conn = self.redis.conn();
        let mut h: HashMap<String, String> = conn.hgetall(self.keys_of(id).job(id)).await?;
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

    /// The oldest `limit` dead letters over all partitions, oldest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        Ok(self.oldest_dead(limit).await?.into_iter().map(|(_, d)| d).collect())
    }

    /// The oldest `limit` dead letters, each with its partition.
    async fn oldest_dead(&self, limit: usize) -> Result<Vec<(QueueKeys, DeadLetter)>> {
        let per = self
            .each(|keys| async move {
                let dead = self.dead_letters_in(&keys, limit).await?;
                Ok::<_, Error>(dead.into_iter().map(|d| (keys.clone(), d)).collect::<Vec<_>>())
            })
            .await?;
        let mut all: Vec<(QueueKeys, DeadLetter)> = per.into_iter().flatten().collect();
        all.sort_by_key(|(_, d)| d.dead_at_ms);
        all.truncate(limit.max(1));
        Ok(all)
    }

    async fn dead_letters_in(&self, keys: &QueueKeys, limit: usize) -> Result<Vec<DeadLetter>> {
        let mut conn = self.redis.conn();
        // Ids as bytes: a dead letter may be a job whose id was not UTF-8
        // (fetch.lua buries those); it is shown lossily.
        let entries: Vec<(Vec<u8>, f64)> = conn.zrange_withscores(keys.dead(), 0, limit.max(1) as isize - 1).await?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, _) in &entries {
            let mut key = keys.job("").into_bytes();
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
    /// ids re-queued (an id that is not a dead letter is skipped).
    pub async fn requeue_dead(&self, ids: &[String]) -> Result<Vec<String>> {
        let groups = self.by_partition(ids);
        let per = futures::future::try_join_all(groups.iter().map(|(p, ids)| {
            let mut conn = self.redis.conn();
            async move {
                SCRIPTS.requeue_dead.key(p.base()).arg(ids.len()).arg(ids).invoke_async::<Vec<String>>(&mut conn).await
            }
        }))
        .await?;
        Ok(per.into_iter().flatten().collect())
    }

    /// Re-queues the oldest dead letters, at most `limit` in all.
    pub async fn requeue_all_dead(&self, limit: usize) -> Result<Vec<String>> {
        // How many of the oldest are in each partition; each partition's
        // script then takes its oldest (ids that are not UTF-8 included).
        let count = grouped(self.oldest_dead(limit).await?);
        let per =
            futures::future::try_join_all(count.iter().map(|(p, dead)| {
                let mut conn = self.redis.conn();
                async move {
                    SCRIPTS.requeue_dead.key(p.base()).arg(dead.len()).invoke_async::<Vec<String>>(&mut conn).await
                }
            }))
            .await?;
        Ok(per.into_iter().flatten().collect())
    }
}

/// Groups values by key, keys in the order first met, values in their order.
pub(crate) fn grouped<K: PartialEq, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Vec<(K, Vec<V>)> {
    let mut groups: Vec<(K, Vec<V>)> = Vec::new();
    for (k, v) in pairs {
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, vs)) => vs.push(v),
            None => groups.push((k, vec![v])),
        }
    }
    groups
}
