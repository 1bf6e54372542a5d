//! Property 1: push now, push at a time (ms precision), push many in one round
//! trip; a caller-given id makes a push idempotent.

use std::time::Duration;

use latchkey_store::{NewJob, QueueConfig};
use latchkey_tests::{RedisServer, init_logs, now_ms, worker::*};

use crate::{queue, raw};

async fn evalsha_calls(url: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut raw(url).await).await.unwrap();
    info.lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|s| s.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn a_job_pushed_now_runs_and_one_pushed_for_later_waits_for_its_time() {
    init_logs();
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "push", QueueConfig::default()).await;
    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, test_options(), 4, &runs);

    let due = now_ms() + 700;
    q.push(NewJob::new(&Probe { n: 2, due_ms: due, ..Default::default() }).unwrap().run_at_ms(due)).await.unwrap();
    q.push(NewJob::new(&Probe { n: 1, ..Default::default() }).unwrap()).await.unwrap();
    runs.wait_for_successes(2, Duration::from_secs(10)).await;

    let finished = runs.finished();
    assert_eq!(finished[0].probe.n, 1, "the job pushed for now runs first");
    let later = &finished[1];
    assert!(later.started_ms >= due, "ran {} ms early", due - later.started_ms);
    assert!(later.started_ms - due <= 50, "ran {} ms late", later.started_ms - due);
    worker.stop().await;
}

#[tokio::test]
async fn push_many_sends_one_script_call_per_thousand_jobs() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "many", QueueConfig::default()).await;
    q.push(NewJob::new(&0).unwrap()).await.unwrap(); // loads the script

    let before = evalsha_calls(&redis.url()).await;
    let pushed = q.push_many((0..1000).map(|n| NewJob::new(&n).unwrap())).await.unwrap();
    assert_eq!(pushed.len(), 1000);
    assert!(pushed.iter().all(|p| p.created));
    assert_eq!(evalsha_calls(&redis.url()).await - before, 1, "1,000 jobs are one script call");

    let before = evalsha_calls(&redis.url()).await;
    q.push_many((0..2500).map(|n| NewJob::new(&n).unwrap())).await.unwrap();
    assert_eq!(evalsha_calls(&redis.url()).await - before, 3);
    assert_eq!(q.depth().await.unwrap().ready, 3501);
}

#[tokio::test]
async fn the_same_job_id_pushed_twice_is_one_job() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "idem", QueueConfig::default()).await;
    let first = q.push(NewJob::new(&Probe { n: 1, ..Default::default() }).unwrap().id("ac_1:gen:3")).await.unwrap();
    let again = q.push(NewJob::new(&Probe { n: 2, ..Default::default() }).unwrap().id("ac_1:gen:3")).await.unwrap();
    assert!(first.created);
    assert!(!again.created, "second push of the same id reports a duplicate");
    let batch = q
        .push_many([
            NewJob::new(&Probe { n: 3, ..Default::default() }).unwrap().id("ac_2:gen:1"),
            NewJob::new(&Probe { n: 4, ..Default::default() }).unwrap().id("ac_2:gen:1"),
        ])
        .await
        .unwrap();
    assert_eq!(batch.iter().map(|p| p.created).collect::<Vec<_>>(), [true, false]);

    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, test_options(), 4, &runs);
    runs.wait_for_successes(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ns: Vec<u64> = runs.finished().iter().map(|r| r.probe.n).collect();
    ns.sort();
    assert_eq!(ns, [1, 3], "only the first payload of each id ran, once");
    worker.stop().await;
}

#[tokio::test]
async fn a_bad_job_id_is_refused_with_the_rule_and_nothing_is_pushed() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "badid", QueueConfig::default()).await;
    let err = q
        .push_many([NewJob::new(&1).unwrap().id("fine"), NewJob::new(&2).unwrap().id("has space")])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"has space\"") && err.contains("whitespace"), "{err}");
    assert_eq!(q.depth().await.unwrap().ready, 0, "the batch is refused whole");
}
