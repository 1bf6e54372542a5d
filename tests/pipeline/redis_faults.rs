//! Redis trouble under the pipeline: a SIGKILLed Redis restarted mid-run
//! (`appendonly yes`), a 5 s `CLIENT PAUSE`, a black-holed link. Workers
//! reconnect on their own and every desired state still ends on the lock; a
//! worker cut off past its lease never sends an older PIN after a newer one.

use std::time::{Duration, Instant};

use latchkey_core::OutcomeState;
use latchkey_fake_seam::{DeviceBehaviour, Faults, SeedCode};
use latchkey_tests::app::{AppOptions, TestApp, spawn_app};
use serde_json::json;

use crate::{finished, seed_codes, want};

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
        cluster: false,
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
    let app = spawn_app(AppOptions { cluster: false, workers: 2, ..AppOptions::default() }).await;
    let codes = seed_codes(&app, 300, Duration::from_millis(800), 30_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.redis.pause(Duration::from_secs(5));
    let paused = Instant::now();
    all_converge(&app, &codes).await;
    println!("CLIENT PAUSE 5 s: all {} converged {:?} after the pause began", codes.len(), paused.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn the_pipeline_rides_out_a_black_holed_then_cut_redis_connection() {
    let app = spawn_app(AppOptions { cluster: false, workers: 2, through_proxy: true, ..AppOptions::default() }).await;
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

/// Worker A sends generation 1 and Seam stalls it, then fails it; meanwhile
/// A is cut off from Redis longer than its lease, generation 2 arrives, and
/// worker B takes the job over and sets generation 2's PIN. When A's stalled
/// call fails, its in-process retry must not send generation 1 after B's
/// update: before each retry a run checks, in Redis, that it still holds
/// its job, and a run cut off from Redis cannot.
#[tokio::test]
async fn a_worker_cut_off_past_its_lease_never_lands_an_older_pin_after_a_newer_one() {
    let lease = Duration::from_secs(3);
    let mut app = spawn_app(AppOptions { cluster: false, workers: 0, lease, ..AppOptions::default() }).await;
    let proxy = latchkey_tests::proxy::Proxy::start(format!("127.0.0.1:{}", app.redis.port()).parse().unwrap()).await;
    let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(50) });
    let id = app.seam.add_access_code(&device, SeedCode { code: Some("1111".into()), ..SeedCode::default() });
    // The next Seam request (A's update) is caught in an outage: 6 s, then 503.
    let stall = Duration::from_secs(6);
    app.seam.set_faults(Faults { stall_next: 1, stall_ms: stall.as_millis() as u64, ..Faults::default() });
    let mut a = app.worker_args();
    a.redis.redis_url = proxy.url();
    app.start_worker_with(a);
    app.store.enqueue(want(json!({"access_code_id": id, "device_id": device, "code": "1001"}))).await.unwrap();
    // A recorded `applying` and its update is stuck at Seam: cut A off from Redis.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.seam.faults().stall_next > 0 {
        assert!(Instant::now() < deadline, "A's update never reached Seam");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cut_at = Instant::now();
    proxy.blackhole(true);
    let newer =
        app.store.enqueue(want(json!({"access_code_id": id, "device_id": device, "code": "2002"}))).await.unwrap();
    app.start_worker(); // B, straight to Redis: takes the job over once A's lease runs out
    let o = finished(&app, &id, newer, Duration::from_secs(30)).await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    assert!(cut_at.elapsed() < stall, "B set the newer PIN while A's call was still stuck (else this proves nothing)");
    // A's stuck call now fails; A would retry within a second or two.
    let updates =
        |status: u16| crate::calls(&app, &id, "/access_codes/update").iter().filter(|r| r.status == status).count();
    while updates(503) == 0 {
        assert!(cut_at.elapsed() < stall + Duration::from_secs(5), "A's stuck update never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stuck_for = cut_at.elapsed();
    let watch_until = Instant::now() + lease;
    while Instant::now() < watch_until {
        assert_eq!(app.seam.access_code(&id).unwrap()["code"], "2002", "an older PIN landed after the newer one");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(updates(200), 1, "only B's update went through: {:?}", crate::calls(&app, &id, "/access_codes/update"));
    println!(
        "cut off past its lease ({lease:?}): B set 2002 first; A's stalled update failed {stuck_for:?} after the cut; A sent no retry; the lock kept 2002"
    );
    proxy.blackhole(false);
    app.stop().await;
}
