//! `latchkey-store`: latchkey's durable Redis queue, as an apalis 1.0 backend.
//!
//! - [`Queue`]: push jobs (now, at a time, many at once, idempotent by id),
//!   read depth and counters, list and re-queue dead letters.
//! - [`RedisBackend`]: the apalis backend a worker runs on. Jobs are leased to
//!   a per-process identity and renewed by a heartbeat; a dead worker's jobs
//!   come back when the lease expires. Every state change is one Lua script.
//! - [`Redis`]: one connection per process (single node or cluster) that
//!   reconnects on its own and carries wake-ups, so idle workers start new work
//!   within milliseconds.
//!
//! The key layout and payload format are documented in the README ("Wire
//! format"); [`keys`] is the only module that knows key names.

mod backend;
mod conn;
mod error;
mod identity;
pub mod keys;
mod queue;
mod reconcile;
mod repartition;
mod scripts;
mod throttle;
mod wake;

pub use backend::{JobInfo, Lease, Next, RedisBackend, RetryAt, SettleLayer, SettleService, WorkerOptions};
pub use conn::{Redis, RedisConfig, RedisConn, redact_url, round_trips};
pub use error::{Error, Result, error_chain};
pub use identity::worker_identity;
pub use queue::{DeadLetter, Depth, JobView, NewJob, Pushed, Queue, QueueConfig};
pub use reconcile::{
    CodeEvent, DEFAULT_PARTITIONS, DEFAULT_RETENTION, DELIVERY_DEDUP, EVENTS_CAP, EnqueueError, EntryId, HISTORY_CAP,
    IDEMPOTENCY_WINDOW, Loaded, MAX_RECORD_BYTES, Nudged, OutcomeChange, RECONCILE_QUEUE, Reconciliations, Recorded,
    Waited,
};
pub use repartition::Moved;
pub use scripts::PUSH_LUA;
pub use throttle::{Change, GUARD_BAND, Limits, MAX_DEVICE_HOLD};
