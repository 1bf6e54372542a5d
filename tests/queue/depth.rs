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

/// `due` is what the autoscaler follows: work that could run now, including
/// scheduled jobs whose time has passed but that no worker has promoted yet.
#[tokio::test]
async fn due_counts_ready_and_overdue_jobs_but_not_future_ones() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "due", QueueConfig::default()).await;
    let now_ms = latchkey_tests::now_ms();
    q.push_many((0..3).map(|n| NewJob::new(&Probe { n, ..Default::default() }).unwrap())).await.unwrap();
    q.push_many((3..5).map(|n| NewJob::new(&Probe { n, ..Default::default() }).unwrap().run_at_ms(now_ms + 300)))
        .await
        .unwrap();
    q.push(NewJob::new(&Probe { n: 9, ..Default::default() }).unwrap().run_after(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(q.due().await.unwrap(), 3, "only the ready ones are due yet");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(q.due().await.unwrap(), 5, "the two scheduled 300 ms out are due now, unpromoted");
    assert_eq!(q.depth().await.unwrap().scheduled, 3, "nothing promoted them: no worker runs");
}
