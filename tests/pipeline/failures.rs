//! Reconciliations that cannot succeed end with the cause: an action attempt
//! that errors, a device away past the deadline, a request Seam refuses; and
//! transient failures are retried until they succeed.

use std::time::Duration;

use latchkey_core::OutcomeState;
use latchkey_fake_seam::{DeviceBehaviour, Faults, SeedCode};
use latchkey_tests::app::{AppOptions, spawn_app};
use serde_json::json;

use crate::{reconcile, record_in};

#[tokio::test]
async fn a_device_that_fails_ends_failed_with_the_attempts_error() {
    let app = spawn_app(AppOptions::default()).await;
    let device = app.seam.add_device(DeviceBehaviour::fails(Duration::from_millis(50)));
    let id = app.seam.add_access_code(&device, SeedCode::default());
    let o = reconcile(&app, json!({"access_code_id": id, "code": "5555"}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Failed, "{o:?}");
    let e = o.error.unwrap();
    assert!(!e.kind.is_empty() && !e.message.is_empty(), "{e:?}");
    app.stop().await;
}

#[tokio::test]
async fn an_offline_device_is_waited_for_until_the_deadline_then_times_out_naming_it() {
    let app = spawn_app(AppOptions { verify_timeout: Duration::from_secs(2), ..AppOptions::default() }).await;
    let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(50) });
    let id = app.seam.add_access_code(&device, SeedCode::default());
    app.seam.set_device(&device, DeviceBehaviour::Offline);
    let o = reconcile(&app, json!({"access_code_id": id, "code": "6666"}), Duration::from_secs(15)).await;
    // Seam keeps trying while the device is away: not a failure of the code.
    assert_eq!(o.state, OutcomeState::TimedOut, "{o:?}");
    assert!(o.polls >= 2, "kept looking while the device was offline: {o:?}");
    let e = o.error.unwrap();
    assert_eq!(
        (e.kind.as_str(), e.error_codes.as_slice()),
        ("timed_out", &["device_offline".to_string()][..]),
        "{e:?}"
    );
    assert!(e.message.contains("device_offline"), "{}", e.message);
    assert!(o.last_seen.unwrap().errors.iter().any(|i| i.code == "device_offline"));
    app.stop().await;
}

/// Seam keeps trying after latchkey's deadline: a lock back online sets the
/// code later, and the next resync look finds it, so the record does not say
/// `timed_out` for ever about a PIN that works.
#[tokio::test]
async fn a_code_set_after_it_timed_out_is_succeeded_after_all_at_the_next_resync() {
    let app = spawn_app(AppOptions {
        verify_timeout: Duration::from_secs(2),
        resync: Duration::from_secs(1),
        ..AppOptions::default()
    })
    .await;
    let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(50) });
    let id = app.seam.add_access_code(&device, SeedCode::default());
    app.seam.set_device(&device, DeviceBehaviour::Offline);
    let o = reconcile(&app, json!({"access_code_id": id, "code": "6767"}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::TimedOut, "{o:?}");
    // Still offline: the looks go on, and the record stands.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.store.outcome(&id).await.unwrap().unwrap().state, OutcomeState::TimedOut);
    app.seam.set_device(&device, DeviceBehaviour::Normal { delay: Duration::from_millis(50) });
    let o = record_in(&app, &id, OutcomeState::Succeeded, Duration::from_secs(10)).await;
    assert_eq!(o.error, None, "{o:?}");
    let seen = o.last_seen.unwrap();
    assert_eq!((seen.status, seen.code.as_deref()), (latchkey_core::CodeStatus::Set, Some("6767")));
    let states: Vec<OutcomeState> = app.store.history(&id).await.unwrap().into_iter().map(|e| e.state).collect();
    assert_eq!(&states[..2], [OutcomeState::Succeeded, OutcomeState::TimedOut], "newest first: {states:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_code_that_never_gets_set_times_out_with_the_last_state_seen() {
    let app = spawn_app(AppOptions { verify_timeout: Duration::from_secs(2), ..AppOptions::default() }).await;
    let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(50) });
    let id = app.seam.add_access_code(&device, SeedCode::default());
    app.seam.set_device(&device, DeviceBehaviour::NeverFinishes { warn_after: Duration::from_millis(300) });
    let o = reconcile(&app, json!({"access_code_id": id, "code": "7777"}), Duration::from_secs(20)).await;
    assert_eq!(o.state, OutcomeState::TimedOut, "{o:?}");
    let seen = o.last_seen.unwrap();
    assert_eq!(seen.status, latchkey_core::CodeStatus::Setting);
    assert!(o.polls >= 2, "kept polling while Seam reported a delay: {} polls", o.polls);
    app.stop().await;
}

#[tokio::test]
async fn an_update_seam_refuses_ends_rejected_with_seams_error() {
    let app = spawn_app(AppOptions::default()).await;
    let o = reconcile(
        &app,
        json!({"access_code_id": "00000000-0000-4000-8000-00000000dead", "code": "1234"}),
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(o.state, OutcomeState::Rejected, "{o:?}");
    assert_eq!(o.error.unwrap().kind, "access_code_not_found");
    assert_eq!(app.seam.requests().len(), 1, "a permanent error is not retried: {:?}", app.seam.requests());
    app.stop().await;
}

#[tokio::test]
async fn transient_seam_failures_are_retried_until_the_code_is_set() {
    let app = spawn_app(AppOptions { max_attempts: 20, ..AppOptions::default() }).await;
    let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(50) });
    let id = app.seam.add_access_code(&device, SeedCode::default());
    // Seam answers 503 to everything until the first call and its two quick
    // retries have failed (counted, not timed: a busy machine may send the
    // first call late), then recovers.
    app.seam.set_faults(Faults { error_rate: 1.0, fail_status: Some(503), ..Faults::default() });
    let seam_faults = app.seam.clone();
    tokio::spawn(async move {
        while seam_faults.requests().iter().filter(|r| r.status == 503).count() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seam_faults.set_faults(Faults::default());
    });
    let o = reconcile(&app, json!({"access_code_id": id, "code": "8888"}), Duration::from_secs(60)).await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    let failed = app.seam.requests().iter().filter(|r| r.status == 503).count();
    assert!(failed >= 3, "the first call and its quick retries failed: {failed} failures");
    assert_eq!(app.seam.access_code(&id).unwrap()["code"], "8888");
    app.stop().await;
}
