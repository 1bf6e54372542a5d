//! `latchkey bench`: throughput, latency, precision and memory figures,
//! printed as a table and as JSON lines, with BullMQ side by side when its peer
//! scripts are available.
//!
//! 1. queue only: enqueue and process N no-op jobs with one worker (in this process);
//! 2. full reconciliations of ongoing codes against the simulator (zero device delay);
//! 3. latency from enqueue to `succeeded` at fixed offered rates;
//! 4. lateness of verifications scheduled at `starts_at`, and the Redis memory
//!    each waiting time-bound code takes (job, desired state and outcome);
//! 5. a million scheduled verifications waiting: Redis memory per waiting job,
//!    and scenario 3's latency with them present;
//! 6. the worker's peak resident memory during scenarios 2 and 5;
//! 7. Redis memory after N codes have lived (created, verified, expired) and
//!    their retention passed, against the memory before: what a code leaves
//!    behind for good;
//! 8. devices that take 2 s: Seam reads per reconciliation and enqueue ->
//!    `succeeded`, polling only and with webhooks (`latchkey serve`), side by
//!    side;
//! 9. the HTTP door: `PUT`s per second through `latchkey serve`, and what
//!    HTTP adds to send -> `succeeded` against Redis at scenario 3's rates,
//!    the two routes taking turns of 200 ms, beside the Redis route against
//!    itself (the measure's resolution) and what HTTP adds until the desired
//!    state is taken in.
//!
//! Scenarios 2 to 5 run the worker as its own process (`latchkey worker`, as
//! in production), so its memory is its own; the simulator and the load
//! generator run in this process.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use apalis::prelude::*;
use chrono::Utc;
use latchkey_core::DesiredStateInput;
use latchkey_fake_seam::{DeviceBehaviour, FakeSeam, SeedCode, SimConfig, WebhookTarget};
use latchkey_store::{
    DEFAULT_PARTITIONS, NewJob, Queue, QueueConfig, Reconciliations, Redis, RedisConfig, WorkerOptions,
};
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use this Redis instead of starting one (the benchmark's keys, all
    /// starting with `bench-`, are deleted at the end).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Jobs for scenario 1.
    #[arg(long, default_value_t = 50_000)]
    jobs: u64,
    /// Reconciliations for scenario 2.
    #[arg(long, default_value_t = 20_000)]
    reconciliations: usize,
    /// Offered rates for scenario 3, per second, each for `--rate-secs`; each
    /// runs again in scenario 5.
    #[arg(long, value_delimiter = ',', default_values_t = [200u32, 2000])]
    rates: Vec<u32>,
    /// How long each offered rate runs, seconds.
    #[arg(long, default_value_t = 5)]
    rate_secs: u64,
    /// Time-bound codes for scenario 4.
    #[arg(long, default_value_t = 10_000)]
    scheduled: usize,
    /// Waiting verifications for scenario 5.
    #[arg(long, default_value_t = 1_000_000)]
    waiting: usize,
    /// Codes that live a whole life (created, verified, expired, forgotten) in scenario 7.
    #[arg(long, default_value_t = 100_000)]
    lived: usize,
    /// Codes enqueued (at 50/s) with webhooks and again without, in scenario 8.
    #[arg(long, default_value_t = 500)]
    webhook_codes: usize,
    /// PUTs through the HTTP API in scenario 9 (then scenario 3's rates again,
    /// through HTTP and through Redis).
    #[arg(long, default_value_t = 20_000)]
    http_puts: usize,
    /// A folder holding `shared/peers` with `npm install bullmq@5` done; BullMQ
    /// runs side by side when given.
    #[arg(long, env = "LATCHKEY_BENCH_PEERS")]
    peers: Option<PathBuf>,
    /// Tiny counts: every figure, in seconds (CI runs this).
    #[arg(long)]
    smoke: bool,
    /// Run only these scenarios (e.g. `--only 8`, `--only 2,3`); all by default.
    /// Scenario 5 needs 3, and 6 needs 2 and 5.
    #[arg(long, value_delimiter = ',')]
    only: Vec<u32>,
}

struct Row {
    scenario: String,
    figure: String,
    json: Value,
}

impl Row {
    fn new(scenario: impl Into<String>, figure: impl Into<String>, json: Value) -> Self {
        Self { scenario: scenario.into(), figure: figure.into(), json }
    }
}

/// A field of `/proc/<pid>/status` in MB (`VmHWM` is the peak resident set).
fn proc_status_mb(pid: &str, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: state is the first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Seconds (of CPU, from two readings) per 1,000 of `n` things done between them.
fn per_thousand(after: f64, before: f64, n: usize) -> f64 {
    (after - before) * 1000.0 / n as f64
}

/// CPU seconds Redis has used (`INFO cpu`).
async fn redis_cpu_secs(redis: &Redis) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut redis.conn()).await?;
    Ok(info
        .lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split_once(':')?.1.trim().parse::<f64>().ok())
        .sum())
}

/// Where Redis spends its time, from `INFO commandstats` (microseconds, since
/// it started): the scripts (`EVALSHA`, `EVAL`, `FCALL`, their own time and
/// that of the commands they run), and the commands run by anything else or
/// inside a script, which Redis counts under their own names as well. The
/// benchmark's own requests (`INFO`, `CONFIG`, connection setup) are left out.
async fn redis_usec(redis: &Redis) -> anyhow::Result<(f64, f64)> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut redis.conn()).await?;
    let (mut scripts, mut commands) = (0.0, 0.0);
    for line in info.lines() {
        let Some((name, stats)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
        let usec = stats.split(',').find_map(|kv| kv.strip_prefix("usec=")?.parse::<f64>().ok()).unwrap_or(0.0);
        let top = name.split('|').next().unwrap_or(name);
        match top {
            "evalsha" | "eval" | "evalsha_ro" | "eval_ro" | "fcall" | "fcall_ro" => scripts += usec,
            "info" | "config" | "client" | "hello" | "ping" | "script" | "function" | "subscribe" | "ssubscribe" => {}
            _ => commands += usec,
        }
    }
    Ok((scripts, commands))
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p99 and max of some millisecond figures.
#[derive(Debug, Clone, Copy)]
struct Spread {
    p50: i64,
    p99: i64,
    max: i64,
}

impl Spread {
    fn of(mut ms: Vec<i64>) -> Self {
        ms.sort_unstable();
        Self { p50: percentile(&ms, 50.0), p99: percentile(&ms, 99.0), max: ms.last().copied().unwrap_or(0) }
    }

    fn figure(&self) -> String {
        format!("p50 {} ms, p99 {} ms, max {} ms", self.p50, self.p99, self.max)
    }
}

fn bench_prefix(tag: &str) -> String {
    format!("bench-{tag}-{}", std::process::id())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

async fn noop(_n: u64, done: Data<Arc<AtomicU64>>) -> Result<(), BoxDynError> {
    done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn scenario_queue(redis: &Redis, n: u64) -> anyhow::Result<Row> {
    let config = QueueConfig { prefix: bench_prefix("noop"), ..QueueConfig::default() };
    let queue = Queue::new(redis.clone(), "noop", config)?;
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        queue.push_many(chunk.iter().map(|i| NewJob::new(i).expect("serialisable"))).await?;
    }
    let enqueue_s = t.elapsed().as_secs_f64();
    let done = Arc::new(AtomicU64::new(0));
    let worker = WorkerBuilder::new("bench")
        .backend(queue.backend::<u64>(WorkerOptions { fetch_batch: 200, ..WorkerOptions::default() }))
        .data(done.clone())
        .concurrency(100)
        .build(noop);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let t = Instant::now();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stop_rx.await;
        Ok::<(), WorkerError>(())
    }));
    while queue.counters().await?.get("completed").copied().unwrap_or(0) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let process_per_s = n as f64 / t.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = running.await;
    let enqueue_per_s = n as f64 / enqueue_s;
    Ok(Row::new(
        "1. queue only, no-op jobs",
        format!("{process_per_s:.0} jobs/s ({enqueue_per_s:.0} enqueued/s)"),
        json!({"scenario": "queue_noop", "jobs": n, "process_per_s": process_per_s.round(), "enqueue_per_s": enqueue_per_s.round()}),
    ))
}

