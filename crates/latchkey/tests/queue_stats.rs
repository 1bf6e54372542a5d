//! `latchkey queue stats`: what the on-call engineer reads first, over every
//! partition of the reconcile queue, with the layout Redis records (and a
//! repartition under way). The real binary against a real redis-server.

use std::process::Command;

use latchkey_devenv::RedisServer;
use latchkey_store::{QueueConfig, Reconciliations, Redis, RedisConfig};
use redis::AsyncCommands;

const PREFIX: &str = "stats-cli";

fn stats(url: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["queue", "stats", "--json"])
        .env("REDIS_URL", url)
        .env("LATCHKEY_PREFIX", PREFIX)
        // (the recorded number wins over the flag)
        .env("LATCHKEY_PARTITIONS", "2")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn stats_add_up_every_partition_and_say_the_layout() {
    let redis = RedisServer::start();
    let config = QueueConfig { prefix: PREFIX.into(), partitions: 16, ..QueueConfig::default() };
    let store =
        Reconciliations::open(Redis::connect(&RedisConfig::new(redis.url())).await.unwrap(), config).await.unwrap();
    for i in 0..40 {
        let desired = serde_json::json!({"access_code_id": format!("ac_{i}"), "code": "2468"});
        store.enqueue(serde_json::from_value(desired).unwrap()).await.unwrap();
    }
    let spread: std::collections::HashSet<usize> =
        (0..40).map(|i| store.queue().partition_of(&format!("ac_{i}"))).collect();
    assert!(spread.len() > 8, "the codes are spread over the partitions: {spread:?}");

    let v = stats(&redis.url());
    assert_eq!(v["partitions"], 16);
    assert_eq!(v["moving_to"], serde_json::Value::Null);
    assert_eq!(v["depth"]["ready"], 40, "{v}");
    assert_eq!(v["counters"]["pushed"], 40, "{v}");

    // A move under way is shown as such.
    let mut conn = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = conn.hset(store.queue().home().layout(), "moving_to", 32).await.unwrap();
    assert_eq!(stats(&redis.url())["moving_to"], 32);
}
