//! Desired states and outcomes in Redis (issue 4's store layer): generations
//! only grow, one job per access code, every state change goes to the stream,
//! and outcome writes are compare-and-set on generation and lease.

use std::time::Duration;

use chrono::Utc;
use latchkey_core::{DesiredStateInput, Outcome, OutcomeState};
use latchkey_store::{QueueConfig, Reconciliations, Recorded, Redis, RedisConfig, Waited};
use latchkey_tests::{RedisServer, unique};
use redis::AsyncCommands;

use crate::raw;

async fn store(url: &str) -> Reconciliations {
    let redis = Redis::connect(&RedisConfig::new(url)).await.unwrap();
    Reconciliations::new(redis, QueueConfig { prefix: unique("lk"), ..QueueConfig::default() }).unwrap()
}

fn want(json: &str) -> DesiredStateInput {
    serde_json::from_str(json).unwrap()
}

async fn stream(url: &str, r: &Reconciliations) -> Vec<(String, u64, String)> {
    let reply: redis::streams::StreamRangeReply = raw(url).await.xrange_all(r.queue().keys().events()).await.unwrap();
    reply
        .ids
        .iter()
        .map(|e| {
            let get = |k: &str| e.get::<String>(k).unwrap();
            (get("access_code_id"), get("generation").parse().unwrap(), get("state"))
        })
        .collect()
}

