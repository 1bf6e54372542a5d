//! Property 4: ack, retry-at and dead letter are atomic per job (one script
//! each, guarded by the lease); dead letters keep the job, its attempts and the
//! last error, and can be listed and re-queued. Bad payloads die at once and
//! the worker keeps going.

use std::time::Duration;

use latchkey_store::{NewJob, QueueConfig, WorkerOptions};
use latchkey_tests::{RedisServer, now_ms, worker::*};

use crate::{queue, wait_for_counter};

fn probe(p: Probe) -> NewJob {
    NewJob::new(&p).unwrap()
}

#[tokio::test]
async fn a_failed_attempt_is_retried_and_then_succeeds() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "retry", QueueConfig::default()).await;
    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, test_options(), 2, &runs);
    let id = q.push(probe(Probe { n: 1, fail_until_attempt: 2, ..Default::default() })).await.unwrap().id;
    runs.wait_for_successes(1, Duration::from_secs(10)).await;

    wait_for_counter(&q, "completed", 1).await;
    let attempts: Vec<(u32, bool)> = runs.finished().iter().map(|r| (r.attempt, r.ok)).collect();
    assert_eq!(attempts, [(1, false), (2, false), (3, true)]);
    let c = q.counters().await.unwrap();
    assert_eq!((c["retried"], c["completed"]), (2, 1));
    assert!(q.job(&id).await.unwrap().is_none(), "an acknowledged job leaves nothing behind");
    worker.stop().await;
}

#[tokio::test]
async fn exhausted_attempts_make_a_dead_letter_that_can_be_requeued() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "dead", QueueConfig { max_attempts: 3, ..QueueConfig::default() }).await;
    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, test_options(), 2, &runs);
    let id = q.push(probe(Probe { n: 9, fail_until_attempt: 3, ..Default::default() })).await.unwrap().id;
    runs.wait_until(Duration::from_secs(10), "3 failed attempts", |r| r.len() == 3).await;
    wait_for_counter(&q, "dead", 1).await;

    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].error.contains("attempt 3 of 3 failed: probe failure on attempt 3"), "{}", dead[0].error);
    assert_eq!(serde_json::from_str::<Probe>(&dead[0].payload).unwrap().n, 9, "the payload is kept");
    assert_eq!(q.depth().await.unwrap().dead, 1);

    // Re-queued with a fresh budget: attempts 1..=3 fail again, so it dies again...
    assert_eq!(q.requeue_dead(std::slice::from_ref(&id)).await.unwrap(), std::slice::from_ref(&id));
    runs.wait_until(Duration::from_secs(10), "3 more attempts", |r| r.len() == 6).await;
    let second: Vec<u32> = runs.finished()[3..].iter().map(|r| r.attempt).collect();
    assert_eq!(second, [1, 2, 3], "a re-queued dead letter starts over at attempt 1");
    worker.stop().await;
}

#[tokio::test]
async fn requeue_all_dead_brings_every_dead_letter_back() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "deadall", QueueConfig { max_attempts: 1, ..QueueConfig::default() }).await;
    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, test_options(), 4, &runs);
    for n in 0..5 {
        q.push(probe(Probe { n, fail_until_attempt: 1, ..Default::default() })).await.unwrap();
    }
    runs.wait_until(Duration::from_secs(10), "5 failures", |r| r.len() == 5).await;
    wait_for_counter(&q, "dead", 5).await;
    assert_eq!(q.depth().await.unwrap().dead, 5);
    assert_eq!(q.requeue_all_dead(100).await.unwrap().len(), 5);
    // attempt 1 fails again (fail_until_attempt 1) with max_attempts 1: dead again, proving they ran.
    runs.wait_until(Duration::from_secs(10), "5 more runs", |r| r.len() == 10).await;
    worker.stop().await;
}

#[tokio::test]
async fn an_abort_error_dead_letters_without_retrying() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "abort", QueueConfig::default()).await;
    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, test_options(), 2, &runs);
    q.push(probe(Probe { n: 1, abort: true, ..Default::default() })).await.unwrap();
    runs.wait_until(Duration::from_secs(10), "one run", |r| r.len() == 1).await;
    wait_for_counter(&q, "dead", 1).await;
    assert_eq!(runs.finished().len(), 1, "no retry after an abort: dead after one run");
    assert_eq!(q.counters().await.unwrap().get("retried").copied().unwrap_or(0), 0);
    let dead = q.dead_letters(10).await.unwrap();
    assert!(dead[0].error.starts_with("aborted on attempt 1: probe aborted on purpose"), "{}", dead[0].error);
    worker.stop().await;
}

