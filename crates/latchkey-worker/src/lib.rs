//! `latchkey-worker`: the reconciler and the daemon around it, with its ops
//! listener (probes and Prometheus metrics).

mod daemon;
pub mod listener;
mod observe;
mod reconciler;

pub use daemon::{WorkerArgs, run_worker, shutdown_signal};
pub use reconciler::{ReconcileJob, Reconciler, Settings};