#[tokio::test]
async fn enqueue_records_growing_generations_with_one_job_per_access_code() {
    let redis = RedisServer::start();
    let r = store(&redis.url()).await;
    assert_eq!(r.enqueue(want(r#"{"access_code_id":"ac1","code":"1234"}"#)).await.unwrap(), 1);
    assert_eq!(r.enqueue(want(r#"{"access_code_id":"ac1","code":"5678"}"#)).await.unwrap(), 2);
    assert_eq!(r.enqueue(want(r#"{"access_code_id":"ac2","type":"ongoing"}"#)).await.unwrap(), 1);

    assert_eq!(r.queue().depth().await.unwrap().ready, 2, "one job per access code");
    let loaded = r.load("ac1").await.unwrap().unwrap();
    assert_eq!((loaded.generation, loaded.desired.code.as_deref()), (2, Some("5678")));
    assert_eq!((loaded.outcome.generation, loaded.outcome.state), (2, OutcomeState::Pending));
    assert_eq!(
        stream(&redis.url(), &r).await,
        [
            ("ac1".into(), 1, "pending".into()),
            ("ac1".into(), 1, "superseded".into()),
            ("ac1".into(), 2, "pending".into()),
            ("ac2".into(), 1, "pending".into())
        ]
    );
}

#[tokio::test]
async fn an_invalid_desired_state_is_refused_naming_the_field_and_nothing_is_stored() {
    let redis = RedisServer::start();
    let r = store(&redis.url()).await;
    let err = r.enqueue(want(r#"{"access_code_id":"ac1","code":"12ab"}"#)).await.unwrap_err();
    assert_eq!(err.to_string(), r#"invalid desired state: code: "12ab" must be 4 to 9 digits"#);
    assert!(r.outcome("ac1").await.unwrap().is_none());
    assert_eq!(r.queue().depth().await.unwrap().ready, 0);
}

#[tokio::test]
async fn outcome_writes_are_refused_for_an_older_generation_or_a_lost_lease() {
    let redis = RedisServer::start();
    let r = store(&redis.url()).await;
    r.enqueue(want(r#"{"access_code_id":"ac1","code":"1234"}"#)).await.unwrap();
    // Lease the job to "w1" behind the queue's back: this test is about the record script.
    let _: () = raw(&redis.url()).await.hset(r.queue().keys().job("ac1"), "lease", "w1").await.unwrap();

    let applying = Outcome::pending("ac1", 1, Utc::now()).moved(OutcomeState::Applying, Utc::now());
    assert_eq!(r.record(&applying, "w1").await.unwrap(), Recorded::Written);
    assert_eq!(r.record(&applying, "w2").await.unwrap(), Recorded::LeaseLost);
    r.enqueue(want(r#"{"access_code_id":"ac1","code":"5678"}"#)).await.unwrap();
    let late = applying.clone().moved(OutcomeState::Succeeded, Utc::now());
    assert_eq!(r.record(&late, "w1").await.unwrap(), Recorded::Superseded);
    let now = r.outcome("ac1").await.unwrap().unwrap();
    assert_eq!((now.generation, now.state), (2, OutcomeState::Pending), "the stale write changed nothing");

    match r.wait_for_outcome("ac1", 1, Duration::from_millis(50)).await.unwrap() {
        Waited::Superseded(o) => assert_eq!(o.generation, 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        r.wait_for_outcome("ac1", 2, Duration::from_millis(50)).await.unwrap(),
        Waited::TimedOut(Some(_))
    ));
}

/// A desired state that arrives while the access code's job is running, after
/// the run has read the older one, must still be reconciled: the job runs
/// again however the running attempt ends (here: it says it is done).
#[tokio::test]
async fn a_desired_state_recorded_during_a_run_makes_the_job_run_again() {
    use std::sync::{Arc, Mutex};

    use apalis::prelude::*;
    use latchkey_store::{JobInfo, Next, WorkerOptions};

    #[derive(Clone)]
    struct Seen {
        generations: Arc<Mutex<Vec<u64>>>,
        store: Reconciliations,
    }

    async fn handle(job: serde_json::Value, _info: Data<JobInfo>, seen: Data<Seen>) -> Result<Next, BoxDynError> {
        let id = job["access_code_id"].as_str().unwrap().to_string();
        let generation = seen.store.load(&id).await?.unwrap().generation;
        seen.generations.lock().unwrap().push(generation);
        if generation == 1 {
            // A producer records generation 2 while this run is finishing with generation 1.
            seen.store.enqueue(want(r#"{"access_code_id":"ac1","code":"5678"}"#)).await?;
        }
        Ok(Next::Done)
    }

    let redis = RedisServer::start();
    let r = store(&redis.url()).await;
    r.enqueue(want(r#"{"access_code_id":"ac1","code":"1234"}"#)).await.unwrap();
    let seen = Seen { generations: Arc::default(), store: r.clone() };
    let worker = WorkerBuilder::new("touched")
        .backend(r.queue().backend::<serde_json::Value>(WorkerOptions::default()))
        .data(seen.clone())
        .build(handle);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
        Ok::<(), WorkerError>(())
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen.generations.lock().unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "generation 2 never ran: {:?}", seen.generations.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*seen.generations.lock().unwrap(), [1, 2]);
    let _ = tx.send(());
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_device_limit_is_an_exact_sliding_window_shared_by_every_handle() {
    use latchkey_store::Limits;
    let redis = RedisServer::start();
    let a = store(&redis.url()).await;
    // A second handle on its own connection: what another worker process would have.
    let b =
        Reconciliations::new(Redis::connect(&RedisConfig::new(redis.url())).await.unwrap(), a.queue().config().clone())
            .unwrap();
    let limits = Limits { device_limit: 3, device_window: Duration::from_millis(800), ..Limits::default() };
    assert_eq!(a.admit(Some("d1"), &limits).await.unwrap(), None);
    assert_eq!(b.admit(Some("d1"), &limits).await.unwrap(), None);
    assert_eq!(a.admit(Some("d1"), &limits).await.unwrap(), None);
    let wait = b.admit(Some("d1"), &limits).await.unwrap().expect("the fourth in the window waits");
    assert!(
        wait > Duration::from_millis(600) && wait <= Duration::from_millis(1050),
        "{wait:?} (800 ms window + guard band)"
    );
    assert_eq!(a.admit(Some("d2"), &limits).await.unwrap(), None, "the limit is per device");
    tokio::time::sleep(wait).await;
    assert_eq!(b.admit(Some("d1"), &limits).await.unwrap(), None, "a slot frees when the oldest leaves the window");
}

#[tokio::test]
async fn the_key_budget_allows_its_burst_then_paces_and_a_429_holds_the_device() {
    use latchkey_store::Limits;
    let redis = RedisServer::start();
    let r = store(&redis.url()).await;
    let limits = Limits { key_rate: 10, key_burst: 2, ..Limits::default() };
    assert_eq!(r.admit(None, &limits).await.unwrap(), None);
    assert_eq!(r.admit(None, &limits).await.unwrap(), None);
    let wait = r.admit(None, &limits).await.unwrap().expect("past the burst");
    assert!(wait <= Duration::from_millis(100), "{wait:?}");

    let device = Limits::default();
    r.hold_device("d9", Duration::from_millis(700), &device).await.unwrap();
    let wait = r.admit(Some("d9"), &device).await.unwrap().expect("held after a 429");
    assert!(wait > Duration::from_millis(500) && wait <= Duration::from_millis(700), "{wait:?}");
}