/// The simulator as the benchmark uses it: instant devices, codes created on
/// first touch (the peers invent their ids), no rate limit.
async fn instant_seam() -> std::io::Result<FakeSeam> {
    FakeSeam::spawn(SimConfig {
        api_key: "seam_test".into(),
        device_delay: Duration::ZERO,
        auto_create: true,
        rate_limit_per_device_per_minute: 0,
        ..SimConfig::default()
    })
    .await
}

/// A simulator in this process and a `latchkey worker` process against it, on
/// a key prefix of their own.
/// Partitions of the reconcile queue the pipeline scenarios use:
/// `LATCHKEY_PARTITIONS`, which the worker processes inherit, or the default.
fn partitions() -> u32 {
    std::env::var("LATCHKEY_PARTITIONS").ok().and_then(|p| p.parse().ok()).unwrap_or(DEFAULT_PARTITIONS)
}

struct Pipeline {
    seam: FakeSeam,
    store: Reconciliations,
    worker: tokio::process::Child,
    pid: String,
}

impl Pipeline {
    async fn start(redis_url: &str, tag: &str) -> anyhow::Result<Self> {
        Self::start_with(redis_url, tag, &[]).await
    }

    /// Like `start`, with more worker settings (environment variables).
    async fn start_with(redis_url: &str, tag: &str, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_against(instant_seam().await?, redis_url, &bench_prefix(tag), extra).await
    }

    /// A worker process against `seam`, on `prefix`.
    async fn start_against(
        seam: FakeSeam,
        redis_url: &str,
        prefix: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let prefix = prefix.to_string();
        let store = Reconciliations::open(
            Redis::connect(&RedisConfig::new(redis_url)).await?,
            QueueConfig { prefix: prefix.clone(), partitions: partitions(), ..QueueConfig::default() },
        )
        .await?;
        // Tuned for an instant simulator: short polls, no spacing of updates,
        // no per-device limit, no spreading of verifications.
        let env = [
            ("REDIS_URL", redis_url.to_string()),
            ("SEAM_ENDPOINT", seam.url()),
            ("SEAM_API_KEY", "seam_test".to_string()),
            ("LATCHKEY_PREFIX", prefix),
            ("LATCHKEY_CONCURRENCY", "128".into()),
            ("LATCHKEY_VERIFY_TIMEOUT_SECS", "60".into()),
            ("LATCHKEY_POLL_BASE_MS", "5".into()),
            ("LATCHKEY_POLL_CAP_MS", "100".into()),
            ("LATCHKEY_MIN_UPDATE_INTERVAL_MS", "0".into()),
            ("LATCHKEY_ATTEMPT_PATIENCE_MS", "2000".into()),
            ("LATCHKEY_DEVICE_LIMIT", "1000000".into()),
            ("LATCHKEY_VERIFY_SPREAD_MS", "0".into()),
            ("LATCHKEY_DRAIN_SECS", "5".into()),
            ("LATCHKEY_HTTP_ADDR", "off".into()),
        ];
        let worker = tokio::process::Command::new(std::env::current_exe()?)
            .arg("worker")
            .envs(env)
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let pid = worker.id().map(|p| p.to_string()).unwrap_or_default();
        let p = Self { seam, store, worker, pid };
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.store.queue().workers_alive(Duration::from_secs(10)).await?.is_empty() {
            anyhow::ensure!(Instant::now() < deadline, "the worker process did not register within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(p)
    }

    async fn enqueue(&self, json: Value) -> anyhow::Result<u64> {
        Ok(self.store.enqueue(serde_json::from_value::<DesiredStateInput>(json)?).await?)
    }

    /// Reconciliations ended in `state` so far (a code that succeeded stays
    /// watched, its job not acknowledged: outcomes are what is counted).
    async fn outcomes(&self, state: &str) -> anyhow::Result<u64> {
        Ok(self.store.queue().counters().await?.get(&format!("outcome_{state}")).copied().unwrap_or(0))
    }

    /// Waits until `n` reconciliations ended in `state` in all.
    async fn wait_outcomes(&self, state: &str, n: u64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.outcomes(state).await? < n {
            anyhow::ensure!(Instant::now() < deadline, "reconciliations did not end {state} within {limit:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The worker's peak resident memory so far, MB.
    fn worker_peak_mb(&self) -> f64 {
        proc_status_mb(&self.pid, "VmHWM:")
    }

    /// Stops the worker the way Kubernetes does (SIGTERM, then a drain).
    async fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid]).status();
        if tokio::time::timeout(Duration::from_secs(15), self.worker.wait()).await.is_err() {
            let _ = self.worker.kill().await;
        }
        self.seam.shutdown().await;
    }
}

/// `latchkey_redis_round_trips_total` of a worker's /metrics.
async fn worker_round_trips(ops: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("http://{ops}/metrics")).await?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix("latchkey_redis_round_trips_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| anyhow::anyhow!("the worker's /metrics has no latchkey_redis_round_trips_total"))
}

/// `n` access codes in the simulator, each on an instant lock of its own:
/// (code, device).
fn quick_codes(seam: &FakeSeam, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|_| {
            let device = seam.add_device(DeviceBehaviour::Normal { delay: Duration::ZERO });
            (seam.add_access_code(&device, SeedCode::default()), device)
        })
        .collect()
}

async fn scenario_reconcile(redis: &Redis, redis_url: &str, n: usize) -> anyhow::Result<(Vec<Row>, f64, f64)> {
    let ops = format!("127.0.0.1:{}", latchkey_devenv::free_tcp_port());
    let p = Pipeline::start_with(redis_url, "rec", &[("LATCHKEY_HTTP_ADDR", ops.as_str())]).await?;
    // Each code on a lock of its own that the producer names, as a property
    // manager's records do (the issue's "known device"; a code whose device
    // is not named costs one read more, once in its life, to learn it).
    let codes = quick_codes(&p.seam, n);
    let trips_before = worker_round_trips(&ops).await?;
    let seam_before = p.seam.requests().len();
    let cpu_before = (cpu_secs(&p.pid), redis_cpu_secs(redis).await?, cpu_secs("self"));
    let usec_before = redis_usec(redis).await?;
    let t = Instant::now();
    for (i, chunk) in codes.chunks(64).enumerate() {
        let sends = chunk.iter().enumerate().map(|(j, (id, device))| {
            let guest = i * 64 + j;
            p.enqueue(
                json!({"access_code_id": id, "device_id": device, "code": "1234", "name": format!("guest {guest}")}),
            )
        });
        futures::future::try_join_all(sends).await?;
    }
    p.wait_outcomes("succeeded", n as u64, Duration::from_secs(600)).await?;
    let per_s = n as f64 / t.elapsed().as_secs_f64();
    // Where the time goes: CPU per 1,000 reconciliations, by process.
    let worker = per_thousand(cpu_secs(&p.pid), cpu_before.0, n);
    let redis_cpu = per_thousand(redis_cpu_secs(redis).await?, cpu_before.1, n);
    let driver = per_thousand(cpu_secs("self"), cpu_before.2, n);
    let usec = redis_usec(redis).await?;
    let (scripts_us, commands_us) = ((usec.0 - usec_before.0) / n as f64, (usec.1 - usec_before.1) / n as f64);
    let rss = p.worker_peak_mb();
    // What a reconciliation costs, counted: the worker's requests to Redis
    // (its fetches, heartbeats and records included; the producer's enqueue
    // is one more), and the simulator's log of Seam requests by endpoint.
    let trips = (worker_round_trips(&ops).await? - trips_before) as f64 / n as f64;
    let mut by_path: std::collections::BTreeMap<String, usize> = Default::default();
    for r in &p.seam.requests()[seam_before..] {
        *by_path.entry(r.path.clone()).or_default() += 1;
    }
    let seam_total = by_path.values().sum::<usize>() as f64 / n as f64;
    let seam_paths: Vec<String> =
        by_path.iter().map(|(path, c)| format!("{path} {:.2}", *c as f64 / n as f64)).collect();
    p.stop().await;
    let rows = vec![
        Row::new(
            "2. full reconciliations (ongoing, device named)",
            format!("{per_s:.0} reconciliations/s"),
            json!({"scenario": "reconcile", "reconciliations": n, "per_s": per_s.round()}),
        ),
        Row::new(
            "2. CPU seconds per 1,000 reconciliations",
            format!("worker {worker:.2}, Redis {redis_cpu:.2}, simulator + load {driver:.2}"),
            json!({"scenario": "reconcile_cpu", "worker_s_per_1000": (worker * 100.0).round() / 100.0, "redis_s_per_1000": (redis_cpu * 100.0).round() / 100.0, "simulator_and_load_s_per_1000": (driver * 100.0).round() / 100.0}),
        ),
        Row::new(
            "2. Redis time per reconciliation (commandstats)",
            format!(
                "{scripts_us:.0} µs running scripts: {commands_us:.0} µs in the Redis commands they call, the rest in Lua"
            ),
            json!({"scenario": "reconcile_redis_time", "scripts_us": scripts_us.round(), "commands_us": commands_us.round()}),
        ),
        Row::new(
            "2. per reconciliation, counted",
            format!(
                "{trips:.2} Redis round trips (worker) + 1 enqueue; {seam_total:.2} Seam requests ({})",
                seam_paths.join(", ")
            ),
            json!({"scenario": "reconcile_cost", "redis_round_trips": (trips * 100.0).round() / 100.0, "seam_requests": (seam_total * 100.0).round() / 100.0, "seam_by_path": by_path.iter().map(|(p, c)| (p.clone(), json!((*c as f64 / n as f64 * 100.0).round() / 100.0))).collect::<serde_json::Map<_, _>>()}),
        ),
    ];
    Ok((rows, per_s, rss))
}

/// Scenario 2's floor: what this machine does with a reconciliation's round
/// trips and nothing in them, in the same run as the real pipeline and as
/// BullMQ. Each reconciliation is the issue's shape: 5 Redis round trips (the
/// producer's enqueue and the worker's 4) that each run a script of `return
/// 1`, and 2 Seam requests (update, get) through latchkey's own Seam client
/// against the same instant simulator, 128 at once (the worker's
/// concurrency). No record, fence, lease or outcome is kept, so no
/// reconciliation can be cheaper than this here: the floor over BullMQ is the
/// most any latchkey over BullMQ can be on this machine.
async fn scenario_floor(redis: &Redis, redis_url: &str, n: usize) -> anyhow::Result<Row> {
    use latchkey_seam::{ApiKey, SeamClient, SeamConfig, UpdateAccessCode};
    let seam = instant_seam().await?;
    let codes: Arc<Vec<String>> = Arc::new(quick_codes(&seam, n).into_iter().map(|(code, _)| code).collect());
    let client = SeamClient::new(&SeamConfig::new(seam.url(), ApiKey::new("seam_test")))?;
    let conn = redis::Client::open(redis_url)?.get_multiplexed_async_connection().await?;
    let script = redis::Script::new("return 1");
    let next = Arc::new(AtomicU64::new(0));
    let cpu_before = (redis_cpu_secs(redis).await?, cpu_secs("self"));
    let t = Instant::now();
    let tasks = (0..128).map(|_| {
        let (codes, client, mut conn, script, next) =
            (codes.clone(), client.clone(), conn.clone(), script.clone(), next.clone());
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(id) = codes.get(i) else { return anyhow::Ok(()) };
                for _ in 0..5 {
                    let _: i64 = script.key("bench-floor:{reconcile}").invoke_async(&mut conn).await?;
                }
                let update = UpdateAccessCode {
                    access_code_id: id.clone(),
                    code: Some("1234".into()),
                    name: Some(format!("guest {i}")),
                    ..UpdateAccessCode::default()
                };
                client.update_access_code(&update).await?;
                client.get_access_code(id).await?;
            }
        }
    });
    futures::future::try_join_all(tasks).await?;
    let per_s = n as f64 / t.elapsed().as_secs_f64();
    let redis_cpu = per_thousand(redis_cpu_secs(redis).await?, cpu_before.0, n);
    let driver = per_thousand(cpu_secs("self"), cpu_before.1, n);
    seam.shutdown().await;
    Ok(Row::new(
        "2. floor: the same round trips, empty",
        format!(
            "{per_s:.0} reconciliations/s (5 scripts of `return 1`, update, get); CPU per 1,000: Redis {redis_cpu:.2} s, client + simulator {driver:.2} s"
        ),
        json!({"scenario": "reconcile_floor", "reconciliations": n, "per_s": per_s.round(), "redis_s_per_1000": (redis_cpu * 1000.0).round() / 1000.0, "client_and_simulator_s_per_1000": (driver * 1000.0).round() / 1000.0}),
    ))
}

