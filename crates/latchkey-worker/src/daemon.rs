//! The worker daemon: configuration (flags and environment), the apalis
//! monitor running the reconciler on the `reconcile` queue, and a graceful
//! drain when the shutdown signal comes.

use std::{fmt, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use apalis::prelude::*;
use latchkey_seam::{ApiKey, SeamClient, SeamConfig, api_key_from_env};
use latchkey_store::{
    JobInfo, QueueConfig, Reconciliations, Redis, RedisConfig, WorkerOptions, redact_url, worker_identity,
};

use crate::{
    observe::Ops,
    reconciler::{ReconcileJob, Reconciler, Settings},
};

/// Where Redis is: the settings every latchkey process shares.
#[derive(Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL; several comma-separated URLs mean a cluster. `rediss://` for TLS,
    /// `redis://user:password@host` for an ACL user.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    pub redis_url: String,
    /// A file holding the Redis URL (a mounted secret); wins over REDIS_URL.
    #[arg(long, env = "REDIS_URL_FILE")]
    pub redis_url_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for `rediss://` instead of the system's.
    #[arg(long, env = "LATCHKEY_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
}

impl RedisArgs {
    /// For this URL, with no files.
    pub fn url(url: impl Into<String>) -> Self {
        Self { redis_url: url.into(), redis_url_file: None, redis_ca_file: None }
    }

    /// Redis settings, reading REDIS_URL_FILE and LATCHKEY_REDIS_CA_FILE when
    /// set; a command that does not answer within `response_timeout` fails.
    pub fn config(&self, response_timeout: Duration) -> Result<RedisConfig, Error> {
        let read = |var: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| Error::Config(format!("{var} {}: cannot be read: {e}", path.display())))
        };
        let url = match &self.redis_url_file {
            Some(path) => {
                let text = String::from_utf8(read("REDIS_URL_FILE", path)?)
                    .map_err(|_| Error::Config(format!("REDIS_URL_FILE {}: not UTF-8 text", path.display())))?;
                let url = text.trim().to_string();
                if url.is_empty() {
                    return Err(Error::Config(format!("REDIS_URL_FILE {}: is empty", path.display())));
                }
                url
            }
            None => self.redis_url.clone(),
        };
        let mut config = RedisConfig::new(url);
        config.response_timeout = response_timeout;
        if let Some(path) = &self.redis_ca_file {
            config.tls_ca_pem = Some(read("LATCHKEY_REDIS_CA_FILE", path)?);
        }
        Ok(config)
    }
}

impl fmt::Debug for RedisArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisArgs")
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_url_file", &self.redis_url_file)
            .field("redis_ca_file", &self.redis_ca_file)
            .finish()
    }
}

