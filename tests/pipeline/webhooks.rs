//! Seam's webhooks through `latchkey serve`: a signed delivery pulls the
//! code's job forward so it reads Seam now; a forged, replayed, oversized or
//! unsigned one changes nothing; a delivery repeated is one delivery; an
//! event about a code latchkey does not manage is dropped.

use std::time::{Duration, Instant};

use latchkey_core::OutcomeState;
use latchkey_fake_seam::{SeedCode, sign};
use latchkey_tests::app::{AppOptions, TEST_WEBHOOK_SECRET, TestApp, spawn_app};
use redis::AsyncCommands;
use serde_json::json;

use crate::{calls, device, finished, raw, until_record, update_landed, want};

/// Polls so far apart that only a webhook explains a quick outcome.
fn far_polls() -> AppOptions {
    AppOptions {
        webhooks: true,
        poll_base: Duration::from_secs(30),
        poll_cap: Duration::from_secs(60),
        ..AppOptions::default()
    }
}

/// `n` codes, each on a device of its own taking `delay`, with a new PIN
/// (`pin_base + i`) enqueued: each code, its generation and when.
async fn on_slow_devices(app: &TestApp, n: usize, delay: Duration, pin_base: usize) -> Vec<(String, u64, Instant)> {
    let mut codes = Vec::new();
    for i in 0..n {
        let d = device(app, delay.as_millis() as u64);
        let id = app.seam.add_access_code(&d, SeedCode::default());
        let pin = format!("{}", pin_base + i);
        let generation =
            app.store.enqueue(want(json!({"access_code_id": id, "device_id": d, "code": pin}))).await.unwrap();
        codes.push((id, generation, Instant::now()));
    }
    codes
}

#[tokio::test]
async fn a_signed_delivery_pulls_a_waiting_verification_forward() {
    let app = spawn_app(far_polls()).await;
    let delay = Duration::from_millis(1500);
    let codes = on_slow_devices(&app, 4, delay, 6100).await;
    for (id, generation, enqueued) in codes {
        let o = finished(&app, &id, generation, Duration::from_secs(20)).await;
        assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
        // The device finishes `delay` after the update; with polls up to 30 s
        // apart (full jitter) only the set_on_device webhook explains an
        // outcome within a second of that, four codes out of four.
        let took = enqueued.elapsed();
        assert!(took < delay + Duration::from_millis(1000), "{id}: {took:?}");
        // Two requests in all: the update, and one read when the lock's
        // `set_on_device` came. The `access_code.changed` echo of the update
        // pulled nothing (the code was still `setting`), and the code itself
        // answered, so the action attempt was never asked.
        let gets = calls(&app, &id, "/access_codes/get").len();
        let attempts = app.seam.requests().iter().filter(|r| r.path == "/action_attempts/get").count();
        assert_eq!((gets, attempts), (1, 0), "{id}: access_codes/get, action_attempts/get");
    }
    app.stop().await;
}

/// Posts `body` to serve's webhook endpoint as Svix would, signed with
/// `secret` at `timestamp`; returns the HTTP status.
async fn deliver(app: &TestApp, svix_id: &str, timestamp: i64, secret: Option<&str>, body: &str) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("{}/webhooks/seam", app.serve_url.as_ref().unwrap()))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(secret) = secret {
        request = request
            .header("svix-id", svix_id)
            .header("svix-timestamp", timestamp.to_string())
            .header("svix-signature", sign(secret, svix_id, timestamp, body));
    }
    request.send().await.unwrap().status().as_u16()
}

fn event(event_id: &str, access_code_id: &str) -> String {
    json!({
        "event_id": event_id,
        "event_type": "access_code.changed",
        "access_code_id": access_code_id,
        "device_id": "d",
        "workspace_id": "ws",
        "created_at": chrono::Utc::now().to_rfc3339(),
    })
    .to_string()
}

