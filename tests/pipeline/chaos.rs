//! Busy and broken moments: a check-in burst of time-bound codes starting in
//! the same instant, and a Seam that fails, rate-limits, stalls and loses
//! devices. Every code converges or ends with its cause; no device is sent more
//! updates than Seam allows; nothing hammers Seam.

use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use latchkey_core::OutcomeState;
use latchkey_fake_seam::{DeviceBehaviour, Faults, SeedCode};
use latchkey_tests::app::{AppOptions, spawn_app};
use serde_json::json;

use crate::{finished, want};

#[tokio::test]
async fn a_check_in_burst_is_looked_at_once_then_verified_at_starts_at_within_every_device_limit() {
    let app = spawn_app(AppOptions { workers: 2, ..AppOptions::default() }).await;
    // The whole burst must be recorded before check-in time, even on a busy machine.
    let starts_at = (Utc::now() + chrono::Duration::seconds(20)).trunc_subsecs(0);
    let ends_at = starts_at + chrono::Duration::days(3);
    let mut wanted = Vec::new();
    for d in 0..150 {
        let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(100) });
        for c in 0..10 {
            let id = app.seam.add_access_code(&device, SeedCode::default());
            let pin = format!("{:04}", d * 10 + c);
            wanted.push(json!({"access_code_id": id, "device_id": device, "code": pin, "starts_at": starts_at.to_rfc3339(), "ends_at": ends_at.to_rfc3339()}));
        }
    }
    let mut codes = Vec::new();
    for chunk in wanted.chunks(100) {
        let enqueued =
            futures::future::try_join_all(chunk.iter().map(|w| app.store.enqueue(want(w.clone())))).await.unwrap();
        codes.extend(chunk.iter().map(|w| w["access_code_id"].as_str().unwrap().to_string()).zip(enqueued));
    }
    assert!(Utc::now() < starts_at, "the burst was enqueued before check-in time");
    for (id, g) in &codes {
        let o = finished(&app, id, *g, Duration::from_secs(120)).await;
        assert_eq!(o.state, OutcomeState::Succeeded, "{id}: {o:?}");
    }
    let requests = app.seam.requests();
    assert!(requests.iter().all(|r| r.status < 400), "no request refused (no 429 from the simulator's own limit)");
    let mut by_device: std::collections::HashMap<String, Vec<chrono::DateTime<Utc>>> = Default::default();
    for r in requests.iter().filter(|r| r.path == "/access_codes/update") {
        by_device.entry(r.device_id.clone().unwrap()).or_default().push(r.at);
    }
    for (device, times) in &by_device {
        for (i, t) in times.iter().enumerate() {
            let in_minute = times[i..].iter().filter(|u| **u - *t < chrono::Duration::seconds(60)).count();
            assert!(in_minute <= 10, "device {device}: {in_minute} updates in a minute");
        }
    }
    let polls: Vec<_> = requests.iter().filter(|r| r.path == "/access_codes/get" && r.at >= starts_at).collect();
    assert!(polls.len() >= codes.len(), "every code verified at or after starts_at");
    // Before check-in, each code is looked at once after its update (to
    // catch scheduling failures early), not polled until the start. The look
    // follows the update in the same run unless the key's budget defers it,
    // so how soon it comes depends on the machine: only the count and the
    // order are asserted.
    let mut updated: std::collections::HashMap<&str, chrono::DateTime<Utc>> = Default::default();
    for r in requests.iter().filter(|r| r.path == "/access_codes/update") {
        updated.insert(r.access_code_id.as_deref().unwrap(), r.at);
    }
    let mut looks: std::collections::HashMap<&str, usize> = Default::default();
    for r in requests.iter().filter(|r| r.path == "/access_codes/get" && r.at < starts_at) {
        let id = r.access_code_id.as_deref().unwrap();
        assert!(r.at >= updated[id], "{id} looked at before its update");
        *looks.entry(id).or_default() += 1;
    }
    let polled: Vec<_> = looks.iter().filter(|(_, n)| **n > 1).collect();
    assert!(polled.is_empty(), "polled before check-in, more than one look: {polled:?}");
    println!(
        "check-in burst: {} codes on {} devices verified; {} polls from starts_at on",
        codes.len(),
        by_device.len(),
        polls.len()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_flaky_seam_and_offline_devices_never_stop_the_pipeline_and_every_code_converges() {
    // A 429 without Retry-After holds the device for the limit's window: 5 s here.
    let app = spawn_app(AppOptions {
        workers: 2,
        max_attempts: 30,
        verify_timeout: Duration::from_secs(30),
        device_window_secs: 5,
        ..AppOptions::default()
    })
    .await;
    let mut codes = Vec::new();
    let mut offline = Vec::new();
    for d in 0..40 {
        let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(100) });
        if d % 10 == 0 {
            offline.push(device.clone());
        }
        for _ in 0..5 {
            codes.push((app.seam.add_access_code(&device, SeedCode::default()), device.clone()));
        }
    }
    for d in &offline {
        app.seam.set_device(d, DeviceBehaviour::Offline);
    }
    // 20% of requests fail with 500/503.
    app.seam.set_faults(Faults { error_rate: 0.2, ..Faults::default() });
    let started = Instant::now();
    let mut generations = Vec::new();
    for (i, (id, device)) in codes.iter().enumerate() {
        generations.push(
            app.store
                .enqueue(want(json!({"access_code_id": id, "device_id": device, "code": format!("{}", 20_000 + i)})))
                .await
                .unwrap(),
        );
    }
    // A burst of 429s, then 2 s latency spikes, then the offline devices come back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.seam.set_faults(Faults { error_rate: 0.2, force_429: 30, ..Faults::default() });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    app.seam.set_faults(Faults { error_rate: 0.2, latency_ms: 2000, ..Faults::default() });
    tokio::time::sleep(Duration::from_millis(3000)).await;
    app.seam.set_faults(Faults { error_rate: 0.2, ..Faults::default() });
    for d in &offline {
        app.seam.set_device(d, DeviceBehaviour::Normal { delay: Duration::from_millis(100) });
    }

    let mut by_state: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for ((id, _), g) in codes.iter().zip(&generations) {
        let o = finished(&app, id, *g, Duration::from_secs(120)).await;
        *by_state.entry(o.state.as_str()).or_default() += 1;
        match o.state {
            OutcomeState::Succeeded => {}
            OutcomeState::Failed | OutcomeState::TimedOut => {
                assert!(o.error.is_some(), "{id}: an unsuccessful outcome says why: {o:?}")
            }
            other => panic!("{id}: unexpected end state {other:?}: {o:?}"),
        }
    }
    let requests = app.seam.requests().len();
    println!("flaky Seam: {by_state:?} after {:?}; {requests} requests for {} codes", started.elapsed(), codes.len());
    // Offline devices are a wait, not a failure: once they are back, their
    // codes are set too. Every code ends succeeded, none stuck.
    assert_eq!(by_state.get("succeeded").copied(), Some(codes.len()), "every code converges: {by_state:?}");
    assert!(requests < codes.len() * 40, "no hammering: {requests} requests for {} codes", codes.len());
    assert_eq!(app.store.queue().depth().await.unwrap().dead, 0);
    app.stop().await;
}

