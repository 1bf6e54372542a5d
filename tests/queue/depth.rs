//! Property 9: queue depth by state is cheap to read (four O(1) reads in one
//! round trip) and exact.

use std::time::Duration;

use latchkey_store::{Depth, NewJob, QueueConfig, WorkerOptions};
use latchkey_tests::{RedisServer, worker::*};

use crate::{queue, wait_for_counter};

#[tokio::test]
async fn depth_counts_ready_scheduled_leased_and_dead_jobs() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "depth", QueueConfig::default()).await;
    let runs = Runs::default();
    let w = spawn_probe_worker(&q, WorkerOptions { fetch_batch: 1, ..test_options() }, 1, &runs);

    q.push(NewJob::new(&Probe { n: 0, abort: true, ..Default::default() }).unwrap()).await.unwrap();
    wait_for_counter(&q, "dead", 1).await;
    q.push(NewJob::new(&Probe { n: 1, sleep_ms: 3_000, ..Default::default() }).unwrap()).await.unwrap();
    runs.wait_until(Duration::from_secs(5), "the blocker to start", |_| true).await;
    while runs.started().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    q.push_many((2..5).map(|n| NewJob::new(&Probe { n, ..Default::default() }).unwrap())).await.unwrap();
    q.push_many(
        (5..7).map(|n| NewJob::new(&Probe { n, ..Default::default() }).unwrap().run_after(Duration::from_secs(3600))),
    )
    .await
    .unwrap();

    assert_eq!(q.depth().await.unwrap(), Depth { ready: 3, scheduled: 2, leased: 1, dead: 1 });
    w.stop().await;
}
