//! Partitions: a queue's keys split over several hash tags. Every process
//! agrees on how many (Redis records it), a burst in one does not starve
//! another nor a broken one hold up the rest, and the operator's reads cover
//! them all.

use std::time::Duration;

use latchkey_store::{Error, NewJob, Queue, QueueConfig, Reconciliations, Redis, RedisConfig, keys::partition_of};
use latchkey_tests::{RedisServer, unique, worker::*};

use crate::{raw, wait_for_counter};

async fn redis(url: &str) -> Redis {
    Redis::connect(&RedisConfig::new(url)).await.unwrap()
}

fn config(prefix: &str, partitions: u32) -> QueueConfig {
    QueueConfig { prefix: prefix.into(), partitions, max_attempts: 1, ..QueueConfig::default() }
}

/// `n` job ids that fall in `partition` of `partitions`.
fn ids_in(partition: u32, partitions: u32, n: usize, tag: &str) -> Vec<String> {
    (0..).map(|i| format!("{tag}-{i}")).filter(|id| partition_of(id, partitions) == partition).take(n).collect()
}

#[tokio::test]
async fn a_process_configured_for_another_number_of_partitions_refuses_naming_both() {
    let server = RedisServer::start();
    let prefix = unique("layout");
    Reconciliations::open(redis(&server.url()).await, config(&prefix, 16)).await.unwrap();
    // Agreeing is fine, again and again.
    Reconciliations::open(redis(&server.url()).await, config(&prefix, 16)).await.unwrap();
    let err = Reconciliations::open(redis(&server.url()).await, config(&prefix, 8)).await.unwrap_err();
    assert!(matches!(err, Error::Layout { recorded: 16, configured: 8, .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("records 16") && text.contains("configured for 8"), "{text}");
    assert!(text.contains("latchkey repartition --to 8"), "the refusal says what to do: {text}");
}

#[tokio::test]
async fn a_queue_from_before_partitions_is_one_partition_and_a_partitioned_process_refuses_it() {
    let server = RedisServer::start();
    let prefix = unique("legacy");
    // A deployment of the single-tag layout: its jobs under `{reconcile}`,
    // and no layout record (as an older version left it).
    let old = Reconciliations::open(redis(&server.url()).await, config(&prefix, 1)).await.unwrap();
    old.enqueue(serde_json::from_str(r#"{"access_code_id": "ac1", "code": "1234"}"#).unwrap()).await.unwrap();
    let _: () = redis::AsyncCommands::del(&mut raw(&server.url()).await, old.queue().home().layout()).await.unwrap();

    let err = Reconciliations::open(redis(&server.url()).await, config(&prefix, 16)).await.unwrap_err();
    assert!(matches!(err, Error::Layout { recorded: 1, configured: 16, .. }), "{err:?}");
    // Nothing was moved or lost: the old layout still works as it was.
    let again = Reconciliations::open(redis(&server.url()).await, config(&prefix, 1)).await.unwrap();
    assert_eq!(again.outcome("ac1").await.unwrap().unwrap().generation, 1);
}

#[tokio::test]
async fn a_burst_in_one_partition_does_not_starve_another() {
    let server = RedisServer::start();
    let q = Queue::open(redis(&server.url()).await, &unique("burst"), config(&unique("p"), 4)).await.unwrap();
    let runs = Runs::default();
    let sleep_ms = 2;
    // 3,000 jobs in partition 0, then, once the worker is into them, 10 in
    // partition 1.
    q.push_many(
        ids_in(0, 4, 3000, "flood")
            .into_iter()
            .enumerate()
            .map(|(n, id)| NewJob::new(&Probe { n: n as u64, sleep_ms, ..Default::default() }).unwrap().id(id)),
    )
    .await
    .unwrap();
    let worker = spawn_probe_worker(&q, test_options(), 8, &runs);
    runs.wait_for_successes(200, Duration::from_secs(20)).await;
    let before = runs.finished().len();
    q.push_many(
        ids_in(1, 4, 10, "late")
            .into_iter()
            .map(|id| NewJob::new(&Probe { n: 100_000, sleep_ms, ..Default::default() }).unwrap().id(id)),
    )
    .await
    .unwrap();
    runs.wait_until(Duration::from_secs(20), "the late partition's jobs", |r| {
        r.iter().filter(|r| r.probe.n == 100_000).count() == 10
    })
    .await;
    let finished = runs.finished();
    let last_late = finished.iter().rposition(|r| r.probe.n == 100_000).unwrap();
    let flood_meanwhile = finished[before..last_late].iter().filter(|r| r.probe.n != 100_000).count();
    // What was fetched and in flight when the late jobs came (a round shares
    // one batch of 32 between the partitions that have work), then a share.
    assert!(flood_meanwhile <= 100, "{flood_meanwhile} flood jobs ran before the late partition's 10");
    assert!(finished.len() < 2500, "the late jobs waited for the flood to drain ({} runs)", finished.len());
    worker.stop().await;
}

#[tokio::test]
async fn a_partition_that_cannot_be_fetched_does_not_hold_up_the_others() {
    let server = RedisServer::start();
    let q = Queue::open(redis(&server.url()).await, &unique("broken"), config(&unique("p"), 4)).await.unwrap();
    // Partition 1's ready list written over by something else: every fetch
    // of it is refused (the guard) until an operator mends it, as a fetch
    // of a cluster master that is away fails.
    let broken = q.partitions()[1].ready();
    let _: () = redis::AsyncCommands::set(&mut raw(&server.url()).await, &broken, "not a list").await.unwrap();
    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, test_options(), 8, &runs);
    let ids: Vec<String> = [0, 2, 3].into_iter().flat_map(|p| ids_in(p, 4, 100, "ok")).collect();
    q.push_many(ids.iter().map(|id| NewJob::new(&Probe::default()).unwrap().id(id.clone()))).await.unwrap();
    runs.wait_for_successes(300, Duration::from_secs(30)).await;
    let refused =
        q.push_many(ids_in(1, 4, 1, "refused").into_iter().map(|id| NewJob::new(&Probe::default()).unwrap().id(id)));
    assert!(refused.await.is_err(), "the partition was broken all along");
    // Mended, it is fetched again.
    let _: () = redis::AsyncCommands::del(&mut raw(&server.url()).await, &broken).await.unwrap();
    q.push_many(ids_in(1, 4, 10, "mended").into_iter().map(|id| NewJob::new(&Probe::default()).unwrap().id(id)))
        .await
        .unwrap();
    runs.wait_for_successes(310, Duration::from_secs(30)).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_partitioned_queue_keeps_every_promise_of_one_over_all_its_partitions() {
    let server = RedisServer::start();
    let q = Queue::open(redis(&server.url()).await, &unique("parts"), config(&unique("p"), 8)).await.unwrap();
    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, test_options(), 16, &runs);
    let due = latchkey_tests::now_ms() + 600;
    let pushed = q
        .push_many((0..200u64).map(|n| {
            let probe = Probe { n, abort: n % 20 == 0, ..Default::default() };
            let job = NewJob::new(&probe).unwrap().id(format!("job-{n}"));
            if n % 10 == 5 { job.run_at_ms(due) } else { job }
        }))
        .await
        .unwrap();
    assert_eq!(pushed.iter().filter(|p| p.created).count(), 200);
    assert!((0..200).all(|n| pushed[n].id == format!("job-{n}")), "results come back in the order pushed");
    // (job-5 waits for its time, so it still exists: a finished job is gone)
    let again = q.push(NewJob::new(&Probe::default()).unwrap().id("job-5")).await.unwrap();
    assert!(!again.created, "an id is deduplicated in its partition");

    runs.wait_for_successes(190, Duration::from_secs(20)).await;
    wait_for_counter(&q, "dead", 10).await;
    let late = runs.finished().into_iter().filter(|r| r.probe.n % 10 == 5).collect::<Vec<_>>();
    assert!(late.iter().all(|r| r.started_ms >= due), "scheduled jobs waited for their time in every partition");
    let depth = q.depth().await.unwrap();
    assert_eq!((depth.ready, depth.scheduled, depth.leased, depth.dead), (0, 0, 0, 10));
    assert_eq!(q.counters().await.unwrap()["pushed"], 200);
    let dead = q.dead_letters(100).await.unwrap();
    assert_eq!(dead.len(), 10);
    assert!(dead.windows(2).all(|w| w[0].dead_at_ms <= w[1].dead_at_ms), "oldest first over all partitions");
    let spread: std::collections::HashSet<usize> = dead.iter().map(|d| q.partition_of(&d.id)).collect();
    assert!(spread.len() > 1, "the dead letters are in several partitions: {spread:?}");

    let first = q.requeue_all_dead(4).await.unwrap();
    assert_eq!(first.len(), 4, "at most the limit over all partitions");
    let oldest: Vec<&str> = dead[..4].iter().map(|d| d.id.as_str()).collect();
    assert!(first.iter().all(|id| oldest.contains(&id.as_str())), "the oldest four: {first:?} vs {oldest:?}");
    let rest = q.requeue_dead(&dead[4..].iter().map(|d| d.id.clone()).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(rest.len(), 6);
    assert_eq!(q.leave("nobody").await.unwrap(), 0);
    worker.stop().await;
}

#[test]
fn the_python_helper_finds_every_code_where_latchkey_keeps_it() {
    let ids: Vec<String> = (0..200).map(|i| format!("ac_{i}")).chain(["ünï-cödé".to_string()]).collect();
    for partitions in [1u32, 3, 16] {
        let out = std::process::Command::new("python3")
            .arg(latchkey_tests::workspace_root().join("examples/python/latchkey_keys.py"))
            .arg(partitions.to_string())
            .args(&ids)
            .output()
            .expect("run python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let python: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
        let parts = latchkey_store::keys::QueueKeys::partitions("latchkey", "reconcile", partitions).unwrap();
        let rust: Vec<String> =
            ids.iter().map(|id| parts[partition_of(id, partitions) as usize].base().to_string()).collect();
        assert_eq!(python, rust, "{partitions} partitions");
    }
}
