//! Property 2: an idle worker starts a job within 50 ms (p99) of its due time,
//! for jobs pushed by another process (`redis-cli` here): no polling gap, no
//! lost wake-up. The worker's idle poll is 2 s, so a missed wake-up would show.

use std::{process::Command, time::Duration};

use latchkey_store::QueueConfig;
use latchkey_tests::{RedisServer, now_ms, percentile, worker::*, workspace_root};

use crate::queue;

fn cli_push(url: &str, base: &str, jobs: &[(String, String, u64)]) {
    let script = workspace_root().join("crates/latchkey-store/lua/push.lua");
    let mut cmd = Command::new("redis-cli");
    cmd.arg("-u").arg(url).arg("--eval").arg(&script).arg(base).arg(",").arg("4");
    for (id, payload, run_at) in jobs {
        cmd.arg(id).arg(payload).arg(run_at.to_string()).arg("0");
    }
    let out = cmd.output().expect("run redis-cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn an_idle_worker_starts_jobs_from_another_process_within_50ms_p99() {
    let redis = RedisServer::start();
    let url = redis.url();
    let q = queue(&url, "pickup", QueueConfig::default()).await;
    let base = q.home().base().to_string();
    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, test_options(), 64, &runs);
    tokio::time::sleep(Duration::from_millis(300)).await; // idle, waiting

    // 200 jobs scheduled over two seconds, pushed in one call by another process.
    let start = now_ms() + 800;
    let scheduled: Vec<(String, String, u64)> = (0..200)
        .map(|i| {
            let due = start + i * 10;
            (format!("s{i}"), format!(r#"{{"n":{i},"due_ms":{due}}}"#), due)
        })
        .collect();
    cli_push(&url, &base, &scheduled);
    // 40 jobs for now, each pushed by its own short-lived process.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for i in 0..40 {
        cli_push(&url, &base, &[(format!("n{i}"), format!(r#"{{"n":{}}}"#, 1000 + i), 0)]);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    runs.wait_for_successes(240, Duration::from_secs(20)).await;

    let mut lateness: Vec<u64> = runs
        .finished()
        .iter()
        .map(|r| {
            let due = if r.probe.due_ms > 0 { r.probe.due_ms } else { r.enqueued_ms };
            r.started_ms.saturating_sub(due)
        })
        .collect();
    lateness.sort();
    let (p50, p99, max) = (percentile(&lateness, 50.0), percentile(&lateness, 99.0), *lateness.last().unwrap());
    println!("pickup lateness over {} jobs: p50 {p50} ms, p99 {p99} ms, max {max} ms", lateness.len());
    assert!(p99 <= 50, "p99 pickup lateness {p99} ms");
    assert!(runs.finished().iter().all(|r| r.started_ms + 5 >= r.probe.due_ms), "no job started before it was due");
    worker.stop().await;
}
