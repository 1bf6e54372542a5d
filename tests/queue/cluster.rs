//! Property 8: all keys of a queue share one hash tag, so the queue works on
//! Redis Cluster. Three local nodes, one queue on each.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use latchkey_store::{NewJob, QueueConfig};
use latchkey_tests::{RedisCluster, now_ms, worker::*};

use crate::{queue, wait_for_counter};

#[tokio::test]
async fn the_queue_works_on_a_three_node_redis_cluster() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    // Queue names are unique per run, so their slots are random: keep drawing
    // until one queue sits on each node (which third of the slot range).
    let mut nodes = HashSet::new();
    let mut queues = Vec::new();
    for draw in 0..200 {
        let q = queue(&url, &format!("q{draw}"), QueueConfig { max_attempts: 2, ..QueueConfig::default() }).await;
        let slot = cluster.nodes()[0].cli(&["cluster", "keyslot", q.home().base()]);
        if nodes.insert(slot.trim().parse::<u16>().unwrap() / 5462) {
            queues.push(q);
        }
        if nodes.len() == 3 {
            break;
        }
    }
    assert_eq!(nodes.len(), 3, "200 queue names never covered all three nodes");
    let mut work = Vec::new();
    for q in queues {
        let runs = Runs::default();
        let w = spawn_probe_worker(&q, test_options(), 16, &runs);
        q.push_many((0..300).map(|n| {
            NewJob::new(&Probe { n, fail_until_attempt: (n % 10 == 0) as u32, ..Default::default() }).unwrap()
        }))
        .await
        .unwrap();
        q.push(NewJob::new(&Probe { n: 1000, ..Default::default() }).unwrap().run_at_ms(now_ms() + 500)).await.unwrap();
        q.push(NewJob::new(&Probe { n: 2000, abort: true, ..Default::default() }).unwrap()).await.unwrap();
        work.push((q, runs, w));
    }

    for (q, runs, _) in &work {
        runs.wait_for_successes(301, Duration::from_secs(30)).await;
        wait_for_counter(q, "dead", 1).await;
        assert_eq!(q.dead_letters(10).await.unwrap().len(), 1);
        assert_eq!(q.counters().await.unwrap()["retried"], 30);
    }
    // Wake-ups travel through the cluster: an idle worker starts a new job at once.
    let (q, runs, _) = &work[0];
    let before = runs.finished().len();
    let pushed = Instant::now();
    q.push(NewJob::new(&Probe { n: 3000, ..Default::default() }).unwrap()).await.unwrap();
    runs.wait_until(Duration::from_secs(5), "the new job", |r| r.len() > before).await;
    assert!(pushed.elapsed() < Duration::from_millis(500), "pickup took {:?} on the cluster", pushed.elapsed());
    for (_, _, w) in work {
        w.stop().await;
    }
}
