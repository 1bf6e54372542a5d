//! The durable queue's properties, each proven against a real redis-server.
//! One test binary, one module per property group.

mod burst;
mod cluster;
mod depth;
mod leases;
mod memory;
mod partitions;
mod pickup;
mod push;
mod records;
mod resilience;
mod settle;
mod wire;

use latchkey_store::{Queue, QueueConfig, Redis, RedisConfig};
use latchkey_tests::unique;

/// A queue with a unique name on `url`.
pub async fn queue(url: &str, name: &str, config: QueueConfig) -> Queue {
    let redis = Redis::connect(&RedisConfig::new(url)).await.expect("connect to test redis");
    Queue::new(redis, &unique(name), config).expect("queue")
}

/// A plain connection for assertions behind the queue's back.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    // A long response timeout: some tests run scripts that take a while on a
    // busy machine (the default would fail them, not Redis).
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(std::time::Duration::from_secs(30)));
    redis::Client::open(url).unwrap().get_multiplexed_async_connection_with_config(&config).await.unwrap()
}

/// Waits until the queue's counter `name` reaches `at_least` (jobs settle just
/// after the handler returns, so tests wait for the settlement itself).
pub async fn wait_for_counter(q: &Queue, name: &str, at_least: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n = q.counters().await.unwrap().get(name).copied().unwrap_or(0);
        if n >= at_least {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "counter {name} stuck at {n}, wanted {at_least}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
