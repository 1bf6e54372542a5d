//! The reconciliation pipeline end to end: real Redis, the Seam simulator, the
//! real client and workers. One module per concern, one test binary.

mod api;
mod chaos;
mod cluster;
mod console;
mod failures;
mod faults;
mod hostile;
mod input;
mod lifecycle;
mod limits;
mod ops;
mod redis_faults;
mod repartition;
mod seeds;
mod supersede;
mod tamper;
mod truth;
mod webhooks;

use std::time::Duration;

use latchkey_core::{DesiredStateInput, Outcome, OutcomeState};
use latchkey_store::Waited;
use latchkey_tests::app::TestApp;

/// A plain connection to the app's Redis, for a test to look at or tamper
/// with keys the way someone else's client would.
pub async fn raw(app: &TestApp) -> redis::aio::MultiplexedConnection {
    redis::Client::open(app.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.expect("connect")
}

/// Parses a desired state written as JSON in a test.
pub fn want(json: serde_json::Value) -> DesiredStateInput {
    serde_json::from_value(json).expect("test desired state")
}

/// Enqueues and waits for that generation to finish; panics otherwise.
pub async fn reconcile(app: &TestApp, json: serde_json::Value, timeout: Duration) -> Outcome {
    let input = want(json);
    let id = input.access_code_id.clone();
    let generation = app.store.enqueue(input).await.expect("enqueue");
    finished(app, &id, generation, timeout).await
}

/// Waits for a generation to finish; panics if it is superseded or too slow.
pub async fn finished(app: &TestApp, id: &str, generation: u64, timeout: Duration) -> Outcome {
    match app.store.wait_for_outcome(id, generation, timeout).await.expect("read outcome") {
        Waited::Finished(o) => o,
        other => panic!("generation {generation} of {id} did not finish: {other:?}"),
    }
}

/// Seeds `n` access codes on the simulator, two per device taking `delay` to
/// apply a change, and enqueues a new PIN (`pin_base + i`) for each; returns
/// each code with its generation.
pub async fn seed_codes(app: &TestApp, n: usize, delay: Duration, pin_base: usize) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut device = String::new();
    for i in 0..n {
        if i % 2 == 0 {
            device = app.seam.add_device(latchkey_fake_seam::DeviceBehaviour::Normal { delay });
        }
        let id = app.seam.add_access_code(&device, latchkey_fake_seam::SeedCode::default());
        let desired =
            serde_json::json!({"access_code_id": id, "device_id": device, "code": format!("{}", pin_base + i)});
        out.push((id, app.store.enqueue(want(desired)).await.expect("enqueue")));
    }
    out
}

/// Seam API requests the simulator received for an access code, by path.
pub fn calls(app: &TestApp, id: &str, path: &str) -> Vec<latchkey_fake_seam::LoggedRequest> {
    app.seam.requests().into_iter().filter(|r| r.path == path && r.access_code_id.as_deref() == Some(id)).collect()
}

/// A device on the simulator that takes `delay_ms` to apply a change.
pub fn device(app: &TestApp, delay_ms: u64) -> String {
    app.seam.add_device(latchkey_fake_seam::DeviceBehaviour::Normal { delay: Duration::from_millis(delay_ms) })
}

/// Waits until the simulator has received an update for `id`.
pub async fn update_landed(app: &TestApp, id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while calls(app, id, "/access_codes/update").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no update reached Seam");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `what` holds of `id`'s outcome record (or its absence).
pub async fn until_record(
    app: &TestApp,
    id: &str,
    limit: Duration,
    what: &str,
    pred: impl Fn(Option<&Outcome>) -> bool,
) -> Option<Outcome> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let o = app.store.outcome(id).await.unwrap();
        if pred(o.as_ref()) {
            return o;
        }
        assert!(std::time::Instant::now() < deadline, "{id}: never {what} within {limit:?}: {o:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the outcome record of `id` is in `state`; returns it.
pub async fn record_in(app: &TestApp, id: &str, state: OutcomeState, limit: Duration) -> Outcome {
    let what = format!("{state:?}");
    until_record(app, id, limit, &what, |o| o.is_some_and(|o| o.state == state)).await.expect("a record")
}
