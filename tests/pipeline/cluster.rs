//! The reconcile queue on a three-master Redis Cluster: its partitions spread
//! the keys over every master, and a master that restarts mid-run costs a
//! pause, not a desired state. (The rest of the pipeline suite runs on the
//! cluster too: `just test-cluster`.)

use std::time::Duration;

use futures::StreamExt;
use latchkey_core::OutcomeState;
use latchkey_tests::app::{AppOptions, spawn_app};

use crate::{finished, seed_codes, want};

#[tokio::test]
async fn the_keys_of_ten_thousand_codes_spread_evenly_over_three_masters() {
    let app = spawn_app(AppOptions { cluster: true, workers: 0, ..AppOptions::default() }).await;
    let enqueued: Vec<u64> = futures::stream::iter(0..10_000)
        .map(|i| {
            let store = app.store.clone();
            async move {
                let desired =
                    serde_json::json!({"access_code_id": format!("ac_{i:05}"), "code": format!("{}", 100_000 + i)});
                store.enqueue(want(desired)).await.expect("enqueue")
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(enqueued.iter().all(|g| *g == 1));
    let masters: Vec<&latchkey_tests::RedisServer> = std::iter::once(&app.redis).chain(&app.other_masters).collect();
    let keys: Vec<u64> = masters.iter().map(|m| m.cli(&["dbsize"]).trim().parse().unwrap()).collect();
    let mean = keys.iter().sum::<u64>() as f64 / keys.len() as f64;
    let max = *keys.iter().max().unwrap() as f64;
    println!("keys per master: {keys:?}, max/mean {:.3}", max / mean);
    assert!(mean >= 30_000.0 / 3.0, "every code has its desired state, outcome and job: {keys:?}");
    assert!(max / mean <= 1.2, "keys per master {keys:?}: max/mean {:.3}", max / mean);
    app.stop().await;
}

#[tokio::test]
async fn a_master_restarted_mid_run_loses_nothing() {
    let mut app = spawn_app(AppOptions {
        cluster: true,
        workers: 2,
        // (what a production master has: every write on disk before it is acknowledged)
        redis_args: vec!["--appendonly", "yes", "--appendfsync", "always"],
        ..AppOptions::default()
    })
    .await;
    let codes = seed_codes(&app, 300, Duration::from_millis(300), 700_000).await;
    let halfway = std::time::Instant::now() + Duration::from_secs(30);
    while app.store.queue().counters().await.unwrap().get("outcome_succeeded").copied().unwrap_or(0) < 100 {
        assert!(std::time::Instant::now() < halfway, "the run never got a third of the way");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.other_masters[0].restart();
    for (id, generation) in &codes {
        let o = finished(&app, id, *generation, Duration::from_secs(60)).await;
        assert_eq!(o.state, OutcomeState::Succeeded, "{id}: {o:?}");
    }
    let depth = app.store.queue().depth().await.unwrap();
    assert_eq!(depth.dead, 0, "nothing became a dead letter");
    app.stop().await;
}