/// `latchkey worker` configuration. Every flag has an environment variable.
#[derive(Clone, clap::Args)]
pub struct WorkerArgs {
    /// Where Redis is.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Where the ops listener (/livez, /readyz, /metrics) binds, or `off`.
    #[arg(long, env = "LATCHKEY_HTTP_ADDR", default_value = "0.0.0.0:9090")]
    pub http_addr: String,
    /// Seam API base URL.
    #[arg(long, env = "SEAM_ENDPOINT", default_value = latchkey_seam::DEFAULT_ENDPOINT)]
    pub seam_endpoint: String,
    /// Seam API key (prefer SEAM_API_KEY or SEAM_API_KEY_FILE over the flag).
    #[arg(long, hide = true)]
    pub seam_api_key: Option<String>,
    /// A file holding the Seam API key (a mounted secret). Re-read when it
    /// changes, so a rotated key is used without a restart. Wins over SEAM_API_KEY.
    #[arg(long, env = "SEAM_API_KEY_FILE")]
    pub seam_api_key_file: Option<PathBuf>,
    /// Reconciliations run at once by this process.
    #[arg(long, env = "LATCHKEY_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
    /// Key prefix in Redis.
    #[arg(long, env = "LATCHKEY_PREFIX", default_value = "latchkey")]
    pub prefix: String,
    /// Partitions of the reconcile queue: every worker, serve and producer
    /// of one deployment must agree (each refuses to start against another
    /// number than Redis records). 16 spreads over up to 16 cluster masters.
    #[arg(long, env = "LATCHKEY_PARTITIONS", default_value_t = latchkey_store::DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// Verification deadline, seconds (after the update, or after starts_at).
    #[arg(long, env = "LATCHKEY_VERIFY_TIMEOUT_SECS", default_value_t = 900)]
    pub verify_timeout_secs: u64,
    /// First verification poll interval, milliseconds (doubles up to the cap).
    #[arg(long, env = "LATCHKEY_POLL_BASE_MS", default_value_t = 1000)]
    pub poll_base_ms: u64,
    /// Longest verification poll interval, milliseconds.
    #[arg(long, env = "LATCHKEY_POLL_CAP_MS", default_value_t = 60_000)]
    pub poll_cap_ms: u64,
    /// Attempts per step when Seam fails transiently, before the outcome is `failed`.
    #[arg(long, env = "LATCHKEY_MAX_ATTEMPTS", default_value_t = 8)]
    pub max_attempts: u32,
    /// Re-applies when the code is found changed outside latchkey.
    #[arg(long, env = "LATCHKEY_MAX_REAPPLIES", default_value_t = 2)]
    pub max_reapplies: u32,
    /// Least time between two update calls for one access code, milliseconds;
    /// desired states arriving meanwhile are coalesced into the next call.
    #[arg(long, env = "LATCHKEY_MIN_UPDATE_INTERVAL_MS", default_value_t = 1000)]
    pub min_update_interval_ms: u64,
    /// How long to follow a pending action attempt before judging the access
    /// code itself, milliseconds.
    #[arg(long, env = "LATCHKEY_ATTEMPT_PATIENCE_MS", default_value_t = 10_000)]
    pub attempt_patience_ms: u64,
    /// How long after a time-bound code's ends_at Seam may take to remove it
    /// before the outcome says it was not removed, seconds.
    #[arg(long, env = "LATCHKEY_REMOVAL_GRACE_SECS", default_value_t = 900)]
    pub removal_grace_secs: u64,
    /// How long the records of a code whose life is over (deleted, or
    /// expired) are kept before Redis forgets them, seconds.
    #[arg(long, env = "LATCHKEY_RETENTION_SECS", default_value_t = 7 * 24 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_secs: u64,
    /// How often a code that succeeded is read again to catch drift, seconds
    /// (each code at its own moment of the interval); 0 turns resync off.
    #[arg(long, env = "LATCHKEY_RESYNC_SECS", default_value_t = 6 * 3600)]
    pub resync_secs: u64,
    /// Drift repairs allowed per code per day before it ends `failed` (`drifted`).
    #[arg(long, env = "LATCHKEY_MAX_DRIFT_REPAIRS", default_value_t = 3)]
    pub max_drift_repairs: u32,
    /// Access-code deletes allowed per device in any window (Seam: 20 per minute).
    #[arg(long, env = "LATCHKEY_DEVICE_DELETE_LIMIT", default_value_t = 20)]
    pub device_delete_limit: u32,
    /// Access-code updates allowed per device in any window (Seam: 10 per minute).
    #[arg(long, env = "LATCHKEY_DEVICE_LIMIT", default_value_t = 10)]
    pub device_limit: u32,
    /// The window of the device limit, seconds.
    #[arg(long, env = "LATCHKEY_DEVICE_WINDOW_SECS", default_value_t = 60)]
    pub device_window_secs: u64,
    /// Requests per second for the whole API key, shared by all workers (0: no budget).
    #[arg(long, env = "LATCHKEY_KEY_RATE", default_value_t = 0)]
    pub key_rate: u32,
    /// Requests the key budget allows at once.
    #[arg(long, env = "LATCHKEY_KEY_BURST", default_value_t = 20)]
    pub key_burst: u32,
    /// Spread verifications of time-bound codes over this window after starts_at, milliseconds.
    #[arg(long, env = "LATCHKEY_VERIFY_SPREAD_MS", default_value_t = 5000)]
    pub verify_spread_ms: u64,
    /// How long a job stays leased to this worker without a heartbeat,
    /// seconds: a killed worker's jobs are taken over this long after its last
    /// heartbeat. Redis commands time out at a third of it and leases are
    /// renewed every tenth, so a run that still holds its lease after a
    /// command holds it for a while longer (see "fencing" in ARCHITECTURE.md).
    #[arg(long, env = "LATCHKEY_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub lease_secs: u64,
    /// How long in-flight jobs may take to finish on shutdown, seconds.
    #[arg(long, env = "LATCHKEY_DRAIN_SECS", default_value_t = 30)]
    pub drain_secs: u64,
    /// With webhooks: every this many seconds one worker lists Seam's
    /// access-code events since the last time and pulls their codes' jobs
    /// forward, catching up on deliveries missed while `latchkey serve` was
    /// down. 0 turns it off.
    #[arg(long, env = "LATCHKEY_EVENTS_CATCH_UP_SECS", default_value_t = 0)]
    pub events_catch_up_secs: u64,
}

