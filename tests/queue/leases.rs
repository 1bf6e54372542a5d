//! Property 3: reliable fetch. A job is leased to a per-process identity and
//! renewed while it runs; when its worker is killed with SIGKILL the job comes
//! back within the default lease (15 s budget) with its attempt count kept,
//! and a restarted worker with the same pod name starts new work at once.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use latchkey_store::{NewJob, Queue, QueueConfig, WorkerOptions};
use latchkey_tests::{RedisServer, now_ms, worker::*};
use redis::AsyncCommands;
use serde_json::Value;

use crate::{queue, raw};

/// Starts `queue-worker` and waits for it to say it is ready; returns its identity.
fn spawn_worker_process(url: &str, q: &Queue, pod: &str, sleep_ms: u64) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_queue-worker"))
        .env("REDIS_URL", url)
        .env("QUEUE", q.name())
        .env("POD_NAME", pod)
        .env("SLEEP_MS", sleep_ms.to_string())
        .env("CONCURRENCY", "8")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start queue-worker");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let identity = line.trim().strip_prefix("ready ").expect("ready line").to_string();
    (child, identity)
}

async fn events(url: &str, q: &Queue, which: &str) -> Vec<Value> {
    let lines: Vec<String> = raw(url).await.lrange(format!("{}:test:{which}", q.home().base()), 0, -1).await.unwrap();
    lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn wait_events(url: &str, q: &Queue, which: &str, n: usize, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let ev = events(url, q, which).await;
        if ev.len() >= n {
            return ev;
        }
        assert!(Instant::now() < deadline, "only {} of {n} {which} events after {timeout:?}", ev.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_killed_workers_jobs_return_within_the_default_lease_with_attempts_kept() {
    let redis = RedisServer::start();
    let url = redis.url();
    let q = queue(&url, "sigkill", QueueConfig::default()).await;
    let ids: Vec<String> = q
        .push_many((0..4).map(|n| NewJob::new(&Probe { n, ..Default::default() }).unwrap()))
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();

    // Worker A takes all four and would hold them for a minute.
    let (mut a, identity_a) = spawn_worker_process(&url, &q, "pod-a", 60_000);
    wait_events(&url, &q, "started", 4, Duration::from_secs(10)).await;
    assert_eq!(q.depth().await.unwrap().leased, 4);
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();
    let killed_at = now_ms();

    // The pod restarts under the same name: a new identity, and no waiting on the old one.
    let (mut b, identity_b) = spawn_worker_process(&url, &q, "pod-a", 0);
    assert_ne!(identity_a, identity_b);
    assert!(identity_b.starts_with("pod-a-"), "{identity_b}");
    let fresh = q.push(NewJob::new(&Probe { n: 99, ..Default::default() }).unwrap()).await.unwrap().id;
    let pushed_at = now_ms();
    let finished = wait_events(&url, &q, "finished", 1, Duration::from_secs(5)).await;
    assert_eq!(finished[0]["id"], fresh.as_str());
    let fresh_latency = finished[0]["ms"].as_u64().unwrap().saturating_sub(pushed_at);
    assert!(fresh_latency < 1000, "a new job waited {fresh_latency} ms on the restarted worker");

    wait_events(&url, &q, "finished", 5, Duration::from_secs(20)).await;
    let recovered: Vec<Value> = events(&url, &q, "started")
        .await
        .into_iter()
        .filter(|e| e["identity"] == identity_b.as_str() && ids.iter().any(|id| e["id"] == id.as_str()))
        .collect();
    assert_eq!(recovered.len(), 4, "each of A's jobs ran again on B");
    assert!(recovered.iter().all(|e| e["attempt"] == 2), "attempts kept: {recovered:?}");
    let recovery_ms = recovered.iter().map(|e| e["ms"].as_u64().unwrap()).min().unwrap() - killed_at;
    println!("recovery after SIGKILL: {recovery_ms} ms (lease {:?})", WorkerOptions::default().lease);
    assert!(recovery_ms <= 15_000, "jobs came back after {recovery_ms} ms");
    assert_eq!(q.counters().await.unwrap()["recovered"], 4);
    b.kill().unwrap();
    b.wait().unwrap();
}

#[tokio::test]
async fn a_running_jobs_lease_is_renewed_so_no_other_worker_takes_it() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "renew", QueueConfig::default()).await;
    let opts =
        WorkerOptions { lease: Duration::from_millis(600), heartbeat: Duration::from_millis(150), ..test_options() };
    let runs = Runs::default();
    let a = spawn_probe_worker(&q, opts.clone(), 2, &runs);
    let b = spawn_probe_worker(&q, opts, 2, &runs);
    q.push(NewJob::new(&Probe { n: 1, sleep_ms: 2500, ..Default::default() }).unwrap()).await.unwrap();
    runs.wait_for_successes(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs.started().len(), 1, "a job running 4 leases long ran once");
    assert_eq!(q.counters().await.unwrap().get("recovered"), None);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_clean_shutdown_hands_back_prefetched_jobs_and_deregisters() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "drain", QueueConfig::default()).await;
    let runs = Runs::default();
    // One at a time, with 32 prefetched: most of the 40 are leased but not started.
    let w = spawn_probe_worker(&q, test_options(), 1, &runs);
    q.push_many((0..40).map(|n| NewJob::new(&Probe { n, sleep_ms: 200, ..Default::default() }).unwrap()))
        .await
        .unwrap();
    runs.wait_until(Duration::from_secs(10), "one run", |r| !r.is_empty()).await;
    assert_eq!(q.workers_alive(Duration::from_secs(10)).await.unwrap().len(), 1);
    w.stop().await;
    let depth = q.depth().await.unwrap();
    assert_eq!(depth.leased, 0, "nothing stays leased after a clean shutdown");
    assert_eq!(depth.ready as usize + runs.finished().len(), 40);
    assert!(q.workers_alive(Duration::from_secs(10)).await.unwrap().is_empty(), "the worker left the registry");
    // Handed-back jobs did not lose an attempt.
    let runs2 = Runs::default();
    let w2 = spawn_probe_worker(&q, test_options(), 8, &runs2);
    runs2.wait_for_successes(depth.ready as usize, Duration::from_secs(20)).await;
    assert!(runs2.finished().iter().all(|r| r.attempt == 1));
    w2.stop().await;
}
