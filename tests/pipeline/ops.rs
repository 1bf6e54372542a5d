//! What the platform team relies on: the ops listener's probes and metrics,
//! and the Redis settings a Kubernetes deployment uses (URL from a mounted
//! file, TLS with a private CA, an ACL user).

use std::time::{Duration, Instant};

use latchkey_core::OutcomeState;
use latchkey_fake_seam::{DeviceBehaviour, SeedCode};
use latchkey_tests::{
    RedisServer,
    app::{AppOptions, TestApp, spawn_app},
};
use latchkey_worker::run_worker;
use serde_json::json;

use crate::reconcile;

pub(crate) async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Polls `url` until it answers `status`, for at most `limit`.
pub(crate) async fn until_status(url: &str, status: u16, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (got, body) = get(url).await;
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "{url} answered {got} ({body}) for {limit:?}, never {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one sample line, e.g. `latchkey_outcomes_total{state="succeeded"}`.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn succeed_one(app: &TestApp) -> String {
    let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(20) });
    let id = app.seam.add_access_code(&device, SeedCode::default());
    let o = reconcile(app, json!({"access_code_id": id, "code": "5150"}), Duration::from_secs(15)).await;
    assert_eq!(o.state, OutcomeState::Succeeded, "{o:?}");
    id
}

#[tokio::test]
async fn probes_and_metrics_tell_liveness_from_readiness_and_count_the_work() {
    let mut app = spawn_app(AppOptions::default()).await;
    let ops = app.ops_urls[0].clone();
    until_status(&format!("{ops}/readyz"), 200, Duration::from_secs(10)).await;
    let id = succeed_one(&app).await;

    let text = until_status(&format!("{ops}/metrics"), 200, Duration::from_secs(5)).await;
    for series in [
        r#"latchkey_jobs_started_total{queue="reconcile"}"#,
        // The code succeeded and stays watched (resync): its run continues.
        r#"latchkey_jobs_finished_total{queue="reconcile",result="continued"}"#,
        r#"latchkey_outcomes_total{state="succeeded"}"#,
        r#"latchkey_seam_requests_total{endpoint="/access_codes/update",status_class="2xx"}"#,
        r#"latchkey_seam_requests_total{endpoint="/access_codes/get",status_class="2xx"}"#,
        r#"latchkey_enqueue_to_outcome_seconds_count{state="succeeded"}"#,
        r#"latchkey_job_duration_seconds_count{queue="reconcile",result="continued"}"#,
        r#"latchkey_queue_jobs{queue="reconcile",state="scheduled"}"#,
    ] {
        assert!(sample(&text, series).is_some_and(|v| v >= 1.0), "{series} missing or zero in:\n{text}");
    }
    for series in [
        r#"latchkey_queue_jobs{queue="reconcile",state="ready"}"#,
        r#"latchkey_queue_jobs{queue="reconcile",state="dead"}"#,
        r#"latchkey_queue_due_jobs{queue="reconcile"}"#,
        r#"latchkey_queue_oldest_ready_age_seconds{queue="reconcile"}"#,
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in:\n{text}");
    }
    assert_eq!(sample(&text, "latchkey_redis_up"), Some(1.0));
    assert_eq!(sample(&text, "latchkey_worker_draining"), Some(0.0));
    assert!(text.contains("latchkey_build_info{version="), "{text}");
    assert!(text.contains("# HELP latchkey_queue_due_jobs"), "metrics are described: {text}");
    assert!(!text.contains(&id), "an access code id leaked into a label");
    // Every metric the shipped alert rules use is one this worker exports.
    let alerts =
        std::fs::read_to_string(latchkey_tests::workspace_root().join("deploy/prometheus/alerts.yaml")).unwrap();
    let used: std::collections::BTreeSet<&str> = alerts
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("latchkey_"))
        .collect();
    assert!(used.len() >= 5, "the alerts use latchkey's metrics: {used:?}");
    for name in used {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "alerts.yaml uses {name}, which /metrics does not have:\n{text}"
        );
    }

    // Redis gone: still live (a restart would not help), no longer ready.
    app.redis.kill();
    let body = until_status(&format!("{ops}/readyz"), 503, Duration::from_secs(10)).await;
    assert!(body.contains("redis"), "readiness names the cause: {body}");
    assert_eq!(get(&format!("{ops}/livez")).await.0, 200, "liveness never depends on Redis");
    let text = get(&format!("{ops}/metrics")).await.1;
    assert_eq!(sample(&text, "latchkey_redis_up"), Some(0.0), "{text}");

    app.redis.restart();
    until_status(&format!("{ops}/readyz"), 200, Duration::from_secs(15)).await;
    app.stop().await;
}

/// A CA, and a certificate for 127.0.0.1 signed by it, written to `dir`:
/// (ca.pem, server.pem, server.key).
fn tls_files(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "latchkey test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let path = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    (path("ca.pem", ca.pem()), path("server.pem", cert.pem()), path("server.key", key.serialize_pem()))
}

const ACL_PASSWORD: &str = "s3cret-acl-pass";

