//! `spawn_app()`: a whole latchkey for one test. Its own redis-server, the
//! Seam simulator on a free port, and reconciliation workers running in this
//! process against both, stopped when the test ends.

use std::time::Duration;

use latchkey_fake_seam::{FakeSeam, SimConfig, WebhookTarget};
use latchkey_store::{QueueConfig, Reconciliations, Redis, RedisConfig};
use latchkey_worker::{RedisArgs, ServeArgs, WorkerArgs, run_serve, run_worker};
use tokio::sync::oneshot;

use crate::RedisServer;

/// The Seam API key the simulator accepts in tests.
pub const TEST_SEAM_KEY: &str = "seam_test_key_for_latchkey";

/// A `write` token of the API in tests.
pub const TEST_WRITE_TOKEN: &str = "tok_write_test_0123456789";
/// A `read` token of the API in tests.
pub const TEST_READ_TOKEN: &str = "tok_read_test_0123456789";

/// The webhook signing secret the simulator signs with and `serve` checks.
pub const TEST_WEBHOOK_SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNlY3JldC1vZi1sYXRjaGtleQ==";

/// Settings a test may change before the app starts.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Worker processes (in-process workers, each with its own identity).
    pub workers: usize,
    /// Verification deadline.
    pub verify_timeout: Duration,
    /// How long the simulated devices take to apply an update.
    pub device_delay: Duration,
    /// Transient-failure attempts per step.
    pub max_attempts: u32,
    /// latchkey's per-device update limit and its window.
    pub device_limit: u32,
    /// See `device_limit`.
    pub device_window_secs: u64,
    /// The simulator's own per-device limit per minute (0: off).
    pub sim_rate_limit: u32,
    /// Start Redis with this password (`requirepass`).
    pub redis_password: Option<String>,
    /// Extra redis-server settings, e.g. `["--appendonly", "yes"]`.
    pub redis_args: Vec<&'static str>,
    /// Workers reach Redis through a TCP proxy the test can cut or black-hole.
    pub through_proxy: bool,
    /// Window over which time-bound verifications are spread after starts_at.
    pub verify_spread: Duration,
    /// How long a job stays leased without a heartbeat (whole seconds, at
    /// least 3): shorter than production's 30 s, so the tests that kill
    /// workers see their jobs taken over quickly.
    pub lease: Duration,
    /// How often a code that succeeded is read again for drift (0: never).
    pub resync: Duration,
    /// Drift repairs allowed per code per day.
    pub max_drift_repairs: u32,
    /// How long Seam may take to remove a code after its ends_at.
    pub removal_grace: Duration,
    /// How long the records of a finished code (deleted, expired) are kept.
    pub retention: Duration,
    /// latchkey's per-device delete limit (Seam: 20 per minute).
    pub device_delete_limit: u32,
    /// Run `latchkey serve` too, and have the simulator deliver its events
    /// to it as Svix-signed webhooks.
    pub webhooks: bool,
    /// Run `latchkey serve` with the producers' API (`/v1`), with the tokens
    /// [`TEST_WRITE_TOKEN`] and [`TEST_READ_TOKEN`].
    pub api: bool,
    /// Longest verification poll interval of the workers.
    pub poll_cap: Duration,
    /// First verification poll interval of the workers.
    pub poll_base: Duration,
    /// How often a worker catches up from Seam's `/events/list` (zero: never).
    pub events_catch_up: Duration,
    /// Run on a three-master Redis Cluster instead of one node (the
    /// default when `LATCHKEY_TEST_CLUSTER=1`, so the pipeline tests run
    /// on both; `just test-cluster`). A test that reaches behind the store
    /// to one node's keys, or puts a proxy, a password or TLS in front of
    /// Redis, says `cluster: false`.
    pub cluster: bool,
    /// Partitions of the reconcile queue (the deployment's default unless a
    /// test asks for another).
    pub partitions: u32,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            verify_timeout: Duration::from_secs(10),
            device_delay: Duration::from_millis(50),
            max_attempts: 5,
            device_limit: 10,
            device_window_secs: 60,
            sim_rate_limit: 10,
            redis_password: None,
            redis_args: Vec::new(),
            through_proxy: false,
            verify_spread: Duration::ZERO,
            lease: Duration::from_secs(10),
            resync: Duration::from_secs(6 * 3600),
            max_drift_repairs: 3,
            removal_grace: Duration::from_secs(15 * 60),
            retention: Duration::from_secs(7 * 24 * 3600),
            device_delete_limit: 20,
            webhooks: false,
            api: false,
            poll_cap: Duration::from_millis(400),
            poll_base: Duration::from_millis(50),
            events_catch_up: Duration::ZERO,
            partitions: latchkey_store::DEFAULT_PARTITIONS,
            cluster: std::env::var("LATCHKEY_TEST_CLUSTER").is_ok_and(|v| v == "1"),
        }
    }
}

