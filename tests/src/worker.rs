//! Running real apalis workers on `latchkey-store` in tests: a probe job whose
//! payload says how to behave (sleep, fail, abort, panic...), and a record of
//! every run the tests can wait on and assert against.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use apalis::prelude::*;
use latchkey_store::{JobInfo, Next, Queue, RetryAt, WorkerOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

/// The test job: its fields script the handler's behaviour.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Any number, to tell jobs apart.
    pub n: u64,
    /// When the job was meant to start (Unix ms), for lateness; 0 = when pushed.
    #[serde(default)]
    pub due_ms: u64,
    /// Sleep this long while running.
    #[serde(default)]
    pub sleep_ms: u64,
    /// Fail every attempt up to and including this one.
    #[serde(default)]
    pub fail_until_attempt: u32,
    /// Fail with `AbortError`.
    #[serde(default)]
    pub abort: bool,
    /// On the first attempt, fail with `RetryAt` this time.
    #[serde(default)]
    pub retry_at_ms: u64,
    /// Panic on the first attempt.
    #[serde(default)]
    pub panic: bool,
    /// Ask to run again (`Next::RunAt`) this many times, `continue_ms` apart.
    #[serde(default)]
    pub continue_times: u32,
    /// See `continue_times`.
    #[serde(default)]
    pub continue_ms: u64,
}

/// One run of a probe job.
#[derive(Debug, Clone)]
pub struct Run {
    /// Job id.
    pub id: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// When the handler started, Unix ms.
    pub started_ms: u64,
    /// When the job was pushed, Unix ms (Redis clock).
    pub enqueued_ms: u64,
    /// The payload.
    pub probe: Probe,
    /// Whether the handler returned Ok.
    pub ok: bool,
}

/// Every run, in order of completion, shared with the handler.
#[derive(Debug, Clone, Default)]
pub struct Runs {
    runs: Arc<Mutex<Vec<Run>>>,
    started: Arc<Mutex<Vec<Run>>>,
    runs_per_job: Arc<Mutex<HashMap<String, u32>>>,
    changed: Arc<Notify>,
}

impl Runs {
    /// Runs that have ended.
    pub fn finished(&self) -> Vec<Run> {
        self.runs.lock().unwrap().clone()
    }
    /// Runs that have started.
    pub fn started(&self) -> Vec<Run> {
        self.started.lock().unwrap().clone()
    }
    /// Distinct job ids that ended with Ok.
    pub fn succeeded_ids(&self) -> HashSet<String> {
        self.runs.lock().unwrap().iter().filter(|r| r.ok).map(|r| r.id.clone()).collect()
    }
    /// Waits until `pred` holds over the finished runs, or panics after `timeout`.
    pub async fn wait_until(&self, timeout: Duration, what: &str, pred: impl Fn(&[Run]) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if pred(&self.runs.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let n = self.runs.lock().unwrap().len();
                panic!("timed out after {timeout:?} waiting for {what} ({n} runs finished)");
            }
        }
    }
    /// Waits until `n` distinct jobs succeeded.
    pub async fn wait_for_successes(&self, n: usize, timeout: Duration) {
        self.wait_until(timeout, &format!("{n} successful jobs"), |runs| {
            runs.iter().filter(|r| r.ok).map(|r| &r.id).collect::<HashSet<_>>().len() >= n
        })
        .await
    }
}

async fn probe_handler(probe: Probe, info: Data<JobInfo>, runs: Data<Runs>) -> Result<Next, BoxDynError> {
    let mut run = Run {
        id: info.id.clone(),
        attempt: info.attempt,
        started_ms: crate::now_ms(),
        enqueued_ms: info.enqueued_at_ms,
        probe: probe.clone(),
        ok: false,
    };
    let earlier_runs = {
        let mut per_job = runs.runs_per_job.lock().unwrap();
        let n = per_job.entry(info.id.clone()).or_default();
        *n += 1;
        *n - 1
    };
    runs.started.lock().unwrap().push(run.clone());
    let result = behave(&probe, &info).await.map(|()| {
        if earlier_runs < probe.continue_times {
            Next::after(Duration::from_millis(probe.continue_ms))
        } else {
            Next::Done
        }
    });
    run.ok = result.is_ok();
    runs.runs.lock().unwrap().push(run);
    runs.changed.notify_waiters();
    result
}

async fn behave(probe: &Probe, info: &JobInfo) -> Result<(), BoxDynError> {
    if probe.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(probe.sleep_ms)).await;
    }
    if probe.panic && info.attempt == 1 {
        panic!("probe panicked on purpose");
    }
    if probe.abort {
        return Err(AbortError::new("probe aborted on purpose").into());
    }
    if probe.retry_at_ms > 0 && info.attempt == 1 {
        return Err(Box::new(RetryAt { at_ms: probe.retry_at_ms, source: "come back later".into() }));
    }
    if info.attempt <= probe.fail_until_attempt {
        return Err(format!("probe failure on attempt {}", info.attempt).into());
    }
    Ok(())
}

/// A worker running in this process until stopped.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: Option<oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

/// The signal a worker's `run_until` waits for: [`WorkerHandle::stop`].
pub type StopSignal = futures::future::BoxFuture<'static, Result<(), WorkerError>>;

impl WorkerHandle {
    /// Runs a worker on a task until [`WorkerHandle::stop`]; `run` gets the
    /// stop signal: `WorkerHandle::spawn(|stopped| worker.run_until(stopped))`.
    pub fn spawn<Fut>(run: impl FnOnce(StopSignal) -> Fut) -> Self
    where
        Fut: std::future::Future<Output = Result<(), WorkerError>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let join = tokio::spawn(run(Box::pin(async move {
            let _ = rx.await;
            Ok(())
        })));
        WorkerHandle { stop: Some(tx), join }
    }

    /// Whether the worker is still running (it did not die on an error).
    pub fn is_running(&self) -> bool {
        !self.join.is_finished()
    }

    /// Stops the worker gracefully and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.join)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task did not panic")
            .expect("worker ended without error");
    }
}

/// Starts an apalis worker running probe jobs from `queue`.
pub fn spawn_probe_worker(queue: &Queue, opts: WorkerOptions, concurrency: usize, runs: &Runs) -> WorkerHandle {
    let backend = queue.backend::<Probe>(opts);
    let worker = WorkerBuilder::new(crate::unique("probe-worker"))
        .backend(backend)
        .data(runs.clone())
        .concurrency(concurrency)
        .build(probe_handler);
    WorkerHandle::spawn(|stopped| worker.run_until(stopped))
}

/// Worker options for tests: defaults, with a short idle poll only where a test asks.
pub fn test_options() -> WorkerOptions {
    WorkerOptions {
        retry_base: Duration::from_millis(100),
        retry_cap: Duration::from_millis(500),
        ..WorkerOptions::default()
    }
}
