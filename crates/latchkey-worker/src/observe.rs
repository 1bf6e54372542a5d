//! What the people running latchkey see: Prometheus metrics and the ops HTTP
//! listener (`/livez`, `/readyz`, `/metrics`).
//!
//! Metrics go through the `metrics` facade, so the Seam client and the
//! reconciler record without knowing about Prometheus; the daemon installs the
//! recorder once per process. No label ever carries an access code id: every
//! label has a small fixed set of values.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `latchkey_build_info` | gauge (1) | `version` |
//! | `latchkey_jobs_started_total` | counter | `queue` |
//! | `latchkey_jobs_finished_total` | counter | `queue`, `result` (`done`, `continued`, `waiting`, `failed`) |
//! | `latchkey_job_duration_seconds` | histogram | `queue`, `result` |
//! | `latchkey_queue_jobs` | gauge | `queue`, `state` (`ready`, `scheduled`, `leased`, `dead`) |
//! | `latchkey_queue_due_jobs` | gauge | `queue`: ready plus scheduled whose time has come |
//! | `latchkey_queue_oldest_ready_age_seconds` | gauge | `queue` |
//! | `latchkey_seam_requests_total` | counter | `endpoint`, `status_class` (`2xx`, `4xx`, `5xx`, `transport`) |
//! | `latchkey_seam_request_duration_seconds` | histogram | `endpoint` |
//! | `latchkey_rate_limit_waits_total` | counter | `limit` (`device`, `api_key`, `seam`) |
//! | `latchkey_outcomes_total` | counter | `state` (terminal states written by this worker) |
//! | `latchkey_codes_not_removed_total` | counter | `after` (`cancellation`, `end_of_stay`): codes still on the lock that must be gone |
//! | `latchkey_enqueue_to_outcome_seconds` | histogram | `state` |
//! | `latchkey_worker_draining` | gauge | |
//! | `latchkey_redis_up` | gauge | whether the last scrape could read the queue |
//! | `latchkey_seam_key_refused` | gauge | 1 while Seam refuses the API key (401/403): nothing can progress |
//! | `latchkey_webhook_deliveries_total` | counter | `result` (`accepted`, `duplicate`, `refused`, `unreadable`): `latchkey serve` |
//! | `latchkey_webhook_events_total` | counter | `event_type` (Seam's names, else `other`), `result` (`pulled_forward`, `dropped` (not managed, or not waiting), `ignored` (not an event latchkey acts on)) |
//!
//! The queue gauges are read from Redis when `/metrics` is scraped, so every
//! replica reports the same queue; aggregate them with `max`, not `sum`.

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use latchkey_seam::SeamClient;
use latchkey_store::{Queue, error_chain};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::listener::{self, Limits};

/// Histogram buckets, seconds: from a fast job to a code that starts a day later.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21_600.0, 86_400.0,
];

/// How long a Redis read for a probe or a scrape may take.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Installs the process's Prometheus recorder (once).
pub(crate) fn install() {
    prometheus();
}

/// The metrics in Prometheus' text format.
pub(crate) fn render() -> impl IntoResponse {
    let handle = prometheus();
    counter!("latchkey_redis_round_trips_total").absolute(latchkey_store::round_trips());
    handle.run_upkeep();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
}

/// The process's Prometheus recorder, installed on first use.
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = || {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("buckets are not empty")
        };
        let handle = builder().install_recorder().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics shows nothing");
            builder().build_recorder().handle()
        });
        describe();
        gauge!("latchkey_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        gauge!("latchkey_seam_key_refused").set(0.0);
        // Series that alerts divide or rate over exist from the start, at 0.
        for limit in ["device", "api_key", "seam"] {
            counter!("latchkey_rate_limit_waits_total", "limit" => limit).increment(0);
        }
        for state in ["succeeded", "failed", "rejected", "timed_out", "expired"] {
            counter!("latchkey_outcomes_total", "state" => state).increment(0);
        }
        for after in ["cancellation", "end_of_stay"] {
            counter!("latchkey_codes_not_removed_total", "after" => after).increment(0);
        }
        handle
    })
}

