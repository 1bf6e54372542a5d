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
//!
//! One file per concern: [`fetch`] (the fetch loop and the wait for work),
//! [`heartbeat`] (renewing leases, and leaving on shutdown), [`settle`] (the
//! layer that settles every attempt). This file holds the types handlers
//! see, the state the three share, and the apalis `Backend` impl.

mod fetch;
mod heartbeat;
mod settle;

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    marker::PhantomData,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use apalis_core::{
    backend::{Backend, BackendConfig, finalize::Ephemeral},
    error::BoxDynError,
    task::Task,
    worker::context::WorkerContext,
};
use futures::{FutureExt, future::BoxFuture};
use serde::de::DeserializeOwned;

pub use self::settle::{SettleLayer, SettleService};
use crate::{
    error::{Error, Result, error_chain},
    identity::worker_identity,
    keys::QueueKeys,
    queue::Queue,
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
    /// Tells the worker this run is about to settle its job itself.
    pub(crate) settling: SettlingHook,
    /// A reconciliation's records, as its fetch read them.
    pub(crate) records: Option<Arc<FetchedRecords>>,
}

/// An access code's newest desired state and outcome record, raw, read by
/// the fetch that leased its job (`fetch.lua`, `read_records`), so the run
/// need not read them again (`Reconciliations::load_fetched`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct FetchedRecords {
    pub generation: u64,
    pub desired: String,
    pub outcome: String,
}

impl fmt::Debug for FetchedRecords {
    // (the desired state holds the guest's PIN)
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchedRecords").field("generation", &self.generation).finish_non_exhaustive()
    }
}

impl JobInfo {
    /// Says this run is about to settle its job itself (a write that also puts
    /// the job back, then [`Next::Settled`]): from now on the worker does not
    /// take the job leaving its lease for a lease lost in a stall.
    pub fn settling(&self) {
        if let Some(shared) = self.settling.0.upgrade() {
            shared.mark_settling(&self.id);
        }
    }
}

/// See [`JobInfo::settling`]: the worker that fetched the job. Equal to
/// every other (it is not data).
#[derive(Clone)]
pub(crate) struct SettlingHook(Weak<Shared>);

impl fmt::Debug for SettlingHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SettlingHook")
    }
}

impl PartialEq for SettlingHook {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SettlingHook {}

/// A run's hold on its job. The fence token is new at every fetch, so a run
/// that lost its lease, even to a later run of this same worker, can change
/// nothing: the scripts compare worker and fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The partition holding the job: every write on the job's behalf goes
    /// there (around a `repartition`, the id alone does not say which).
    pub partition: QueueKeys,
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
    /// The handler already put its job back, in the same script as its last
    /// write (`Reconciliations::record_then_continue`, after
    /// [`JobInfo::settling`]): nothing is left to settle.
    Settled,
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
    /// The partitions this worker fetches from: every partition of every
    /// layout the queue knows (more when it learns of a `repartition`).
    parts: Mutex<Vec<Part>>,
    /// The partition the next round of fetches starts looking at: when more
    /// partitions have work than a round fetches, they take turns.
    turn: AtomicUsize,
}

/// A partition a worker fetches from, and when to fetch it next.
#[derive(Debug)]
struct Part {
    keys: QueueKeys,
    /// When it may next have work (Redis clock, ms; 0: now), as its last
    /// fetch said, or when to try again after a failed one.
    due: u64,
    /// Its fetches that failed in a row (its Redis, or its master, away):
    /// each waits longer before the next.
    failures: u32,
}

impl Part {
    fn new(keys: QueueKeys) -> Self {
        Self { keys, due: 0, failures: 0 }
    }
}

/// A job this worker holds. A job that continues can be fetched again by this
/// worker before its previous run has finished settling, so runs are counted;
/// the newest run's fetch number and whether it is settling let a heartbeat
/// tell a lease really lost from one given up on purpose meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    runs: u32,
    newest: u64,
    settling: bool,
    /// The partition it was fetched from: its lease is there.
    partition: QueueKeys,
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
        let parts: Vec<Part> = queue.partitions().into_iter().map(Part::new).collect();
        let wake = Arc::new(Wake::default());
        wake.cover(parts.len());
        Self {
            shared: Arc::new(Shared {
                queue,
                wake,
                parts: Mutex::new(parts),
                turn: AtomicUsize::new(0),
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

impl Queue {
    /// An apalis backend that works this queue, for `WorkerBuilder::backend`.
    pub fn backend<Args>(&self, options: WorkerOptions) -> RedisBackend<Args> {
        RedisBackend::new(self.clone(), options)
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl Shared {
    /// Subscribes to the wake-ups of these partitions (by index), then has
    /// every partition looked at again: the fetch loop runs from the start,
    /// and a wake-up published before its subscription was in place (a
    /// continuation a run put back a moment after the worker started) was
    /// never delivered. Without the look it would wait for the idle poll.
    async fn subscribe(&self, parts: impl Iterator<Item = (usize, &QueueKeys)>) {
        for (partition, keys) in parts {
            if let Err(e) = self.queue.redis.subscribe(&keys.wake(), &self.wake, partition).await {
                tracing::warn!(queue = %self.queue.name(), partition = %keys.base(), error = %error_chain(&e), "could not subscribe to wake-ups; falling back to polling");
            }
        }
        // (announced as a wake-up of each, which a fetch in flight does not
        // overwrite)
        self.wake.all_due();
    }

    /// The queue is moving to a layout of `partitions`: fetch its partitions
    /// too, from now on.
    async fn learn(&self, partitions: u32) {
        match self.queue.learn(partitions) {
            Ok(false) => {}
            Ok(true) => {
                let added: Vec<(usize, QueueKeys)> = {
                    let mut parts = self.parts.lock().expect("parts lock");
                    let known: Vec<QueueKeys> = parts.iter().map(|p| p.keys.clone()).collect();
                    let new: Vec<QueueKeys> =
                        self.queue.partitions().into_iter().filter(|k| !known.contains(k)).collect();
                    let start = parts.len();
                    parts.extend(new.iter().cloned().map(Part::new));
                    self.wake.cover(parts.len());
                    new.into_iter().enumerate().map(|(i, k)| (start + i, k)).collect()
                };
                tracing::info!(queue = %self.queue.name(), partitions, "the queue is being repartitioned; fetching from the new partitions too");
                self.subscribe(added.iter().map(|(i, k)| (*i, k))).await;
            }
            Err(e) => {
                tracing::error!(queue = %self.queue.name(), partitions, error = %error_chain(&e), "cannot follow the repartition")
            }
        }
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// A run of job `id` settles it itself ([`JobInfo::settling`]).
    fn mark_settling(&self, id: &str) {
        if let Some(held) = self.inflight.lock().expect("inflight lock").get_mut(id) {
            held.settling = true;
        }
    }

    fn redis_now_estimate(&self) -> u64 {
        (now_ms() as i64 + self.clock_offset_ms.load(Ordering::Relaxed)) as u64
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
                let parts: Vec<QueueKeys> =
                    shared.parts.lock().expect("parts lock").iter().map(|p| p.keys.clone()).collect();
                shared.subscribe(parts.iter().enumerate()).await;
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
            self.shared.wake.all_due();
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
        SettleLayer::new(self.shared.clone())
    }
}
