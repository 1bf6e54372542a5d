//! `latchkey bench`: throughput and latency figures, printed as a table and as
//! JSON lines, with BullMQ side by side when its peer scripts are available.
//!
//! 1. queue only: enqueue and process N no-op jobs with one worker;
//! 2. full reconciliations of ongoing codes against the simulator (zero device delay);
//! 3. latency from enqueue to `succeeded` at fixed offered rates;
//! 4. lateness of verifications scheduled at `starts_at`;
//!
//! plus the resident memory of this process (worker and simulator together).
//! Scenarios 5 (a million waiting verifications) and 6 (worker-only RSS) are
//! not measured yet.

use std::{
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use apalis::prelude::*;
use chrono::Utc;
use latchkey_core::DesiredStateInput;
use latchkey_fake_seam::{FakeSeam, SimConfig};
use latchkey_store::{NewJob, Queue, QueueConfig, Reconciliations, Redis, RedisConfig, WorkerOptions};
use latchkey_worker::{WorkerArgs, run_worker};
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use this Redis instead of starting one.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Jobs for scenario 1.
    #[arg(long, default_value_t = 20_000)]
    jobs: u64,
    /// Reconciliations for scenario 2.
    #[arg(long, default_value_t = 5_000)]
    reconciliations: usize,
    /// Offered rates for scenario 3, per second, each for `--rate-secs`.
    #[arg(long, value_delimiter = ',', default_values_t = [200u32, 2000])]
    rates: Vec<u32>,
    /// How long each offered rate runs, seconds.
    #[arg(long, default_value_t = 5)]
    rate_secs: u64,
    /// Time-bound codes for scenario 4.
    #[arg(long, default_value_t = 10_000)]
    scheduled: usize,
    /// A folder holding `shared/peers` with `npm install bullmq@5` done; BullMQ
    /// runs side by side when given.
    #[arg(long, env = "LATCHKEY_BENCH_PEERS")]
    peers: Option<PathBuf>,
    /// Tiny counts: every figure, in seconds (CI runs this).
    #[arg(long)]
    smoke: bool,
}

