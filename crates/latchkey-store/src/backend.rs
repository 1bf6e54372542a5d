//! The apalis 1.0 backend over a [`Queue`]: reliable fetch with leases, wake-up
//! on push, and the layer that settles every job (ack, retry-at or dead letter).
//!
//! How a job moves, each arrow one atomic Lua script:
//!
//! ```text
//! push ──► ready ◄── scheduled (due, promoted in chunks)      fetch: ready ──► leased
//!            ▲  ▲                                           ack:   leased ──► (gone, or kept with a TTL)
//!            │  └─ leased (lease expired: worker died)       retry: leased ──► scheduled / ready
//!            └──── dead (operator re-queues)                 bury:  leased ──► dead
//! ```
//!
//! The fetch loop never returns an error to apalis (a poll error stops the
//! worker): Redis failures are logged and retried with backoff, so a Redis
//! restart or stall only pauses the worker.

use std::{
    any::type_name,
    collections::{HashMap, VecDeque},
    fmt,
    marker::PhantomData,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use apalis_core::{
    backend::{Backend, BackendConfig, finalize::Ephemeral},
    error::{AbortError, BoxDynError},
    task::{Task, builder::TaskBuilder, task_id::TaskId},
    worker::context::WorkerContext,
};
use backon::{ExponentialBuilder, Retryable};
use futures::{FutureExt, future::BoxFuture};
use rand::Rng;
use redis::Value;
use serde::de::DeserializeOwned;
use tower::{Layer, Service};

use crate::{
    error::{Error, Result, error_chain},
    identity::worker_identity,
    queue::Queue,
    scripts::SCRIPTS,
    wake::Wake,
};

/// How one worker process works a queue.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// This worker's identity, unique per process (see [`worker_identity`]).
    pub identity: String,
    /// How long a fetched job stays leased without a heartbeat. When a worker
    /// dies, its jobs return to `ready` at most this long (plus a moment)
    /// after its last heartbeat.
    pub lease: Duration,
    /// How often leases are renewed. Keep it well under `lease`.
    pub heartbeat: Duration,
    /// Jobs leased per fetch; jobs leased but not yet started are renewed like
    /// running ones and handed back on shutdown.
    pub fetch_batch: usize,
    /// Longest an idle worker waits before looking again without being woken:
    /// a safety net, since pushes wake it at once.
    pub idle_poll: Duration,
    /// Most expired leases reclaimed, and most due jobs promoted, per fetch.
    pub chunk: usize,
    /// Retry delay after a failed attempt: full jitter over
    /// `min(retry_cap, retry_base * 2^(attempt-1))`.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_cap: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            identity: worker_identity(),
            lease: Duration::from_secs(10),
            heartbeat: Duration::from_secs(2),
            fetch_batch: 32,
            idle_poll: Duration::from_secs(2),
            chunk: 1000,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
        }
    }
}

/// What a handler can see of the job it runs: extract it with
/// `Data<JobInfo>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// The job id.
    pub id: String,
    /// The queue's name.
    pub queue: Arc<str>,
    /// This attempt, from 1.
    pub attempt: u32,
    /// The job's attempt budget.
    pub max_attempts: u32,
    /// When the job was pushed, Unix ms (Redis clock).
    pub enqueued_at_ms: u64,
    /// This run's lease: every write on the job's behalf (settling it,
    /// recording its outcome) must present it.
    pub lease: Lease,
}

/// A run's hold on its job. The fence token is new at every fetch, so a run
/// that lost its lease, even to a later run of this same worker, can change
/// nothing: the scripts compare worker and fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The worker identity holding it.
    pub worker: Arc<str>,
    /// The token its fetch handed out.
    pub fence: u64,
    /// How long it lasts without renewal (the heartbeat renews it).
    pub duration: Duration,
}

/// Returned (boxed) by a handler to retry at a given time rather than after
/// the queue's backoff, for example when a server said when to come back. It
/// still counts as a failed attempt.
#[derive(Debug, thiserror::Error)]
#[error("retry at {at_ms}: {source}")]
pub struct RetryAt {
    /// When to run again, Unix ms.
    pub at_ms: u64,
    /// Why.
    #[source]
    pub source: BoxDynError,
}

