//! `latchkey-worker`: the reconciler and the daemon around it, with its ops
//! listener (probes and Prometheus metrics); and `serve`, the public process
//! that receives Seam's webhooks.

pub mod api;
mod console;
mod daemon;
mod events;
pub mod listener;
mod observe;
mod reconciler;
mod serve;
pub mod webhook;

pub use daemon::{RedisArgs, WorkerArgs, run_worker, shutdown_signal};
pub use reconciler::{ReconcileJob, Reconciler, Settings};
pub use serve::{ServeArgs, run_serve};
