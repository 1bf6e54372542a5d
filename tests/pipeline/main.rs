//! The reconciliation pipeline end to end: real Redis, the Seam simulator, the
//! real client and workers. One module per concern, one test binary.

mod chaos;
mod failures;
mod faults;
mod input;
mod limits;
mod redis_faults;
mod seeds;
mod supersede;

use std::time::Duration;

use latchkey_core::{DesiredStateInput, Outcome};
use latchkey_store::Waited;
use latchkey_tests::app::TestApp;

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

/// Seam API requests the simulator received for an access code, by path.
pub fn calls(app: &TestApp, id: &str, path: &str) -> Vec<latchkey_fake_seam::LoggedRequest> {
    app.seam.requests().into_iter().filter(|r| r.path == path && r.access_code_id.as_deref() == Some(id)).collect()
}