/// A `latchkey serve` process on `prefix`, listening on 127.0.0.1:`port`.
struct Serve(tokio::process::Child);

impl Serve {
    async fn start(redis_url: &str, prefix: &str, port: u16, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("serve")
            .envs([
                ("REDIS_URL", redis_url.to_string()),
                ("LATCHKEY_PREFIX", prefix.to_string()),
                ("LATCHKEY_LISTEN", format!("127.0.0.1:{port}")),
                ("LATCHKEY_HTTP_ADDR", "off".into()),
            ])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "latchkey serve did not listen within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self(child))
    }

    fn pid(&self) -> String {
        self.0.id().map(|p| p.to_string()).unwrap_or_default()
    }

    async fn stop(mut self) {
        let pid = self.pid();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        if tokio::time::timeout(Duration::from_secs(15), self.0.wait()).await.is_err() {
            let _ = self.0.kill().await;
        }
    }
}

/// Scenario 9: the HTTP door. `PUT`s per second through `latchkey serve`
/// with keep-alive clients; then enqueue -> `succeeded` at each offered rate,
/// through HTTP and through Redis, timed from the producer's send.
async fn scenario_http(redis_url: &str, puts: usize, rates: &[u32], secs: u64) -> anyhow::Result<Vec<Row>> {
    const TOKEN: &str = "tok_bench_write_0123456789";
    let tokens = tempfile::NamedTempFile::new()?;
    std::fs::write(tokens.path(), format!("bench write {TOKEN}\n"))?;
    let port = latchkey_devenv::free_tcp_port();
    let tokens_env = [("LATCHKEY_API_TOKENS_FILE", tokens.path().display().to_string())];
    let mut rows = Vec::new();

    // Throughput: 64 keep-alive clients, no worker (recording only).
    let prefix = bench_prefix("http");
    let serve = Serve::start(redis_url, &prefix, port, &tokens_env).await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let url = format!("http://127.0.0.1:{port}/v1/access-codes");
    let serve_cpu = cpu_secs(&serve.pid());
    let t = Instant::now();
    let clients = 64;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for i in (c..puts).step_by(clients) {
                put(&http, &format!("{url}/put-{i}"), TOKEN, "1234").await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let per_s = puts as f64 / t.elapsed().as_secs_f64();
    let serve_cpu = per_thousand(cpu_secs(&serve.pid()), serve_cpu, puts);
    rows.push(Row::new(
        "9. PUT /v1/access-codes/{id}, 64 keep-alive clients",
        format!("{per_s:.0} PUTs/s; serve's CPU {serve_cpu:.3} s per 1,000"),
        json!({"scenario": "http_put", "puts": puts, "clients": clients, "per_s": per_s.round(), "serve_s_per_1000": (serve_cpu * 1000.0).round() / 1000.0}),
    ));
    // A check-in wave: batches of 1,000 desired states, one client.
    let batches = (puts / 1000).max(1);
    let t = Instant::now();
    for b in 0..batches {
        let items: Vec<Value> =
            (0..1000).map(|i| json!({"access_code_id": format!("batch-{b}-{i}"), "code": "1234"})).collect();
        let r = http.post(format!("{url}/batch")).bearer_auth(TOKEN).json(&items).send().await?;
        anyhow::ensure!(r.status() == 200, "a batch was answered {}", r.status());
    }
    let per_s = (batches * 1000) as f64 / t.elapsed().as_secs_f64();
    serve.stop().await;
    rows.push(Row::new(
        "9. POST /v1/access-codes/batch, 1,000 a request, one client",
        format!("{per_s:.0} desired states/s"),
        json!({"scenario": "http_batch", "batches": batches, "per_s": per_s.round()}),
    ));

    // Latency, HTTP against Redis, in one pipeline. The routes take turns of
    // 200 ms, each turn at the full rate, for `secs` seconds each, and each
    // route's figures are pooled over its turns: both meet the same moments
    // of this machine, whose stalls last tens of milliseconds. (Measured one
    // after the other, 5 s each, the difference swung from -6 to 76 ms at
    // 2,000/s, far more than the figure sought.) Every other turn is HTTP's;
    // the Redis turns between them alternate between two halves, A and B,
    // each following an HTTP turn, and the Redis route against itself (B
    // against A) shows in the same run how far two identical routes come out
    // apart: the resolution of "HTTP adds". The first second is not measured:
    // it opens the HTTP connections and wakes the worker (see `warm_up`).
    let prefix = bench_prefix("httplat");
    let p = Pipeline::start_against(instant_seam().await?, redis_url, &prefix, &[]).await?;
    let serve = Serve::start(redis_url, &prefix, port, &tokens_env).await?;
    // The producer over HTTP runs on a thread of its own, as a producer
    // would be a process of its own: its requests do not queue behind the
    // in-process simulator's tasks (nor the simulator behind them).
    let producer = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let producer_handle = producer.handle().clone();
    let (stop_producer, producer_stopped) = tokio::sync::oneshot::channel::<()>();
    let producer_thread = std::thread::spawn(move || {
        producer.block_on(async {
            let _ = producer_stopped.await;
        })
    });
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    const ROUTES: [&str; 2] = ["redis", "http"];
    for &rate in rates {
        let before = p.outcomes("succeeded").await?;
        let (turn, warm) = ((rate as usize / 5).max(1), rate as usize);
        let route = move |i: usize| (i / turn) % 2;
        // Of the Redis route's turns, A (0) or B (1).
        let half = move |i: usize| (i / turn / 2) % 2;
        let id = move |i: usize| format!("lat-{}-{rate}-{i}", ROUTES[route(i)]);
        let n = warm + 2 * secs as usize * rate as usize;
        let serve_cpu = cpu_secs(&serve.pid());
        let (scheduled, took) = offer(&producer_handle, rate, n, |i| {
            let (http, store, url, id) = (http.clone(), p.store.clone(), url.clone(), id(i));
            async move {
                if route(i) == 1 {
                    put(&http, &format!("{url}/{id}"), TOKEN, "4321").await?;
                } else {
                    store.enqueue(serde_json::from_value(json!({"access_code_id": id, "code": "4321"}))?).await?;
                }
                Ok(())
            }
        })
        .await?;
        // (serve is idle in the Redis route's turns)
        let serve_cpu = per_thousand(cpu_secs(&serve.pid()), serve_cpu, n / 2);
        p.wait_outcomes("succeeded", before + n as u64, Duration::from_secs(300)).await?;
        let timed = timings(&p.store, &scheduled[warm..], |k| id(warm + k)).await?;
        let of = |keep: &dyn Fn(usize) -> bool, pick: fn(&Timing) -> i64| {
            Spread::of((warm..n).filter(|&i| keep(i)).filter_map(|i| timed[i - warm].as_ref().map(pick)).collect())
        };
        let (mut whole, mut taken_in) = (Vec::new(), Vec::new());
        for (r, name) in ROUTES.iter().enumerate() {
            let mine = |i: usize| route(i) == r;
            let answered = Spread::of((warm..n).filter(|&i| mine(i)).map(|i| took[i]).collect());
            rows.push(Row::new(
                format!("9. {} answered at {rate}/s", if r == 1 { "PUT" } else { "enqueue" }),
                answered.figure(),
                json!({"scenario": "http_put_latency", "route": name, "rate_per_s": rate, "p50_ms": answered.p50, "p99_ms": answered.p99, "max_ms": answered.max}),
            ));
            let door = of(&mine, |t| t.taken_in);
            rows.push(Row::new(
                format!("9. send -> taken in at {rate}/s through {name}"),
                door.figure(),
                json!({"scenario": "http_taken_in", "route": name, "rate_per_s": rate, "p50_ms": door.p50, "p99_ms": door.p99, "max_ms": door.max}),
            ));
            let spread = of(&mine, |t| t.succeeded);
            rows.push(Row::new(
                format!("9. send -> succeeded at {rate}/s through {name}"),
                spread.figure(),
                json!({"scenario": "http_latency", "route": name, "rate_per_s": rate, "p50_ms": spread.p50, "p99_ms": spread.p99, "max_ms": spread.max}),
            ));
            whole.push(spread.p99);
            taken_in.push(door.p99);
        }
        let [a, b] = [0, 1].map(|h| of(&|i| route(i) == 0 && half(i) == h, |t| t.succeeded).p99);
        let (added, itself, door_added) = (whole[1] - whole[0], b - a, taken_in[1] - taken_in[0]);
        rows.push(Row::new(
            format!("9. HTTP adds to p99 at {rate}/s"),
            format!(
                "{added} ms (the Redis route against itself: {itself} ms); {door_added} ms until taken in; serve's CPU {serve_cpu:.3} s per 1,000 PUTs at this rate"
            ),
            json!({"scenario": "http_latency_added", "rate_per_s": rate, "p99_added_ms": added, "p99_redis_b_minus_a_ms": itself, "p99_added_taken_in_ms": door_added, "serve_s_per_1000": (serve_cpu * 1000.0).round() / 1000.0}),
        ));
    }
    let _ = stop_producer.send(());
    let _ = producer_thread.join();
    serve.stop().await;
    p.stop().await;
    Ok(rows)
}

/// Scenario 8: devices that take 2 s to apply a change; the same load
/// without webhooks (polls from 1 s, the defaults) and with them (`latchkey
/// serve` receiving the simulator's signed events, polls from 15 s to 5
/// minutes as the README recommends): Seam reads per reconciliation and
/// enqueue -> `succeeded`.
async fn scenario_webhooks(redis_url: &str, n: usize) -> anyhow::Result<Vec<Row>> {
    const DELAY: Duration = Duration::from_secs(2);
    const RATE: u32 = 50;
    const SECRET: &str = "whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtb2YtbGF0Y2hrZXk=";
    let secs = (n as u64).div_ceil(RATE as u64).max(1);
    let mut rows = Vec::new();
    for hooks in [false, true] {
        let tag = if hooks { "hooks" } else { "polls" };
        let prefix = bench_prefix(tag);
        let serve_port = latchkey_devenv::free_tcp_port();
        let seam = FakeSeam::spawn(SimConfig {
            api_key: "seam_test".into(),
            device_delay: DELAY,
            auto_create: true,
            rate_limit_per_device_per_minute: 0,
            webhook: hooks.then(|| WebhookTarget {
                url: format!("http://127.0.0.1:{serve_port}/webhooks/seam"),
                secret: SECRET.into(),
            }),
            ..SimConfig::default()
        })
        .await?;
        let mut serve = if hooks {
            Some(Serve::start(redis_url, &prefix, serve_port, &[("SEAM_WEBHOOK_SECRET", SECRET.to_string())]).await?)
        } else {
            None
        };
        let polls: &[(&str, &str)] = if hooks {
            &[("LATCHKEY_POLL_BASE_MS", "15000"), ("LATCHKEY_POLL_CAP_MS", "300000")]
        } else {
            &[("LATCHKEY_POLL_BASE_MS", "1000"), ("LATCHKEY_POLL_CAP_MS", "60000")]
        };
        let mut env = vec![("LATCHKEY_ATTEMPT_PATIENCE_MS", "10000")];
        env.extend_from_slice(polls);
        let p = Pipeline::start_against(seam, redis_url, &prefix, &env).await?;
        let spread = offered_rate(&p, tag, RATE, secs).await?;
        let requests = p.seam.requests();
        let count = |path: &str| requests.iter().filter(|r| r.path == path).count() as f64 / n as f64;
        let (gets, attempts) = (count("/access_codes/get"), count("/action_attempts/get"));
        // A code's first read, before its first update, learns its device
        // (once in its life; these codes are new): the rest verify.
        let mut first_update: std::collections::HashMap<&str, chrono::DateTime<chrono::Utc>> = Default::default();
        for r in requests.iter().filter(|r| r.path == "/access_codes/update") {
            if let Some(id) = r.access_code_id.as_deref() {
                first_update.entry(id).or_insert(r.at);
            }
        }
        let verifying = requests
            .iter()
            .filter(|r| r.path == "/access_codes/get")
            .filter(|r| r.access_code_id.as_deref().and_then(|id| first_update.get(id)).is_some_and(|u| r.at >= *u))
            .count() as f64
            / n as f64;
        p.stop().await;
        if let Some(s) = serve.take() {
            s.stop().await;
        }
        let over = spread.p99 - DELAY.as_millis() as i64;
        let with = if hooks { "with webhooks" } else { "polling only" };
        rows.push(Row::new(
            format!("8. 2 s devices, {with}: Seam reads / reconciliation"),
            format!(
                "access_codes/get {gets:.2} ({verifying:.2} verifying, the rest learning the device), action_attempts/get {attempts:.2}"
            ),
            json!({"scenario": "webhooks_reads", "webhooks": hooks, "codes": n, "access_code_gets": (gets * 100.0).round() / 100.0, "verifying_gets": (verifying * 100.0).round() / 100.0, "action_attempt_gets": (attempts * 100.0).round() / 100.0}),
        ));
        rows.push(Row::new(
            format!("8. 2 s devices, {with}: enqueue -> succeeded"),
            format!("{} (p99 {over} ms over the device's 2 s)", spread.figure()),
            json!({"scenario": "webhooks_latency", "webhooks": hooks, "codes": n, "p50_ms": spread.p50, "p99_ms": spread.p99, "max_ms": spread.max, "p99_over_device_ms": over}),
        ));
    }
    Ok(rows)
}

/// `PUT`s a desired state with the PIN `pin` to `url` (an access code's
/// address on the HTTP API); it must be accepted.
async fn put(http: &reqwest::Client, url: &str, token: &str, pin: &str) -> anyhow::Result<()> {
    let r = http.put(url).bearer_auth(token).json(&json!({ "code": pin })).send().await?;
    anyhow::ensure!(r.status() == 202, "a PUT was answered {}", r.status());
    Ok(())
}

/// Starts `send(i)` for each i below `n` at `rate` per second on `on`, open
/// loop: each at its scheduled time whether or not the ones before it were
/// answered, as many independent producers would. A pipeline that cannot keep
/// up then shows it as latency, where a producer that waited for each answer
/// would slow down to the pipeline's pace and hide it (coordinated omission).
/// Returns each send's scheduled time, and how long after it the send was
/// answered (ms).
async fn offer<Fut>(
    on: &tokio::runtime::Handle,
    rate: u32,
    n: usize,
    send: impl Fn(usize) -> Fut,
) -> anyhow::Result<(Vec<chrono::DateTime<Utc>>, Vec<i64>)>
where
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (start, wall) = (Instant::now(), Utc::now());
    let mut scheduled = Vec::with_capacity(n);
    let mut sends = Vec::with_capacity(n);
    for i in 0..n {
        let offset = Duration::from_secs_f64(i as f64 / rate as f64);
        let due = start + offset;
        tokio::time::sleep_until(due.into()).await;
        scheduled.push(wall + chrono::Duration::from_std(offset)?);
        let sent = send(i);
        sends.push(on.spawn(async move { sent.await.map(|()| due.elapsed().as_millis() as i64) }));
    }
    let mut answered = Vec::with_capacity(n);
    for s in sends {
        answered.push(s.await??);
    }
    Ok((scheduled, answered))
}

