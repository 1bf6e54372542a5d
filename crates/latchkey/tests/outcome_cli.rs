//! `latchkey outcome`'s exit status is about the generation asked for, never
//! another one's record: 0 succeeded, 1 ended otherwise (superseded too), 3
//! not finished or not recorded yet, 4 unknown access code, 5 no answer from
//! Redis. The real binary against a real redis-server; the test plays the
//! producer (through the store) and the worker (writing records by hand).

use std::process::{Command, Output};

use chrono::Utc;
use latchkey_core::{Outcome, OutcomeState};
use latchkey_devenv::{RedisServer, free_tcp_port};
use latchkey_store::{QueueConfig, Reconciliations, Redis, RedisConfig};
use redis::AsyncCommands;

const PREFIX: &str = "outcome-cli";

fn latchkey_outcome(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("outcome")
        .args(args)
        .env("REDIS_URL", url)
        .env("LATCHKEY_PREFIX", PREFIX)
        .output()
        .unwrap()
}

/// The exit status and stderr of `latchkey outcome ARGS`.
fn status(url: &str, args: &[&str]) -> (i32, String) {
    let out = latchkey_outcome(url, args);
    (out.status.code().expect("exited"), String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn store(url: &str) -> Reconciliations {
    let redis = Redis::connect(&RedisConfig::new(url)).await.unwrap();
    let config =
        QueueConfig { prefix: PREFIX.into(), partitions: latchkey_store::DEFAULT_PARTITIONS, ..QueueConfig::default() };
    Reconciliations::open(redis, config).await.unwrap()
}

async fn enqueue(store: &Reconciliations, json: &str) -> u64 {
    store.enqueue(serde_json::from_str(json).unwrap()).await.unwrap()
}

/// Ends a generation the way a worker run would have recorded it.
async fn finish(url: &str, store: &Reconciliations, generation: u64, state: OutcomeState) {
    let record = Outcome::pending("ac1", generation, Utc::now()).moved(state, Utc::now());
    let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () =
        conn.set(store.queue().keys_of("ac1").outcome("ac1"), serde_json::to_string(&record).unwrap()).await.unwrap();
}

#[tokio::test]
async fn waiting_for_a_generation_not_recorded_yet_times_out_not_finished_despite_an_older_success() {
    let redis = RedisServer::start();
    let url = redis.url();
    let store = store(&url).await;
    assert_eq!(enqueue(&store, r#"{"access_code_id":"ac1","code":"1234"}"#).await, 1);
    finish(&url, &store, 1, OutcomeState::Succeeded).await;

    let (code, stderr) = status(&url, &["ac1", "--generation", "2", "--wait", "1"]);
    assert_eq!(code, 3, "generation 1 succeeded, generation 2 did not: {stderr}");
    assert!(stderr.contains("generation 2 is not recorded; the record is about generation 1"), "{stderr}");
    assert_eq!(status(&url, &["ac1", "--generation", "2"]).0, 3, "a single look judges the same way");
    assert_eq!(status(&url, &["ac1", "--generation", "1", "--wait", "1"]).0, 0);
    assert_eq!(status(&url, &["ac1"]).0, 0, "the newest generation by default");
}

#[tokio::test]
async fn every_exit_status_is_about_the_generation_asked_for() {
    let redis = RedisServer::start();
    let url = redis.url();
    let store = store(&url).await;
    assert_eq!(status(&url, &["ac1"]).0, 4, "no such access code");

    enqueue(&store, r#"{"access_code_id":"ac1","code":"1234"}"#).await;
    assert_eq!(status(&url, &["ac1"]).0, 3, "pending");
    assert_eq!(status(&url, &["ac1", "--wait", "1"]).0, 3, "still pending when the wait ends");

    enqueue(&store, r#"{"access_code_id":"ac1","code":"5678"}"#).await;
    for args in [&["ac1", "--generation", "1"][..], &["ac1", "--generation", "1", "--wait", "1"]] {
        let (code, stderr) = status(&url, args);
        assert_eq!(code, 1, "{args:?}: generation 1 ended superseded: {stderr}");
        assert!(stderr.contains("generation 1 was superseded by generation 2"), "{stderr}");
    }
    assert_eq!(status(&url, &["ac1", "--generation", "2"]).0, 3, "generation 2 is pending");

    finish(&url, &store, 2, OutcomeState::Failed).await;
    assert_eq!(status(&url, &["ac1", "--generation", "2", "--wait", "30"]).0, 1, "failed, at once");
    finish(&url, &store, 2, OutcomeState::Succeeded).await;
    let out = latchkey_outcome(&url, &["ac1", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let shown: Outcome = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((shown.generation, shown.state), (2, OutcomeState::Succeeded));

    let nobody = format!("redis://127.0.0.1:{}", free_tcp_port());
    let (code, stderr) = status(&nobody, &["ac1"]);
    assert_eq!(code, 5, "no answer is neither success nor an ending: {stderr}");
}
