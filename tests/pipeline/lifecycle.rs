//! The rest of a code's life: a cancelled booking's code is deleted and
//! confirmed gone; a time-bound code is watched to its end of stay and
//! confirmed expired; a code that must be gone and is not is a loud failure;
//! a code that drifts after it was verified is repaired, within bounds;
//! records of finished codes are forgotten in time; every state change is in
//! the code's history.

use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use latchkey_core::{KIND_NOT_REMOVED, KIND_STAY_ENDED, OutcomeState};
use latchkey_fake_seam::{DeviceBehaviour, Faults, Modification, SeedCode};
use latchkey_store::Waited;
use latchkey_tests::app::{AppOptions, TestApp, spawn_app};
use serde_json::json;

use crate::{calls, device, finished, ops::until_status, reconcile, record_in, until_record, want};

/// The desired state of access code `id` with PIN `code` for a stay that
/// began a minute ago and ends `secs` seconds from now (in whole seconds,
/// so `secs - 1` to `secs` away), and that `ends_at`.
fn stay_ending_in(id: &str, code: &str, secs: i64) -> (serde_json::Value, DateTime<Utc>) {
    let starts_at = (Utc::now() - chrono::Duration::minutes(1)).trunc_subsecs(0);
    let ends_at = (Utc::now() + chrono::Duration::seconds(secs)).trunc_subsecs(0);
    let dates = json!({"access_code_id": id, "code": code, "starts_at": starts_at.to_rfc3339(), "ends_at": ends_at.to_rfc3339()});
    (dates, ends_at)
}

