//! A hostile Seam (`latchkey_tests::hostile`): answers that are not JSON, of
//! the wrong shape, about another code, endless, redirected, or with absurd
//! `Retry-After` values. latchkey must believe nothing false about the codes
//! they concern, bound what each costs, leak no PIN, and keep reconciling
//! every other code.

use std::time::Duration;

use latchkey_core::{Outcome, OutcomeState};
use latchkey_fake_seam::SeedCode;
use latchkey_tests::{
    app::{AppOptions, TestApp, spawn_app},
    hostile::{Answer, HostileSeam},
};
use serde_json::json;

use crate::{device, finished, raw, want};

const GET: &str = "/access_codes/get";
const UPDATE: &str = "/access_codes/update";

/// An app whose one worker talks to Seam through `hostile`.
async fn app_behind_hostile_seam(options: AppOptions) -> (TestApp, HostileSeam) {
    let mut app = spawn_app(AppOptions { cluster: false, workers: 0, ..options }).await;
    let hostile = HostileSeam::start(app.seam.url()).await;
    let mut args = app.worker_args();
    args.seam_endpoint = hostile.url();
    app.start_worker_with(args);
    (app, hostile)
}

/// A code on a device of its own, with a new PIN enqueued (its device named,
/// so the first request about it is the update); its generation.
async fn enqueue_new_pin(app: &TestApp, pin: &str) -> (String, u64) {
    let dev = device(app, 50);
    let id = app.seam.add_access_code(&dev, SeedCode::default());
    let generation =
        app.store.enqueue(want(json!({"access_code_id": id, "device_id": dev, "code": pin}))).await.expect("enqueue");
    (id, generation)
}

fn no_pin(o: &Outcome, pin: &str) {
    let record = serde_json::to_string(o).unwrap();
    let error = o.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert!(!error.contains(pin), "the PIN is in the outcome's error: {error}");
    // The record may hold the PIN where callers read it back (last_seen.code),
    // never inside an error message.
    assert!(record.matches(pin).count() <= 1, "{record}");
}

#[tokio::test]
async fn a_hostile_seam_is_believed_about_nothing_and_every_other_code_reconciles() {
    let (app, hostile) = app_behind_hostile_seam(AppOptions {
        max_attempts: 3,
        verify_timeout: Duration::from_secs(4),
        ..AppOptions::default()
    })
    .await;
    let elsewhere = HostileSeam::start(app.seam.url()).await;

    let (control_a, gen_a) = enqueue_new_pin(&app, "1111").await;
    let (other, gen_other) = enqueue_new_pin(&app, "2222").await;
    hostile.script(&other, GET, Answer::OtherCode(control_a.clone()));
    let (not_json, gen_not_json) = enqueue_new_pin(&app, "3333").await;
    hostile.script(&not_json, UPDATE, Answer::NotJson);
    let (shape, gen_shape) = enqueue_new_pin(&app, "4444").await;
    hostile.script(&shape, GET, Answer::WrongShape);
    let (huge, gen_huge) = enqueue_new_pin(&app, "5555").await;
    hostile.script(&huge, GET, Answer::Huge(50 << 20));
    let (redirected, gen_redirected) = enqueue_new_pin(&app, "6666").await;
    hostile.script(&redirected, UPDATE, Answer::Redirect(format!("{}{UPDATE}", elsewhere.url())));
    let (zero, gen_zero) = enqueue_new_pin(&app, "7777").await;
    hostile.script(&zero, GET, Answer::RetryAfter("0".into()));
    let (control_b, gen_b) = enqueue_new_pin(&app, "8888").await;

    let limit = Duration::from_secs(40);
    assert_eq!(finished(&app, &control_a, gen_a, limit).await.state, OutcomeState::Succeeded);
    assert_eq!(finished(&app, &control_b, gen_b, limit).await.state, OutcomeState::Succeeded);

    // Another code's "set" is no evidence about this one.
    let o = finished(&app, &other, gen_other, limit).await;
    assert_ne!(o.state, OutcomeState::Succeeded, "{o:?}");
    assert!(o.error.as_ref().unwrap().message.contains(&control_a), "{:?}", o.error);

    // A 200 that cannot be read is a failed attempt, and attempts bound the
    // calls: three attempts, three updates (the gap between updates does not
    // start the count over).
    let o = finished(&app, &not_json, gen_not_json, limit).await;
    assert_eq!(o.state, OutcomeState::Failed, "{o:?}");
    assert!(hostile.seen(&not_json, UPDATE) <= 3, "{} updates", hostile.seen(&not_json, UPDATE));
    no_pin(&o, "3333");

    for (id, generation, pin) in [(&shape, gen_shape, "4444"), (&huge, gen_huge, "5555")] {
        let o = finished(&app, id, generation, limit).await;
        assert_ne!(o.state, OutcomeState::Succeeded, "{id}: {o:?}");
        no_pin(&o, pin);
    }

    // Not followed: the other origin never saw the request (or its PIN).
    let o = finished(&app, &redirected, gen_redirected, limit).await;
    assert_ne!(o.state, OutcomeState::Succeeded, "{o:?}");
    assert_eq!(elsewhere.seen(&redirected, UPDATE), 0, "the redirect was followed");

    // `Retry-After: 0` is no reason to ask again at once: polls stay spaced
    // and the verification still ends at its deadline.
    let o = finished(&app, &zero, gen_zero, limit).await;
    assert_eq!(o.state, OutcomeState::TimedOut, "{o:?}");
    let gets = hostile.seen(&zero, GET);
    assert!(gets <= 20, "{gets} gets in a 4 s window: Retry-After: 0 was taken literally");
    app.stop().await;
}

#[tokio::test]
async fn an_absurd_retry_after_holds_a_device_at_most_fifteen_minutes() {
    let (app, hostile) = app_behind_hostile_seam(AppOptions::default()).await;
    let (held, _) = enqueue_new_pin(&app, "1357").await;
    hostile.script(&held, UPDATE, Answer::RetryAfter("18446744073709551615".into()));
    let (control, generation) = enqueue_new_pin(&app, "2468").await;
    assert_eq!(finished(&app, &control, generation, Duration::from_secs(20)).await.state, OutcomeState::Succeeded);

    // The job waits for the clamped hold, not for centuries, and the device
    // hold did not fail (it would have been retried at once, over and over).
    let mut conn = raw(&app).await;
    let key = app.store.queue().keys_of(&held).scheduled();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let run_at = loop {
        let at: Option<f64> = redis::cmd("ZSCORE").arg(&key).arg(&held).query_async(&mut conn).await.unwrap();
        if let Some(at) = at.filter(|at| *at > latchkey_tests::now_ms() as f64 + 60_000.0) {
            break at as u64;
        }
        assert!(std::time::Instant::now() < deadline, "the rate-limited job was never scheduled a while out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wait = Duration::from_millis(run_at - latchkey_tests::now_ms());
    assert!(wait <= Duration::from_secs(15 * 60 + 5), "{wait:?}");
    assert_eq!(hostile.seen(&held, UPDATE), 1);
    let o = app.store.outcome(&held).await.unwrap().unwrap();
    assert!(!o.state.is_terminal(), "{o:?}");
    app.stop().await;
}
