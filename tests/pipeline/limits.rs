//! Seam's rate limits, enforced by latchkey across workers: no device gets
//! more updates than its limit in any window (checked in the simulator's
//! request log), and a 429 holds the device instead of hammering it.

use std::time::Duration;

use latchkey_core::OutcomeState;
use latchkey_fake_seam::{DeviceBehaviour, Faults, SeedCode};
use latchkey_tests::app::{AppOptions, spawn_app};
use serde_json::json;

use crate::{finished, want};

#[tokio::test]
async fn updates_to_one_device_never_exceed_its_limit_in_any_window() {
    // latchkey's limit: 3 updates per device per 2 s. The simulator's own limit is off,
    // so only latchkey can keep the device within it.
    let app = spawn_app(AppOptions {
        workers: 2,
        device_limit: 3,
        device_window_secs: 2,
        sim_rate_limit: 0,
        ..AppOptions::default()
    })
    .await;
    let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(20) });
    let codes: Vec<String> = (0..8).map(|_| app.seam.add_access_code(&device, SeedCode::default())).collect();
    let mut generations = Vec::new();
    for (i, id) in codes.iter().enumerate() {
        generations.push(
            app.store.enqueue(want(json!({"access_code_id": id, "code": format!("{}", 5000 + i)}))).await.unwrap(),
        );
    }
    for (id, g) in codes.iter().zip(generations) {
        assert_eq!(finished(&app, id, g, Duration::from_secs(30)).await.state, OutcomeState::Succeeded);
    }
    let updates: Vec<_> = app
        .seam
        .requests()
        .into_iter()
        .filter(|r| r.path == "/access_codes/update" && r.device_id.as_deref() == Some(&device))
        .map(|r| r.at)
        .collect();
    assert_eq!(updates.len(), 8);
    for (i, start) in updates.iter().enumerate() {
        let in_window = updates[i..].iter().filter(|t| **t - *start < chrono::Duration::seconds(2)).count();
        assert!(in_window <= 3, "{in_window} updates within 2 s from {start}: {updates:#?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_429_without_retry_after_holds_the_device_then_the_update_goes_through() {
    let app = spawn_app(AppOptions { device_window_secs: 2, ..AppOptions::default() }).await;
    let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(20) });
    let id = app.seam.add_access_code(&device, SeedCode::default());
    let generation =
        app.store.enqueue(want(json!({"access_code_id": id, "device_id": device, "code": "3141"}))).await.unwrap();
    app.seam.set_faults(Faults { force_429: 1, ..Faults::default() });
    let o = finished(&app, &id, generation, Duration::from_secs(20)).await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    let updates: Vec<_> = app.seam.requests().into_iter().filter(|r| r.path == "/access_codes/update").collect();
    assert_eq!(updates.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    let gap = updates[1].at - updates[0].at;
    assert!(gap >= chrono::Duration::milliseconds(1900), "the device was held only {gap}");
    app.stop().await;
}
