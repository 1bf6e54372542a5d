//! `latchkey demo`: the queue at work, on a Redis of its own. Pushes a small
//! scenario (now, later, a flaky job, a poison job, a duplicate, a bulk batch),
//! runs a worker, shows progress and ends with a table of outcomes.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use apalis::prelude::*;
use latchkey_store::{JobInfo, NewJob, Queue, QueueConfig, Redis, RedisConfig, WorkerOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use this Redis instead of starting one (the demo's keys get a fresh queue name).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DemoJob {
    label: String,
    /// Fail this many attempts before succeeding.
    #[serde(default)]
    fail_times: u32,
    /// Give up at once (a permanent error).
    #[serde(default)]
    poison: bool,
}

#[derive(Debug, Default, Clone)]
struct Seen {
    attempts: u32,
    first_start_ms: Option<u64>,
    succeeded: bool,
}

type Board = Arc<Mutex<BTreeMap<String, Seen>>>;

async fn handle(
    job: DemoJob,
    info: Data<JobInfo>,
    board: Data<Board>,
    t0: Data<Instant>,
) -> Result<(), BoxDynError> {
    let ms = t0.elapsed().as_millis() as u64;
    {
        let mut b = board.lock().unwrap();
        let seen = b.entry(job.label.clone()).or_default();
        seen.attempts = info.attempt;
        seen.first_start_ms.get_or_insert(ms);
    }
    if job.poison {
        return Err(AbortError::new("this job can never succeed").into());
    }
    if info.attempt <= job.fail_times {
        return Err(format!("simulated failure {} of {}", info.attempt, job.fail_times).into());
    }
    board
        .lock()
        .unwrap()
        .entry(job.label)
        .or_default()
        .succeeded = true;
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let local = crate::local_redis::resolve(args.redis_url)?;
    println!(
        "Redis: {}{}",
        latchkey_store::redact_url(&local.url),
        if local.owned.is_some() {
            " (started for this demo)"
        } else {
            ""
        }
    );
    let redis = Redis::connect(&RedisConfig::new(&local.url)).await?;
    let name = format!("demo-{}", std::process::id());
    let queue = Queue::new(
        redis,
        &name,
        QueueConfig {
            max_attempts: 3,
            ..QueueConfig::default()
        },
    )?;

    let t0 = Instant::now();
    let board: Board = Arc::default();
    let opts = WorkerOptions {
        retry_base: Duration::from_millis(300),
        retry_cap: Duration::from_secs(2),
        ..WorkerOptions::default()
    };
    let worker = WorkerBuilder::new("demo-worker")
        .backend(queue.backend::<DemoJob>(opts))
        .data(board.clone())
        .data(t0)
        .concurrency(32)
        .build(handle);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stop_rx.await;
        Ok::<(), WorkerError>(())
    }));

    let job = |label: &str| DemoJob {
        label: label.to_string(),
        fail_times: 0,
        poison: false,
    };
    let mut plan: Vec<(String, &str)> = Vec::new();
    queue.push(NewJob::new(&job("now"))?).await?;
    plan.push(("now".into(), "runs at once"));
    queue
        .push(NewJob::new(&job("in 2 s"))?.run_after(Duration::from_secs(2)))
        .await?;
    plan.push(("in 2 s".into(), "scheduled 2,000 ms ahead"));
    queue
        .push(NewJob::new(&DemoJob {
            fail_times: 2,
            ..job("flaky")
        })?)
        .await?;
    plan.push(("flaky".into(), "fails twice, then succeeds"));
    queue
        .push(NewJob::new(&DemoJob {
            poison: true,
            ..job("poison")
        })?)
        .await?;
    plan.push(("poison".into(), "permanent error: dead letter"));
    let first = queue
        .push(NewJob::new(&job("dedup"))?.id("demo-dedup"))
        .await?;
    let second = queue
        .push(NewJob::new(&job("dedup (second push)"))?.id("demo-dedup"))
        .await?;
    plan.push(("dedup".into(), "same id pushed twice"));
    let bulk = queue
        .push_many(
            (0..1000).map(|i| NewJob::new(&job(&format!("bulk-{i:04}"))).expect("serialisable")),
        )
        .await?;
    println!(
        "pushed 5 jobs and a batch of {} in one round trip; duplicate push created: {} then {}",
        bulk.len(),
        first.created,
        second.created
    );

    let expected = 5 + bulk.len();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let settled = {
            let b = board.lock().unwrap();
            b.values().filter(|s| s.succeeded).count()
        } + queue.depth().await?.dead as usize;
        println!(
            "  {:>5} ms  settled {settled}/{expected}",
            t0.elapsed().as_millis()
        );
        if settled >= expected {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = &mut ctrl_c => { println!("interrupted"); break; }
        }
    }
    let _ = stop_tx.send(());
    let _ = running.await;

    let dead = queue.dead_letters(10).await?;
    let b = board.lock().unwrap();
    println!(
        "\n{:<8} {:<30} {:>10} {:>9}  OUTCOME",
        "JOB", "WHAT", "STARTED", "ATTEMPTS"
    );
    for (label, what) in &plan {
        let seen = b.get(label).cloned().unwrap_or_default();
        let outcome = if seen.succeeded {
            "succeeded".to_string()
        } else if let Some(d) = dead
            .iter()
            .find(|d| d.payload.contains(&format!("\"{label}\"")))
        {
            format!("dead letter: {}", d.error)
        } else {
            "pending".to_string()
        };
        let started = seen
            .first_start_ms
            .map_or("-".to_string(), |ms| format!("+{ms} ms"));
        println!(
            "{label:<8} {what:<30} {started:>10} {:>9}  {outcome}",
            seen.attempts
        );
    }
    let bulk_done = b
        .iter()
        .filter(|(l, s)| l.starts_with("bulk-") && s.succeeded)
        .count();
    println!(
        "{:<8} {:<30} {:>10} {:>9}  {bulk_done} of 1000 succeeded",
        "bulk", "1,000 jobs, one push", "", ""
    );
    Ok(())
}