/// What a handler returns to keep its job going rather than finish it. Any
/// other response, and `Next::Done`, acknowledges the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Next {
    /// Finished: acknowledge.
    Done,
    /// Progress was made; run this job again at this Unix time in
    /// milliseconds (a verification poll, a wait for `starts_at`). Not a
    /// failure: the job's attempt count starts over.
    RunAt(u64),
    /// No progress and no failure (a rate limit, a minimum gap between
    /// calls); run again at this Unix time in milliseconds. The attempt this
    /// run used is given back and the failures counted so far stand, so a
    /// job that keeps failing between waits still runs out of attempts.
    Wait(u64),
}

impl Next {
    /// Run again after `delay` (progress was made).
    pub fn after(delay: Duration) -> Self {
        Next::RunAt(now_ms() + delay.as_millis() as u64)
    }

    /// Wait `delay` and run again (no progress was made).
    pub fn wait(delay: Duration) -> Self {
        Next::Wait(now_ms() + delay.as_millis() as u64)
    }
}

/// State shared by the backend, its settle layer and its heartbeat task.
struct Shared {
    queue: Queue,
    opts: WorkerOptions,
    wake: Arc<Wake>,
    /// Job ids this worker holds a lease on (fetched, running or settling).
    inflight: Mutex<HashMap<String, Held>>,
    fetches: AtomicU64,
    closing: AtomicBool,
    /// Redis clock minus local clock, in ms, from the last fetch.
    clock_offset_ms: AtomicI64,
    /// `opts.identity`, shared by the leases handed to handlers.
    identity: Arc<str>,
}

/// A job this worker holds. A job that continues can be fetched again by this
/// worker before its previous run has finished settling, so runs are counted;
/// the newest run's fetch number and whether it is settling let a heartbeat
/// tell a lease really lost from one given up on purpose meanwhile.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Held {
    runs: u32,
    newest: u64,
    settling: bool,
}

/// The apalis backend. Build it with [`Queue::backend`].
pub struct RedisBackend<Args> {
    shared: Arc<Shared>,
    buffer: VecDeque<Task<Args>>,
    fetching: Option<BoxFuture<'static, Vec<Task<Args>>>>,
    closing: Option<BoxFuture<'static, ()>>,
    started: bool,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> fmt::Debug for RedisBackend<Args> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("queue", &self.shared.queue.name())
            .field("identity", &self.shared.opts.identity)
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

impl<Args> RedisBackend<Args> {
    pub(crate) fn new(queue: Queue, opts: WorkerOptions) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue,
                wake: Arc::default(),
                inflight: Mutex::default(),
                fetches: Default::default(),
                closing: AtomicBool::new(false),
                clock_offset_ms: AtomicI64::new(0),
                identity: opts.identity.as_str().into(),
                opts,
            }),
            buffer: VecDeque::new(),
            fetching: None,
            closing: None,
            started: false,
            _args: PhantomData,
        }
    }

    /// This worker's identity, as recorded in leases and the worker registry.
    pub fn identity(&self) -> &str {
        &self.shared.opts.identity
    }
}

