//! Faults with real processes and real signals: worker processes killed with
//! SIGKILL mid-run, a SIGTERM drain under load, and no secret or PIN in any log line.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use latchkey_core::OutcomeState;
use latchkey_tests::app::{AppOptions, TEST_SEAM_KEY, TestApp, spawn_app};
use serde_json::json;

use crate::{finished, seed_codes, want};

struct WorkerProcess {
    child: Child,
    log: PathBuf,
}

fn spawn_worker(app: &TestApp, dir: &Path, name: &str) -> WorkerProcess {
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_reconcile-worker"))
        .envs(app.worker_env())
        .env("RUST_LOG", std::env::var("WORKER_LOG").unwrap_or_else(|_| "debug".into()))
        .env("POD_NAME", name)
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("start reconcile-worker");
    WorkerProcess { child, log }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap().success();
    assert!(ok, "kill -{sig}");
}

#[tokio::test]
async fn workers_killed_three_times_lose_nothing_and_no_secret_or_pin_reaches_a_log() {
    const REDIS_PASSWORD: &str = "redis-pw-7f3a9c-do-not-log";
    // A guest's PIN, distinctive enough that no id or number in a log line
    // contains it by chance.
    const PIN: &str = "864209753";
    let app = spawn_app(AppOptions {
        cluster: false,
        workers: 0,
        redis_password: Some(REDIS_PASSWORD.into()),
        verify_timeout: Duration::from_secs(60),
        ..AppOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = spawn_worker(&app, dir.path(), "worker-a-0");
    let mut b = spawn_worker(&app, dir.path(), "worker-b");
    let mut logs = vec![a.log.clone(), b.log.clone()];
    let started = Instant::now();
    // Slow locks (3 s to set a code) keep thousands of runs in progress while the kills land.
    let mut codes = seed_codes(&app, 2000, Duration::from_millis(3000), 10_000).await;
    // Newer generations for some codes while the first ones are in flight.
    for (id, g) in codes.iter_mut().step_by(4) {
        *g = app.store.enqueue(want(json!({"access_code_id": id, "code": PIN}))).await.unwrap();
    }
    for k in 1..=3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let d = app.store.queue().depth().await.unwrap();
        assert!(d.ready + d.scheduled + d.leased > 0, "kill {k} must hit a run in progress: {d:?}");
        println!("SIGKILL {k} with work in progress: {d:?}");
        signal(&a.child, "KILL");
        a.child.wait().unwrap();
        a = spawn_worker(&app, dir.path(), &format!("worker-a-{k}"));
        logs.push(a.log.clone());
    }
    for (id, g) in &codes {
        let o = finished(&app, id, *g, Duration::from_secs(90)).await;
        assert_eq!(o.state, OutcomeState::Succeeded, "{id}: {o:?}");
        let desired = app.store.load(id).await.unwrap().unwrap().desired;
        assert_eq!(
            app.seam.access_code(id).unwrap()["code"].as_str(),
            desired.code.as_deref(),
            "{id}: newest PIN on the lock"
        );
    }
    let converged = started.elapsed();
    let updates = app.seam.requests().iter().filter(|r| r.path == "/access_codes/update" && r.status == 200).count();
    let generations: u64 = codes.iter().map(|(_, g)| *g).sum();
    println!(
        "{} codes ({generations} desired states), 3 SIGKILLs: converged in {converged:?}; {updates} update calls, so {} beyond one per desired state (runs repeated after a kill, or superseded mid-flight)",
        codes.len(),
        updates.saturating_sub(generations as usize)
    );
    assert_eq!(app.store.queue().depth().await.unwrap().dead, 0, "nothing ended as a dead letter");

    signal(&a.child, "TERM");
    signal(&b.child, "TERM");
    assert!(a.child.wait().unwrap().success() && b.child.wait().unwrap().success(), "SIGTERM exits 0");

    let mut lines = 0;
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        lines += text.lines().count();
        for secret in [TEST_SEAM_KEY, REDIS_PASSWORD, PIN] {
            assert!(!text.contains(secret), "{} contains a secret or a guest's PIN", log.display());
        }
    }
    assert!(lines > 1000, "the workers logged at debug level ({lines} lines), so the check means something");
}

#[tokio::test]
async fn sigterm_under_load_drains_exits_zero_and_loses_nothing() {
    let app =
        spawn_app(AppOptions { workers: 0, device_delay: Duration::from_millis(300), ..AppOptions::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let mut w = spawn_worker(&app, dir.path(), "draining");
    let codes = seed_codes(&app, 1000, Duration::from_millis(300), 10_000).await;
    let before = app.store.queue().depth().await.unwrap();
    assert!(before.ready + before.scheduled + before.leased > 0, "the signal must hit work in progress");
    signal(&w.child, "TERM");
    let t = Instant::now();
    let status = w.child.wait().unwrap();
    let drained_in = t.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(drained_in < Duration::from_secs(5 + 2), "drain took {drained_in:?} (drain time 5 s)");
    let leased_after = app.store.queue().depth().await.unwrap().leased;
    if leased_after != 0 {
        let log = std::fs::read_to_string(&w.log).unwrap();
        let tail: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("apalis") || l.contains("latchkey_store") || l.contains("daemon"))
            .filter(|l| !l.contains("polling worker"))
            .rev()
            .take(25)
            .collect();
        panic!("{leased_after} jobs still leased after the drain; worker log (newest first):\n{}", tail.join("\n"));
    }
    println!("SIGTERM with work in progress ({before:?}): exited 0 after {drained_in:?}");

    let mut next = spawn_worker(&app, dir.path(), "after");
    for (id, g) in &codes {
        assert_eq!(finished(&app, id, *g, Duration::from_secs(60)).await.state, OutcomeState::Succeeded);
    }
    signal(&next.child, "TERM");
    assert!(next.child.wait().unwrap().success());
}
