//! Redis trouble under the pipeline: a SIGKILLed Redis restarted mid-run
//! (`appendonly yes`), and a 5 s `CLIENT PAUSE`. Workers reconnect on their
//! own and every desired state still ends on the lock.

use std::time::{Duration, Instant};

use latchkey_core::OutcomeState;
use latchkey_tests::app::{AppOptions, TestApp, spawn_app};

use crate::{finished, seed_codes};

async fn all_converge(app: &TestApp, codes: &[(String, u64)]) {
    for (id, g) in codes {
        let o = finished(app, id, *g, Duration::from_secs(90)).await;
        assert_eq!(o.state, OutcomeState::Succeeded, "{id}: {o:?}");
        assert_eq!(
            app.seam.access_code(id).unwrap()["code"].as_str(),
            app.store.load(id).await.unwrap().unwrap().desired.code.as_deref()
        );
    }
}

#[tokio::test]
async fn the_pipeline_rides_out_a_redis_restart() {
    let mut app = spawn_app(AppOptions {
        workers: 2,
        redis_args: vec!["--appendonly", "yes", "--appendfsync", "always"],
        ..AppOptions::default()
    })
    .await;
    let codes = seed_codes(&app, 300, Duration::from_millis(800), 30_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let in_progress = app.store.queue().depth().await.unwrap();
    app.redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    app.redis.restart();
    let restarted = Instant::now();
    all_converge(&app, &codes).await;
    println!(
        "Redis SIGKILLed with {in_progress:?} in progress: all {} converged {:?} after the restart",
        codes.len(),
        restarted.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn the_pipeline_rides_out_a_five_second_client_pause() {
    let app = spawn_app(AppOptions { workers: 2, ..AppOptions::default() }).await;
    let codes = seed_codes(&app, 300, Duration::from_millis(800), 30_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = redis::Client::open(app.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(5000).arg("ALL").query_async(&mut conn).await.unwrap();
    let paused = Instant::now();
    all_converge(&app, &codes).await;
    println!("CLIENT PAUSE 5 s: all {} converged {:?} after the pause began", codes.len(), paused.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn the_pipeline_rides_out_a_black_holed_then_cut_redis_connection() {
    let app = spawn_app(AppOptions { workers: 2, through_proxy: true, ..AppOptions::default() }).await;
    let proxy = app.proxy.as_ref().unwrap();
    let codes = seed_codes(&app, 200, Duration::from_millis(800), 30_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.blackhole(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.cut();
    proxy.blackhole(false);
    let restored = Instant::now();
    all_converge(&app, &codes).await;
    println!(
        "3 s black hole, then cut: all {} converged {:?} after the link came back",
        codes.len(),
        restored.elapsed()
    );
    app.stop().await;
}
