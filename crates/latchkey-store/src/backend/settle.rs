//! Settling an attempt: the verdict (ack, continue, wait, retry at a time,
//! or dead letter) and the script that records it, run by the tower layer
//! around every handler before the worker takes more work.

use std::{
    fmt,
    panic::AssertUnwindSafe,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::{
    error::{AbortError, BoxDynError},
    task::Task,
};
use backon::{ExponentialBuilder, Retryable};
use futures::{FutureExt, future::BoxFuture};
use rand::Rng;
use tower::{Layer, Service};

use super::{JobInfo, Next, RetryAt, Shared, now_ms};
use crate::{
    error::{Error, Result, error_chain},
    keys::QueueKeys,
    scripts::SCRIPTS,
};

/// How a finished attempt is settled.
#[derive(Debug)]
pub(super) enum Verdict {
    Ack,
    Continue { at_ms: u64 },
    Defer { at_ms: u64 },
    Retry { at_ms: u64, error: String },
    Bury { error: String },
}

impl Shared {
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
    pub(super) async fn settle(&self, partition: &QueueKeys, id: &str, fence: u64, verdict: Verdict) {
        let q = &self.queue;
        self.mark_settling(id);
        // retry.lua's three uses: a failed attempt, a continuation, a wait.
        let retry = |at_ms: u64, error: &str, defer: bool| {
            let mut call = SCRIPTS.retry.prepare_invoke();
            call.arg(id).arg(&self.opts.identity).arg(fence).arg(at_ms).arg(error);
            if defer {
                call.arg("1");
            }
            call
        };
        let attempt = || async {
            let mut conn = q.redis.conn();
            let mut call = match &verdict {
                Verdict::Ack => {
                    let keep = q.config.keep_finished.map_or(0, |d| d.as_millis() as u64);
                    let mut call = SCRIPTS.ack.prepare_invoke();
                    call.arg(id).arg(&self.opts.identity).arg(fence).arg(keep);
                    call
                }
                Verdict::Retry { at_ms, error } => retry(*at_ms, error, false),
                Verdict::Continue { at_ms } => retry(*at_ms, "", false),
                Verdict::Defer { at_ms } => retry(*at_ms, "", true),
                Verdict::Bury { error } => {
                    let mut call = SCRIPTS.bury.prepare_invoke();
                    call.arg(id).arg(&self.opts.identity).arg(fence).arg(error).arg(q.config.dead_letter_cap);
                    call
                }
            };
            call.key(partition.base()).invoke_async(&mut conn).await.map_err(Error::from)
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
        self.forget_run(id);
    }

    /// A run of job `id` is over (settled): it no longer holds the job.
    fn forget_run(&self, id: &str) {
        let mut inflight = self.inflight.lock().expect("inflight lock");
        if let Some(held) = inflight.get_mut(id) {
            held.runs -= 1;
            if held.runs == 0 {
                inflight.remove(id);
            }
        }
    }
}

/// Wraps the handler: when an attempt ends, settles the job in Redis (ack,
/// retry at a time, or dead letter) before the worker takes more work. A
/// panicking handler counts as a failed attempt.
#[derive(Clone)]
pub struct SettleLayer {
    shared: Arc<Shared>,
}

impl SettleLayer {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
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
                Ok(Ok(Some(Next::Settled))) => {
                    tracing::debug!(queue = %info.queue, job_id = %info.id, "job put back by its handler");
                    shared.forget_run(&info.id);
                    return Ok(());
                }
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
            shared.settle(&info.lease.partition, &info.id, info.lease.fence, verdict).await;
            Ok(())
        }
        .boxed()
    }
}
