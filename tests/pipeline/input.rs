//! Bad input never stops the worker: a desired state that breaks a rule is
//! refused at enqueue with the field and the rule; a job payload in Redis that
//! does not parse becomes a dead letter with the reason, and other work goes on.

use std::time::Duration;

use latchkey_core::OutcomeState;
use latchkey_fake_seam::{DeviceBehaviour, SeedCode};
use latchkey_store::NewJob;
use latchkey_tests::app::{AppOptions, spawn_app};
use serde_json::json;

use crate::{reconcile, want};

#[tokio::test]
async fn bad_input_at_enqueue_is_refused_and_nothing_reaches_seam() {
    let app = spawn_app(AppOptions::default()).await;
    let err = app.store.enqueue(want(json!({"access_code_id": "ac1", "type": "ongoing", "starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-02T00:00:00Z"}))).await.unwrap_err();
    assert!(err.to_string().contains("type: \"ongoing\" cannot be combined"), "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.seam.requests().is_empty());
    assert!(app.store.outcome("ac1").await.unwrap().is_none());
    app.stop().await;
}

#[tokio::test]
async fn a_job_payload_that_does_not_parse_is_dead_lettered_and_the_worker_goes_on() {
    let app = spawn_app(AppOptions::default()).await;
    app.store.queue().push(NewJob::from_json(r#"{"access_code":42}"#).id("garbage")).await.unwrap();
    let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(50) });
    let id = app.seam.add_access_code(&device, SeedCode::default());
    let o = reconcile(&app, json!({"access_code_id": id, "code": "2468"}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded);
    let dead = app.store.queue().dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id, "garbage");
    assert!(
        dead[0].error.contains("payload does not parse") && dead[0].error.contains("access_code_id"),
        "{}",
        dead[0].error
    );
    app.stop().await;
}
