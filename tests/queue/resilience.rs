//! Property 7: a 5 s Redis stall (`CLIENT PAUSE`) or a Redis restart does not
//! kill the worker: it reconnects with backoff, and with `appendonly yes`
//! (`appendfsync always` here) no acknowledged push is lost.

use std::time::{Duration, Instant};

use latchkey_store::{NewJob, QueueConfig, WorkerOptions};
use latchkey_tests::{RedisServer, worker::*};

use crate::queue;

fn probes(range: std::ops::Range<u64>, sleep_ms: u64) -> Vec<NewJob> {
    range.map(|n| NewJob::new(&Probe { n, sleep_ms, ..Default::default() }).unwrap()).collect()
}

#[tokio::test]
async fn a_five_second_client_pause_does_not_kill_the_worker() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "pause", QueueConfig::default()).await;
    let runs = Runs::default();
    let w = spawn_probe_worker(&q, test_options(), 8, &runs);
    q.push_many(probes(0..10, 0)).await.unwrap();
    runs.wait_for_successes(10, Duration::from_secs(10)).await;

    redis.pause(Duration::from_secs(5));
    let paused = Instant::now();
    let producer = q.clone();
    let push = tokio::spawn(async move { producer.push_many(probes(10..20, 0)).await });
    runs.wait_for_successes(20, Duration::from_secs(30)).await;
    assert!(paused.elapsed() >= Duration::from_millis(4500), "jobs ran during the pause?");
    assert_eq!(push.await.unwrap().unwrap().len(), 10, "the push made during the pause was acknowledged");
    assert!(w.is_running(), "the worker survived the stall");
    w.stop().await;
}

#[tokio::test]
async fn the_worker_rides_out_a_redis_restart_and_no_acknowledged_push_is_lost() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let q = queue(&redis.url(), "restart", QueueConfig::default()).await;
    let runs = Runs::default();
    let opts = WorkerOptions { lease: Duration::from_secs(2), heartbeat: Duration::from_millis(400), ..test_options() };
    let w = spawn_probe_worker(&q, opts, 4, &runs);
    assert_eq!(q.push_many(probes(0..300, 20)).await.unwrap().len(), 300);
    runs.wait_for_successes(40, Duration::from_secs(20)).await;

    redis.kill(); // SIGKILL: only what was fsynced survives
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart();
    let restarted = Instant::now();
    // A producer's pushes after the restart are acknowledged and run too.
    let mut pushed_after = None;
    while pushed_after.is_none() {
        match q.push_many(probes(300..350, 0)).await {
            Ok(p) => pushed_after = Some(p),
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                assert!(restarted.elapsed() < Duration::from_secs(20), "producer could not push: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    runs.wait_for_successes(350, Duration::from_secs(60)).await;
    let converged = restarted.elapsed();
    let total_runs = runs.finished().iter().filter(|r| r.ok).count();
    println!("converged {converged:?} after the restart; {} jobs ran twice", total_runs - 350);
    assert!(w.is_running(), "the worker survived the restart");
    w.stop().await;
}
