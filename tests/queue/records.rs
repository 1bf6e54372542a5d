//! Desired states and outcomes in Redis (issue 4's store layer): generations
//! only grow, one job per access code, every state change goes to the stream,
//! outcome writes are compare-and-set on generation and lease, a run loads the
//! desired state and its record together, and a job that dies ends its
//! generation `failed` (`gave_up`) rather than leaving callers waiting.

use std::time::Duration;

use chrono::Utc;
use latchkey_core::{DesiredStateInput, Outcome, OutcomeState};
use latchkey_store::{Change, JobInfo, Lease, QueueConfig, Reconciliations, Recorded, Redis, RedisConfig, Waited};
use latchkey_tests::{
    RedisServer, unique,
    worker::{WorkerHandle, spawn_probe_worker, test_options},
};
use redis::AsyncCommands;

use crate::{raw, wait_for_counter};

async fn store(url: &str) -> Reconciliations {
    let redis = Redis::connect(&RedisConfig::new(url)).await.unwrap();
    Reconciliations::open(redis, QueueConfig { prefix: unique("lk"), ..QueueConfig::default() }).await.unwrap()
}

fn want(json: &str) -> DesiredStateInput {
    serde_json::from_str(json).unwrap()
}

async fn stream(url: &str, r: &Reconciliations) -> Vec<(String, u64, String)> {
    let reply: redis::streams::StreamRangeReply = raw(url).await.xrange_all(r.queue().home().events()).await.unwrap();
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
    assert_eq!(err.to_string(), "invalid desired state: code: must be 4 to 9 digits");
    assert!(r.outcome("ac1").await.unwrap().is_none());
    assert_eq!(r.queue().depth().await.unwrap().ready, 0);
}

/// A lease on access code `ac1`'s job (the records tests are about it).
fn lease(r: &Reconciliations, worker: &str, fence: u64) -> Lease {
    Lease { partition: r.queue().keys_of("ac1"), worker: worker.into(), fence, duration: Duration::from_secs(10) }
}