struct Row {
    scenario: String,
    figure: String,
    json: Value,
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn noop(_n: u64, done: Data<Arc<AtomicU64>>) -> Result<(), BoxDynError> {
    done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn scenario_queue(redis: &Redis, n: u64) -> anyhow::Result<Row> {
    let queue = Queue::new(redis.clone(), &format!("bench-{}", std::process::id()), QueueConfig::default())?;
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
    Ok(Row {
        scenario: "1. queue only, no-op jobs".into(),
        figure: format!("{process_per_s:.0} jobs/s ({enqueue_per_s:.0} enqueued/s)"),
        json: json!({"scenario": "queue_noop", "jobs": n, "process_per_s": process_per_s.round(), "enqueue_per_s": enqueue_per_s.round()}),
    })
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

/// A simulator with instant devices and a running worker against it.
struct Pipeline {
    seam: FakeSeam,
    store: Reconciliations,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    worker: tokio::task::JoinHandle<()>,
}

async fn pipeline(redis_url: &str, tag: &str) -> anyhow::Result<Pipeline> {
    let seam = instant_seam().await?;
    let prefix = format!("bench-{tag}-{}", std::process::id());
    let store = Reconciliations::new(
        Redis::connect(&RedisConfig::new(redis_url)).await?,
        QueueConfig { prefix: prefix.clone(), ..QueueConfig::default() },
    )?;
    let args = WorkerArgs {
        redis_url: redis_url.to_string(),
        seam_endpoint: seam.url(),
        seam_api_key: Some("seam_test".into()),
        concurrency: 128,
        prefix,
        verify_timeout_secs: 60,
        poll_base_ms: 5,
        poll_cap_ms: 100,
        max_attempts: 8,
        max_reapplies: 2,
        min_update_interval_ms: 0,
        attempt_patience_ms: 2000,
        device_limit: 1_000_000,
        device_window_secs: 60,
        key_rate: 0,
        key_burst: 20,
        verify_spread_ms: 0,
        drain_secs: 5,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        let _ = run_worker(args, async move {
            let _ = rx.await;
        })
        .await;
    });
    Ok(Pipeline { seam, store, stop: Some(tx), worker })
}

impl Pipeline {
    async fn enqueue(&self, json: Value) -> anyhow::Result<u64> {
        Ok(self.store.enqueue(serde_json::from_value::<DesiredStateInput>(json)?).await?)
    }

    async fn wait_all(&self, n: u64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.store.queue().counters().await?.get("completed").copied().unwrap_or(0) < n {
            anyhow::ensure!(Instant::now() < deadline, "reconciliations did not finish within {limit:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = self.worker.await;
        self.seam.shutdown().await;
    }
}

async fn scenario_reconcile(redis_url: &str, n: usize) -> anyhow::Result<(Row, f64)> {
    let p = pipeline(redis_url, "rec").await?;
    let t = Instant::now();
    for i in 0..n {
        p.enqueue(json!({"access_code_id": format!("ac-{i}"), "code": "1234", "name": format!("guest {i}")})).await?;
    }
    p.wait_all(n as u64, Duration::from_secs(600)).await?;
    let per_s = n as f64 / t.elapsed().as_secs_f64();
    let rss = rss_mb();
    p.stop().await;
    Ok((
        Row {
            scenario: "2. full reconciliations (ongoing)".into(),
            figure: format!("{per_s:.0} reconciliations/s"),
            json: json!({"scenario": "reconcile", "reconciliations": n, "per_s": per_s.round()}),
        },
        rss,
    ))
}

async fn scenario_latency(redis_url: &str, rate: u32, secs: u64) -> anyhow::Result<Row> {
    let p = pipeline(redis_url, &format!("lat{rate}")).await?;
    let n = (rate as u64 * secs) as usize;
    let start = Instant::now();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        p.enqueue(json!({"access_code_id": format!("lat-{rate}-{i}"), "code": "4321"})).await?;
    }
    p.wait_all(n as u64, Duration::from_secs(300)).await?;
    let mut lat: Vec<i64> = Vec::with_capacity(n);
    for i in 0..n {
        if let Some(o) = p.store.outcome(&format!("lat-{rate}-{i}")).await?
            && let Some(f) = o.finished_at
        {
            lat.push((f - o.enqueued_at).num_milliseconds());
        }
    }
    lat.sort();
    let (p50, p99, max) = (percentile(&lat, 50.0), percentile(&lat, 99.0), lat.last().copied().unwrap_or(0));
    p.stop().await;
    Ok(Row {
        scenario: format!("3. enqueue -> succeeded at {rate}/s"),
        figure: format!("p50 {p50} ms, p99 {p99} ms, max {max} ms"),
        json: json!({"scenario": "latency", "rate_per_s": rate, "n": n, "p50_ms": p50, "p99_ms": p99, "max_ms": max}),
    })
}

async fn scenario_starts_at(redis_url: &str, n: usize) -> anyhow::Result<Row> {
    let p = pipeline(redis_url, "sched").await?;
    // A lead long enough to enqueue them all first: 5 s plus 1 ms per code.
    let first_start = Utc::now() + chrono::Duration::milliseconds(5_000 + n as i64);
    let ends = first_start + chrono::Duration::days(2);
    let starts: Vec<_> = (0..n).map(|i| first_start + chrono::Duration::milliseconds((i % 3000) as i64)).collect();
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let sends = chunk.iter().map(|&i| {
            p.enqueue(json!({"access_code_id": format!("tb-{i}"), "starts_at": starts[i].to_rfc3339(), "ends_at": ends.to_rfc3339()}))
        });
        futures::future::try_join_all(sends).await?;
    }
    anyhow::ensure!(Utc::now() < first_start, "enqueueing {n} codes took past their start; use fewer");
    p.wait_all(n as u64, Duration::from_secs(300)).await?;
    // Each code's verification poll is its first read at or after starts_at (an earlier read
    // learned the device at enqueue time).
    let mut reads: std::collections::HashMap<String, Vec<chrono::DateTime<Utc>>> = Default::default();
    for r in p.seam.requests().into_iter().filter(|r| r.path == "/access_codes/get") {
        if let Some(id) = r.access_code_id {
            reads.entry(id).or_default().push(r.at);
        }
    }
    let mut late: Vec<i64> = (0..n)
        .filter_map(|i| {
            let verify = reads
                .get(&format!("tb-{i}"))?
                .iter()
                .filter(|t| **t >= starts[i] - chrono::Duration::seconds(1))
                .min()?;
            Some((*verify - starts[i]).num_milliseconds())
        })
        .collect();
    late.sort();
    let (p50, p99, max) = (percentile(&late, 50.0), percentile(&late, 99.0), late.last().copied().unwrap_or(0));
    p.stop().await;
    Ok(Row {
        scenario: format!("4. verification lateness at starts_at ({n} codes)"),
        figure: format!("p50 {p50} ms, p99 {p99} ms, max {max} ms"),
        json: json!({"scenario": "starts_at_lateness", "codes": n, "p50_ms": p50, "p99_ms": p99, "max_ms": max}),
    })
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

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (jobs, recs, rates, rate_secs, scheduled) = if args.smoke {
        (2_000, 200, vec![50], 1, 200)
    } else {
        (args.jobs, args.reconciliations, args.rates.clone(), args.rate_secs, args.scheduled)
    };
    let local = crate::local_redis::resolve(args.redis_url.clone())?;
    let redis = Redis::connect(&RedisConfig::new(&local.url)).await?;
    let mut rows = Vec::new();

    eprintln!("scenario 1: {jobs} no-op jobs...");
    rows.push(scenario_queue(&redis, jobs).await?);
    eprintln!("scenario 2: {recs} reconciliations...");
    let (row, rss) = scenario_reconcile(&local.url, recs).await?;
    rows.push(row);
    for rate in rates {
        eprintln!("scenario 3: {rate}/s for {rate_secs} s...");
        rows.push(scenario_latency(&local.url, rate, rate_secs).await?);
    }
    eprintln!("scenario 4: {scheduled} time-bound codes...");
    rows.push(scenario_starts_at(&local.url, scheduled).await?);
    rows.push(Row {
        scenario: "6. resident memory after scenario 2".into(),
        figure: format!("{rss:.0} MB (worker and simulator in one process)"),
        json: json!({"scenario": "rss", "mb": rss.round()}),
    });

    if let Some(dir) = &args.peers
        && let Err(e) = peers(dir, &local.url, jobs, recs, &mut rows).await
    {
        eprintln!("the BullMQ peers could not run: {e:#}");
    }
    println!("{:<48} FIGURE", "SCENARIO");
    for r in &rows {
        println!("{:<48} {}", r.scenario, r.figure);
    }
    for r in &rows {
        let mut line = r.json.clone();
        line["system"] = line.get("system").cloned().unwrap_or_else(|| json!("latchkey"));
        println!("{line}");
    }
    Ok(())
}

/// BullMQ, side by side: the no-op and reconciliation scripts of `shared/peers`
/// against the same Redis and the same kind of simulator.
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
    rows.push(Row {
        scenario: "1. BullMQ, no-op jobs".into(),
        figure: format!("{} jobs/s", noop["process_per_s"]),
        json: noop,
    });
    eprintln!("peer: BullMQ reconciliations...");
    let seam = instant_seam().await?;
    let seam_port = seam.url().rsplit(':').next().unwrap_or_default().to_string();
    let rec =
        peer(dir, "bull-reconcile.js", &[recs.to_string(), "64".into()], &[("RPORT", port), ("SEAM_PORT", seam_port)])?;
    rows.push(Row {
        scenario: "2. BullMQ, reconciliations".into(),
        figure: format!("{} reconciliations/s", rec["reconciliations_per_s"]),
        json: rec,
    });
    seam.shutdown().await;
    Ok(())
}
