//! Redis written by someone else: job records of the wrong type or with
//! garbage counters, poisoned ids in the ready list, outcome records that are
//! not JSON, desired states too large to read, counters that are not numbers.
//! Each bad record becomes a dead letter with its reason or is set aside
//! (`<base>:unreadable:...`); nothing else is held up, and enqueueing the code
//! again heals it.

use std::time::Duration;

use latchkey_core::{KIND_GAVE_UP, OutcomeState};
use latchkey_tests::app::{AppOptions, spawn_app};
use redis::AsyncCommands;
use serde_json::json;

use crate::{finished, raw, reconcile, seed_codes, want};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_poisoned_job_in_a_fetched_batch_is_dead_lettered_and_the_rest_of_the_batch_runs() {
    // (one partition: every job in one ready list, fetched in one batch)
    let mut app = spawn_app(AppOptions { cluster: false, workers: 0, partitions: 1, ..AppOptions::default() }).await;
    let codes = seed_codes(&app, 6, Duration::from_millis(50), 4000).await;
    let base = app.store.queue().home().base().to_string();
    let mut r = raw(&app).await;
    // Poison in the ready list, fetched in the same batch as the good codes:
    // a job record of another type, one whose attempts are not a number, an
    // id that is not UTF-8, and one of the codes' own job with a garbage counter.
    let _: () = r.set(format!("{base}:job:poison_type"), "x").await.unwrap();
    let _: () = r
        .hset_multiple(
            format!("{base}:job:poison_attempts"),
            &[("payload", "{}"), ("attempts", "abc"), ("state", "ready")],
        )
        .await
        .unwrap();
    let not_utf8: &[u8] = b"poison_\xff\xfe";
    let _: () = r.rpush(format!("{base}:ready"), &["poison_type", "poison_attempts"]).await.unwrap();
    let _: () = r.rpush(format!("{base}:ready"), not_utf8).await.unwrap();
    // And in the other lists: a due scheduled job of another type, and an
    // expired lease on a job whose counters are garbage.
    let _: () = r.set(format!("{base}:job:poison_sched"), "x").await.unwrap();
    let _: () = r.zadd(format!("{base}:scheduled"), "poison_sched", 0).await.unwrap();
    let _: () = r
        .hset_multiple(format!("{base}:job:poison_leased"), &[("payload", "{}"), ("fence", "9x"), ("state", "leased")])
        .await
        .unwrap();
    let _: () = r.zadd(format!("{base}:leased"), "poison_leased", 0).await.unwrap();
    let (tampered, _) = &codes[0];
    let _: () = r.hset(format!("{base}:job:{tampered}"), "fence", "not-a-number").await.unwrap();

    app.start_worker();
    for (id, generation) in &codes[1..] {
        assert_eq!(finished(&app, id, *generation, LIMIT).await.state, OutcomeState::Succeeded, "{id}");
    }
    // The tampered code's generation ends, with the reason; nothing waits forever.
    let o = finished(&app, tampered, codes[0].1, LIMIT).await;
    assert_eq!(o.state, OutcomeState::Failed);
    let error = o.error.unwrap();
    assert_eq!(error.kind, KIND_GAVE_UP);
    assert!(error.message.contains("fence is not an integer"), "{}", error.message);

    let dead = app.store.queue().dead_letters(10).await.unwrap();
    let reason = |id: &str| dead.iter().find(|d| d.id == id).map(|d| d.error.clone()).unwrap_or_default();
    assert!(reason("poison_type").contains("is a string, not a hash"), "{dead:?}");
    assert!(reason("poison_attempts").contains("attempts is not an integer: abc"), "{dead:?}");
    assert!(reason(&String::from_utf8_lossy(not_utf8)).contains("not 1 to 200 bytes of UTF-8"), "{dead:?}");
    assert!(reason("poison_sched").contains("is a string, not a hash"), "{dead:?}");
    assert!(reason("poison_leased").contains("fence is not an integer: 9x"), "{dead:?}");
    let depth = app.store.queue().depth().await.unwrap();
    assert_eq!(depth.ready, 0, "{depth:?}");

    // Enqueueing the code again heals it.
    let o = reconcile(&app, json!({"access_code_id": tampered, "code": "4999"}), LIMIT).await;
    assert_eq!(o.state, OutcomeState::Succeeded);
    app.stop().await;
}

