//! Property 5: promotion works in bounded chunks. 100,000 jobs due in the same
//! instant are all processed, none lost, none twice, no Lua limit hit.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use latchkey_store::{NewJob, QueueConfig, WorkerOptions};
use latchkey_tests::{RedisServer, now_ms, worker::*};

use crate::{queue, wait_for_counter};

#[tokio::test]
async fn a_hundred_thousand_jobs_due_at_the_same_instant_are_all_processed() {
    const N: u64 = 100_000;
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "burst", QueueConfig::default()).await;
    // Far enough out that pushing them all (a debug build on a loaded 2-core
    // CI machine took over 3 s) ends before any is due.
    let due = now_ms() + 8_000;
    let pushed = q
        .push_many((0..N).map(|n| NewJob::new(&Probe { n, ..Default::default() }).unwrap().run_at_ms(due)))
        .await
        .unwrap();
    assert_eq!(pushed.len() as u64, N);
    assert!(now_ms() < due, "pushing {N} jobs took past their due time; raise the lead");
    assert_eq!(q.depth().await.unwrap().scheduled, N);
    tokio::time::sleep(Duration::from_millis(due.saturating_sub(now_ms()) + 50)).await;

    let started = Instant::now();
    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, WorkerOptions { fetch_batch: 200, ..test_options() }, 256, &runs);
    wait_for_counter(&q, "completed", N).await;
    let elapsed = started.elapsed();
    println!("100k due jobs processed in {elapsed:?} ({:.0} jobs/s)", N as f64 / elapsed.as_secs_f64());

    let finished = runs.finished();
    assert_eq!(finished.len() as u64, N, "each job ran exactly once");
    assert_eq!(finished.iter().map(|r| r.probe.n).collect::<HashSet<_>>().len() as u64, N);
    assert_eq!(q.depth().await.unwrap(), latchkey_store::Depth::default());
    worker.stop().await;
}