fn describe() {
    describe_gauge!("latchkey_build_info", "Always 1; the version is a label.");
    describe_counter!(
        "latchkey_redis_round_trips_total",
        "Requests this process sent to Redis, each a round trip (a command, a script call or a pipeline)."
    );
    describe_counter!("latchkey_jobs_started_total", "Job runs started.");
    describe_counter!(
        "latchkey_jobs_finished_total",
        "Job runs finished: done (reconciliation over), continued (scheduled its next step), waiting (a rate limit or the gap between updates; no attempt used), failed (the queue retries or dead-letters it)."
    );
    describe_histogram!("latchkey_job_duration_seconds", metrics::Unit::Seconds, "How long one job run took.");
    describe_gauge!("latchkey_queue_jobs", "Jobs in the queue by state (read from Redis at scrape time).");
    describe_gauge!(
        "latchkey_queue_due_jobs",
        "Jobs that could run now: ready, plus scheduled ones whose time has come (the autoscaling signal)."
    );
    describe_gauge!(
        "latchkey_queue_oldest_ready_age_seconds",
        metrics::Unit::Seconds,
        "How long the oldest ready job has waited."
    );
    describe_counter!("latchkey_seam_requests_total", "Seam API requests by endpoint and status class.");
    describe_histogram!(
        "latchkey_seam_request_duration_seconds",
        metrics::Unit::Seconds,
        "Seam API request latency by endpoint."
    );
    describe_counter!(
        "latchkey_rate_limit_waits_total",
        "Steps put off by a rate limit: latchkey's per-device or per-key limit, or a 429 from Seam."
    );
    describe_counter!("latchkey_outcomes_total", "Terminal outcomes written by this worker, by state.");
    describe_counter!(
        "latchkey_codes_not_removed_total",
        "Codes still on the lock past their removal deadline, after a cancellation or their end of stay: a guest who should not get in still may."
    );
    describe_histogram!(
        "latchkey_enqueue_to_outcome_seconds",
        metrics::Unit::Seconds,
        "From the desired state's enqueue to its terminal outcome (includes waiting for starts_at)."
    );
    describe_gauge!("latchkey_worker_draining", "1 while this worker drains for shutdown.");
    describe_counter!(
        "latchkey_webhook_deliveries_total",
        "Webhook deliveries received by latchkey serve: accepted, duplicate (seen within 24 h), refused (signature), unreadable."
    );
    describe_counter!(
        "latchkey_webhook_events_total",
        "Events of accepted deliveries: pulled_forward (waiting jobs run now), dropped (a code latchkey does not reconcile, or nothing waiting), ignored (not an event latchkey acts on)."
    );
    describe_gauge!("latchkey_redis_up", "1 when the last scrape could read the queue from Redis.");
    describe_gauge!(
        "latchkey_seam_key_refused",
        "1 while Seam refuses the API key (HTTP 401/403): reconciliations wait until the key works again."
    );
}

/// How a job run ended, for `latchkey_jobs_finished_total`.
pub(crate) fn job_finished(queue: &'static str, result: &'static str, took: Duration) {
    counter!("latchkey_jobs_finished_total", "queue" => queue, "result" => result).increment(1);
    histogram!("latchkey_job_duration_seconds", "queue" => queue, "result" => result).record(took.as_secs_f64());
}

/// A job run started.
pub(crate) fn job_started(queue: &'static str) {
    counter!("latchkey_jobs_started_total", "queue" => queue).increment(1);
}

/// A step put off by a rate limit (`device`, `api_key` or `seam`).
pub(crate) fn rate_limit_wait(limit: &'static str) {
    counter!("latchkey_rate_limit_waits_total", "limit" => limit).increment(1);
}

/// A terminal outcome written.
pub(crate) fn outcome(state: &'static str, since_enqueue: Option<Duration>) {
    counter!("latchkey_outcomes_total", "state" => state).increment(1);
    if let Some(d) = since_enqueue {
        histogram!("latchkey_enqueue_to_outcome_seconds", "state" => state).record(d.as_secs_f64());
    }
}

