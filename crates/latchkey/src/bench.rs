//! `latchkey bench`: throughput figures, printed as a table and JSON lines.
//! Scenario 1 (queue only): enqueue N no-op jobs in bulk, then process them
//! with one worker, as `shared/peers/bull-noop.js` does for BullMQ.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use apalis::prelude::*;
use latchkey_store::{NewJob, Queue, QueueConfig, Redis, RedisConfig, WorkerOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use this Redis instead of starting one.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Jobs to enqueue and process.
    #[arg(long, default_value_t = 20_000)]
    jobs: u64,
    /// Jobs run at once by the worker.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
}

async fn noop(_n: u64, done: Data<Arc<AtomicU64>>) -> Result<(), BoxDynError> {
    done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let local = crate::local_redis::resolve(args.redis_url)?;
    let redis = Redis::connect(&RedisConfig::new(&local.url)).await?;
    let queue = Queue::new(redis, &format!("bench-{}", std::process::id()), QueueConfig::default())?;
    let n = args.jobs;

    eprintln!("scenario 1: enqueue {n} no-op jobs...");
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        queue.push_many(chunk.iter().map(|i| NewJob::new(i).expect("serialisable"))).await?;
    }
    let enqueue_s = t.elapsed().as_secs_f64();

    eprintln!("scenario 1: process them with one worker (concurrency {})...", args.concurrency);
    let done = Arc::new(AtomicU64::new(0));
    let worker = WorkerBuilder::new("bench")
        .backend(queue.backend::<u64>(WorkerOptions { fetch_batch: 200, ..WorkerOptions::default() }))
        .data(done.clone())
        .concurrency(args.concurrency)
        .build(noop);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let t = Instant::now();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stop_rx.await;
        Ok::<(), WorkerError>(())
    }));
    loop {
        let completed = queue.counters().await?.get("completed").copied().unwrap_or(0);
        if completed >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let process_s = t.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = running.await;

    let enqueue_per_s = (n as f64 / enqueue_s).round();
    let process_per_s = (n as f64 / process_s).round();
    println!("{:<28} {:>12} {:>14}", "SCENARIO", "ENQUEUE/S", "PROCESS/S");
    println!("{:<28} {:>12} {:>14}", "1. queue only (no-op jobs)", enqueue_per_s, process_per_s);
    println!(
        "{}",
        serde_json::json!({"system": "latchkey", "scenario": "queue_noop", "jobs": n, "concurrency": args.concurrency, "enqueue_per_s": enqueue_per_s, "process_per_s": process_per_s})
    );
    Ok(())
}
