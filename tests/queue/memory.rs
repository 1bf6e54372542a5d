//! Property 6: memory is bounded. Finished jobs leave nothing behind but what
//! is configured to be kept, with a TTL; dead letters are capped and counted.

use std::{collections::BTreeSet, time::Duration};

use latchkey_store::{NewJob, Queue, QueueConfig};
use latchkey_tests::{RedisServer, worker::*};
use redis::AsyncCommands;

use crate::{queue, raw, wait_for_counter};

async fn keys_of(url: &str, q: &Queue) -> BTreeSet<String> {
    let mut conn = raw(url).await;
    let mut keys = BTreeSet::new();
    let mut iter: redis::AsyncIter<String> = conn.scan_match(format!("{}:*", q.home().base())).await.unwrap();
    while let Some(k) = futures::StreamExt::next(&mut iter).await {
        keys.insert(k.unwrap());
    }
    keys
}

#[tokio::test]
async fn finished_jobs_leave_nothing_behind() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "clean", QueueConfig::default()).await;
    let runs = Runs::default();
    let w = spawn_probe_worker(&q, test_options(), 16, &runs);
    q.push_many(
        (0..500)
            .map(|n| NewJob::new(&Probe { n, fail_until_attempt: (n % 3 == 0) as u32, ..Default::default() }).unwrap()),
    )
    .await
    .unwrap();
    wait_for_counter(&q, "completed", 500).await;
    w.stop().await;
    let expected: BTreeSet<String> = [q.home().stats()].into();
    assert_eq!(keys_of(&redis.url(), &q).await, expected, "only the counters remain (the worker deregistered)");
}

#[tokio::test]
async fn kept_finished_jobs_expire() {
    let redis = RedisServer::start();
    let keep = Duration::from_secs(60);
    let q = queue(&redis.url(), "keep", QueueConfig { keep_finished: Some(keep), ..QueueConfig::default() }).await;
    let runs = Runs::default();
    let w = spawn_probe_worker(&q, test_options(), 4, &runs);
    let ids: Vec<String> = q
        .push_many((0..10).map(|n| NewJob::new(&Probe { n, ..Default::default() }).unwrap()))
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    wait_for_counter(&q, "completed", 10).await;
    let mut conn = raw(&redis.url()).await;
    for id in &ids {
        let ttl: i64 = conn.pttl(q.home().job(id)).await.unwrap();
        assert!(ttl > 0 && ttl <= keep.as_millis() as i64, "job {id} ttl {ttl}");
        assert_eq!(q.job(id).await.unwrap().unwrap().state, "done");
    }
    // While kept, the id still deduplicates.
    assert!(!q.push(NewJob::new(&Probe::default()).unwrap().id(&ids[0])).await.unwrap().created);
    w.stop().await;
}

#[tokio::test]
async fn dead_letters_are_capped_and_the_dropped_ones_counted() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "cap", QueueConfig { max_attempts: 1, dead_letter_cap: 10, ..QueueConfig::default() })
        .await;
    let runs = Runs::default();
    let w = spawn_probe_worker(&q, test_options(), 4, &runs);
    q.push_many((0..25).map(|n| NewJob::new(&Probe { n, fail_until_attempt: 1, ..Default::default() }).unwrap()))
        .await
        .unwrap();
    wait_for_counter(&q, "dead", 25).await;
    w.stop().await;
    assert_eq!(q.depth().await.unwrap().dead, 10);
    assert_eq!(q.counters().await.unwrap()["dead_dropped"], 15);
    let job_keys = keys_of(&redis.url(), &q).await.into_iter().filter(|k| k.contains(":job:")).count();
    assert_eq!(job_keys, 10, "dropped dead letters leave no job record behind");
}