#[tokio::test]
async fn only_a_good_delivery_changes_anything_and_only_once() {
    let app = spawn_app(AppOptions { cluster: false, ..far_polls() }).await;
    let d = device(&app, 20);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    let generation = app.store.enqueue(want(json!({"access_code_id": id, "code": "6200"}))).await.unwrap();
    assert_eq!(finished(&app, &id, generation, Duration::from_secs(20)).await.state, OutcomeState::Succeeded);
    // The code is watched now: its job waits hours for its next resync look.
    let sched = app.store.queue().keys_of(&id).scheduled();
    let mut r = raw(&app).await;
    let waiting = |r: &mut redis::aio::MultiplexedConnection| {
        let (sched, id) = (sched.clone(), id.clone());
        let mut r = r.clone();
        async move { r.zscore::<_, _, Option<f64>>(&sched, &id).await.unwrap() }
    };
    // Waiting for its next resync look: at the code's own phase of the
    // interval, which may be any time in the next 6 h (even within minutes),
    // so it is told from a poll (at most a minute away here) by its time.
    let resync = app.options.resync;
    let is_resync_look = move |id: &str, at: f64| {
        let now = chrono::Utc::now();
        [now, now - chrono::Duration::seconds(10)].into_iter().any(|t| {
            let look = latchkey_core::verify::next_resync(id, t, resync).timestamp_millis() as f64;
            (at - look).abs() <= 2_000.0
        })
    };
    let until_waiting = async |r: &mut redis::aio::MultiplexedConnection| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(at) = waiting(r).await.filter(|at| is_resync_look(&id, *at)) {
                return at;
            }
            assert!(Instant::now() < deadline, "the job never went back to waiting");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let before = until_waiting(&mut r).await;
    let gets = calls(&app, &id, "/access_codes/get").len();

    let now = chrono::Utc::now().timestamp();
    let body = event("evt_1", &id);
    let other_secret = "whsec_c2VjcmV0LW9mLWFub3RoZXItd29ya3NwYWNl";
    assert_eq!(deliver(&app, "msg_unsigned", now, None, &body).await, 401, "unsigned");
    assert_eq!(deliver(&app, "msg_forged", now, Some(other_secret), &body).await, 401, "forged");
    assert_eq!(deliver(&app, "msg_late", now - 600, Some(TEST_WEBHOOK_SECRET), &body).await, 401, "replayed late");
    let huge = format!("{}{}", &body[..body.len() - 1], format_args!(",\"pad\":\"{}\"}}", "x".repeat(70 * 1024)));
    assert_eq!(deliver(&app, "msg_huge", now, Some(TEST_WEBHOOK_SECRET), &huge).await, 413, "oversized");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(waiting(&mut r).await, Some(before), "a refused delivery moved the job");
    assert_eq!(calls(&app, &id, "/access_codes/get").len(), gets, "a refused delivery caused a read");

    // A good one: the job runs now and reads Seam once, then waits again.
    assert_eq!(deliver(&app, "msg_good", now, Some(TEST_WEBHOOK_SECRET), &body).await, 204);
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls(&app, &id, "/access_codes/get").len() == gets {
        assert!(Instant::now() < deadline, "the good delivery did not pull the job forward");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until_waiting(&mut r).await;
    let gets = calls(&app, &id, "/access_codes/get").len();

    // The same delivery again (Svix retries; a fresh timestamp and signature):
    // no second run.
    let now = chrono::Utc::now().timestamp();
    assert_eq!(deliver(&app, "msg_good", now, Some(TEST_WEBHOOK_SECRET), &body).await, 204);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(calls(&app, &id, "/access_codes/get").len(), gets, "a repeated delivery ran the job again");

    // An event about a code latchkey does not manage is dropped: nothing is created.
    assert_eq!(deliver(&app, "msg_unknown", now, Some(TEST_WEBHOOK_SECRET), &event("evt_2", "ac_not_ours")).await, 204);
    let keys: Vec<String> = r.keys(format!("{}:*ac_not_ours*", app.prefix)).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    app.stop().await;
}

#[tokio::test]
async fn events_missed_while_serve_was_down_are_caught_up_from_events_list() {
    let mut app = spawn_app(AppOptions { events_catch_up: Duration::from_secs(1), ..far_polls() }).await;
    // serve is down: every delivery of the simulator fails (it gives up after
    // a few retries), and only the workers' catch-up can bring the news.
    app.stop_serve().await;
    let delay = Duration::from_millis(1500);
    let codes = on_slow_devices(&app, 3, delay, 6300).await;
    for (id, generation, enqueued) in codes {
        let o = finished(&app, &id, generation, Duration::from_secs(20)).await;
        assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
        // The device finishes after `delay`; the next catch-up round (every
        // second) finds its set_on_device event; polls are 30 s apart.
        let took = enqueued.elapsed();
        assert!(took < delay + Duration::from_millis(2500), "{id}: {took:?}");
    }
    let lists = app.seam.requests().into_iter().filter(|r| r.path == "/events/list").count();
    assert!(lists >= 1, "the workers never listed Seam's events");
    app.stop().await;
}

#[tokio::test]
async fn a_device_back_online_pulls_its_waiting_codes_forward() {
    let app = spawn_app(far_polls()).await;
    let d = device(&app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    let generation =
        app.store.enqueue(want(json!({"access_code_id": id, "device_id": d, "code": "6400"}))).await.unwrap();
    update_landed(&app, &id).await;
    // The hub drops out right after the update: Seam reports `device_offline`
    // on the code, then clears it without an access code event.
    let offline = latchkey_fake_seam::Issue {
        kind: latchkey_fake_seam::IssueKind::Error,
        code: "device_offline".into(),
        message: None,
        created_at: None,
        clear_after: Some(Duration::from_millis(1500)),
        keep_on_update: false,
    };
    assert!(app.seam.add_issue(&id, offline));
    let seen_offline = |o: Option<&latchkey_core::Outcome>| {
        o.is_some_and(|o| {
            o.state == OutcomeState::Verifying
                && o.last_seen.as_ref().is_some_and(|s| s.errors.iter().any(|e| e.code == "device_offline"))
        })
    };
    until_record(&app, &id, Duration::from_secs(10), "waiting for the device", seen_offline).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // Seam says the device is back: its waiting code is read again now, not
    // at its next poll (30 s or more away).
    let event = json!({
        "event_id": "evt_device_back",
        "event_type": "device.connected",
        "device_id": d,
        "workspace_id": "ws",
        "created_at": chrono::Utc::now().to_rfc3339(),
    })
    .to_string();
    let sent = Instant::now();
    assert_eq!(
        deliver(&app, "msg_device", chrono::Utc::now().timestamp(), Some(TEST_WEBHOOK_SECRET), &event).await,
        204
    );
    let o = finished(&app, &id, generation, Duration::from_secs(20)).await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    assert!(sent.elapsed() < Duration::from_secs(3), "{:?} after the device came back", sent.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn serve_has_its_own_probes_and_counts_deliveries() {
    let app = spawn_app(AppOptions { workers: 0, ..AppOptions::default() }).await;
    let listen = format!("127.0.0.1:{}", latchkey_tests::free_tcp_port());
    let ops = format!("127.0.0.1:{}", latchkey_tests::free_tcp_port());
    let args = latchkey_worker::ServeArgs {
        listen: listen.clone(),
        http_addr: ops.clone(),
        redis: latchkey_worker::RedisArgs::url(app.redis_url.clone()),
        prefix: "serve-probes".into(),
        partitions: latchkey_store::DEFAULT_PARTITIONS,
        webhook_secret: Some(TEST_WEBHOOK_SECRET.into()),
        webhook_secret_file: None,
        api_tokens_file: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(latchkey_worker::run_serve(args, async move {
        let _ = stopped.await;
    }));
    latchkey_tests::wait_for_port(&ops).await;
    let http = reqwest::Client::new();
    let get = async |path: &str| {
        let r = http.get(format!("http://{ops}{path}")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(get("/livez").await.0, 200);
    assert_eq!(get("/readyz").await, (200, "ready\n".to_string()));
    let status = http.post(format!("http://{listen}/webhooks/seam")).body("{}").send().await.unwrap().status().as_u16();
    assert_eq!(status, 401);
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.lines().any(|l| l.starts_with("latchkey_webhook_deliveries_total{result=\"refused\"}")),
        "{metrics}"
    );
    // Redis gone: not ready (Seam's deliveries would fail; it retries them).
    app.redis.pause(Duration::from_secs(3));
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let _ = stop.send(());
    serve.await.unwrap().unwrap();
    app.stop().await;
}