#[tokio::test]
async fn unreadable_records_are_set_aside_and_enqueueing_again_heals_the_code() {
    let app = spawn_app(AppOptions { cluster: false, ..AppOptions::default() }).await;
    let (id, _) = seed_codes(&app, 1, Duration::from_millis(20), 5000).await.pop().unwrap();
    let o = app.store.wait_for_outcome(&id, 1, LIMIT).await.unwrap();
    assert!(matches!(o, latchkey_store::Waited::Finished(_)), "{o:?}");
    let base = app.store.queue().keys_of(&id).base().to_string();
    let mut r = raw(&app).await;
    let _: () = r.set(format!("{base}:outcome:{id}"), "not json {").await.unwrap();
    let _: () = r.hset(format!("{base}:desired:{id}"), "generation", "zz").await.unwrap();
    let _: () = r.del(format!("{base}:history:{id}")).await.unwrap();
    let _: () = r.sadd(format!("{base}:history:{id}"), "x").await.unwrap();
    let _: () = r.hset(format!("{base}:stats"), "pushed", "lots").await.unwrap();
    let _: () = r.set(format!("{base}:attention"), "not a sorted set").await.unwrap();

    let generation =
        app.store.enqueue(want(json!({"access_code_id": id, "code": "5999"}))).await.expect("enqueue heals");
    assert_eq!(finished(&app, &id, generation, LIMIT).await.state, OutcomeState::Succeeded);
    for what in ["outcome", "desired", "history"] {
        let kept: bool = r.exists(format!("{base}:unreadable:{what}:{id}")).await.unwrap();
        assert!(kept, "the unreadable {what} was not kept for an operator");
    }
    let counters = app.store.queue().counters().await.unwrap();
    assert_eq!(counters.get("unreadable"), Some(&3), "{counters:?}");
    assert_eq!(counters.get("pushed"), None, "a garbage counter is left out, not a failure: {counters:?}");
    // The console's list of codes needing a human starts over, the garbage kept aside.
    let aside: Vec<String> = r.keys(format!("{base}:unreadable:attention:*")).await.unwrap();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(app.store.needing_attention(10).await.unwrap().0, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_record_too_large_to_read_is_a_dead_letter_and_other_codes_go_on() {
    let mut app = spawn_app(AppOptions { cluster: false, workers: 0, ..AppOptions::default() }).await;
    let codes = seed_codes(&app, 2, Duration::from_millis(20), 6000).await;
    let mut r = raw(&app).await;
    let (big, big_generation) = &codes[0];
    let base = app.store.queue().keys_of(big).base().to_string();
    let _: () = r.hset(format!("{base}:desired:{big}"), "state", "x".repeat(2 << 20)).await.unwrap();
    app.start_worker();
    assert_eq!(finished(&app, &codes[1].0, codes[1].1, LIMIT).await.state, OutcomeState::Succeeded);
    let o = finished(&app, big, *big_generation, LIMIT).await;
    assert_eq!(o.state, OutcomeState::Failed);
    assert!(o.error.as_ref().unwrap().message.contains("over the cap"), "{:?}", o.error);
    let dead = app.store.queue().dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].error.contains("aborted"), "dead-lettered at once, not retried: {}", dead[0].error);
    app.stop().await;
}

#[tokio::test]
async fn a_large_reply_does_not_cut_the_workers_connection() {
    // Redis closes a subscribed connection whose replies pile past the pub/sub
    // output limit (32 MB by default; 64 KB here): commands must not share
    // the connection that carries the worker's wake-up subscription.
    let mut app = spawn_app(AppOptions {
        cluster: false,
        workers: 0,
        redis_args: vec!["--client-output-buffer-limit", "pubsub 64kb 64kb 0"],
        ..AppOptions::default()
    })
    .await;
    let codes = seed_codes(&app, 1, Duration::from_millis(20), 7000).await;
    let (id, generation) = &codes[0];
    let base = app.store.queue().keys_of(id).base().to_string();
    let mut r = raw(&app).await;
    let record: String = r.get(format!("{base}:outcome:{id}")).await.unwrap();
    let mut record: serde_json::Value = serde_json::from_str(&record).unwrap();
    record["padding"] = json!("p".repeat(512 << 10));
    let _: () = r.set(format!("{base}:outcome:{id}"), record.to_string()).await.unwrap();
    app.start_worker();
    assert_eq!(finished(&app, id, *generation, LIMIT).await.state, OutcomeState::Succeeded);
    assert!(app.store.queue().dead_letters(10).await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn producer_input_that_could_hurt_is_refused_by_field() {
    let app = spawn_app(AppOptions { cluster: false, ..AppOptions::default() }).await;
    for (input, field) in [
        (json!({"access_code_id": "ac1", "device_id": "d".repeat(40 << 20)}), "device_id"),
        (json!({"access_code_id": "ac1", "device_id": ""}), "device_id"),
        (json!({"access_code_id": "ac\u{200b}1", "code": "1234"}), "access_code_id"),
        (json!({"access_code_id": "ac1", "name": "x\u{202e}gnp.exe"}), "name"),
    ] {
        let err = app.store.enqueue(want(input)).await.unwrap_err().to_string();
        assert!(err.contains(&format!("desired state: {field}: ")), "{err}");
        assert!(err.len() < 300, "the refusal does not repeat what it refused: {} bytes", err.len());
    }
    let mut r = raw(&app).await;
    let mut keys: Vec<String> = r.keys(format!("{}:*", app.prefix)).await.unwrap();
    keys.retain(|k| !k.ends_with(":layout"));
    assert!(keys.is_empty(), "a refusal stores nothing: {keys:?}");
    app.stop().await;
}