impl fmt::Debug for WorkerArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerArgs")
            .field("redis", &self.redis)
            .field("http_addr", &self.http_addr)
            .field("seam_endpoint", &self.seam_endpoint)
            .field("seam_api_key", &self.seam_api_key.as_ref().map(|_| "[redacted]"))
            .field("seam_api_key_file", &self.seam_api_key_file)
            .field("concurrency", &self.concurrency)
            .field("prefix", &self.prefix)
            .field("partitions", &self.partitions)
            .field("verify_timeout_secs", &self.verify_timeout_secs)
            .field("poll_base_ms", &self.poll_base_ms)
            .field("poll_cap_ms", &self.poll_cap_ms)
            .field("max_attempts", &self.max_attempts)
            .field("max_reapplies", &self.max_reapplies)
            .field("min_update_interval_ms", &self.min_update_interval_ms)
            .field("attempt_patience_ms", &self.attempt_patience_ms)
            .field("device_limit", &self.device_limit)
            .field("device_delete_limit", &self.device_delete_limit)
            .field("removal_grace_secs", &self.removal_grace_secs)
            .field("resync_secs", &self.resync_secs)
            .field("max_drift_repairs", &self.max_drift_repairs)
            .field("retention_secs", &self.retention_secs)
            .field("device_window_secs", &self.device_window_secs)
            .field("key_rate", &self.key_rate)
            .field("key_burst", &self.key_burst)
            .field("verify_spread_ms", &self.verify_spread_ms)
            .field("lease_secs", &self.lease_secs)
            .field("drain_secs", &self.drain_secs)
            .field("events_catch_up_secs", &self.events_catch_up_secs)
            .finish()
    }
}

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis.
    #[error("redis")]
    Store(#[from] latchkey_store::Error),
    /// The Seam client.
    #[error("seam client")]
    Seam(#[from] latchkey_seam::Error),
    /// The apalis monitor.
    #[error("worker monitor: {0}")]
    Monitor(String),
    /// A setting or a file it names cannot be used.
    #[error("configuration: {0}")]
    Config(String),
    /// The ops listener could not bind its address.
    #[error("ops listener cannot bind {addr}")]
    Listen {
        /// LATCHKEY_HTTP_ADDR.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl WorkerArgs {
    fn settings(&self) -> Settings {
        Settings {
            verify_timeout: Duration::from_secs(self.verify_timeout_secs),
            poll_base: Duration::from_millis(self.poll_base_ms),
            poll_cap: Duration::from_millis(self.poll_cap_ms),
            max_reapplies: self.max_reapplies,
            min_update_interval: Duration::from_millis(self.min_update_interval_ms),
            attempt_patience: Duration::from_millis(self.attempt_patience_ms),
            removal_grace: Duration::from_secs(self.removal_grace_secs),
            resync: (self.resync_secs > 0).then(|| Duration::from_secs(self.resync_secs)),
            max_drift_repairs: self.max_drift_repairs,
            limits: latchkey_store::Limits {
                device_limit: self.device_limit,
                delete_limit: self.device_delete_limit,
                device_window: Duration::from_secs(self.device_window_secs),
                key_rate: self.key_rate,
                key_burst: self.key_burst,
            },
            verify_spread: Duration::from_millis(self.verify_spread_ms),
            ..Settings::default()
        }
    }

    /// Redis settings: a command that answers at all answers well within the lease.
    pub fn redis_config(&self) -> Result<RedisConfig, Error> {
        self.redis.config(self.lease() / 3)
    }

    /// The ops listener's address; `None` when it is `off`.
    fn ops_addr(&self) -> Result<Option<SocketAddr>, Error> {
        ops_addr(&self.http_addr)
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    fn worker_options(&self, identity: String) -> WorkerOptions {
        WorkerOptions { identity, lease: self.lease(), heartbeat: self.lease() / 10, ..WorkerOptions::default() }
    }

    fn queue_config(&self) -> QueueConfig {
        QueueConfig {
            prefix: self.prefix.clone(),
            max_attempts: self.max_attempts,
            partitions: self.partitions,
            ..QueueConfig::default()
        }
    }
}

async fn handle(
    job: ReconcileJob,
    info: Data<JobInfo>,
    reconciler: Data<Arc<Reconciler>>,
) -> Result<latchkey_store::Next, BoxDynError> {
    reconciler.run(&job, &info).await
}

/// Runs the worker until `shutdown` completes, then drains: in-flight
/// reconciliations finish (or go back to the queue) within `drain_secs`.
pub async fn run_worker(args: WorkerArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let api_key = match (&args.seam_api_key_file, &args.seam_api_key) {
        (Some(path), _) => read_key_file(path)?,
        (None, Some(k)) => ApiKey::new(k),
        (None, None) => api_key_from_env()?,
    };
    let seam = SeamClient::new(&SeamConfig::new(&args.seam_endpoint, api_key))?;
    let key_watch = args.seam_api_key_file.clone().map(|path| tokio::spawn(watch_key_file(path, seam.clone())));
    let ops_addr = args.ops_addr()?;
    let redis_config = args.redis_config()?;
    let redis = Redis::connect(&redis_config).await?;
    let store = Reconciliations::open(redis, args.queue_config())
        .await?
        .with_retention(Duration::from_secs(args.retention_secs));
    let identity = worker_identity();
    tracing::info!(%identity, redis = %redact_url(&redis_config.url), seam = %args.seam_endpoint, concurrency = args.concurrency, "worker starting");
    let options = args.worker_options(identity.clone());
    // The ops listener answers until the very end, so liveness holds while draining.
    let ops = Ops::new(store.queue().clone(), seam.clone(), identity.clone(), options.lease);
    let (ops_stop, ops_stopped) = tokio::sync::oneshot::channel::<()>();
    let ops_task = match ops_addr {
        Some(addr) => Some(
            ops.clone()
                .serve(addr, async move {
                    let _ = ops_stopped.await;
                })
                .await
                .map_err(|source| Error::Listen { addr: addr.to_string(), source })?,
        ),
        None => None,
    };
    let catch_up = (args.events_catch_up_secs > 0).then(|| {
        let every = Duration::from_secs(args.events_catch_up_secs);
        tokio::spawn(crate::events::catch_up_loop(
            store.clone(),
            seam.clone(),
            args.settings().limits,
            every,
            identity.clone(),
        ))
    });
    let reconciler = Arc::new(Reconciler { store: store.clone(), seam, settings: args.settings() });
    let concurrency = args.concurrency;
    let queue = store.queue().clone();
    let monitor = Monitor::new()
        .register(move |_restarts| {
            WorkerBuilder::new("latchkey-reconcile")
                .backend(store.queue().backend::<ReconcileJob>(options.clone()))
                .data(reconciler.clone())
                .concurrency(concurrency)
                .build(handle)
        })
        .shutdown_timeout(Duration::from_secs(args.drain_secs));
    // (spawned: on a runtime thread, its wake-ups need not unpark the main
    // thread that `#[tokio::main]` blocks on)
    tokio::spawn(monitor.run_with_signal(async move {
        shutdown.await;
        ops.set_draining();
        tracing::info!("shutdown requested; draining");
        Ok(())
    }))
    .await
    .map_err(|e| Error::Monitor(e.to_string()))?
    .map_err(|e| Error::Monitor(e.to_string()))?;
    // Nothing in this process works on a job any more: whatever is still
    // leased to it (prefetched, or cut off by the drain timeout) goes back now
    // rather than when its lease expires.
    match queue.leave(&identity).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "handed back jobs still leased to this worker"),
        Err(e) => {
            tracing::warn!(error = %latchkey_store::error_chain(&e), "could not hand back leased jobs; they return when their lease expires")
        }
    }
    for task in [key_watch, catch_up].into_iter().flatten() {
        task.abort();
    }
    let _ = ops_stop.send(());
    if let Some(task) = ops_task {
        let _ = task.await;
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// LATCHKEY_HTTP_ADDR, the ops listener's address (the worker's and
/// serve's); `None` when it is `off`.
pub(crate) fn ops_addr(value: &str) -> Result<Option<SocketAddr>, Error> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| {
        Error::Config(format!(
            "LATCHKEY_HTTP_ADDR {value:?}: must be host:port with an IP address (e.g. 0.0.0.0:9090) or `off`"
        ))
    })
}

/// How often SEAM_API_KEY_FILE (and serve's LATCHKEY_API_TOKENS_FILE) is read
/// for a change. Kubernetes updates a
/// mounted secret in place (within a minute or so); reading a small file this
/// often costs nothing.
pub(crate) const KEY_FILE_POLL: Duration = Duration::from_secs(2);

fn read_key_file(path: &std::path::Path) -> Result<ApiKey, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("SEAM_API_KEY_FILE {}: cannot be read: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Err(Error::Config(format!("SEAM_API_KEY_FILE {}: is empty", path.display())));
    }
    Ok(ApiKey::new(text))
}

/// Re-reads the key file and hands a changed key to the client. A file that
/// cannot be read or is empty (mid-rotation) keeps the key in use.
async fn watch_key_file(path: PathBuf, seam: SeamClient) {
    let mut current = read_key_file(&path).ok();
    let mut tick = tokio::time::interval(KEY_FILE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match read_key_file(&path) {
            Ok(key) if Some(&key) != current.as_ref() => match seam.set_api_key(&key) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "Seam API key changed in SEAM_API_KEY_FILE; using the new key");
                    current = Some(key);
                }
                Err(e) => tracing::error!(file = %path.display(), error = %e, "the new Seam API key cannot be used"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "keeping the Seam API key in use"),
        }
    }
}

/// Resolves on SIGTERM or SIGINT; a second signal exits at once.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("second signal: exiting without draining");
        std::process::exit(130);
    });
}
