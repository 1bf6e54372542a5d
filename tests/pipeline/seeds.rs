//! The scenarios of Seam's guide (seeds 000-002): a plain update, ongoing to
//! time-bound, time-bound to ongoing, and time-bound codes verified at
//! `starts_at`.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use latchkey_core::{CodeStatus, OutcomeState};
use latchkey_fake_seam::{DeviceBehaviour, SeedCode};
use latchkey_tests::app::{AppOptions, spawn_app};
use serde_json::json;

use crate::{calls, reconcile};

fn normal() -> DeviceBehaviour {
    DeviceBehaviour::Normal { delay: Duration::from_millis(50) }
}

#[tokio::test]
async fn a_plain_update_of_code_and_name_is_applied_and_verified() {
    let app = spawn_app(AppOptions::default()).await;
    let device = app.seam.add_device(normal());
    let id = app.seam.add_access_code(
        &device,
        SeedCode { code: Some("1111".into()), name: Some("Old".into()), ..SeedCode::default() },
    );

    let o = reconcile(&app, json!({"access_code_id": id, "code": "4321", "name": "Guest 42"}), Duration::from_secs(15))
        .await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    assert_eq!((o.attempts, o.generation), (1, 1));
    let seen = o.last_seen.expect("last seen code");
    assert_eq!(
        (seen.status, seen.code.as_deref(), seen.name.as_deref()),
        (CodeStatus::Set, Some("4321"), Some("Guest 42"))
    );
    let on_seam = app.seam.access_code(&id).unwrap();
    assert_eq!((on_seam["code"].as_str(), on_seam["status"].as_str()), (Some("4321"), Some("set")));
    assert_eq!(calls(&app, &id, "/access_codes/update").len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_new_pin_on_a_known_quick_device_takes_two_requests_update_and_get() {
    let app = spawn_app(AppOptions::default()).await;
    let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::ZERO });
    let id = app.seam.add_access_code(&device, SeedCode { code: Some("1111".into()), ..SeedCode::default() });
    let o =
        reconcile(&app, json!({"access_code_id": id, "device_id": device, "code": "5151"}), Duration::from_secs(15))
            .await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    assert_eq!(o.last_seen.as_ref().map(|c| (c.status, c.code.as_deref())), Some((CodeStatus::Set, Some("5151"))));
    // The code itself answered the first look after the update: the action
    // attempt was never asked, and the device never had to be learned.
    let paths: Vec<String> = app.seam.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/access_codes/update", "/access_codes/get"], "Seam requests");
    app.stop().await;
}

#[tokio::test]
async fn an_ongoing_code_becomes_time_bound_and_is_verified_at_starts_at() {
    let app = spawn_app(AppOptions::default()).await;
    let device = app.seam.add_device(normal());
    let id = app.seam.add_access_code(&device, SeedCode { code: Some("2222".into()), ..SeedCode::default() });
    // (5 to 6 s away: the look after the update can take a second or two on
    // a loaded machine, and must still come well before any poll would)
    let starts_at = (Utc::now() + chrono::Duration::seconds(6)).trunc_subsecs(0);
    let ends_at = starts_at + chrono::Duration::days(3);

    let generation = app
        .store
        .enqueue(crate::want(
            json!({"access_code_id": id, "starts_at": starts_at.to_rfc3339(), "ends_at": ends_at.to_rfc3339()}),
        ))
        .await
        .unwrap();
    // Before starts_at the record says it waits for the start.
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    loop {
        let o = app.store.outcome(&id).await.unwrap().unwrap();
        if o.state == OutcomeState::Scheduled {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never scheduled: {o:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let o = crate::finished(&app, &id, generation, Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    let seen = o.last_seen.unwrap();
    assert_eq!(
        (seen.code_type, seen.starts_at, seen.ends_at),
        (latchkey_core::CodeType::TimeBound, Some(starts_at), Some(ends_at))
    );
    // Seam says to poll a time-bound code at starts_at. latchkey also looks
    // once right after the update (until it leaves `setting`), to catch a
    // scheduling failure early; nothing between that look and starts_at (polls
    // back off from 50 ms to at most 400 ms here: any would be seen).
    let updated_at = calls(&app, &id, "/access_codes/update")[0].at;
    let gets: Vec<_> = calls(&app, &id, "/access_codes/get").into_iter().filter(|g| g.at > updated_at).collect();
    assert!(gets.iter().any(|g| g.at >= starts_at), "verified at starts_at");
    let early: Vec<_> = gets.iter().filter(|g| g.at < starts_at).map(|g| g.at - updated_at).collect();
    assert!(!early.is_empty(), "looked at right after the update");
    assert!(
        early.iter().all(|after| *after < chrono::Duration::milliseconds(3000)),
        "polled between the look after the update and starts_at: {early:?}"
    );
    assert!(
        o.finished_at.unwrap() - starts_at < chrono::Duration::seconds(5),
        "verified {} after the start",
        o.finished_at.unwrap() - starts_at
    );
    app.stop().await;
}

#[tokio::test]
async fn a_time_bound_code_becomes_ongoing() {
    let app = spawn_app(AppOptions::default()).await;
    let device = app.seam.add_device(normal());
    let starts = Utc::now() - chrono::Duration::hours(1);
    let id = app.seam.add_access_code(
        &device,
        SeedCode {
            code: Some("3333".into()),
            starts_at: Some(starts),
            ends_at: Some(starts + chrono::Duration::days(2)),
            ..SeedCode::default()
        },
    );
    let o = reconcile(&app, json!({"access_code_id": id, "type": "ongoing"}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    let on_seam = app.seam.access_code(&id).unwrap();
    assert_eq!(on_seam["type"], "ongoing");
    assert!(on_seam["starts_at"].is_null() && on_seam["ends_at"].is_null(), "{on_seam}");
    app.stop().await;
}