#[tokio::test]
async fn retry_at_runs_the_next_attempt_at_the_time_asked() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "retryat", QueueConfig::default()).await;
    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, test_options(), 2, &runs);
    let at = now_ms() + 800;
    q.push(probe(Probe { n: 1, retry_at_ms: at, ..Default::default() })).await.unwrap();
    runs.wait_for_successes(1, Duration::from_secs(10)).await;
    let second = &runs.finished()[1];
    assert_eq!(second.attempt, 2);
    assert!(second.started_ms >= at && second.started_ms - at <= 50, "started {} vs asked {at}", second.started_ms);
    worker.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_counts_as_a_failed_attempt_and_the_worker_goes_on() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "panic", QueueConfig::default()).await;
    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, test_options(), 2, &runs);
    q.push(probe(Probe { n: 1, panic: true, ..Default::default() })).await.unwrap();
    q.push(probe(Probe { n: 2, ..Default::default() })).await.unwrap();
    runs.wait_for_successes(2, Duration::from_secs(10)).await;
    wait_for_counter(&q, "completed", 2).await;
    assert!(worker.is_running());
    assert_eq!(q.counters().await.unwrap()["retried"], 1);
    worker.stop().await;
}

#[tokio::test]
async fn a_payload_that_does_not_parse_becomes_a_dead_letter_and_the_worker_keeps_going() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "badpayload", QueueConfig::default()).await;
    let bad = q.push(NewJob::from_json(r#"{"n":"not a number"}"#)).await.unwrap().id;
    q.push(probe(Probe { n: 2, ..Default::default() })).await.unwrap();
    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, test_options(), 2, &runs);
    runs.wait_for_successes(1, Duration::from_secs(10)).await;
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, bad);
    assert!(
        dead[0].error.contains("payload does not parse as") && dead[0].error.contains("Probe"),
        "{}",
        dead[0].error
    );
    assert!(worker.is_running());
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_cannot_settle_the_job() {
    // Worker A's lease (300 ms, heartbeat far too slow to renew it) expires
    // while its job sleeps 1.5 s; worker B takes the job over and acks it.
    // A's late ack is refused by the lease check: one completion, not two.
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "stale", QueueConfig::default()).await;
    let runs_a = Runs::default();
    let a = spawn_probe_worker(
        &q,
        WorkerOptions { lease: Duration::from_millis(300), heartbeat: Duration::from_secs(60), ..test_options() },
        1,
        &runs_a,
    );
    q.push(probe(Probe { n: 1, sleep_ms: 1500, ..Default::default() })).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let runs_b = Runs::default();
    let b = spawn_probe_worker(&q, test_options(), 1, &runs_b);
    runs_a.wait_until(Duration::from_secs(10), "A's run to end", |r| r.len() == 1).await;
    runs_b.wait_until(Duration::from_secs(10), "B's run to end", |r| r.len() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_eq!(runs_b.finished()[0].attempt, 2, "B's run is the second attempt");
    let c = q.counters().await.unwrap();
    assert_eq!(c["completed"], 1, "only the lease holder's ack counts");
    assert_eq!(c["recovered"], 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_continuation_runs_the_job_again_later_without_using_up_attempts() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "continue", QueueConfig { max_attempts: 1, ..QueueConfig::default() }).await;
    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, test_options(), 2, &runs);
    q.push(probe(Probe { n: 1, continue_times: 3, continue_ms: 150, ..Default::default() })).await.unwrap();
    wait_for_counter(&q, "completed", 1).await;

    let finished = runs.finished();
    assert_eq!(finished.len(), 4, "three continuations, then done");
    assert!(finished.iter().all(|r| r.attempt == 1), "a continuation is not a failed attempt");
    for pair in finished.windows(2) {
        assert!(
            pair[1].started_ms - pair[0].started_ms >= 150,
            "runs {} ms apart",
            pair[1].started_ms - pair[0].started_ms
        );
    }
    let c = q.counters().await.unwrap();
    assert_eq!((c["requeued"], c.get("retried")), (3, None));
    worker.stop().await;
}

#[tokio::test]
async fn an_empty_dead_letter_list_reads_as_empty() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "nodead", QueueConfig::default()).await;
    assert!(q.dead_letters(10).await.unwrap().is_empty());
}