/// redis-server arguments: TLS on `tls_port` (the plain port stays for the
/// harness) and an ACL user `latchkey`.
fn tls_acl_args(tls_port: u16, (ca, cert, key): &(String, String, String)) -> Vec<&'static str> {
    let args = [
        "--tls-port".to_string(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        cert.clone(),
        "--tls-key-file".into(),
        key.clone(),
        "--tls-ca-cert-file".into(),
        ca.clone(),
        "--tls-auth-clients".into(),
        "no".into(),
        "--user".into(),
        "latchkey".into(),
        "on".into(),
        format!(">{ACL_PASSWORD}"),
        "~*".into(),
        "&*".into(),
        "+@all".into(),
    ];
    args.into_iter().map(|a| &*Box::leak(a.into_boxed_str())).collect()
}

#[tokio::test]
async fn a_worker_reconciles_over_tls_as_an_acl_user_with_its_url_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path());
    let tls_port = latchkey_tests::free_tcp_port();
    let app = spawn_app(AppOptions {
        cluster: false,
        workers: 0,
        redis_args: tls_acl_args(tls_port, &files),
        ..AppOptions::default()
    })
    .await;
    let url_file = dir.path().join("redis-url");
    std::fs::write(&url_file, format!("rediss://latchkey:{ACL_PASSWORD}@127.0.0.1:{tls_port}\n")).unwrap();
    let mut args = app.worker_args();
    args.redis.redis_url = "redis://127.0.0.1:1".into(); // the file wins
    args.redis.redis_url_file = Some(url_file);
    args.redis.redis_ca_file = Some(files.0.clone().into());
    let ops = format!("http://{}", args.http_addr);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(run_worker(args, async move {
        let _ = stopped.await;
    }));
    until_status(&format!("{ops}/readyz"), 200, Duration::from_secs(10)).await;
    succeed_one(&app).await;
    let clients = app.redis.cli(&["CLIENT", "LIST"]);
    assert!(clients.contains("user=latchkey"), "the worker is connected as the ACL user: {clients}");
    let _ = stop.send(());
    worker.await.unwrap().expect("worker drains cleanly");
    app.stop().await;
}

#[tokio::test]
async fn bad_redis_settings_fail_at_start_with_the_setting_named_and_no_secret_shown() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path());
    let tls_port = latchkey_tests::free_tcp_port();
    let _redis = RedisServer::start_with(&tls_acl_args(tls_port, &files));
    let app = spawn_app(AppOptions { workers: 0, ..AppOptions::default() }).await;
    let start = |url: String, ca: Option<String>, url_file: Option<std::path::PathBuf>| {
        let mut args = app.worker_args();
        args.redis.redis_url = url;
        args.redis.redis_ca_file = ca.map(Into::into);
        args.redis.redis_url_file = url_file;
        async move {
            let err = tokio::time::timeout(Duration::from_secs(20), run_worker(args, std::future::pending()))
                .await
                .expect("fails fast")
                .expect_err("cannot start");
            format!("{}: {:?}", latchkey_store::error_chain(&err), err)
        }
    };
    let tls = |pass: &str| format!("rediss://latchkey:{pass}@127.0.0.1:{tls_port}");

    let err = start(tls("wrong-password-xyz"), Some(files.0.clone()), None).await;
    assert!(!err.contains("wrong-password-xyz"), "the password leaked: {err}");
    assert!(err.contains("[redacted]"), "the URL is shown redacted: {err}");

    let err = start(tls(ACL_PASSWORD), None, None).await;
    assert!(!err.contains(ACL_PASSWORD), "the password leaked: {err}");
    assert!(err.to_lowercase().contains("certificate"), "an untrusted CA is named as the cause: {err}");

    let err = start(tls(ACL_PASSWORD), Some(dir.path().join("nope.pem").to_string_lossy().into()), None).await;
    assert!(err.contains("LATCHKEY_REDIS_CA_FILE"), "{err}");
    let err = start(tls(ACL_PASSWORD), None, Some(dir.path().join("missing"))).await;
    assert!(err.contains("REDIS_URL_FILE") && err.contains("cannot be read"), "{err}");
    app.stop().await;
}

#[tokio::test]
async fn a_draining_worker_is_live_but_not_ready() {
    let app = spawn_app(AppOptions { workers: 0, ..AppOptions::default() }).await;
    let args = app.worker_args();
    let ops = format!("http://{}", args.http_addr);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(run_worker(args, async move {
        let _ = stopped.await;
    }));
    until_status(&format!("{ops}/readyz"), 200, Duration::from_secs(10)).await;

    // A reconciliation stuck in a slow Seam call keeps the drain going.
    app.seam.set_faults(latchkey_fake_seam::Faults { latency_ms: 3000, ..Default::default() });
    let device = app.seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(20) });
    let id = app.seam.add_access_code(&device, SeedCode::default());
    app.store.enqueue(crate::want(json!({"access_code_id": id, "code": "7777"}))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(());

    let body = until_status(&format!("{ops}/readyz"), 503, Duration::from_secs(2)).await;
    assert!(body.contains("draining"), "{body}");
    assert_eq!(get(&format!("{ops}/livez")).await.0, 200, "a draining worker is alive");
    let text = get(&format!("{ops}/metrics")).await.1;
    assert_eq!(sample(&text, "latchkey_worker_draining"), Some(1.0), "{text}");
    assert!(!worker.is_finished(), "the slow call is still draining");
    tokio::time::timeout(Duration::from_secs(15), worker).await.expect("drains in time").unwrap().unwrap();
    assert_eq!(get(&format!("{ops}/livez")).await.0, 0, "the listener closes with the worker");
    app.stop().await;
}