impl<Args> Drop for RedisBackend<Args> {
    fn drop(&mut self) {
        // Stops the heartbeat: anything still leased comes back when the lease expires.
        self.shared.closing.store(true, Ordering::Release);
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// One job as the fetch script hands it out.
struct Fetched {
    id: String,
    payload: Vec<u8>,
    attempt: u32,
    max_attempts: u32,
    enqueued_at_ms: u64,
    fence: u64,
}

struct FetchReply {
    redis_now_ms: u64,
    next_wake_ms: Option<u64>,
    more: bool,
    recovered: u64,
    jobs: Vec<Fetched>,
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn parse_fetch(reply: Value) -> Result<FetchReply> {
    let bad = |detail: &str| Error::Protocol { script: "fetch.lua", detail: detail.to_string() };
    let Value::Array(items) = reply else {
        return Err(bad("not an array"));
    };
    const FIELDS: usize = 6;
    if items.len() < 4 || (items.len() - 4) % FIELDS != 0 {
        return Err(bad("wrong length"));
    }
    let head: Vec<i64> = items[..4].iter().map(int).collect::<Option<_>>().ok_or_else(|| bad("header"))?;
    let mut jobs = Vec::with_capacity((items.len() - 4) / FIELDS);
    let mut rest = items.into_iter().skip(4);
    while let (Some(id), Some(payload), Some(attempt), Some(max), Some(enq), Some(fence)) =
        (rest.next(), rest.next(), rest.next(), rest.next(), rest.next(), rest.next())
    {
        let (Value::BulkString(id), Value::BulkString(payload)) = (id, payload) else {
            return Err(bad("job id or payload not a string"));
        };
        jobs.push(Fetched {
            id: String::from_utf8(id).map_err(|_| bad("job id not UTF-8"))?,
            payload,
            attempt: int(&attempt).ok_or_else(|| bad("attempt"))? as u32,
            max_attempts: int(&max).ok_or_else(|| bad("max_attempts"))? as u32,
            enqueued_at_ms: int(&enq).ok_or_else(|| bad("enqueued_at"))? as u64,
            fence: int(&fence).ok_or_else(|| bad("fence"))? as u64,
        });
    }
    Ok(FetchReply {
        redis_now_ms: head[0] as u64,
        next_wake_ms: (head[1] >= 0).then_some(head[1] as u64),
        more: head[2] == 1,
        recovered: head[3] as u64,
        jobs,
    })
}

/// How a finished attempt is settled.
#[derive(Debug)]
enum Verdict {
    Ack,
    Continue { at_ms: u64 },
    Defer { at_ms: u64 },
    Retry { at_ms: u64, error: String },
    Bury { error: String },
}

impl Shared {
    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn redis_now_estimate(&self) -> u64 {
        (now_ms() as i64 + self.clock_offset_ms.load(Ordering::Relaxed)) as u64
    }

    async fn fetch_once(&self, max: usize) -> Result<FetchReply> {
        let q = &self.queue;
        let mut conn = q.redis.conn();
        let reply: Value = SCRIPTS
            .fetch
            .key(q.keys.base())
            .arg(&self.opts.identity)
            .arg(self.opts.lease.as_millis() as u64)
            .arg(max)
            .arg(self.opts.chunk)
            .arg(q.config.max_attempts)
            .arg(q.config.dead_letter_cap)
            .invoke_async(&mut conn)
            .await?;
        let reply = parse_fetch(reply)?;
        self.clock_offset_ms.store(reply.redis_now_ms as i64 - now_ms() as i64, Ordering::Relaxed);
        Ok(reply)
    }

    /// Fetches until there is at least one job to hand to apalis, waiting for
    /// wake-ups and due times in between. Returns empty only when closing.
    async fn fetch_until_work<Args: DeserializeOwned>(self: Arc<Self>) -> Vec<Task<Args>> {
        let mut failures = 0u32;
        loop {
            if self.is_closing() {
                return Vec::new();
            }
            self.wake.reset();
            let reply = match self.fetch_once(self.opts.fetch_batch).await {
                Ok(reply) => {
                    if failures > 0 {
                        tracing::info!(queue = %self.queue.name(), "redis is reachable again; fetching");
                    }
                    failures = 0;
                    reply
                }
                Err(e) => {
                    failures += 1;
                    let delay = Duration::from_millis((50u64 << failures.min(6)).min(2_000));
                    tracing::warn!(queue = %self.queue.name(), error = %error_chain(&e), retry_in_ms = delay.as_millis() as u64, "fetch failed");
                    self.sleep_unless_closing(delay).await;
                    continue;
                }
            };
            if reply.recovered > 0 {
                tracing::warn!(queue = %self.queue.name(), count = reply.recovered, "reclaimed jobs whose lease expired (a worker died or stalled)");
            }
            let tasks = self.decode(reply.jobs).await;
            if !tasks.is_empty() {
                return tasks;
            }
            if reply.more {
                continue;
            }
            self.wait_for_work(reply.next_wake_ms).await;
        }
    }

    /// Turns fetched jobs into apalis tasks; a payload that does not parse
    /// becomes a dead letter at once (it would fail the same way every time).
    async fn decode<Args: DeserializeOwned>(&self, jobs: Vec<Fetched>) -> Vec<Task<Args>> {
        let mut tasks = Vec::with_capacity(jobs.len());
        {
            let mut inflight = self.inflight.lock().expect("inflight lock");
            for job in &jobs {
                let run = self.fetches.fetch_add(1, Ordering::Relaxed);
                let held = inflight.entry(job.id.clone()).or_default();
                *held = Held { runs: held.runs + 1, newest: run, settling: false };
            }
        }
        for job in jobs {
            match serde_json::from_slice::<Args>(&job.payload) {
                Ok(args) => {
                    let info = JobInfo {
                        id: job.id.clone(),
                        queue: self.queue.name.clone(),
                        attempt: job.attempt,
                        max_attempts: job.max_attempts,
                        enqueued_at_ms: job.enqueued_at_ms,
                        lease: Lease { worker: self.identity.clone(), fence: job.fence, duration: self.opts.lease },
                    };
                    tasks.push(
                        TaskBuilder::new(args)
                            .task_id(TaskId::from_string(job.id))
                            // apalis counts the attempt up when the task starts.
                            .attempt(job.attempt.saturating_sub(1) as usize)
                            .max_attempts(job.max_attempts as usize)
                            .data(info)
                            .build(),
                    );
                }
                Err(e) => {
                    let error = format!("payload does not parse as {}: {e}", type_name::<Args>());
                    tracing::error!(queue = %self.queue.name(), job_id = %job.id, %error, "dead-lettering job");
                    self.settle(&job.id, job.fence, Verdict::Bury { error }).await;
                }
            }
        }
        tasks
    }

    async fn sleep_unless_closing(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.wake.notified() => {}
        }
    }

    /// Sleeps until something may be due: a push announced work (now, or at a
    /// time that moves the timer), the next scheduled job or lease expiry is
    /// reached, the idle poll interval passes, or the worker closes.
    async fn wait_for_work(&self, next_wake_ms: Option<u64>) {
        let start = tokio::time::Instant::now();
        let idle_deadline = start + self.opts.idle_poll;
        let mut due_ms = next_wake_ms.unwrap_or(u64::MAX);
        loop {
            due_ms = due_ms.min(self.wake.min_due());
            let now = self.redis_now_estimate();
            if due_ms <= now || self.is_closing() {
                return;
            }
            let until_due = tokio::time::Instant::now() + Duration::from_millis(due_ms - now);
            let deadline = until_due.min(idle_deadline);
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    if deadline == idle_deadline || until_due <= tokio::time::Instant::now() {
                        return;
                    }
                }
                _ = self.wake.notified() => {}
            }
        }
    }