#[tokio::test]
async fn verifications_of_codes_starting_together_are_spread_over_the_window() {
    let app =
        spawn_app(AppOptions { workers: 2, verify_spread: Duration::from_secs(3), ..AppOptions::default() }).await;
    let starts_at = (Utc::now() + chrono::Duration::seconds(5)).trunc_subsecs(0);
    let ends_at = starts_at + chrono::Duration::days(1);
    let mut codes = Vec::new();
    for _ in 0..60 {
        let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(50) });
        let id = app.seam.add_access_code(&device, SeedCode::default());
        let g = app
            .store
            .enqueue(want(json!({"access_code_id": id, "device_id": device, "starts_at": starts_at.to_rfc3339(), "ends_at": ends_at.to_rfc3339()})))
            .await
            .unwrap();
        codes.push((id, g));
    }
    for (id, g) in &codes {
        assert_eq!(finished(&app, id, *g, Duration::from_secs(30)).await.state, OutcomeState::Succeeded);
    }
    // The first verification poll of each code around starts_at, relative to it.
    let mut first: Vec<i64> = codes
        .iter()
        .map(|(id, _)| {
            let polls = app
                .seam
                .requests()
                .into_iter()
                .filter(|r| r.path == "/access_codes/get" && r.access_code_id.as_deref() == Some(id.as_str()))
                // (not the look right after the update, seconds before the start)
                .filter(|r| r.at >= starts_at - chrono::Duration::seconds(1));
            (polls.map(|r| r.at).min().unwrap() - starts_at).num_milliseconds()
        })
        .collect();
    first.sort();
    let (earliest, latest) = (first[0], first[first.len() - 1]);
    println!("first polls from {earliest} ms to {latest} ms after starts_at (window 3,000 ms)");
    assert!(earliest >= 0, "no poll before starts_at");
    assert!(latest - earliest >= 2000, "polls spread over the window, not one spike: {earliest}..{latest} ms");
    assert!(latest <= 3500, "all within the window (plus a little): {latest} ms");
    let in_first_half_second = first.iter().filter(|ms| **ms < 500).count();
    assert!(in_first_half_second < 30, "{in_first_half_second} of 60 polls in the first 500 ms");
    app.stop().await;
}
