//! Traces: with OTEL_EXPORTER_OTLP_ENDPOINT set, a worker process sends its
//! reconciliation spans (and the Seam requests inside them) to that OTLP/HTTP
//! collector; the spans are flushed when it stops on SIGTERM.

use std::{
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use latchkey_core::{DesiredStateInput, OutcomeState};
use latchkey_devenv::RedisServer;
use latchkey_fake_seam::{FakeSeam, SimConfig};
use latchkey_store::{QueueConfig, Reconciliations, Redis, RedisConfig, Waited};

type Received = Arc<Mutex<Vec<Vec<u8>>>>;

/// A collector that keeps every body posted to /v1/traces.
async fn collector() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(r): State<Received>, body: Bytes| async move {
                r.lock().unwrap().push(body.to_vec());
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_exports_its_reconciliation_spans_over_otlp() {
    let redis = RedisServer::start();
    let (otlp, received) = collector().await;
    let seam = FakeSeam::spawn(SimConfig {
        api_key: "seam_test_otlp".into(),
        device_delay: Duration::ZERO,
        auto_create: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("worker")
        .env("REDIS_URL", redis.url())
        .env("SEAM_ENDPOINT", seam.url())
        .env("SEAM_API_KEY", "seam_test_otlp")
        .env("LATCHKEY_PREFIX", "otlp")
        .env("LATCHKEY_HTTP_ADDR", "off")
        .env("LATCHKEY_POLL_BASE_MS", "50")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    let store = Reconciliations::open(
        Redis::connect(&RedisConfig::new(redis.url())).await.unwrap(),
        QueueConfig { prefix: "otlp".into(), partitions: latchkey_store::DEFAULT_PARTITIONS, ..QueueConfig::default() },
    )
    .await
    .unwrap();
    let input: DesiredStateInput =
        serde_json::from_value(serde_json::json!({"access_code_id": "ac-traced-1", "code": "2468"})).unwrap();
    let generation = store.enqueue(input).await.unwrap();
    match store.wait_for_outcome("ac-traced-1", generation, Duration::from_secs(20)).await.unwrap() {
        Waited::Finished(o) => assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}"),
        other => panic!("not finished: {other:?}"),
    }

    assert!(Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap().success());
    assert!(worker.wait().unwrap().success());
    let bodies = received.lock().unwrap().clone();
    assert!(!bodies.is_empty(), "nothing reached the collector");
    let all: Vec<u8> = bodies.concat();
    for needle in ["reconcile", "seam request", "/access_codes/update", "ac-traced-1", "latchkey"] {
        assert!(contains(&all, needle), "no {needle:?} in what was exported");
    }
    seam.shutdown().await;
}
