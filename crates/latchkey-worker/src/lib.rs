//! `latchkey-worker`: the reconciler and the daemon around it.

mod daemon;
mod observe;
mod reconciler;

pub use daemon::{WorkerArgs, run_worker, shutdown_signal};
pub use observe::{Ops, prometheus};
pub use reconciler::{ReconcileJob, Reconciler, Settings};