/// A running latchkey.
pub struct TestApp {
    /// The Redis it uses (on a cluster, its first master).
    pub redis: RedisServer,
    /// On a cluster, the other masters.
    pub other_masters: Vec<RedisServer>,
    /// The Seam simulator.
    pub seam: FakeSeam,
    /// The Redis URL, with the password when there is one.
    pub redis_url: String,
    /// The proxy the workers go through, when asked for.
    pub proxy: Option<crate::proxy::Proxy>,
    /// Producer/caller view of the records.
    pub store: Reconciliations,
    /// The key prefix of this app's Redis keys.
    pub prefix: String,
    /// What it was started with.
    pub options: AppOptions,
    workers: Vec<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    /// The ops listener (`/livez`, `/readyz`, `/metrics`) of each started
    /// worker, as `http://127.0.0.1:port`.
    pub ops_urls: Vec<String>,
    /// `latchkey serve`'s public URL, when `webhooks` is on.
    pub serve_url: Option<String>,
    serve: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    _tokens_file: Option<tempfile::NamedTempFile>,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp").field("redis", &self.redis.url()).field("seam", &self.seam.url()).finish()
    }
}

/// Starts Redis, the simulator and `options.workers` workers.
pub async fn spawn_app(options: AppOptions) -> TestApp {
    crate::init_logs();
    let mut redis_args: Vec<&str> = options.redis_args.clone();
    if let Some(pw) = &options.redis_password {
        redis_args.extend(["--requirepass", pw.as_str()]);
    }
    let (redis, other_masters, url) = if options.cluster {
        let cluster = crate::RedisCluster::start_with(&redis_args);
        let url = cluster.url();
        let mut nodes = cluster.into_nodes();
        (nodes.remove(0), nodes, url)
    } else {
        let redis = RedisServer::start_with(&redis_args);
        let url = redis.url();
        (redis, Vec::new(), url)
    };
    let redis_url = match &options.redis_password {
        Some(pw) => url.replace("redis://", &format!("redis://:{pw}@")),
        None => url,
    };
    let serve_addr = (options.webhooks || options.api).then(|| format!("127.0.0.1:{}", crate::free_tcp_port()));
    let tokens_file = options.api.then(|| {
        let mut f = tempfile::NamedTempFile::new().expect("tokens file");
        std::io::Write::write_all(
            &mut f,
            format!("# test tokens\nproducer write {TEST_WRITE_TOKEN}\nconsole read {TEST_READ_TOKEN}\n").as_bytes(),
        )
        .expect("write tokens");
        f
    });
    let seam = FakeSeam::spawn(SimConfig {
        api_key: TEST_SEAM_KEY.into(),
        device_delay: options.device_delay,
        rate_limit_per_device_per_minute: options.sim_rate_limit,
        webhook: serve_addr.as_ref().filter(|_| options.webhooks).map(|addr| WebhookTarget {
            url: format!("http://{addr}/webhooks/seam"),
            secret: TEST_WEBHOOK_SECRET.into(),
        }),
        ..SimConfig::default()
    })
    .await
    .expect("start the Seam simulator");
    let prefix = crate::unique("lk");
    let conn = Redis::connect(&RedisConfig::new(&redis_url)).await.expect("connect");
    let store = Reconciliations::open(
        conn,
        QueueConfig { prefix: prefix.clone(), partitions: options.partitions, ..QueueConfig::default() },
    )
    .await
    .unwrap();
    let proxy = if options.through_proxy {
        Some(crate::proxy::Proxy::start(format!("127.0.0.1:{}", redis.port()).parse().unwrap()).await)
    } else {
        None
    };
    let serve = serve_addr.as_ref().map(|addr| {
        let args = ServeArgs {
            listen: addr.clone(),
            http_addr: "off".into(),
            redis: RedisArgs::url(redis_url.clone()),
            prefix: prefix.clone(),
            partitions: options.partitions,
            webhook_secret: options.webhooks.then(|| TEST_WEBHOOK_SECRET.into()),
            webhook_secret_file: None,
            api_tokens_file: tokens_file.as_ref().map(|f| f.path().to_path_buf()),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let join = tokio::spawn(async move {
            run_serve(args, async move {
                let _ = rx.await;
            })
            .await
            .expect("serve runs and stops cleanly");
        });
        (tx, join)
    });
    if let Some(addr) = &serve_addr {
        crate::wait_for_port(addr).await;
    }
    let mut app = TestApp {
        redis,
        other_masters,
        seam,
        redis_url,
        proxy,
        store,
        prefix,
        options: options.clone(),
        workers: Vec::new(),
        ops_urls: Vec::new(),
        serve_url: serve_addr.map(|a| format!("http://{a}")),
        serve,
        _tokens_file: tokens_file,
    };
    for _ in 0..options.workers {
        app.start_worker();
    }
    app
}

impl TestApp {
    /// The worker configuration tests run with: short polls, the simulator's URL.
    pub fn worker_args(&self) -> WorkerArgs {
        WorkerArgs {
            redis: RedisArgs::url(self.proxy.as_ref().map_or_else(|| self.redis_url.clone(), |p| p.url())),
            http_addr: format!("127.0.0.1:{}", crate::free_tcp_port()),
            seam_endpoint: self.seam.url(),
            seam_api_key: Some(TEST_SEAM_KEY.into()),
            seam_api_key_file: None,
            concurrency: 32,
            prefix: self.prefix.clone(),
            partitions: self.options.partitions,
            verify_timeout_secs: self.options.verify_timeout.as_secs().max(1),
            poll_base_ms: self.options.poll_base.as_millis() as u64,
            poll_cap_ms: self.options.poll_cap.as_millis() as u64,
            max_attempts: self.options.max_attempts,
            max_reapplies: 2,
            min_update_interval_ms: 1000,
            attempt_patience_ms: 300,
            device_limit: self.options.device_limit,
            device_window_secs: self.options.device_window_secs,
            key_rate: 0,
            key_burst: 20,
            verify_spread_ms: self.options.verify_spread.as_millis() as u64,
            lease_secs: self.options.lease.as_secs(),
            removal_grace_secs: self.options.removal_grace.as_secs(),
            resync_secs: self.options.resync.as_secs(),
            max_drift_repairs: self.options.max_drift_repairs,
            retention_secs: self.options.retention.as_secs().max(1),
            device_delete_limit: self.options.device_delete_limit,
            drain_secs: 5,
            events_catch_up_secs: self.options.events_catch_up.as_secs(),
        }
    }

    /// The environment a worker process needs to join this app (the variables
    /// `latchkey worker` reads).
    pub fn worker_env(&self) -> Vec<(&'static str, String)> {
        let a = self.worker_args();
        vec![
            ("REDIS_URL", a.redis.redis_url),
            ("SEAM_ENDPOINT", a.seam_endpoint),
            ("SEAM_API_KEY", TEST_SEAM_KEY.to_string()),
            ("LATCHKEY_PREFIX", a.prefix),
            ("LATCHKEY_PARTITIONS", a.partitions.to_string()),
            ("LATCHKEY_CONCURRENCY", a.concurrency.to_string()),
            ("LATCHKEY_VERIFY_TIMEOUT_SECS", a.verify_timeout_secs.to_string()),
            ("LATCHKEY_POLL_BASE_MS", a.poll_base_ms.to_string()),
            ("LATCHKEY_POLL_CAP_MS", a.poll_cap_ms.to_string()),
            ("LATCHKEY_MAX_ATTEMPTS", a.max_attempts.to_string()),
            ("LATCHKEY_ATTEMPT_PATIENCE_MS", a.attempt_patience_ms.to_string()),
            ("LATCHKEY_VERIFY_SPREAD_MS", a.verify_spread_ms.to_string()),
            ("LATCHKEY_DEVICE_LIMIT", a.device_limit.to_string()),
            ("LATCHKEY_DEVICE_WINDOW_SECS", a.device_window_secs.to_string()),
            ("LATCHKEY_DRAIN_SECS", a.drain_secs.to_string()),
            ("LATCHKEY_LEASE_SECS", a.lease_secs.to_string()),
            ("LATCHKEY_REMOVAL_GRACE_SECS", a.removal_grace_secs.to_string()),
            ("LATCHKEY_RESYNC_SECS", a.resync_secs.to_string()),
            ("LATCHKEY_MAX_DRIFT_REPAIRS", a.max_drift_repairs.to_string()),
            ("LATCHKEY_RETENTION_SECS", a.retention_secs.to_string()),
            ("LATCHKEY_DEVICE_DELETE_LIMIT", a.device_delete_limit.to_string()),
            ("LATCHKEY_HTTP_ADDR", a.http_addr),
        ]
    }

    /// Starts one more worker.
    pub fn start_worker(&mut self) {
        self.start_worker_with(self.worker_args());
    }

    /// Starts one more worker with these settings (from [`TestApp::worker_args`], changed).
    pub fn start_worker_with(&mut self, args: WorkerArgs) {
        let (tx, rx) = oneshot::channel::<()>();
        self.ops_urls.push(format!("http://{}", args.http_addr));
        let join = tokio::spawn(async move {
            run_worker(args, async move {
                let _ = rx.await;
            })
            .await
            .expect("worker runs and drains cleanly");
        });
        self.workers.push((tx, join));
    }

    /// Stops `latchkey serve` (webhook deliveries then fail, as when it is down).
    pub async fn stop_serve(&mut self) {
        if let Some((tx, join)) = self.serve.take() {
            let _ = tx.send(());
            tokio::time::timeout(Duration::from_secs(20), join)
                .await
                .expect("serve stops in time")
                .expect("serve did not panic");
        }
    }

    /// Stops every worker gracefully.
    pub async fn stop(mut self) {
        for (tx, join) in self.workers.drain(..) {
            let _ = tx.send(());
            tokio::time::timeout(Duration::from_secs(20), join)
                .await
                .expect("worker drains in time")
                .expect("worker did not panic");
        }
        self.stop_serve().await;
    }
}
