//! `latchkey healthcheck`, the exec probe of an image without curl: exit 0
//! while the worker's listener says so, 1 with the reason otherwise.

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use latchkey_devenv::{RedisServer, free_tcp_port};

fn healthcheck(addr: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("healthcheck")
        .args(extra)
        .env("LATCHKEY_HTTP_ADDR", addr)
        .output()
        .unwrap()
}

fn until_healthy(addr: &str, extra: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = healthcheck(addr, extra);
        if out.status.success() {
            return;
        }
        assert!(Instant::now() < deadline, "never healthy: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn healthcheck_follows_the_worker_from_start_to_stop() {
    let redis = RedisServer::start();
    let addr = format!("0.0.0.0:{}", free_tcp_port());
    let out = healthcheck(&addr, &[]);
    assert_eq!(out.status.code(), Some(1), "nothing listens yet");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/livez"), "the URL asked is named");

    let mut worker = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("worker")
        .env("REDIS_URL", redis.url())
        .env("SEAM_API_KEY", "seam_test_unused")
        .env("SEAM_ENDPOINT", "http://127.0.0.1:9")
        .env("LATCHKEY_HTTP_ADDR", &addr)
        .env("LATCHKEY_PREFIX", "hc")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until_healthy(&addr, &[]);
    until_healthy(&addr, &["--ready"]);

    let ok = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap().success();
    assert!(ok);
    assert!(worker.wait().unwrap().success(), "the worker drains and exits 0 on SIGTERM");
    let out = healthcheck(&addr, &["--ready"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/readyz"));
}

#[test]
fn a_bad_listener_address_stops_the_worker_with_the_variable_named() {
    let redis = RedisServer::start();
    let out = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("worker")
        .env("REDIS_URL", redis.url())
        .env("SEAM_API_KEY", "seam_test_unused")
        .env("LATCHKEY_HTTP_ADDR", "localhost-9090")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("LATCHKEY_HTTP_ADDR"), "{stderr}");
}