#[tokio::test]
async fn a_cancelled_code_is_deleted_and_confirmed_gone() {
    let app = spawn_app(AppOptions::default()).await;
    let d = device(&app, 200);
    let id = app.seam.add_access_code(&d, SeedCode { code: Some("1234".into()), ..SeedCode::default() });
    let o = reconcile(&app, json!({"access_code_id": id, "absent": true}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    assert!(o.last_seen.is_none() && o.deleted_at.is_some(), "{o:?}");
    assert!(app.seam.access_code(&id).is_none(), "the code is gone from Seam");
    assert_eq!(calls(&app, &id, "/access_codes/delete").len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_cancellation_on_a_known_quick_device_takes_two_requests_delete_and_get() {
    let app = spawn_app(AppOptions::default()).await;
    let d = device(&app, 0);
    let id = app.seam.add_access_code(&d, SeedCode { code: Some("1234".into()), ..SeedCode::default() });
    let o =
        reconcile(&app, json!({"access_code_id": id, "device_id": d, "absent": true}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    assert!(o.deleted_at.is_some() && app.seam.access_code(&id).is_none(), "{o:?}");
    // The first look after the delete found the code gone (404): that is the
    // proof, whatever the action attempt says yet, so it was never asked.
    let paths: Vec<String> = app.seam.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/access_codes/delete", "/access_codes/get"], "Seam requests");
    app.stop().await;
}

#[tokio::test]
async fn a_cancellation_before_or_after_the_update_landed_leaves_no_code() {
    let app = spawn_app(AppOptions::default()).await;
    let d = device(&app, 300);
    // Before: the cancellation supersedes the update still waiting.
    let early = app.seam.add_access_code(&d, SeedCode::default());
    let update = app.store.enqueue(want(json!({"access_code_id": early, "code": "5555"}))).await.unwrap();
    let cancel = app.store.enqueue(want(json!({"access_code_id": early, "absent": true}))).await.unwrap();
    assert!(matches!(
        app.store.wait_for_outcome(&early, update, Duration::from_secs(15)).await.unwrap(),
        Waited::Superseded(_)
    ));
    assert_eq!(finished(&app, &early, cancel, Duration::from_secs(15)).await.state, OutcomeState::Succeeded);
    assert!(app.seam.access_code(&early).is_none());
    // After: the PIN was set, then the booking was cancelled.
    let late = app.seam.add_access_code(&d, SeedCode::default());
    let o = reconcile(&app, json!({"access_code_id": late, "code": "6666"}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded);
    let o = reconcile(&app, json!({"access_code_id": late, "absent": true}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    assert!(app.seam.access_code(&late).is_none());
    app.stop().await;
}

#[tokio::test]
async fn an_update_of_a_deleted_code_is_rejected_saying_it_was_deleted() {
    let app = spawn_app(AppOptions::default()).await;
    let d = device(&app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    let o = reconcile(&app, json!({"access_code_id": id, "absent": true}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded);
    let o = reconcile(&app, json!({"access_code_id": id, "code": "7777"}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Rejected, "{o:?}");
    let e = o.error.unwrap();
    assert_eq!(e.kind, "access_code_not_found");
    assert!(e.message.contains("was deleted at"), "{}", e.message);
    app.stop().await;
}

#[tokio::test]
async fn cancellations_racing_updates_across_two_workers_end_as_the_newest_generation_says() {
    let app = spawn_app(AppOptions { workers: 2, ..AppOptions::default() }).await;
    let mut codes = Vec::new();
    for i in 0..20 {
        let d = device(&app, 30);
        let id = app.seam.add_access_code(&d, SeedCode::default());
        // Even codes: set, then cancelled. Odd codes: cancelled, then set again.
        let (first, second) = if i % 2 == 0 {
            (
                json!({"access_code_id": id, "code": format!("{}", 3000 + i)}),
                json!({"access_code_id": id, "absent": true}),
            )
        } else {
            (
                json!({"access_code_id": id, "absent": true}),
                json!({"access_code_id": id, "code": format!("{}", 3000 + i)}),
            )
        };
        app.store.enqueue(want(first)).await.unwrap();
        let newest = app.store.enqueue(want(second)).await.unwrap();
        codes.push((id, i, newest));
    }
    for (id, i, newest) in &codes {
        let o = finished(&app, id, *newest, Duration::from_secs(30)).await;
        let on_seam = app.seam.access_code(id);
        if i % 2 == 0 {
            assert_eq!(o.state, OutcomeState::Succeeded, "{id}: {o:?}");
            assert!(on_seam.is_none(), "{id}: cancelled last, gone: {on_seam:?}");
        } else if o.state == OutcomeState::Succeeded {
            // The cancellation was superseded before it ran: the code stayed, with the newest PIN.
            assert_eq!(on_seam.unwrap()["code"], format!("{}", 3000 + i), "{id}");
        } else {
            // The cancellation ran first: the update cannot bring the code back, and says why.
            assert_eq!(o.state, OutcomeState::Rejected, "{id}: {o:?}");
            assert!(o.error.unwrap().message.contains("was deleted"), "{id}");
            assert!(on_seam.is_none(), "{id}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_removal_the_lock_refuses_is_a_loud_failure() {
    let app = spawn_app(AppOptions::default()).await;
    let d = device(&app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    app.seam.set_device(&d, DeviceBehaviour::fails(Duration::from_millis(100)));
    let o = reconcile(&app, json!({"access_code_id": id, "absent": true}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Failed, "{o:?}");
    let e = o.error.unwrap();
    assert_eq!(
        (e.kind.as_str(), e.error_codes.as_slice()),
        (KIND_NOT_REMOVED, &["failed_to_remove_from_device".to_string()][..])
    );
    assert!(e.message.contains("a guest who should not get in still may"), "{}", e.message);
    assert_eq!(not_removed_count(&app, "cancellation").await, Some(1.0));
    assert!(app.seam.access_code(&id).is_some(), "it really is still there");
    app.stop().await;
}

#[tokio::test]
async fn a_time_bound_code_is_watched_to_its_end_of_stay_and_expires() {
    let app = spawn_app(AppOptions::default()).await;
    let d = device(&app, 200);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    // Checked in a minute ago; checks out in 4 to 5 seconds (room for a slow
    // first reconciliation on a loaded machine: it must end within the stay).
    let (dates, ends_at) = stay_ending_in(&id, "4242", 5);
    let o = reconcile(&app, dates, Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    assert!(Utc::now() < ends_at, "verified during the stay");
    let o = record_in(&app, &id, OutcomeState::Expired, Duration::from_secs(20)).await;
    assert!(o.deleted_at.unwrap() >= ends_at, "{o:?}");
    assert!(app.seam.access_code(&id).is_none());
    let states: Vec<OutcomeState> = app.store.history(&id).await.unwrap().into_iter().rev().map(|e| e.state).collect();
    assert_eq!(
        states,
        // (the first look found it set: no `verifying` between)
        [OutcomeState::Pending, OutcomeState::Applying, OutcomeState::Succeeded, OutcomeState::Expired]
    );
    app.stop().await;
}

/// Seam removes a code at its `ends_at` by its own clock, which may run a
/// little ahead of the worker's: a resync look that finds the code gone in
/// the last moments of its stay waits for `ends_at` and records the end of
/// the stay (`expired`), instead of re-applying it (which Seam refuses for a
/// deleted code: `rejected`).
#[tokio::test]
async fn a_code_gone_moments_before_its_stay_ends_expires() {
    let app = spawn_app(AppOptions { resync: Duration::from_secs(1), ..AppOptions::default() }).await;
    let d = device(&app, 200);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    let (dates, ends_at) = stay_ending_in(&id, "4848", 9);
    let o = reconcile(&app, dates, Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    let early = ends_at - chrono::Duration::seconds(3);
    tokio::time::sleep((early - Utc::now()).to_std().expect("verified 3 s before the end of stay")).await;
    assert!(app.seam.remove_access_code(&id), "Seam's clock says the stay is over");
    let o = record_in(&app, &id, OutcomeState::Expired, Duration::from_secs(15)).await;
    assert!(o.deleted_at.unwrap() >= ends_at, "{o:?}");
    assert_eq!(calls(&app, &id, "/access_codes/update").len(), 1, "no re-apply of a code gone at its end of stay");
    app.stop().await;
}

#[tokio::test]
async fn a_code_still_on_the_lock_after_its_stay_fails_loudly() {
    let app = spawn_app(AppOptions { removal_grace: Duration::from_secs(2), ..AppOptions::default() }).await;
    let d = device(&app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    // (the stay must outlast the first reconciliation, which can take a few
    // seconds on a loaded machine)
    let (dates, ends_at) = stay_ending_in(&id, "4343", 5);
    let o = reconcile(&app, dates, Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    assert!(Utc::now() < ends_at, "verified during the stay, before the lock stops answering");
    // The lock stops answering removals: the code stays after check-out.
    app.seam.set_device(&d, DeviceBehaviour::NeverFinishes { warn_after: Duration::from_millis(300) });
    let o = record_in(&app, &id, OutcomeState::Failed, Duration::from_secs(20)).await;
    let e = o.error.unwrap();
    assert_eq!(e.kind, KIND_NOT_REMOVED, "{e:?}");
    assert!(e.message.contains("end of stay"), "{}", e.message);
    assert!(o.finished_at.unwrap() >= ends_at + chrono::Duration::seconds(2), "only after the grace");
    assert_eq!(not_removed_count(&app, "end_of_stay").await, Some(1.0));
    app.stop().await;
}

/// An update sent late in a stay, to a slow lock: the stay ends before the
/// lock sets the code, and Seam removes the code at `ends_at`. The outcome
/// says the stay ended with the code never seen set (a guest may have had no
/// working code), not that the code was deleted or never existed.
#[tokio::test]
async fn a_stay_that_ends_before_the_lock_sets_the_code_fails_as_stay_ended() {
    let app = spawn_app(AppOptions::default()).await;
    let d = device(&app, 3000);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    // (1 to 2 s away: before the lock's 3 s)
    let (dates, ends_at) = stay_ending_in(&id, "4545", 2);
    let o = reconcile(&app, dates, Duration::from_secs(20)).await;
    assert_eq!(o.state, OutcomeState::Failed, "{o:?}");
    assert!(o.finished_at.unwrap() >= ends_at, "{o:?}");
    let e = o.error.unwrap();
    assert_eq!(e.kind, KIND_STAY_ENDED, "{e:?}");
    assert!(e.message.contains("stay ended") && e.message.contains("never"), "{}", e.message);
    assert!(app.seam.access_code(&id).is_none(), "Seam removed it at the end of the stay");
    app.stop().await;
}

/// A change held past the end of its stay (here Seam answers its update 429
/// with `Retry-After: 3` while the stay ends in 1 to 2 s) is not sent late:
/// Seam refuses an update that ends in the past, and the code on the lock,
/// with whatever PIN it has there, must not work after the stay. latchkey
/// removes it instead and ends `stay_ended`.
#[tokio::test]
async fn a_change_held_past_the_end_of_its_stay_removes_the_code_instead() {
    let app = spawn_app(AppOptions::default()).await;
    let d = device(&app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    app.seam.set_faults(Faults { force_429: 1, retry_after: Some(3), ..Faults::default() });
    let (mut dates, _) = stay_ending_in(&id, "4646", 2);
    dates["device_id"] = json!(d);
    let o = reconcile(&app, dates, Duration::from_secs(20)).await;
    assert_eq!(o.state, OutcomeState::Failed, "{o:?}");
    let e = o.error.clone().unwrap();
    assert_eq!(e.kind, KIND_STAY_ENDED, "{e:?}");
    assert!(e.message.contains("removed the access code instead"), "{}", e.message);
    assert!(o.deleted_at.is_some(), "{o:?}");
    assert!(app.seam.access_code(&id).is_none(), "the code is off the lock");
    let calls: Vec<(String, u16)> = app
        .seam
        .requests()
        .into_iter()
        .filter(|r| r.access_code_id.as_deref() == Some(id.as_str()))
        .map(|r| (r.path, r.status))
        .collect();
    let updates: Vec<_> = calls.iter().filter(|(path, _)| path == "/access_codes/update").collect();
    assert_eq!(updates, [&("/access_codes/update".to_string(), 429)], "no update after the stay: {calls:?}");
    assert!(calls.iter().any(|(path, _)| path == "/access_codes/delete"), "{calls:?}");
    app.stop().await;
}

/// The same removal, refused by the lock: the guest who checked out can
/// still get in, so it is the loud `not_removed` of an end of stay (its
/// ERROR line, metric and alert), not a failed update.
#[tokio::test]
async fn a_removal_after_the_stay_that_the_lock_refuses_fails_as_not_removed() {
    let app = spawn_app(AppOptions::default()).await;
    let d = device(&app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    app.seam.set_faults(Faults { force_429: 1, retry_after: Some(3), ..Faults::default() });
    app.seam.set_device(&d, DeviceBehaviour::fails(Duration::from_millis(100)));
    let (mut dates, _) = stay_ending_in(&id, "4747", 2);
    dates["device_id"] = json!(d);
    let o = reconcile(&app, dates, Duration::from_secs(20)).await;
    assert_eq!(o.state, OutcomeState::Failed, "{o:?}");
    let e = o.error.clone().unwrap();
    assert_eq!(
        (e.kind.as_str(), e.error_codes.as_slice()),
        (KIND_NOT_REMOVED, &["failed_to_remove_from_device".to_string()][..]),
        "{e:?}"
    );
    assert!(e.message.contains("end of stay"), "{}", e.message);
    assert!(o.deleted_at.is_none(), "not gone: {o:?}");
    assert_eq!(not_removed_count(&app, "end_of_stay").await, Some(1.0));
    assert!(app.seam.access_code(&id).is_some(), "it really is still there");
    app.stop().await;
}

#[tokio::test]
async fn records_of_a_finished_code_are_forgotten_in_time_and_a_live_code_is_kept() {
    let app = spawn_app(AppOptions { retention: Duration::from_secs(2), ..AppOptions::default() }).await;
    let d = device(&app, 50);
    let cancelled = app.seam.add_access_code(&d, SeedCode::default());
    let live = app.seam.add_access_code(&d, SeedCode::default());
    assert_eq!(
        reconcile(&app, json!({"access_code_id": live, "code": "8181"}), Duration::from_secs(15)).await.state,
        OutcomeState::Succeeded
    );
    assert_eq!(
        reconcile(&app, json!({"access_code_id": cancelled, "absent": true}), Duration::from_secs(15)).await.state,
        OutcomeState::Succeeded
    );
    until_record(&app, &cancelled, Duration::from_secs(10), "forgotten", |o| o.is_none()).await;
    assert!(app.store.history(&cancelled).await.unwrap().is_empty(), "its history is forgotten too");
    assert!(app.store.load(&cancelled).await.unwrap().is_none(), "and its desired state");
    let keys = app.redis.cli(&["--scan", "--pattern", &format!("*{cancelled}*")]);
    assert!(keys.trim().is_empty(), "nothing of it is left: {keys}");
    let kept = app.store.outcome(&live).await.unwrap().expect("a live code is never forgotten");
    assert_eq!(kept.state, OutcomeState::Succeeded);
    assert!(!app.store.history(&live).await.unwrap().is_empty());
    app.stop().await;
}

/// 100 bookings cancelled at once on 3 locks: Seam allows 20 deletes per
/// lock per minute, so this takes two minutes' windows on the busiest lock.
#[tokio::test]
async fn a_burst_of_cancellations_keeps_to_seams_delete_limit_on_every_lock() {
    let app =
        spawn_app(AppOptions { workers: 2, verify_timeout: Duration::from_secs(120), ..AppOptions::default() }).await;
    let devices: Vec<String> = (0..3).map(|_| device(&app, 30)).collect();
    let mut cancelled = Vec::new();
    for i in 0..100 {
        let d = &devices[i % 3];
        let id = app.seam.add_access_code(d, SeedCode::default());
        let g = app.store.enqueue(want(json!({"access_code_id": id, "device_id": d, "absent": true}))).await.unwrap();
        cancelled.push((id, g));
    }
    for (id, g) in &cancelled {
        let o = finished(&app, id, *g, Duration::from_secs(150)).await;
        assert_eq!(o.state, OutcomeState::Succeeded, "{id}: {o:?}");
    }
    let requests = app.seam.requests();
    let deletes: Vec<_> = requests.iter().filter(|r| r.path == "/access_codes/delete").collect();
    assert!(deletes.iter().all(|r| r.status < 400), "no delete refused (no 429 from Seam's own limit)");
    for d in &devices {
        let times: Vec<_> =
            deletes.iter().filter(|r| r.device_id.as_deref() == Some(d.as_str())).map(|r| r.at).collect();
        for (i, t) in times.iter().enumerate() {
            let in_minute = times[i..].iter().filter(|u| **u - *t < chrono::Duration::seconds(60)).count();
            assert!(in_minute <= 20, "device {d}: {in_minute} deletes in a minute");
        }
    }
    println!(
        "100 cancellations on 3 locks: {} delete calls, none refused, at most 20 per lock per minute",
        deletes.len()
    );
    app.stop().await;
}

/// Someone changes the PIN at the lock after it was verified: the next
/// resync look finds it and applies the desired state again.
#[tokio::test]
async fn drift_after_success_is_repaired_within_one_resync_interval() {
    let app = spawn_app(AppOptions { resync: Duration::from_secs(2), ..AppOptions::default() }).await;
    let d = device(&app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    let o = reconcile(&app, json!({"access_code_id": id, "code": "5150"}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded);
    let changed = Instant::now();
    assert!(app.seam.modify_access_code(&id, Modification { code: Some("9999".into()), ..Modification::default() }));
    let o = repaired_once(&app, &id, "repaired").await;
    let took = changed.elapsed();
    assert_eq!(app.seam.access_code(&id).unwrap()["code"], "5150", "the desired PIN is back on the lock");
    assert_eq!(o.last_drift.unwrap().differences, ["code"]);
    assert!(took < Duration::from_secs(2 * 2 + 3), "within a resync interval (and the repair): {took:?}");
    println!("drift repaired {took:?} after the change (resync every 2 s)");
    app.stop().await;
}

/// Seam failing the resync looks of a code that succeeded, for longer than
/// a job's attempts last, proves nothing about the lock: the outcome stays
/// `succeeded` (not `failed`, `gave_up`), and the looks go on once Seam
/// answers again, so a drift after the outage is still repaired.
#[tokio::test]
async fn a_seam_outage_during_resync_looks_leaves_the_code_succeeded_and_watched() {
    let app = spawn_app(AppOptions { resync: Duration::from_secs(1), max_attempts: 2, ..AppOptions::default() }).await;
    let d = device(&app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    let o = reconcile(&app, json!({"access_code_id": id, "code": "5252"}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded);
    app.seam.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let failed_looks = || {
        app.seam
            .requests()
            .into_iter()
            .filter(|r| r.path == "/access_codes/get" && r.status >= 500 && r.access_code_id.as_deref() == Some(&id))
            .count()
    };
    // Two attempts of three reads each (one and two quick retries) give a
    // generation up; the outage outlasts that, and twice over.
    let outage = Instant::now();
    while failed_looks() < 12 {
        assert!(outage.elapsed() < Duration::from_secs(30), "the looks went on: {} failed", failed_looks());
        let o = app.store.outcome(&id).await.unwrap().unwrap();
        assert_eq!((o.state, o.error), (OutcomeState::Succeeded, None), "an unanswered look is no verdict");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.seam.set_faults(Faults::default());
    assert!(app.seam.modify_access_code(&id, Modification { code: Some("9999".into()), ..Modification::default() }));
    let o = repaired_once(&app, &id, "repaired after the outage").await;
    assert_eq!(app.seam.access_code(&id).unwrap()["code"], "5252", "{o:?}");
    app.stop().await;
}

/// A lock that loses a code (a reset, a battery swap) while Seam keeps it,
/// shown `unset` with no issue: the resync look does not take the silence
/// for success; it is drift (`status`), and the code is put back.
#[tokio::test]
async fn a_code_the_lock_lost_is_put_back_by_resync() {
    let app = spawn_app(AppOptions { resync: Duration::from_secs(1), ..AppOptions::default() }).await;
    let d = device(&app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    let o = reconcile(&app, json!({"access_code_id": id, "code": "5353"}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded);
    assert!(app.seam.modify_access_code(&id, Modification { lost: true, ..Modification::default() }));
    assert_eq!(app.seam.access_code(&id).unwrap()["status"], "unset");
    let o = repaired_once(&app, &id, "put back").await;
    assert_eq!(o.last_drift.unwrap().differences, ["status"]);
    let on_seam = app.seam.access_code(&id).unwrap();
    assert_eq!((on_seam["status"].as_str(), on_seam["code"].as_str()), (Some("set"), Some("5353")));
    app.stop().await;
}

/// A step that runs on in the same run (here the repair of a drift a resync
/// look found) starts with a fresh budget, as a continuation through the
/// queue would; when it fails, the job must not be buried by the attempt it
/// was fetched with (its last here), leaving the code `pending` for ever.
#[tokio::test]
async fn a_repair_that_fails_after_a_look_on_the_last_attempt_is_not_buried() {
    let app = spawn_app(AppOptions { resync: Duration::from_secs(1), max_attempts: 2, ..AppOptions::default() }).await;
    let d = device(&app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    let o = reconcile(&app, json!({"access_code_id": id, "code": "5454"}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded);
    // The next look fails (three reads: the job's first attempt), its
    // second finds the drift, and the repair's updates fail.
    assert!(app.seam.modify_access_code(&id, Modification { code: Some("9999".into()), ..Modification::default() }));
    app.seam.set_faults(Faults {
        stall_next: 3,
        error_rate: 1.0,
        error_paths: vec!["/access_codes/update".into()],
        ..Faults::default()
    });
    let failed_updates =
        || app.seam.requests().into_iter().filter(|r| r.path == "/access_codes/update" && r.status >= 500).count();
    let t = Instant::now();
    while failed_updates() < 3 {
        assert!(t.elapsed() < Duration::from_secs(15), "the repair was sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // (lifted at once: the repair's own attempts are not what is tested)
    app.seam.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.store.queue().depth().await.unwrap().dead, 0, "not buried");
    let o = repaired_once(&app, &id, "repaired").await;
    assert_eq!(app.seam.access_code(&id).unwrap()["code"], "5454", "{o:?}");
    app.stop().await;
}

/// A lock that keeps changing the code (a faulty integration) is not fought
/// in a loop: after the allowed repairs, the outcome says it drifted.
#[tokio::test]
async fn a_code_that_keeps_drifting_ends_drifted_instead_of_looping() {
    let app =
        spawn_app(AppOptions { resync: Duration::from_secs(1), max_drift_repairs: 2, ..AppOptions::default() }).await;
    let d = device(&app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    let o = reconcile(&app, json!({"access_code_id": id, "code": "6262"}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded);
    let sim = (*app.seam).clone();
    let meddler = {
        let id = id.clone();
        tokio::spawn(async move {
            loop {
                sim.modify_access_code(&id, Modification { code: Some("0000".into()), ..Modification::default() });
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let o = record_in(&app, &id, OutcomeState::Failed, Duration::from_secs(30)).await;
    assert_eq!(o.error.as_ref().unwrap().kind, "drifted", "{o:?}");
    let updates = calls(&app, &id, "/access_codes/update").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    meddler.abort();
    assert_eq!(calls(&app, &id, "/access_codes/update").len(), updates, "not repaired in a loop after it ended");
    assert!(updates <= 1 + 2 * 3, "{updates} update calls: the first, then at most 2 repairs with their re-applies");
    app.stop().await;
}

/// The lock (or someone in Seam's console) dropped the code: the repair
/// cannot bring it back (an update of a missing code is refused), and the
/// outcome says so instead of believing it is still there.
#[tokio::test]
async fn a_code_dropped_behind_latchkeys_back_is_found_by_resync() {
    let app = spawn_app(AppOptions { resync: Duration::from_secs(1), ..AppOptions::default() }).await;
    let d = device(&app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    assert_eq!(
        reconcile(&app, json!({"access_code_id": id, "code": "7171"}), Duration::from_secs(15)).await.state,
        OutcomeState::Succeeded
    );
    assert!(app.seam.remove_access_code(&id));
    let o = record_in(&app, &id, OutcomeState::Rejected, Duration::from_secs(15)).await;
    assert_eq!(o.last_drift.unwrap().differences, ["missing"]);
    assert_eq!(o.error.unwrap().kind, "access_code_not_found");
    app.stop().await;
}

/// Waits until a drift of `id` has been repaired once and the code verified
/// again; returns the record then.
async fn repaired_once(app: &TestApp, id: &str, what: &str) -> latchkey_core::Outcome {
    until_record(app, id, Duration::from_secs(15), what, |o| {
        o.is_some_and(|o| o.drift_repairs == 1 && o.state == OutcomeState::Succeeded)
    })
    .await
    .unwrap()
}

/// `latchkey_codes_not_removed_total{after}` as the first worker's
/// `/metrics` shows it.
async fn not_removed_count(app: &TestApp, after: &str) -> Option<f64> {
    let metrics = until_status(&format!("{}/metrics", app.ops_urls[0]), 200, Duration::from_secs(5)).await;
    crate::ops::sample(&metrics, &format!(r#"latchkey_codes_not_removed_total{{after="{after}"}}"#))
}