    fn verdict(&self, info: &JobInfo, err: BoxDynError) -> Verdict {
        if let Some(abort) = err.downcast_ref::<AbortError>() {
            use std::error::Error as _;
            let why = abort.source().map_or_else(|| abort.to_string(), error_chain);
            return Verdict::Bury { error: format!("aborted on attempt {}: {why}", info.attempt) };
        }
        let error = error_chain(err.as_ref());
        if info.attempt >= info.max_attempts {
            return Verdict::Bury {
                error: format!("attempt {} of {} failed: {error}", info.attempt, info.max_attempts),
            };
        }
        let at_ms = match err.downcast_ref::<RetryAt>() {
            Some(r) => r.at_ms,
            None => now_ms() + self.backoff(info.attempt).as_millis() as u64,
        };
        Verdict::Retry { at_ms, error }
    }

    /// Full jitter: uniform in `[0, min(cap, base * 2^(attempt-1))]`.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.opts.retry_base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let ceiling = exp.min(self.opts.retry_cap).as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }

    /// Runs the verdict's script, retrying Redis failures with backoff for up
    /// to one lease (the lease is renewed meanwhile). If it still fails, the
    /// lease will expire and the job runs again: at-least-once.
    async fn settle(&self, id: &str, fence: u64, verdict: Verdict) {
        let q = &self.queue;
        if let Some(held) = self.inflight.lock().expect("inflight lock").get_mut(id) {
            held.settling = true;
        }
        let attempt = || async {
            let mut conn = q.redis.conn();
            let mut call = match &verdict {
                Verdict::Ack => {
                    let keep = q.config.keep_finished.map_or(0, |d| d.as_millis() as u64);
                    let mut call = SCRIPTS.ack.prepare_invoke();
                    call.arg(id).arg(&self.opts.identity).arg(fence).arg(keep);
                    call
                }
                Verdict::Retry { at_ms, error } => {
                    let mut call = SCRIPTS.retry.prepare_invoke();
                    call.arg(id).arg(&self.opts.identity).arg(fence).arg(*at_ms).arg(error);
                    call
                }
                Verdict::Continue { at_ms } => {
                    let mut call = SCRIPTS.retry.prepare_invoke();
                    call.arg(id).arg(&self.opts.identity).arg(fence).arg(*at_ms).arg("");
                    call
                }
                Verdict::Defer { at_ms } => {
                    let mut call = SCRIPTS.retry.prepare_invoke();
                    call.arg(id).arg(&self.opts.identity).arg(fence).arg(*at_ms).arg("").arg("1");
                    call
                }
                Verdict::Bury { error } => {
                    let mut call = SCRIPTS.bury.prepare_invoke();
                    call.arg(id).arg(&self.opts.identity).arg(fence).arg(error).arg(q.config.dead_letter_cap);
                    call
                }
            };
            call.key(q.keys.base()).invoke_async(&mut conn).await.map_err(Error::from)
        };
        let result: Result<i64> = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_secs(2))
                    .with_total_delay(Some(self.opts.lease))
                    .without_max_times()
                    .with_jitter(),
            )
            .when(Error::is_retryable)
            .notify(|e, d| tracing::warn!(queue = %q.name(), job_id = %id, error = %error_chain(e), retry_in_ms = d.as_millis() as u64, "settling job failed"))
            .await;
        match (result, &verdict) {
            (Ok(1), Verdict::Retry { error, at_ms }) => {
                tracing::warn!(queue = %q.name(), job_id = %id, %error, retry_at_ms = at_ms, "job failed; retry scheduled")
            }
            (Ok(1), Verdict::Bury { error }) => {
                tracing::error!(queue = %q.name(), job_id = %id, %error, "job dead-lettered")
            }
            (Ok(1), Verdict::Ack) => tracing::debug!(queue = %q.name(), job_id = %id, "job done"),
            (Ok(1), Verdict::Continue { at_ms }) => {
                tracing::debug!(queue = %q.name(), job_id = %id, run_at_ms = at_ms, "job continues later")
            }
            (Ok(1), Verdict::Defer { at_ms }) => {
                tracing::debug!(queue = %q.name(), job_id = %id, run_at_ms = at_ms, "job waits")
            }
            (Ok(_), _) => {
                tracing::warn!(queue = %q.name(), job_id = %id, "lease was lost before the job settled; another worker owns it now")
            }
            (Err(e), _) => {
                tracing::error!(queue = %q.name(), job_id = %id, error = %error_chain(&e), "could not settle job; it will run again when its lease expires")
            }
        }
        let mut inflight = self.inflight.lock().expect("inflight lock");
        if let Some(held) = inflight.get_mut(id) {
            held.runs -= 1;
            if held.runs == 0 {
                inflight.remove(id);
            }
        }
    }

    /// Renews this worker's leases and registry entry until the backend closes.
    async fn heartbeat_loop(shared: Weak<Shared>) {
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

    async fn heartbeat(&self) -> Result<()> {
        let runs: HashMap<String, Held> =
            self.inflight.lock().expect("inflight lock").iter().map(|(id, held)| (id.clone(), *held)).collect();
        let ids: Vec<&String> = runs.keys().collect();
        let q = &self.queue;
        let mut conn = q.redis.conn();
        let lost: Vec<String> = SCRIPTS
            .heartbeat
            .key(q.keys.base())
            .arg(&self.opts.identity)
            .arg(self.opts.lease.as_millis() as u64)
            .arg(&ids)
            .invoke_async(&mut conn)
            .await?;
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
    async fn close(&self, unstarted: Vec<String>) {
        let q = &self.queue;
        if !unstarted.is_empty() {
            let mut conn = q.redis.conn();
            let released: Result<i64> = SCRIPTS
                .release
                .key(q.keys.base())
                .arg(&self.opts.identity)
                .arg(&unstarted)
                .invoke_async(&mut conn)
                .await
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
            redis::cmd("ZREM").arg(q.keys.workers()).arg(&self.opts.identity).query_async(&mut conn).await;
        if let Err(e) = left {
            tracing::warn!(queue = %q.name(), error = %e, "could not deregister worker");
        }
    }
}

impl<Args> Backend for RedisBackend<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    type Task = Task<Args>;
    type Error = Error;

    fn poll_ready(&mut self, _cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<()>> {
        if !self.started {
            self.started = true;
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let channel = shared.queue.keys.wake();
                if let Err(e) = shared.queue.redis.subscribe(&channel, &shared.wake).await {
                    tracing::warn!(queue = %shared.queue.name(), error = %error_chain(&e), "could not subscribe to wake-ups; falling back to polling");
                }
                tracing::info!(queue = %shared.queue.name(), identity = %shared.opts.identity, "worker registered");
                let weak = Arc::downgrade(&shared);
                drop(shared);
                Shared::heartbeat_loop(weak).await;
            });
        }
        Poll::Ready(Ok(()))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Option<Result<Task<Args>>>> {
        loop {
            if let Some(task) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(task)));
            }
            let fetching = self.fetching.get_or_insert_with(|| self.shared.clone().fetch_until_work::<Args>().boxed());
            let tasks = futures::ready!(fetching.poll_unpin(cx));
            self.fetching = None;
            if tasks.is_empty() {
                // Only when closing; apalis stops asking once it closes.
                return Poll::Pending;
            }
            self.buffer.extend(tasks);
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<()>> {
        if self.closing.is_none() {
            tracing::debug!(queue = %self.shared.queue.name(), buffered = self.buffer.len(), "closing: handing back what was fetched but not started");
            self.shared.closing.store(true, Ordering::Release);
            self.shared.wake.due(0);
            let fetching = self.fetching.take();
            let mut unstarted: Vec<String> =
                self.buffer.drain(..).filter_map(|t| t.ctx().task_id().map(|id| id.to_string())).collect();
            let shared = self.shared.clone();
            self.closing = Some(
                async move {
                    if let Some(f) = fetching {
                        unstarted.extend(f.await.iter().filter_map(|t| t.ctx().task_id().map(|id| id.to_string())));
                    }
                    shared.close(unstarted).await;
                }
                .boxed(),
            );
        }
        self.closing.as_mut().expect("set above").poll_unpin(cx).map(Ok)
    }
}