#[tokio::test]
async fn outcome_writes_are_refused_for_an_older_generation_a_lost_lease_or_a_stale_run() {
    let redis = RedisServer::start();
    let r = store(&redis.url()).await;
    r.enqueue(want(r#"{"access_code_id":"ac1","code":"1234"}"#)).await.unwrap();
    // Lease the job to "w1" (fence 1) behind the queue's back: this test is about the scripts.
    let mut conn = raw(&redis.url()).await;
    let job = r.queue().home().job("ac1");
    let _: () = conn.hset_multiple(&job, &[("lease", "w1"), ("fence", "1")]).await.unwrap();
    let _: () = conn.zadd(r.queue().home().leased(), "ac1", 1).await.unwrap();

    let applying = Outcome::pending("ac1", 1, Utc::now()).moved(OutcomeState::Applying, Utc::now());
    assert_eq!(r.record(&applying, &lease(&r, "w1", 1)).await.unwrap(), Recorded::Written);
    let expiry: f64 = conn.zscore(r.queue().home().leased(), "ac1").await.unwrap();
    assert!(expiry > 1.0, "a write renews the lease");
    assert_eq!(r.record(&applying, &lease(&r, "w2", 1)).await.unwrap(), Recorded::LeaseLost);
    // The same worker fetched the job again (its lease had expired): the
    // earlier run, fence 1, is stale and changes nothing, nor may it send.
    let _: () = conn.hset(&job, "fence", "2").await.unwrap();
    assert_eq!(r.record(&applying, &lease(&r, "w1", 1)).await.unwrap(), Recorded::LeaseLost);
    assert!(!r.hold("ac1", &lease(&r, "w1", 1)).await.unwrap(), "a stale run does not hold the job");
    assert!(r.hold("ac1", &lease(&r, "w1", 2)).await.unwrap(), "the current run does");
    r.enqueue(want(r#"{"access_code_id":"ac1","code":"5678"}"#)).await.unwrap();
    let late = applying.clone().moved(OutcomeState::Succeeded, Utc::now());
    assert_eq!(r.record(&late, &lease(&r, "w1", 2)).await.unwrap(), Recorded::Superseded);
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
    let running = WorkerHandle::spawn(|stopped| worker.run_until(stopped));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen.generations.lock().unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "generation 2 never ran: {:?}", seen.generations.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*seen.generations.lock().unwrap(), [1, 2]);
    running.stop().await;
}

#[tokio::test]
async fn the_device_limit_is_an_exact_sliding_window_shared_by_every_handle() {
    use latchkey_store::Limits;
    let redis = RedisServer::start();
    let a = store(&redis.url()).await;
    // A second handle on its own connection: what another worker process would have.
    let b = Reconciliations::open(
        Redis::connect(&RedisConfig::new(redis.url())).await.unwrap(),
        a.queue().config().clone(),
    )
    .await
    .unwrap();
    let limits = Limits { device_limit: 3, device_window: Duration::from_millis(800), ..Limits::default() };
    assert_eq!(a.admit(Some((Change::Update, "d1")), &limits).await.unwrap(), None);
    assert_eq!(b.admit(Some((Change::Update, "d1")), &limits).await.unwrap(), None);
    assert_eq!(a.admit(Some((Change::Update, "d1")), &limits).await.unwrap(), None);
    let wait = b.admit(Some((Change::Update, "d1")), &limits).await.unwrap().expect("the fourth in the window waits");
    assert!(
        wait > Duration::from_millis(600) && wait <= Duration::from_millis(1050),
        "{wait:?} (800 ms window + guard band)"
    );
    assert_eq!(a.admit(Some((Change::Update, "d2")), &limits).await.unwrap(), None, "the limit is per device");
    tokio::time::sleep(wait).await;
    assert_eq!(
        b.admit(Some((Change::Update, "d1")), &limits).await.unwrap(),
        None,
        "a slot frees when the oldest leaves the window"
    );
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
    r.hold_device(Change::Update, "d9", Duration::from_millis(700), &device).await.unwrap();
    let wait = r.admit(Some((Change::Update, "d9")), &device).await.unwrap().expect("held after a 429");
    assert!(wait > Duration::from_millis(500) && wait <= Duration::from_millis(700), "{wait:?}");
}

/// A store whose queue has this attempt budget.
async fn store_with_attempts(url: &str, max_attempts: u32) -> Reconciliations {
    let redis = Redis::connect(&RedisConfig::new(url)).await.unwrap();
    Reconciliations::open(redis, QueueConfig { prefix: unique("lk"), max_attempts, ..QueueConfig::default() })
        .await
        .unwrap()
}

/// An access code as Seam reports it while it is being set: no errors, no
/// warnings (empty lists, which must survive any rewrite of the record).
fn seen(id: &str) -> latchkey_core::AccessCode {
    serde_json::from_value(serde_json::json!({
        "access_code_id": id, "device_id": "d1", "name": "Guest", "code": "1234",
        "code_type": "ongoing", "status": "setting", "starts_at": null, "ends_at": null,
        "errors": [], "warnings": []
    }))
    .unwrap()
}

/// What a job's burial must leave: the newest generation's record ended
/// `failed`, error `gave_up` with the dead-letter reason, at the time of
/// death; `wait_for_outcome` sees it finished; the stream ends with it.
async fn assert_ended_by_burial(url: &str, r: &Reconciliations, id: &str, generation: u64) -> Outcome {
    let dead = r.queue().dead_letters(100).await.unwrap();
    let dead = dead.iter().find(|d| d.id == id).expect("a dead letter");
    let o = r.outcome(id).await.unwrap().unwrap();
    assert_eq!((o.generation, o.state), (generation, OutcomeState::Failed), "{o:?}");
    let error = o.error.clone().unwrap();
    assert_eq!((error.kind.as_str(), error.message.as_str()), ("gave_up", dead.error.as_str()));
    assert_eq!(o.finished_at, Some(o.updated_at));
    assert_eq!(o.updated_at.timestamp_millis() as u64, dead.dead_at_ms, "ended when it died, by Redis' clock");
    match r.wait_for_outcome(id, generation, Duration::from_secs(1)).await.unwrap() {
        Waited::Finished(finished) => assert_eq!(finished, o),
        other => panic!("{other:?}"),
    }
    let events = stream(url, r).await;
    assert_eq!(events.last(), Some(&(id.to_string(), generation, "failed".to_string())), "{events:?}");
    o
}

#[tokio::test]
async fn a_reconcile_job_that_runs_out_of_attempts_ends_its_outcome_failed_gave_up_with_the_reason() {
    use apalis::prelude::*;
    use latchkey_store::{Next, WorkerOptions};

    /// Gets as far as verifying, then fails: the last attempt, so the job dies.
    async fn verify_then_fail(
        job: serde_json::Value,
        info: Data<JobInfo>,
        store: Data<Reconciliations>,
    ) -> Result<Next, BoxDynError> {
        let id = job["access_code_id"].as_str().unwrap();
        let loaded = store.load(id).await?.unwrap();
        let mut verifying = loaded.outcome.moved(OutcomeState::Verifying, Utc::now());
        verifying.attempts = 1;
        verifying.last_seen = Some(seen(id));
        if store.record(&verifying, &info.lease).await? != Recorded::Written {
            return Err("could not record verifying".into());
        }
        Err("Seam kept timing out".into())
    }

    let redis = RedisServer::start();
    let r = store_with_attempts(&redis.url(), 1).await;
    r.enqueue(want(r#"{"access_code_id":"ac1","code":"1234"}"#)).await.unwrap();
    let worker = WorkerBuilder::new("dies")
        .backend(r.queue().backend::<serde_json::Value>(WorkerOptions { identity: "w-dies".into(), ..test_options() }))
        .data(r.clone())
        .build(verify_then_fail);
    let running = WorkerHandle::spawn(|stopped| worker.run_until(stopped));
    wait_for_counter(r.queue(), "dead", 1).await;
    running.stop().await;

    let o = assert_ended_by_burial(&redis.url(), &r, "ac1", 1).await;
    assert!(o.error.unwrap().message.ends_with("attempt 1 of 1 failed: Seam kept timing out"));
    assert_eq!((o.attempts, o.last_seen), (1, Some(seen("ac1"))), "the rest of the record is kept as it was");
    let states: Vec<String> = stream(&redis.url(), &r).await.into_iter().map(|(_, _, s)| s).collect();
    assert_eq!(states, ["pending", "verifying", "failed"]);
}

#[tokio::test]
async fn a_lease_that_expires_on_the_last_attempt_ends_the_outcome_failed_too() {
    let redis = RedisServer::start();
    let url = redis.url();
    let r = store_with_attempts(&url, 1).await;
    r.enqueue(want(r#"{"access_code_id":"ac1","code":"1234"}"#)).await.unwrap();
    // A worker "ghost" took the job on its last attempt, recorded `applying`,
    // and died: its lease ran out long ago. Set up behind the queue's back.
    let keys = r.queue().home();
    let mut conn = raw(&url).await;
    let _: () = conn.lrem(keys.ready(), 0, "ac1").await.unwrap();
    let _: () = conn
        .hset_multiple(keys.job("ac1"), &[("state", "leased"), ("lease", "ghost"), ("fence", "1"), ("attempts", "1")])
        .await
        .unwrap();
    let _: () = conn.zadd(keys.leased(), "ac1", 1).await.unwrap();
    let applying = r.load("ac1").await.unwrap().unwrap().outcome.moved(OutcomeState::Applying, Utc::now());
    assert_eq!(r.record(&applying, &lease(&r, "ghost", 1)).await.unwrap(), Recorded::Written);

    // Any worker's next fetch reclaims the lease and buries the job.
    let worker = spawn_probe_worker(r.queue(), test_options(), 1, &Default::default());
    wait_for_counter(r.queue(), "dead", 1).await;
    worker.stop().await;

    let o = assert_ended_by_burial(&url, &r, "ac1", 1).await;
    assert_eq!(o.error.unwrap().message, "lease expired on attempt 1 of 1 (worker ghost presumed dead)");
}

#[tokio::test]
async fn a_burial_leaves_finished_other_generation_and_unreadable_records_alone() {
    let redis = RedisServer::start();
    let url = redis.url();
    let r = store(&url).await;
    for id in ["live", "done", "older", "garbage"] {
        r.enqueue(want(&format!(r#"{{"access_code_id":"{id}","code":"1234"}}"#))).await.unwrap();
    }
    let keys = r.queue().home();
    let mut conn = raw(&url).await;
    let succeeded = Outcome::pending("done", 1, Utc::now()).moved(OutcomeState::Succeeded, Utc::now());
    let _: () = conn.set(keys.outcome("done"), serde_json::to_string(&succeeded).unwrap()).await.unwrap();
    // A record of another generation than the newest desired state (which the
    // scripts never leave, but a burial must not take it on trust).
    let _: () = conn.hset(keys.desired("older"), "generation", 2).await.unwrap();
    let _: () = conn.set(keys.outcome("garbage"), "{not json").await.unwrap();
    let before: Vec<Option<String>> =
        conn.mget(&[keys.outcome("done"), keys.outcome("older"), keys.outcome("garbage")]).await.unwrap();
    let events_before = stream(&url, &r).await.len();

    // A reconcile payload is not a probe: every job dies at fetch, unparsable.
    let worker = spawn_probe_worker(r.queue(), test_options(), 1, &Default::default());
    wait_for_counter(r.queue(), "dead", 4).await;
    worker.stop().await;

    let o = assert_ended_by_burial(&url, &r, "live", 1).await;
    assert!(o.error.unwrap().message.starts_with("payload does not parse as"));
    let after: Vec<Option<String>> =
        conn.mget(&[keys.outcome("done"), keys.outcome("older"), keys.outcome("garbage")]).await.unwrap();
    assert_eq!(after, before, "finished, other-generation and unreadable records are left as they were");
    assert_eq!(stream(&url, &r).await.len(), events_before + 1, "one state change: live's");
    assert_eq!(r.queue().depth().await.unwrap().dead, 4, "every burial went through");
}

#[tokio::test]
async fn load_refuses_an_outcome_record_of_another_generation_naming_both() {
    let redis = RedisServer::start();
    let r = store(&redis.url()).await;
    r.enqueue(want(r#"{"access_code_id":"ac1","code":"1234"}"#)).await.unwrap();
    r.enqueue(want(r#"{"access_code_id":"ac1","code":"5678"}"#)).await.unwrap();
    let stale = Outcome::pending("ac1", 1, Utc::now());
    let _: () = raw(&redis.url())
        .await
        .set(r.queue().home().outcome("ac1"), serde_json::to_string(&stale).unwrap())
        .await
        .unwrap();
    let err = r.load("ac1").await.unwrap_err().to_string();
    assert_eq!(
        err,
        "unexpected reply from load.lua: access code ac1: the desired state is generation 2 \
         but the outcome record is about generation 1"
    );
    assert!(r.load("nobody").await.unwrap().is_none());
}

#[tokio::test]
async fn a_new_desired_state_replaces_an_unreadable_outcome_record_whole() {
    let redis = RedisServer::start();
    let r = store(&redis.url()).await;
    r.enqueue(want(r#"{"access_code_id":"ac1","code":"1234"}"#)).await.unwrap();
    let _: () = raw(&redis.url()).await.set(r.queue().home().outcome("ac1"), "{not json").await.unwrap();
    assert_eq!(r.enqueue(want(r#"{"access_code_id":"ac1","code":"5678"}"#)).await.unwrap(), 2);
    let loaded = r.load("ac1").await.unwrap().unwrap();
    assert_eq!((loaded.generation, loaded.outcome.generation, loaded.outcome.state), (2, 2, OutcomeState::Pending));
}

/// `rfc3339_ms` in common.lua (outcome times a burial writes) against chrono:
/// one instant of every day from 1970 into 2101 (leap years, 2000 which is
/// one, 2100 which is not, every month end), the edges of a day, and the last
/// millisecond of year 9999.
#[tokio::test]
async fn the_lua_rfc3339_formatter_agrees_with_chrono() {
    use chrono::{DateTime, SecondsFormat};
    let common =
        std::fs::read_to_string(latchkey_tests::workspace_root().join("crates/latchkey-store/lua/common.lua")).unwrap();
    let script = redis::Script::new(&format!(
        "{common}\nlocal out = {{}}\n\
         for i = 1, #ARGV do out[i] = rfc3339_ms(tonumber(ARGV[i])) end\n\
         for day = 0, 48000 do out[#out + 1] = rfc3339_ms(day * 86400000 + (day * 7919993) % 86400000) end\n\
         return out"
    ));
    let edges: [u64; 6] = [0, 999, 86_399_999, 951_782_400_000, 4_107_542_399_999, 253_402_300_799_999];
    let redis = RedisServer::start();
    let got: Vec<String> =
        script.key("t:{rfc3339}").arg(&edges[..]).invoke_async(&mut raw(&redis.url()).await).await.unwrap();
    let days = (0..=48_000u64).map(|day| day * 86_400_000 + (day * 7_919_993) % 86_400_000);
    let want: Vec<String> = edges
        .into_iter()
        .chain(days)
        .map(|ms| DateTime::from_timestamp_millis(ms as i64).unwrap().to_rfc3339_opts(SecondsFormat::Millis, true))
        .collect();
    assert_eq!(got.len(), want.len());
    for (got, want) in got.iter().zip(&want) {
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn a_last_record_that_puts_its_job_back_settles_it_in_the_same_script_unless_superseded() {
    use apalis::prelude::*;
    use latchkey_store::{Next, WorkerOptions};

    /// ac1: records `verifying` and puts the job back for a minute, in one
    /// script. ac2: a newer desired state arrives first; the old record is
    /// refused and nothing is put back (the run starts over).
    async fn record_and_continue(
        job: serde_json::Value,
        info: Data<JobInfo>,
        store: Data<Reconciliations>,
    ) -> Result<Next, BoxDynError> {
        let id = job["access_code_id"].as_str().unwrap();
        let loaded = store.load(id).await?.unwrap();
        if loaded.outcome.state == OutcomeState::Verifying || loaded.generation > 1 {
            return Ok(Next::Done);
        }
        if id == "ac2" {
            store.enqueue(want(r#"{"access_code_id":"ac2","code":"5678"}"#)).await?;
        }
        let verifying = loaded.outcome.moved(OutcomeState::Verifying, Utc::now());
        let at = Utc::now().timestamp_millis() as u64 + 60_000;
        info.settling();
        match store.record_then_continue(&verifying, &info.lease, at).await? {
            Recorded::Written => Ok(Next::Settled),
            Recorded::Superseded => Ok(Next::RunAt(0)),
            Recorded::LeaseLost => Err("lease lost".into()),
        }
    }

    let redis = RedisServer::start();
    let url = redis.url();
    let r = store(&url).await;
    r.enqueue(want(r#"{"access_code_id":"ac1","code":"1234"}"#)).await.unwrap();
    r.enqueue(want(r#"{"access_code_id":"ac2","code":"1234"}"#)).await.unwrap();
    let worker = WorkerBuilder::new("continues")
        .backend(r.queue().backend::<serde_json::Value>(WorkerOptions { identity: "w-cont".into(), ..test_options() }))
        .data(r.clone())
        .build(record_and_continue);
    let running = WorkerHandle::spawn(|stopped| worker.run_until(stopped));
    // ac2's newer generation runs and is acknowledged; ac1 waits its minute.
    wait_for_counter(r.queue(), "completed", 1).await;
    running.stop().await;

    let ac1 = r.queue().job("ac1").await.unwrap().unwrap();
    assert_eq!((ac1.state.as_str(), ac1.attempts, ac1.lease.as_deref()), ("scheduled", 0, None), "{ac1:?}");
    let run_at: u64 = raw(&url).await.hget(r.queue().home().job("ac1"), "run_at").await.unwrap();
    assert!(run_at > Utc::now().timestamp_millis() as u64 + 50_000, "put back for its minute: {run_at}");
    assert_eq!(r.outcome("ac1").await.unwrap().unwrap().state, OutcomeState::Verifying);
    let depth = r.queue().depth().await.unwrap();
    assert_eq!((depth.leased, depth.scheduled, depth.dead), (0, 1, 0), "{depth:?}");
    // ac2's stale record was refused and its job was not put back for a
    // minute: it ran again at once, with the newer generation.
    let ac2 = r.outcome("ac2").await.unwrap().unwrap();
    assert_eq!((ac2.generation, ac2.state), (2, OutcomeState::Pending), "{ac2:?}");
    assert!(r.queue().job("ac2").await.unwrap().is_none(), "acknowledged after its rerun");
}
