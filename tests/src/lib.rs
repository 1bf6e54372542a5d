//! The test harness: real Redis servers (single node and cluster) started on
//! free ports for each test, a worker runner, and small helpers.
//!
//! Redis comes from, in order: `redis-server` on PATH (a fresh server per test,
//! which tests that kill or pause Redis need), or `REDIS_URL` (shared; each
//! test uses its own queue names, and tests that must restart Redis fail with a
//! message saying so). With neither, tests fail with instructions.

pub mod app;
pub mod browser;
pub mod hostile;
pub mod proxy;
pub mod worker;

pub use latchkey_devenv::{RedisCluster, RedisServer, cli_at, free_tcp_port};

/// Turns on log output for a test when `TEST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Waits until something listens on `addr` (at most 10 s).
pub async fn wait_for_port(addr: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Unix time in milliseconds, local clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A unique-enough suffix for queue names, so tests sharing a Redis never meet.
pub fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Percentile (0..=100) of a sample, nearest rank.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    assert!(!sorted.is_empty());
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Path of the workspace root (for scripts under `crates/`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}
