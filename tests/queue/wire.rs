//! Property 10: the wire format is usable from another language. A job pushed
//! with `redis-cli` running `lua/push.lua` is run by the Rust worker.

use std::{process::Command, time::Duration};

use latchkey_store::QueueConfig;
use latchkey_tests::{RedisServer, worker::*, workspace_root};

use crate::queue;

fn cli_push(url: &str, base: &str, args: &[&str]) -> String {
    let script = workspace_root().join("crates/latchkey-store/lua/push.lua");
    let out = Command::new("redis-cli")
        .arg("-u")
        .arg(url)
        .arg("--eval")
        .arg(&script)
        .arg(base)
        .arg(",")
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn a_job_pushed_with_redis_cli_runs_in_the_rust_worker() {
    let redis = RedisServer::start();
    let q = queue(&redis.url(), "wire", QueueConfig::default()).await;
    let base = q.home().base().to_string();

    assert_eq!(cli_push(&redis.url(), &base, &["4", "from-cli-1", r#"{"n":7}"#, "0", "0"]), "1");
    assert_eq!(cli_push(&redis.url(), &base, &["4", "from-cli-1", r#"{"n":8}"#, "0", "0"]), "0", "same id: duplicate");

    let runs = Runs::default();
    let worker = spawn_probe_worker(&q, test_options(), 2, &runs);
    runs.wait_for_successes(1, Duration::from_secs(10)).await;
    let run = &runs.finished()[0];
    assert_eq!(run.id, "from-cli-1");
    assert_eq!(run.probe.n, 7);
    assert_eq!(run.attempt, 1);
    worker.stop().await;
}
