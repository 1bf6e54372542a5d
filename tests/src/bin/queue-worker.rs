//! A worker process for the fault tests: runs probe jobs from one queue and
//! records each start and finish in Redis (`<base>:test:started` and
//! `<base>:test:finished`, JSON lines), so a test can kill it with a real
//! signal and still see what it did.
//!
//! Environment: `REDIS_URL`, `QUEUE`, `SLEEP_MS` (how long each job takes),
//! `CONCURRENCY`, and optionally `LEASE_MS`, `HEARTBEAT_MS`, `POD_NAME`.

use std::time::Duration;

use apalis::prelude::*;
use latchkey_store::{JobInfo, Queue, QueueConfig, Redis, RedisConfig, WorkerOptions};
use latchkey_tests::worker::Probe;
use redis::AsyncCommands;

#[derive(Clone)]
struct Recorder {
    conn: latchkey_store::RedisConn,
    base: String,
    identity: String,
    sleep: Duration,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn handle(_probe: Probe, info: Data<JobInfo>, rec: Data<Recorder>) -> Result<(), BoxDynError> {
    let line = |event: &str| {
        serde_json::json!({"event": event, "id": info.id, "attempt": info.attempt, "identity": rec.identity, "ms": latchkey_tests::now_ms()})
            .to_string()
    };
    let mut conn = rec.conn.clone();
    let _: () = conn.rpush(format!("{}:test:started", rec.base), line("started")).await?;
    tokio::time::sleep(rec.sleep).await;
    let _: () = conn.rpush(format!("{}:test:finished", rec.base), line("finished")).await?;
    Ok(())
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let url = std::env::var("REDIS_URL").expect("REDIS_URL");
    let name = std::env::var("QUEUE").expect("QUEUE");
    let redis = Redis::connect(&RedisConfig::new(url)).await.expect("connect");
    let queue = Queue::new(redis.clone(), &name, QueueConfig::default()).expect("queue");
    let defaults = WorkerOptions::default();
    let opts = WorkerOptions {
        lease: Duration::from_millis(env_or("LEASE_MS", defaults.lease.as_millis() as u64)),
        heartbeat: Duration::from_millis(env_or("HEARTBEAT_MS", defaults.heartbeat.as_millis() as u64)),
        ..defaults
    };
    let backend = queue.backend::<Probe>(opts);
    let recorder = Recorder {
        conn: redis.conn(),
        base: queue.home().base().to_string(),
        identity: backend.identity().to_string(),
        sleep: Duration::from_millis(env_or("SLEEP_MS", 0)),
    };
    println!("ready {}", recorder.identity);
    let worker = WorkerBuilder::new("queue-worker")
        .backend(backend)
        .data(recorder)
        .concurrency(env_or("CONCURRENCY", 8) as usize)
        .build(handle);
    worker.run().await.expect("worker runs until killed");
}