impl<Args> BackendConfig for RedisBackend<Args> {
    type Args = Args;
    type Id = String;
    type Kind = Ephemeral;
    type Config = WorkerOptions;
    type Layer = SettleLayer;

    fn config(&self) -> &WorkerOptions {
        &self.shared.opts
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> SettleLayer {
        SettleLayer { shared: self.shared.clone() }
    }
}

/// Wraps the handler: when an attempt ends, settles the job in Redis (ack,
/// retry at a time, or dead letter) before the worker takes more work. A
/// panicking handler counts as a failed attempt.
#[derive(Clone)]
pub struct SettleLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for SettleLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettleLayer").field("queue", &self.shared.queue.name()).finish()
    }
}

impl<S> Layer<S> for SettleLayer {
    type Service = SettleService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SettleService { inner, shared: self.shared.clone() }
    }
}

/// The service [`SettleLayer`] makes.
#[derive(Clone)]
pub struct SettleService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for SettleService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettleService").field("queue", &self.shared.queue.name()).finish()
    }
}

impl<S, Args> Service<Task<Args>> for SettleService<S>
where
    S: Service<Task<Args>>,
    S::Future: Send + 'static,
    S::Response: 'static,
    S::Error: Into<BoxDynError>,
{
    type Response = ();
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<(), BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let info = task.ctx().data().get::<JobInfo>().cloned();
        let shared = self.shared.clone();
        let run = self.inner.call(task);
        async move {
            let outcome = AssertUnwindSafe(run).catch_unwind().await.map(|r| {
                r.map(|response| (&response as &dyn std::any::Any).downcast_ref::<Next>().copied()).map_err(Into::into)
            });
            let Some(info) = info else {
                return Err("task did not come from latchkey-store (no JobInfo)".into());
            };
            let verdict = match outcome {
                Ok(Ok(Some(Next::RunAt(at_ms)))) => Verdict::Continue { at_ms },
                Ok(Ok(Some(Next::Wait(at_ms)))) => Verdict::Defer { at_ms },
                Ok(Ok(_)) => Verdict::Ack,
                Ok(Err(e)) => shared.verdict(&info, e),
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic".to_string());
                    shared.verdict(&info, format!("handler panicked: {msg}").into())
                }
            };
            shared.settle(&info.id, info.lease.fence, verdict).await;
            Ok(())
        }
        .boxed()
    }
}