/// Each code's time from its scheduled send to its `succeeded`.
async fn latency_since(
    store: &Reconciliations,
    scheduled: &[chrono::DateTime<Utc>],
    id: impl Fn(usize) -> String,
) -> anyhow::Result<Spread> {
    Ok(Spread::of(timings(store, scheduled, id).await?.into_iter().flatten().map(|t| t.succeeded).collect()))
}

/// When one code got where, in ms after its scheduled send.
struct Timing {
    /// Its desired state was in the hands of what records it (`serve`, or
    /// the producer itself): the outcome's `enqueued_at`.
    taken_in: i64,
    /// It `succeeded`.
    succeeded: i64,
}

/// The [`Timing`] of each code sent at `scheduled` (`None` for one that did
/// not succeed).
async fn timings(
    store: &Reconciliations,
    scheduled: &[chrono::DateTime<Utc>],
    id: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<Option<Timing>>> {
    let mut all = Vec::with_capacity(scheduled.len());
    for (i, at) in scheduled.iter().enumerate() {
        let o = store.outcome(&id(i)).await?;
        all.push(o.and_then(|o| {
            let f = o.finished_at?;
            Some(Timing { taken_in: (o.enqueued_at - *at).num_milliseconds(), succeeded: (f - *at).num_milliseconds() })
        }));
    }
    Ok(all)
}

/// Offers `rate`/s for a second, unmeasured, and waits for it to finish: a
/// worker process started a moment ago (its connections opened, its
/// scripts loaded, its threads started) is not yet the daemon that runs for
/// weeks, and its first second would otherwise be a latency figure's tail.
async fn warm_up(p: &Pipeline, tag: &str, rate: u32) -> anyhow::Result<()> {
    enqueue_at(p, rate, rate as usize, |i| format!("warm-{tag}-{rate}-{i}")).await.map(drop)
}

/// Enqueues `n` codes named by `id` at `rate`/s, open loop ([`offer`]), and
/// waits until they have all succeeded; returns their scheduled sends.
async fn enqueue_at(
    p: &Pipeline,
    rate: u32,
    n: usize,
    id: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<chrono::DateTime<Utc>>> {
    let before = p.outcomes("succeeded").await?;
    let (scheduled, _) = offer(&tokio::runtime::Handle::current(), rate, n, |i| {
        let (store, id) = (p.store.clone(), id(i));
        async move {
            store.enqueue(serde_json::from_value(json!({"access_code_id": id, "code": "4321"}))?).await?;
            Ok(())
        }
    })
    .await?;
    p.wait_outcomes("succeeded", before + n as u64, Duration::from_secs(300)).await?;
    Ok(scheduled)
}

/// Enqueues at a fixed rate, open loop ([`offer`]), after a [`warm_up`], and
/// measures scheduled send -> `succeeded`.
async fn offered_rate(p: &Pipeline, tag: &str, rate: u32, secs: u64) -> anyhow::Result<Spread> {
    warm_up(p, tag, rate).await?;
    let id = |i: usize| format!("lat-{tag}-{rate}-{i}");
    let scheduled = enqueue_at(p, rate, (rate as u64 * secs) as usize, id).await?;
    latency_since(&p.store, &scheduled, id).await
}

/// `n` reconciliations as fast as they go, then `rate`/s for `secs`: the
/// throughput and the p99 enqueue-to-succeeded on `redis_url`.
async fn reconcile_and_latency(redis_url: &str, n: usize, rate: u32, secs: u64) -> anyhow::Result<(f64, Spread)> {
    let p = Pipeline::start(redis_url, "cl-rec").await?;
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let sends = chunk.iter().map(|i| p.enqueue(json!({"access_code_id": format!("ac-{i}"), "code": "1234"})));
        futures::future::try_join_all(sends).await?;
    }
    p.wait_outcomes("succeeded", n as u64, Duration::from_secs(600)).await?;
    let per_s = n as f64 / t.elapsed().as_secs_f64();
    p.stop().await;
    let p = Pipeline::start(redis_url, &format!("cl-lat{rate}")).await?;
    let spread = offered_rate(&p, "plain", rate, secs).await?;
    p.stop().await;
    Ok((per_s, spread))
}

/// Scenario 10: the same reconciliation load on a single node and on a
/// three-master Redis Cluster started for it (the reconcile queue's
/// partitions spread over the masters), in one run.
async fn scenario_cluster(single_url: &str, n: usize, rate: u32, secs: u64) -> anyhow::Result<Vec<Row>> {
    let (single, single_spread) = reconcile_and_latency(single_url, n, rate, secs).await?;
    let cluster = latchkey_devenv::RedisCluster::start();
    let (clustered, cluster_spread) = reconcile_and_latency(&cluster.url(), n, rate, secs).await?;
    drop(cluster);
    Ok(vec![
        Row::new(
            "10. reconciliations/s, one node | three masters",
            format!("{single:.0} | {clustered:.0} ({:.2}x)", clustered / single),
            json!({"scenario": "cluster_reconcile", "n": n, "single_per_s": single.round(), "cluster_per_s": clustered.round(), "ratio": ((clustered / single) * 100.0).round() / 100.0}),
        ),
        Row::new(
            format!("10. enqueue -> succeeded at {rate}/s, one node | three masters"),
            format!(
                "p99 {} ms | {} ms (p50 {} | {} ms)",
                single_spread.p99, cluster_spread.p99, single_spread.p50, cluster_spread.p50
            ),
            json!({"scenario": "cluster_latency", "rate_per_s": rate, "single_p99_ms": single_spread.p99, "cluster_p99_ms": cluster_spread.p99, "single_p50_ms": single_spread.p50, "cluster_p50_ms": cluster_spread.p50}),
        ),
    ])
}

async fn scenario_latency(redis_url: &str, rate: u32, secs: u64) -> anyhow::Result<(Row, Spread)> {
    let p = Pipeline::start(redis_url, &format!("lat{rate}")).await?;
    let spread = offered_rate(&p, "plain", rate, secs).await?;
    p.stop().await;
    let row = Row::new(
        format!("3. enqueue -> succeeded at {rate}/s"),
        spread.figure(),
        json!({"scenario": "latency", "rate_per_s": rate, "n": rate as u64 * secs, "p50_ms": spread.p50, "p99_ms": spread.p99, "max_ms": spread.max}),
    );
    Ok((row, spread))
}

/// Verifications at `starts_at`; `rate` (scenario 2's) sets how long the codes
/// need to be applied before the first one starts.
async fn scenario_starts_at(redis: &Redis, redis_url: &str, n: usize, rate: f64) -> anyhow::Result<Vec<Row>> {
    let p = Pipeline::start(redis_url, "sched").await?;
    let lead_ms = 3_000 + (2_000.0 * n as f64 / rate.max(100.0)) as i64;
    let first_start = Utc::now() + chrono::Duration::milliseconds(lead_ms);
    let ends = first_start + chrono::Duration::days(2);
    let starts: Vec<_> = (0..n).map(|i| first_start + chrono::Duration::milliseconds((i % 3000) as i64)).collect();
    let before = redis.used_memory().await?;
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let sends = chunk.iter().map(|&i| {
            p.enqueue(json!({"access_code_id": format!("tb-{i}"), "starts_at": starts[i].to_rfc3339(), "ends_at": ends.to_rfc3339()}))
        });
        futures::future::try_join_all(sends).await?;
    }
    // Once every code is applied, each is one job waiting for its starts_at.
    let mut per_code = None;
    while Utc::now() < first_start - chrono::Duration::milliseconds(200) {
        if p.store.queue().depth().await?.scheduled == n as u64 {
            per_code = Some(redis.used_memory().await?.saturating_sub(before) / n as u64);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::ensure!(per_code.is_some(), "{n} codes were not all applied before their start; use fewer");
    p.wait_outcomes("succeeded", n as u64, Duration::from_secs(300)).await?;
    // Each code's verification poll is its first read at or after starts_at (an earlier read
    // learned the device at enqueue time).
    let mut reads: std::collections::HashMap<String, Vec<chrono::DateTime<Utc>>> = Default::default();
    for r in p.seam.requests().into_iter().filter(|r| r.path == "/access_codes/get") {
        if let Some(id) = r.access_code_id {
            reads.entry(id).or_default().push(r.at);
        }
    }
    let late: Vec<i64> = (0..n)
        .filter_map(|i| {
            let verify = reads
                .get(&format!("tb-{i}"))?
                .iter()
                .filter(|t| **t >= starts[i] - chrono::Duration::seconds(1))
                .min()?;
            Some((*verify - starts[i]).num_milliseconds())
        })
        .collect();
    let late = Spread::of(late);
    p.stop().await;
    let per_code = per_code.unwrap_or_default();
    Ok(vec![
        Row::new(
            format!("4. verification lateness at starts_at ({n} codes)"),
            late.figure(),
            json!({"scenario": "starts_at_lateness", "codes": n, "p50_ms": late.p50, "p99_ms": late.p99, "max_ms": late.max}),
        ),
        Row::new(
            "4. Redis memory per waiting time-bound code",
            format!("{per_code} bytes (job, desired state, outcome, events)"),
            json!({"scenario": "time_bound_code_memory", "codes": n, "bytes_per_code": per_code}),
        ),
    ])
}

/// A million (or `waiting`) verifications scheduled a day out, then each
/// offered rate of scenario 3 again with them present (`without`: scenario 3's
/// figures, by rate).
async fn scenario_scale(
    redis: &Redis,
    redis_url: &str,
    waiting: usize,
    secs: u64,
    without: &[(u32, Spread)],
) -> anyhow::Result<(Vec<Row>, f64)> {
    let p = Pipeline::start(redis_url, "scale").await?;
    let queue = p.store.queue();
    let before = redis.used_memory().await?;
    let due = now_ms() + 86_400_000;
    for chunk in (0..waiting).collect::<Vec<_>>().chunks(10_000) {
        let jobs = chunk
            .iter()
            .map(|i| NewJob::from_json(format!(r#"{{"access_code_id":"w-{i}"}}"#)).id(format!("w-{i}")).run_at_ms(due));
        queue.push_many(jobs).await?;
    }
    anyhow::ensure!(queue.depth().await?.scheduled == waiting as u64, "not every waiting job was stored");
    let per_job = redis.used_memory().await?.saturating_sub(before) as f64 / waiting as f64;
    let mut rows = vec![Row::new(
        format!("5. Redis memory per waiting verification ({waiting})"),
        format!("{per_job:.0} bytes"),
        json!({"scenario": "waiting_memory", "waiting": waiting, "bytes_per_job": per_job.round()}),
    )];
    for &(rate, without) in without {
        eprintln!("scenario 5: {rate}/s for {secs} s with {waiting} waiting...");
        let with = offered_rate(&p, &format!("scale{rate}"), rate, secs).await?;
        let ratio = with.p99 as f64 / without.p99.max(1) as f64;
        rows.push(Row::new(
            format!("5. enqueue -> succeeded at {rate}/s, {waiting} waiting"),
            format!("{} (p99 {ratio:.2}x without)", with.figure()),
            json!({"scenario": "latency_with_waiting", "waiting": waiting, "rate_per_s": rate, "p50_ms": with.p50, "p99_ms": with.p99, "max_ms": with.max, "p99_ratio": (ratio * 100.0).round() / 100.0}),
        ));
    }
    let rss = p.worker_peak_mb();
    p.stop().await;
    Ok((rows, rss))
}

/// Runs one peer script; its last line is JSON.
fn peer(dir: &std::path::Path, script: &str, args: &[String], env: &[(&str, String)]) -> anyhow::Result<Value> {
    let dir = dir.canonicalize()?;
    let out = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(dir)
        .output()?;
    anyhow::ensure!(out.status.success(), "{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(text.lines().last().unwrap_or("{}"))?)
}

/// Every key under `prefix`.
async fn keys_under(redis: &Redis, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut conn = redis.conn();
    let mut iter: redis::AsyncIter<String> = redis::AsyncCommands::scan_match(&mut conn, format!("{prefix}:*")).await?;
    let mut keys = Vec::new();
    while let Some(k) = futures::StreamExt::next(&mut iter).await {
        keys.push(k?);
    }
    Ok(keys)
}

/// The keys under `prefix` (but the capped event stream) and the bytes they
/// take (`MEMORY USAGE`), and the stream's bytes apart.
async fn footprint(redis: &Redis, prefix: &str) -> anyhow::Result<(u64, u64, u64)> {
    let mut conn = redis.conn();
    let (mut n, mut bytes, mut stream) = (0, 0, 0);
    for k in keys_under(redis, prefix).await? {
        let used: Option<u64> = redis::cmd("MEMORY").arg("USAGE").arg(&k).query_async(&mut conn).await?;
        if k.ends_with(":events") {
            stream = used.unwrap_or(0);
        } else if let Some(used) = used {
            n += 1;
            bytes += used;
        }
    }
    Ok((n, bytes, stream))
}

/// Keys of single access codes under `prefix`: desired states, outcomes,
/// histories, jobs.
async fn per_code_keys(redis: &Redis, prefix: &str) -> anyhow::Result<usize> {
    let keys = keys_under(redis, prefix).await?;
    Ok(keys.iter().filter(|k| [":desired:", ":outcome:", ":history:", ":job:"].iter().any(|p| k.contains(p))).count())
}

/// Scenario 7: `n` time-bound codes live a whole life (set, verified, watched
/// to their end of stay, expired) and their 2 s retention passes; then what is
/// left of them in Redis is compared with before: the keys under the
/// scenario's prefix and their bytes. The event stream is a fixed-size
/// structure (capped, not per code): its size is reported apart.
async fn scenario_lived(redis: &Redis, redis_url: &str, n: usize, rate: f64) -> anyhow::Result<Vec<Row>> {
    // Retention 2 s; rate-limit windows of 1 s (their keys expire with them);
    // no resync (these codes expire before one would come due).
    let extra = [("LATCHKEY_RETENTION_SECS", "2"), ("LATCHKEY_DEVICE_WINDOW_SECS", "1"), ("LATCHKEY_RESYNC_SECS", "0")];
    let p = Pipeline::start_with(redis_url, "lived", &extra).await?;
    let prefix = bench_prefix("lived");
    let (keys_before, before, _) = footprint(redis, &prefix).await?;
    let lead_ms = 3_000 + (3_000.0 * n as f64 / rate.max(100.0)) as i64;
    let starts = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let ends = (Utc::now() + chrono::Duration::milliseconds(lead_ms)).to_rfc3339();
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let sends = chunk.iter().map(|&i| {
            p.enqueue(
                json!({"access_code_id": format!("life-{i}"), "code": "2468", "starts_at": starts, "ends_at": ends}),
            )
        });
        futures::future::try_join_all(sends).await?;
    }
    p.wait_outcomes("succeeded", n as u64, Duration::from_secs(600)).await?;
    let (_, alive, _) = footprint(redis, &prefix).await?;
    p.wait_outcomes("expired", n as u64, Duration::from_secs(600)).await?;
    // Retention passes; Redis expires the keys (SCAN meets every key, so an
    // expired one is dropped when met rather than left to the sampling).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let per_code = per_code_keys(redis, &prefix).await?;
        if per_code == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{per_code} keys of finished codes were not forgotten within 120 s");
    }
    let (keys_after, after, stream) = footprint(redis, &prefix).await?;
    p.stop().await;
    let left = after as i64 - before as i64;
    let peak = alive.saturating_sub(before);
    // What is left, against what the codes took while alive.
    let pct = 100.0 * left as f64 / peak.max(1) as f64;
    let alive_per_code = peak / n as u64;
    Ok(vec![Row::new(
        format!("7. Redis after {n} codes lived and were forgotten"),
        format!(
            "keys {keys_before} -> {keys_after}, {before} -> {after} bytes: {:.3} bytes left per code ({pct:.4}% of the {peak} bytes they took alive, {alive_per_code} each); event stream, capped, {stream} bytes apart",
            left as f64 / n as f64
        ),
        json!({"scenario": "lived_memory", "codes": n, "keys_before": keys_before, "keys_after": keys_after, "before_bytes": before, "after_bytes": after, "left_pct_of_alive": pct, "alive_bytes": peak, "left_per_code_bytes": left as f64 / n as f64, "alive_per_code_bytes": alive_per_code, "stream_bytes": stream}),
    )])
}

/// Deletes the benchmark's keys from a Redis it did not start.
async fn clean_up(redis: &Redis) -> anyhow::Result<u64> {
    let keys = keys_under(redis, &format!("bench-*-{}", std::process::id())).await?;
    let mut conn = redis.conn();
    for chunk in keys.chunks(1000) {
        let _: () = redis::cmd("UNLINK").arg(chunk).query_async(&mut conn).await?;
    }
    Ok(keys.len() as u64)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (jobs, recs, rates, rate_secs, scheduled, waiting, lived, webhook_codes) = if args.smoke {
        (2_000, 200, vec![50], 1, 200, 20_000, 200, 50)
    } else {
        (
            args.jobs,
            args.reconciliations,
            args.rates.clone(),
            args.rate_secs,
            args.scheduled,
            args.waiting,
            args.lived,
            args.webhook_codes,
        )
    };
    let started_redis = args.redis_url.is_none();
    let local = crate::local_redis::resolve(args.redis_url.clone())?;
    let redis = Redis::connect(&RedisConfig::new(&local.url)).await?;
    let mut rows = Vec::new();

    let run = |n: u32| args.only.is_empty() || args.only.contains(&n);
    let mut rec_rate = 1000.0;
    let (mut rss_rec, mut rss_scale) = (None, None);
    if run(1) {
        eprintln!("scenario 1: {jobs} no-op jobs...");
        rows.push(scenario_queue(&redis, jobs).await?);
    }
    if run(2) || run(6) {
        eprintln!("scenario 2: {recs} reconciliations...");
        let (rec_rows, rate, rss) = scenario_reconcile(&redis, &local.url, recs).await?;
        rows.extend(rec_rows);
        (rec_rate, rss_rec) = (rate, Some(rss));
        eprintln!("scenario 2: the floor, {recs} empty reconciliations...");
        rows.push(scenario_floor(&redis, &local.url, recs).await?);
    }
    let mut latencies = Vec::new();
    if run(3) || run(5) {
        for &rate in &rates {
            eprintln!("scenario 3: {rate}/s for {rate_secs} s...");
            let (row, spread) = scenario_latency(&local.url, rate, rate_secs).await?;
            rows.push(row);
            latencies.push((rate, spread));
        }
    }
    if run(4) {
        eprintln!("scenario 4: {scheduled} time-bound codes...");
        rows.extend(scenario_starts_at(&redis, &local.url, scheduled, rec_rate).await?);
    }
    if run(7) {
        eprintln!("scenario 7: {lived} codes live a whole life...");
        rows.extend(scenario_lived(&redis, &local.url, lived, rec_rate).await?);
    }
    if run(8) {
        eprintln!("scenario 8: {webhook_codes} codes on 2 s devices, without webhooks and with...");
        rows.extend(scenario_webhooks(&local.url, webhook_codes).await?);
    }
    if run(9) {
        let puts = if args.smoke { 500 } else { args.http_puts };
        eprintln!("scenario 9: {puts} PUTs over HTTP, then HTTP against Redis...");
        rows.extend(scenario_http(&local.url, puts, &rates, rate_secs).await?);
    }
    if run(10) {
        let rate = rates.first().copied().unwrap_or(200);
        eprintln!("scenario 10: {recs} reconciliations and {rate}/s, on one node and on a three-master cluster...");
        rows.extend(scenario_cluster(&local.url, recs, rate, rate_secs).await?);
    }
    if run(5) || run(6) {
        eprintln!("scenario 5: {waiting} waiting verifications...");
        let (scale_rows, rss) = scenario_scale(&redis, &local.url, waiting, rate_secs, &latencies).await?;
        rows.extend(scale_rows);
        rss_scale = Some(rss);
    }
    if let (Some(rss_rec), Some(rss_scale)) = (rss_rec, rss_scale) {
        rows.push(Row::new(
            "6. worker peak RSS, scenario 2",
            format!("{rss_rec:.1} MB"),
            json!({"scenario": "worker_rss", "during": "reconcile", "peak_mb": (rss_rec * 10.0).round() / 10.0}),
        ));
        rows.push(Row::new(
            "6. worker peak RSS, scenario 5",
            format!("{rss_scale:.1} MB"),
            json!({"scenario": "worker_rss", "during": "waiting", "peak_mb": (rss_scale * 10.0).round() / 10.0}),
        ));
    }

    if let Some(dir) = &args.peers
        && let Err(e) = peers(dir, &local.url, jobs, recs, &mut rows).await
    {
        eprintln!("the BullMQ peers could not run: {e:#}");
    }
    if !started_redis {
        let n = clean_up(&redis).await?;
        eprintln!("deleted the benchmark's {n} keys");
    }
    println!("{:<56} FIGURE", "SCENARIO");
    for r in &rows {
        println!("{:<56} {}", r.scenario, r.figure);
    }
    for r in &rows {
        let mut line = r.json.clone();
        line["system"] = line.get("system").cloned().unwrap_or_else(|| json!("latchkey"));
        println!("{line}");
    }
    Ok(())
}

/// The figure `key` of the first latchkey row of `scenario`.
fn figure_of(rows: &[Row], scenario: &str, key: &str) -> Option<f64> {
    rows.iter().find(|r| r.json["scenario"] == scenario && r.json.get("system").is_none())?.json[key].as_f64()
}

/// The row of `ours` (latchkey's figure `key` of `scenario`) over
/// `theirs`, when both were measured.
fn ratio_row(rows: &[Row], scenario: &str, key: &str, theirs: &Value, label: &str, json_scenario: &str) -> Option<Row> {
    let r = figure_of(rows, scenario, key)? / theirs.as_f64()?;
    Some(Row::new(label, format!("{r:.2}x"), json!({"scenario": json_scenario, "ratio": (r * 100.0).round() / 100.0})))
}

/// BullMQ, side by side: the no-op and reconciliation scripts of `shared/peers`
/// against the same Redis and the same kind of simulator, and latchkey's ratio
/// to each.
async fn peers(
    dir: &std::path::Path,
    redis_url: &str,
    jobs: u64,
    recs: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let port = redis_url.rsplit(':').next().unwrap_or("6379").trim_end_matches('/').to_string();
    eprintln!("peer: BullMQ no-op...");
    let noop = peer(dir, "bull-noop.js", &[jobs.to_string(), "100".into()], &[("RPORT", port.clone())])?;
    let ratio = ratio_row(
        rows,
        "queue_noop",
        "process_per_s",
        &noop["process_per_s"],
        "1. latchkey / BullMQ",
        "ratio_queue_noop",
    );
    rows.push(Row::new("1. BullMQ, no-op jobs", format!("{} jobs/s", noop["process_per_s"]), noop));
    rows.extend(ratio);
    eprintln!("peer: BullMQ reconciliations...");
    let seam = instant_seam().await?;
    let seam_port = seam.url().rsplit(':').next().unwrap_or_default().to_string();
    let rec =
        peer(dir, "bull-reconcile.js", &[recs.to_string(), "64".into()], &[("RPORT", port), ("SEAM_PORT", seam_port)])?;
    seam.shutdown().await;
    let theirs = &rec["reconciliations_per_s"];
    let ratios = [
        ratio_row(rows, "reconcile", "per_s", theirs, "2. latchkey / BullMQ", "ratio_reconcile"),
        ratio_row(
            rows,
            "reconcile_floor",
            "per_s",
            theirs,
            "2. the floor / BullMQ (the most latchkey / BullMQ can be here)",
            "ratio_reconcile_floor",
        ),
    ];
    let budget = budget_row(rows, theirs);
    let figure = format!("{theirs} reconciliations/s");
    rows.push(Row::new("2. BullMQ, reconciliations", figure, rec));
    rows.extend(ratios.into_iter().flatten());
    rows.extend(budget);
    Ok(())
}

/// What 3 times BullMQ's reconciliations per second (`theirs`) leaves for one
/// reconciliation: the machine's CPU time per reconciliation at that rate,
/// beside what the floor (the round trips and Seam calls, empty) took and
/// what the Redis commands of latchkey's scripts took, all measured in this
/// run. The floor plus those commands over the budget means no latchkey
/// that runs those commands reaches 3x on this machine, however little its
/// Lua and its worker cost.
fn budget_row(rows: &[Row], theirs: &Value) -> Option<Row> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let budget = cores * 1e6 / (3.0 * theirs.as_f64()?);
    let floor = (figure_of(rows, "reconcile_floor", "redis_s_per_1000")?
        + figure_of(rows, "reconcile_floor", "client_and_simulator_s_per_1000")?)
        * 1000.0;
    let commands = figure_of(rows, "reconcile_redis_time", "commands_us")?;
    Some(Row::new(
        "2. CPU a reconciliation may take at 3x BullMQ",
        format!(
            "{budget:.0} µs on {cores} cores; the floor took {floor:.0} µs and latchkey's Redis commands {commands:.0} µs more ({:.0} µs)",
            floor + commands
        ),
        json!({"scenario": "reconcile_budget", "cores": cores, "budget_us": budget.round(), "floor_us": floor.round(), "commands_us": commands, "floor_and_commands_us": (floor + commands).round()}),
    ))
}