/// A code that had to go (cancelled, or past its stay) is still on the lock.
pub(crate) fn not_removed(after: &'static str) {
    counter!("latchkey_codes_not_removed_total", "after" => after).increment(1);
}

/// What the ops listener answers from.
#[derive(Clone)]
pub(crate) struct Ops {
    inner: Arc<OpsInner>,
}

struct OpsInner {
    queue: Queue,
    /// Whether Seam accepts the API key decides readiness too.
    seam: SeamClient,
    identity: String,
    draining: AtomicBool,
    /// How recent a heartbeat must be for the worker to count as registered.
    registered_within: Duration,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops").field("identity", &self.inner.identity).finish()
    }
}

impl Ops {
    /// For the worker `identity` working `queue`.
    pub(crate) fn new(queue: Queue, seam: SeamClient, identity: String, registered_within: Duration) -> Self {
        prometheus();
        gauge!("latchkey_worker_draining").set(0.0);
        let draining = AtomicBool::new(false);
        Self { inner: Arc::new(OpsInner { queue, seam, identity, draining, registered_within }) }
    }

    /// From now on `/readyz` says no: the worker drains for shutdown.
    pub(crate) fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
        gauge!("latchkey_worker_draining").set(1.0);
    }

    /// Binds `addr` (failing now if it cannot) and serves until `shutdown`,
    /// within the listener's default [`Limits`]: at most 256 connections,
    /// headers within 5 s, an answer within 10 s, a connection dropped after
    /// 30 s without a byte moving. A client cannot starve the probes or take
    /// the file descriptors the Seam and Redis clients need.
    pub(crate) async fn serve(
        self,
        addr: SocketAddr,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "ops listener: /livez /readyz /metrics");
        let app = Router::new()
            .route("/livez", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(self);
        Ok(tokio::spawn(listener::serve(listener, app, Limits::default(), shutdown)))
    }
}

async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    let ops = &ops.inner;
    if ops.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: draining for shutdown\n".to_string());
    }
    if ops.seam.key_refused() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: Seam authentication fails: Seam refuses the API key (HTTP 401/403); check SEAM_API_KEY or SEAM_API_KEY_FILE\n"
                .to_string(),
        );
    }
    match tokio::time::timeout(PROBE_TIMEOUT, ops.queue.workers_alive(ops.registered_within)).await {
        Ok(Ok(alive)) if alive.contains(&ops.identity) => (StatusCode::OK, "ready\n".to_string()),
        Ok(Ok(_)) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: worker not registered in Redis yet\n".to_string()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: redis: {}\n", error_chain(&e))),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: redis did not answer within 2 s\n".to_string()),
    }
}

async fn metrics_text(State(ops): State<Ops>) -> impl IntoResponse {
    let queue = &ops.inner.queue;
    let read = async {
        let depth = queue.depth().await?;
        let due = queue.due().await?;
        let oldest = queue.oldest_ready_age().await?;
        Ok::<_, latchkey_store::Error>((depth, due, oldest))
    };
    let name = queue.name().to_string();
    match tokio::time::timeout(PROBE_TIMEOUT, read).await {
        Ok(Ok((depth, due, oldest))) => {
            for (state, n) in
                [("ready", depth.ready), ("scheduled", depth.scheduled), ("leased", depth.leased), ("dead", depth.dead)]
            {
                gauge!("latchkey_queue_jobs", "queue" => name.clone(), "state" => state).set(n as f64);
            }
            gauge!("latchkey_queue_due_jobs", "queue" => name.clone()).set(due as f64);
            gauge!("latchkey_queue_oldest_ready_age_seconds", "queue" => name)
                .set(oldest.map_or(0.0, |d| d.as_secs_f64()));
            gauge!("latchkey_redis_up").set(1.0);
        }
        _ => gauge!("latchkey_redis_up").set(0.0),
    }
    render()
}
