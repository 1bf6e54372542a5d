//! The simulator's own behaviour, exercised over plain HTTP (reqwest and
//! JSON), independent of latchkey's client.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, http::HeaderMap, routing::post};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Datelike, SecondsFormat, SubsecRound, TimeZone, Utc};
use hmac::{Hmac, Mac};
use latchkey_fake_seam::{
    AttemptResult, DeviceBehaviour, FakeSeam, Faults, Issue, Modification, SeedCode, SimConfig, WebhookTarget,
};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

const KEY: &str = "seam_test_key";

async fn sim() -> FakeSeam {
    FakeSeam::spawn(SimConfig { device_delay: Duration::from_millis(30), ..SimConfig::default() }).await.unwrap()
}

async fn call(seam: &FakeSeam, path: &str, body: Value) -> (u16, HeaderMap, Value) {
    call_with_key(seam, KEY, path, body).await
}

async fn call_with_key(seam: &FakeSeam, key: &str, path: &str, body: Value) -> (u16, HeaderMap, Value) {
    let r =
        reqwest::Client::new().post(format!("{}{path}", seam.url())).bearer_auth(key).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A device made over the admin API with this behaviour; its id.
async fn admin_device(seam: &FakeSeam, behaviour: Value) -> String {
    let made: Value = reqwest::Client::new()
        .post(format!("{}/_admin/devices", seam.url()))
        .json(&json!({"behaviour": behaviour}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    made["device_id"].as_str().expect("a device id").to_string()
}

/// An admin API call (no auth); its status.
async fn admin(seam: &FakeSeam, method: Method, path: &str, body: Option<Value>) -> u16 {
    let request = reqwest::Client::new().request(method, format!("{}{path}", seam.url()));
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.unwrap().status().as_u16()
}

/// The `access_code` `/access_codes/get` answers now.
async fn get(seam: &FakeSeam, id: &str) -> Value {
    let (status, _, v) = call(seam, "/access_codes/get", json!({"access_code_id": id})).await;
    assert_eq!(status, 200, "{v}");
    v["access_code"].clone()
}

/// Polls `/action_attempts/get` until the attempt is no longer pending.
async fn attempt_outcome(seam: &FakeSeam, update: &Value) -> Value {
    let id = &update["action_attempt"]["action_attempt_id"];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, _, v) = call(seam, "/action_attempts/get", json!({"action_attempt_id": id})).await;
        if v["action_attempt"]["status"] != "pending" {
            return v["action_attempt"].clone();
        }
        assert!(Instant::now() < deadline, "attempt still pending: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn event_types(seam: &FakeSeam) -> Vec<String> {
    seam.events().iter().map(|e| e["event_type"].as_str().unwrap().to_string()).collect()
}

fn millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Polls `/access_codes/get` until `pred` holds, or panics after 5 s.
async fn until(seam: &FakeSeam, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, v) = call(seam, "/access_codes/get", json!({"access_code_id": id})).await;
        if status == 200 && pred(&v["access_code"]) {
            return v["access_code"].clone();
        }
        assert!(Instant::now() < deadline, "never {what}: {status} {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `/access_codes/get` until it answers 404 (Seam's generic
/// `not_found`), or panics after 5 s.
async fn gone(seam: &FakeSeam, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, v) = call(seam, "/access_codes/get", json!({"access_code_id": id})).await;
        if status == 404 {
            assert_eq!(v["error"]["type"], "not_found", "get answers Seam's generic not_found");
            return;
        }
        assert!(Instant::now() < deadline, "never removed: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn normal() -> DeviceBehaviour {
    DeviceBehaviour::Normal { delay: Duration::from_millis(30) }
}

#[tokio::test]
async fn requests_without_the_bearer_key_get_401_in_seams_envelope() {
    let seam = sim().await;
    let r = reqwest::Client::new()
        .post(format!("{}/access_codes/get", seam.url()))
        .json(&json!({"access_code_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("seam-request-id"));
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["ok"].as_bool(), v["error"]["type"].as_str()), (Some(false), Some("unauthorized")));
    assert!(v["error"]["request_id"].is_string());
    assert_eq!(seam.requests()[0].status, 401, "rejected requests are logged");
}

#[tokio::test]
async fn an_update_sets_the_code_through_setting_to_set_and_its_attempt_succeeds() {
    let seam = sim().await;
    let id =
        seam.add_access_code(&seam.add_device(normal()), SeedCode { code: Some("1111".into()), ..SeedCode::default() });
    let (status, _, v) =
        call(&seam, "/access_codes/update", json!({"access_code_id": id, "code": "2468", "name": "Guest"})).await;
    assert_eq!(status, 200, "{v}");
    let attempt = &v["action_attempt"];
    assert_eq!(
        (attempt["status"].as_str(), attempt["action_type"].as_str()),
        (Some("pending"), Some("UPDATE_ACCESS_CODE"))
    );
    let (_, _, now) = call(&seam, "/access_codes/get", json!({"access_code_id": id})).await;
    assert_eq!(now["access_code"]["status"], "setting");
    let code = until(&seam, &id, "set", |c| c["status"] == "set").await;
    assert_eq!(
        (code["code"].as_str(), code["name"].as_str(), code["type"].as_str()),
        (Some("2468"), Some("Guest"), Some("ongoing"))
    );
    for field in [
        "workspace_id",
        "common_code_key",
        "created_at",
        "errors",
        "warnings",
        "is_managed",
        "is_backup_access_code_available",
        "is_external_modification_allowed",
        "is_one_time_use",
        "is_offline_access_code",
    ] {
        assert!(code.get(field).is_some(), "the access_code schema requires {field}: {code}");
    }
    let (_, _, a) =
        call(&seam, "/action_attempts/get", json!({"action_attempt_id": attempt["action_attempt_id"]})).await;
    assert_eq!(a["action_attempt"]["status"], "success");
    let types: Vec<String> = seam.events().iter().map(|e| e["event_type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, ["access_code.changed", "access_code.set_on_device"]);
}

#[tokio::test]
async fn dates_convert_an_ongoing_code_to_time_bound_which_is_scheduled_set_then_removed() {
    let seam = sim().await;
    // Slow enough that `removing`, which lasts the device's delay, is seen.
    let device = seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(300) });
    let id = seam.add_access_code(&device, SeedCode::default());
    let starts = Utc::now() + chrono::Duration::milliseconds(600);
    let ends = starts + chrono::Duration::milliseconds(700);
    let (status, _, v) = call(
        &seam,
        "/access_codes/update",
        json!({"access_code_id": id, "starts_at": starts.to_rfc3339(), "ends_at": ends.to_rfc3339()}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let scheduled = until(&seam, &id, "scheduled", |c| c["status"] == "unset").await;
    assert_eq!(
        (scheduled["type"].as_str(), scheduled["is_scheduled_on_device"].as_bool()),
        (Some("time_bound"), Some(true))
    );
    assert_eq!(
        scheduled["starts_at"].as_str().unwrap(),
        starts.trunc_subsecs(3).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    until(&seam, &id, "set at starts_at", |c| c["status"] == "set").await;
    assert!(Utc::now() >= starts);
    until(&seam, &id, "removing after ends_at", |c| c["status"] == "removing").await;
    gone(&seam, &id).await;
    let types: Vec<String> = seam.events().iter().map(|e| e["event_type"].as_str().unwrap().to_string()).collect();
    assert!(
        types.contains(&"access_code.scheduled_on_device".into())
            && types.contains(&"access_code.removed_from_device".into()),
        "{types:?}"
    );
}

#[tokio::test]
async fn type_ongoing_converts_a_time_bound_code_and_clears_its_dates() {
    let seam = sim().await;
    let past = Utc::now() - chrono::Duration::hours(1);
    let id = seam.add_access_code(
        &seam.add_device(normal()),
        SeedCode { starts_at: Some(past), ends_at: Some(past + chrono::Duration::days(1)), ..SeedCode::default() },
    );
    assert_eq!(seam.access_code(&id).unwrap()["type"], "time_bound");
    let (status, _, _) = call(&seam, "/access_codes/update", json!({"access_code_id": id, "type": "ongoing"})).await;
    assert_eq!(status, 200);
    let code = until(&seam, &id, "set", |c| c["status"] == "set").await;
    assert_eq!(code["type"], "ongoing");
    assert!(code.get("starts_at").is_none() && code.get("ends_at").is_none(), "{code}");
}

#[tokio::test]
async fn invalid_updates_are_rejected_with_validation_errors_naming_the_field() {
    let seam = sim().await;
    let id = seam.add_access_code(&seam.add_device(normal()), SeedCode::default());
    let future = (Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let later = (Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let past = (Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let cases = [
        (json!({"code": "1234"}), "access_code_id"),
        (json!({"access_code_id": id, "code": "12ab"}), "code"),
        (json!({"access_code_id": id, "code": "123"}), "code"),
        (json!({"access_code_id": id, "code": "1234567890"}), "code"),
        (json!({"access_code_id": id, "type": "weekly"}), "type"),
        (json!({"access_code_id": id, "starts_at": future}), "ends_at"),
        (json!({"access_code_id": id, "ends_at": future}), "starts_at"),
        (json!({"access_code_id": id, "starts_at": later, "ends_at": future}), "ends_at"),
        (json!({"access_code_id": id, "starts_at": past, "ends_at": past}), "ends_at"),
        (json!({"access_code_id": id, "starts_at": "soon", "ends_at": future}), "starts_at"),
        (json!({"access_code_id": id, "type": "ongoing", "starts_at": future, "ends_at": later}), "type"),
        (json!({"access_code_id": id, "max_time_rounding": "1week"}), "max_time_rounding"),
    ];
    for (body, field) in cases {
        let (status, _, v) = call(&seam, "/access_codes/update", body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_input");
        assert!(v["error"]["validation_errors"][field]["_errors"].is_array(), "{body} should name {field}: {v}");
    }
    assert_eq!(seam.access_code(&id).unwrap()["status"], "set", "nothing was applied");
}

#[tokio::test]
async fn unknown_ids_get_404_unless_auto_create_is_on() {
    let seam = sim().await;
    let (status, _, v) = call(&seam, "/access_codes/update", json!({"access_code_id": "nope", "code": "1234"})).await;
    assert_eq!((status, v["error"]["type"].as_str()), (404, Some("access_code_not_found")));
    let (status, _, v) = call(&seam, "/access_codes/get", json!({"access_code_id": "nope"})).await;
    assert_eq!((status, v["error"]["type"].as_str()), (404, Some("not_found")), "get says not_found, as Seam does");
    let device = seam.add_device(normal());
    let (status, _, v) = call(&seam, "/access_codes/get", json!({"device_id": device, "code": "0000"})).await;
    assert_eq!((status, v["error"]["type"].as_str()), (404, Some("not_found")));
    let (status, _, v) = call(&seam, "/access_codes/update", json!({"access_code_id": seam.add_access_code(&seam.add_device(normal()), SeedCode::default()), "device_id": "gone"})).await;
    assert_eq!((status, v["error"]["type"].as_str()), (404, Some("device_not_found")));
    let (status, _, v) = call(&seam, "/action_attempts/get", json!({"action_attempt_id": "nope"})).await;
    assert_eq!((status, v["error"]["type"].as_str()), (404, Some("action_attempt_not_found")));

    let auto = FakeSeam::spawn(SimConfig { auto_create: true, ..SimConfig::default() }).await.unwrap();
    let (status, _, _) = call(&auto, "/access_codes/update", json!({"access_code_id": "ac-0", "code": "1234"})).await;
    assert_eq!(status, 200);
    assert_eq!(call(&auto, "/access_codes/delete", json!({"access_code_id": "ac-1"})).await.0, 200);
    assert_eq!(auto.access_code("ac-0").unwrap()["code"], "1234");
}

#[tokio::test]
async fn a_failing_device_reports_failed_to_set_on_device() {
    let seam = sim().await;
    let id =
        seam.add_access_code(&seam.add_device(DeviceBehaviour::fails(Duration::from_millis(30))), SeedCode::default());
    let (_, _, v) = call(&seam, "/access_codes/update", json!({"access_code_id": id, "code": "9999"})).await;
    let code = until(&seam, &id, "failed", |c| c["errors"].as_array().is_some_and(|e| !e.is_empty())).await;
    assert_eq!(code["errors"][0]["error_code"], "failed_to_set_on_device");
    assert_eq!(code["errors"][0]["is_access_code_error"], true);
    let (_, _, a) =
        call(&seam, "/action_attempts/get", json!({"action_attempt_id": v["action_attempt"]["action_attempt_id"]}))
            .await;
    assert_eq!(a["action_attempt"]["status"], "error");
    assert!(a["action_attempt"]["error"]["type"].is_string() && a["action_attempt"]["error"]["message"].is_string());
    assert!(seam.events().iter().any(|e| e["event_type"] == "access_code.failed_to_set_on_device"));
}

#[tokio::test]
async fn a_device_that_never_finishes_warns_of_a_delay_and_an_offline_one_reports_it() {
    let seam = sim().await;
    let slow = seam.add_access_code(
        &seam.add_device(DeviceBehaviour::NeverFinishes { warn_after: Duration::from_millis(100) }),
        SeedCode::default(),
    );
    call(&seam, "/access_codes/update", json!({"access_code_id": slow, "code": "1357"})).await;
    let code = until(&seam, &slow, "warned", |c| c["warnings"].as_array().is_some_and(|w| !w.is_empty())).await;
    assert_eq!(
        (code["status"].as_str(), code["warnings"][0]["warning_code"].as_str()),
        (Some("setting"), Some("delay_in_setting_on_device"))
    );

    let device = seam.add_device(DeviceBehaviour::Offline);
    let off = seam.add_access_code(&device, SeedCode::default());
    call(&seam, "/access_codes/update", json!({"access_code_id": off, "code": "2468"})).await;
    let code = until(&seam, &off, "offline error", |c| c["errors"].as_array().is_some_and(|e| !e.is_empty())).await;
    assert_eq!(
        (code["errors"][0]["error_code"].as_str(), code["errors"][0]["is_device_error"].as_bool()),
        (Some("device_offline"), Some(true))
    );
    assert_eq!(code["status"], "setting", "the change waits for the device");
    // Back online: the pending change goes through.
    seam.set_device(&device, normal());
    until(&seam, &off, "set once back online", |c| c["status"] == "set" && c["code"] == "2468").await;
}

#[tokio::test]
async fn more_than_ten_updates_a_minute_for_one_device_get_429() {
    let seam = sim().await;
    let device = seam.add_device(normal());
    let ids: Vec<String> = (0..3).map(|_| seam.add_access_code(&device, SeedCode::default())).collect();
    let mut statuses = Vec::new();
    for i in 0..12 {
        let (status, _, _) =
            call(&seam, "/access_codes/update", json!({"access_code_id": ids[i % 3], "name": format!("n{i}")})).await;
        statuses.push(status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
    assert_eq!(&statuses[10..], [429, 429]);
    let other = seam.add_access_code(&seam.add_device(normal()), SeedCode::default());
    assert_eq!(
        call(&seam, "/access_codes/update", json!({"access_code_id": other, "name": "x"})).await.0,
        200,
        "the limit is per device"
    );
}

#[tokio::test]
async fn scripted_faults_answer_503_empty_500_text_429_with_retry_after_and_latency() {
    let seam = sim().await;
    let id = seam.add_access_code(&seam.add_device(normal()), SeedCode::default());
    seam.set_faults(Faults { error_rate: 1.0, fail_status: Some(503), ..Faults::default() });
    let r = reqwest::Client::new()
        .post(format!("{}/access_codes/get", seam.url()))
        .bearer_auth(KEY)
        .json(&json!({"access_code_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.bytes().await.unwrap().is_empty(), "503 with an empty body");
    seam.set_faults(Faults { error_rate: 1.0, fail_status: Some(500), ..Faults::default() });
    let (status, _, body) = call(&seam, "/access_codes/get", json!({"access_code_id": id})).await;
    assert_eq!(status, 500);
    assert!(body.is_string(), "500 with a body that is not JSON: {body}");
    seam.set_faults(Faults { force_429: 1, retry_after: Some(7), ..Faults::default() });
    let (status, headers, _) = call(&seam, "/access_codes/get", json!({"access_code_id": id})).await;
    assert_eq!((status, headers["retry-after"].to_str().unwrap()), (429, "7"));
    assert_eq!(
        call(&seam, "/access_codes/get", json!({"access_code_id": id})).await.0,
        200,
        "only the next N requests"
    );
    seam.set_faults(Faults { latency_ms: 300, ..Faults::default() });
    let t = Instant::now();
    assert_eq!(call(&seam, "/access_codes/get", json!({"access_code_id": id})).await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn events_list_filters_by_access_code_and_type() {
    let seam = sim().await;
    let device = seam.add_device(normal());
    let a = seam.add_access_code(&device, SeedCode::default());
    let b = seam.add_access_code(&device, SeedCode::default());
    call(&seam, "/access_codes/update", json!({"access_code_id": a, "name": "a"})).await;
    call(&seam, "/access_codes/update", json!({"access_code_id": b, "name": "b"})).await;
    until(&seam, &a, "set", |c| c["status"] == "set").await;
    until(&seam, &b, "set", |c| c["status"] == "set").await;
    let (_, _, v) = call(&seam, "/events/list", json!({"access_code_id": a})).await;
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["access_code_id"] == a.as_str()));
    for field in ["event_id", "event_type", "workspace_id", "device_id", "created_at", "occurred_at"] {
        assert!(events[0].get(field).is_some(), "{field}");
    }
    let (_, _, v) = call(&seam, "/events/list", json!({"event_type": "access_code.set_on_device"})).await;
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn create_and_list_follow_the_schema() {
    let seam = sim().await;
    let device = seam.add_device(normal());
    let (status, _, v) =
        call(&seam, "/access_codes/create", json!({"device_id": device, "code": "8642", "name": "New"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["access_code"]["status"], "setting");
    assert_eq!(v["action_attempt"]["action_type"], "CREATE_ACCESS_CODE");
    let (_, _, l) = call(&seam, "/access_codes/list", json!({"device_id": device})).await;
    assert_eq!(l["access_codes"].as_array().unwrap().len(), 1);
    assert_eq!(l["pagination"]["has_next_page"], false);
}

#[tokio::test]
async fn webhooks_are_delivered_with_a_svix_signature_that_verifies() {
    let received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
    let store = received.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let router = Router::new()
        .route("/hook", post(move |h: HeaderMap, b: Bytes| async move { store.lock().unwrap().push((h, b)) }));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let secret_bytes = b"latchkey webhook test secret";
    let secret = format!("whsec_{}", STANDARD.encode(secret_bytes));
    let seam = FakeSeam::spawn(SimConfig { webhook: Some(WebhookTarget { url, secret }), ..SimConfig::default() })
        .await
        .unwrap();
    let id = seam.add_access_code(&seam.add_device(normal()), SeedCode::default());
    call(&seam, "/access_codes/update", json!({"access_code_id": id, "code": "1122"})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "webhooks not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (headers, body) in received.lock().unwrap().iter() {
        let (msg_id, ts) = (headers["svix-id"].to_str().unwrap(), headers["svix-timestamp"].to_str().unwrap());
        let mut mac = Hmac::<Sha256>::new_from_slice(secret_bytes).unwrap();
        mac.update(format!("{msg_id}.{ts}.{}", String::from_utf8_lossy(body)).as_bytes());
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert!(headers["svix-signature"].to_str().unwrap().split(' ').any(|s| s == expected));
        assert!((Utc::now().timestamp() - ts.parse::<i64>().unwrap()).abs() < 300);
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["access_code_id"], id.as_str(), "{event}");
    }
}

#[tokio::test]
async fn the_admin_api_scripts_devices_codes_and_faults_over_http() {
    let seam = sim().await;
    let http = reqwest::Client::new();
    let device = admin_device(&seam, json!({"kind": "fails", "delay_ms": 10})).await;
    let code: Value = http
        .post(format!("{}/_admin/access_codes", seam.url()))
        .json(&json!({"device_id": device, "code": "4455"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seam.access_code(code["access_code_id"].as_str().unwrap()).unwrap()["code"], "4455");
    let r = http
        .put(format!("{}/_admin/devices/{device}", seam.url()))
        .json(&json!({"behaviour": {"kind": "offline"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http.put(format!("{}/_admin/faults", seam.url())).json(&json!({"force_429": 1})).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(call(&seam, "/access_codes/get", json!({"access_code_id": code["access_code_id"]})).await.0, 429);
    let log: Value = http.get(format!("{}/_admin/requests", seam.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(log.as_array().unwrap().len(), 1, "admin calls are not logged: {log}");
    assert_eq!(log[0]["status"], 429);
}

#[tokio::test]
async fn injected_errors_and_warnings_show_on_the_code_the_way_seam_serializes_them() {
    let seam = sim().await;
    let id = seam.add_access_code(&seam.add_device(normal()), SeedCode::default());
    let issues = format!("/_admin/access_codes/{id}/issues");
    let earlier = "2024-05-01T10:00:00.000Z";
    for body in [
        json!({"kind": "error", "code": "hub_disconnected"}),
        json!({"kind": "error", "code": "no_space_for_access_code_on_device", "message": "No room", "created_at": earlier}),
        json!({"kind": "warning", "code": "delay_in_setting_on_device"}),
    ] {
        assert_eq!(admin(&seam, Method::POST, &issues, Some(body.clone())).await, 204, "{body}");
    }
    let code = get(&seam, &id).await;
    assert_eq!(code["status"], "set", "issues do not change the status");
    let hub = &code["errors"][0];
    assert_eq!((hub["error_code"].as_str(), hub["is_device_error"].as_bool()), (Some("hub_disconnected"), Some(true)));
    assert!(hub.get("is_access_code_error").is_none(), "a device error is not an access-code error: {hub}");
    assert!(hub["message"].is_string() && hub["created_at"].is_string(), "{hub}");
    let space = &code["errors"][1];
    assert_eq!(
        (space["is_access_code_error"].as_bool(), space["message"].as_str(), space["created_at"].as_str()),
        (Some(true), Some("No room"), Some(earlier))
    );
    let warning = &code["warnings"][0];
    assert_eq!(warning["warning_code"], "delay_in_setting_on_device");
    assert!(warning["message"].is_string() && warning["created_at"].is_string() && warning.get("error_code").is_none());

    assert!(seam.add_issue(&id, Issue::warning("third_party_integration_detected")));
    assert_eq!(get(&seam, &id).await["warnings"].as_array().unwrap().len(), 2);
    assert!(!seam.add_issue("nope", Issue::error("hub_disconnected")));
    let unknown = Some(json!({"kind": "error", "code": "hub_disconnected"}));
    assert_eq!(admin(&seam, Method::POST, "/_admin/access_codes/nope/issues", unknown).await, 404);
    let fatal = Some(json!({"kind": "fatal", "code": "hub_disconnected"}));
    assert_eq!(admin(&seam, Method::POST, &issues, fatal).await, 400, "a malformed admin body is a 400");
}

#[tokio::test]
async fn an_injected_issue_clears_by_itself_before_a_later_delay_warning_on_the_same_code() {
    let seam = sim().await;
    let device = seam.add_device(DeviceBehaviour::NeverFinishes { warn_after: Duration::from_millis(600) });
    let id = seam.add_access_code(&device, SeedCode::default());
    call(&seam, "/access_codes/update", json!({"access_code_id": id, "code": "1357"})).await;
    let transient = json!({"kind": "error", "code": "hub_disconnected", "clear_after_ms": 100});
    assert_eq!(admin(&seam, Method::POST, &format!("/_admin/access_codes/{id}/issues"), Some(transient)).await, 204);
    assert_eq!(get(&seam, &id).await["errors"][0]["error_code"], "hub_disconnected");
    let cleared = until(&seam, &id, "cleared", |c| c["errors"].as_array().is_some_and(Vec::is_empty)).await;
    assert!(
        cleared["warnings"].as_array().unwrap().is_empty(),
        "the issue cleared at its own time, not at the code's next wake: {cleared}"
    );
    let warned = until(&seam, &id, "warned", |c| c["warnings"].as_array().is_some_and(|w| !w.is_empty())).await;
    assert_eq!((warned["status"].as_str(), warned["errors"].as_array().map(Vec::len)), (Some("setting"), Some(0)));
}

#[tokio::test]
async fn an_update_clears_issues_but_those_kept_and_an_error_does_not_stop_the_change_finishing() {
    let seam = sim().await;
    let device = seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(200) });
    let id = seam.add_access_code(&device, SeedCode::default());
    let before = Utc::now() - chrono::Duration::hours(3);
    let left_over = json!({
        "kind": "error", "code": "duplicate_code_on_device", "created_at": before.to_rfc3339(), "keep_on_update": true,
    });
    let issues = format!("/_admin/access_codes/{id}/issues");
    assert_eq!(admin(&seam, Method::POST, &issues, Some(left_over)).await, 204);
    assert!(seam.add_issue(&id, Issue::warning("third_party_integration_detected")));

    let (status, _, v) = call(&seam, "/access_codes/update", json!({"access_code_id": id, "code": "2468"})).await;
    assert_eq!(status, 200, "{v}");
    let setting = get(&seam, &id).await;
    assert_eq!(setting["status"], "setting");
    assert!(setting["warnings"].as_array().unwrap().is_empty(), "an update clears issues: {setting}");
    assert_eq!(setting["errors"][0]["created_at"], millis(before.trunc_subsecs(3)), "kept with its old time");
    // A transient hub error while the change is being programmed.
    assert_eq!(
        admin(&seam, Method::POST, &issues, Some(json!({"kind": "error", "code": "hub_disconnected"}))).await,
        204
    );

    let set = until(&seam, &id, "set", |c| c["status"] == "set").await;
    let codes: Vec<&str> =
        set["errors"].as_array().unwrap().iter().map(|e| e["error_code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["duplicate_code_on_device", "hub_disconnected"], "set, with errors: {set}");
    assert_eq!(attempt_outcome(&seam, &v).await["status"], "success");
}

#[tokio::test]
async fn a_device_can_fail_on_the_code_while_the_update_attempt_succeeds() {
    let legacy: DeviceBehaviour = serde_json::from_value(json!({"kind": "fails", "delay_ms": 50})).unwrap();
    assert_eq!(legacy, DeviceBehaviour::fails(Duration::from_millis(50)), "the old JSON still means the old failure");

    let seam = sim().await;
    let behaviour = json!({"kind": "fails", "delay_ms": 30, "error_code": "no_space_for_access_code_on_device", "attempt": "success"});
    let device = &admin_device(&seam, behaviour).await;
    let ongoing = seam.add_access_code(device, SeedCode::default());
    let upcoming = seam.add_access_code(device, SeedCode::default());
    let starts = Utc::now() + chrono::Duration::milliseconds(400);
    let ends = starts + chrono::Duration::hours(1);

    let (_, _, first) = call(&seam, "/access_codes/update", json!({"access_code_id": ongoing, "code": "4321"})).await;
    let (_, _, second) = call(
        &seam,
        "/access_codes/update",
        json!({"access_code_id": upcoming, "starts_at": starts.to_rfc3339(), "ends_at": ends.to_rfc3339()}),
    )
    .await;
    assert_eq!(attempt_outcome(&seam, &first).await["status"], "success");
    assert_eq!(attempt_outcome(&seam, &second).await["status"], "success");

    let a = get(&seam, &ongoing).await;
    assert_eq!(
        (a["status"].as_str(), a["errors"][0]["error_code"].as_str(), a["errors"][0]["is_access_code_error"].as_bool()),
        (Some("setting"), Some("no_space_for_access_code_on_device"), Some(true))
    );
    assert!(a["errors"][0]["created_at"].is_string());
    let b = get(&seam, &upcoming).await;
    assert_eq!(
        (b["status"].as_str(), b["is_scheduled_on_device"].as_bool(), b["errors"][0]["error_code"].as_str()),
        (Some("unset"), Some(false), Some("no_space_for_access_code_on_device"))
    );
    let types = event_types(&seam);
    assert_eq!(types.iter().filter(|t| *t == "access_code.failed_to_set_on_device").count(), 2, "{types:?}");
    assert!(!types.iter().any(|t| t == "access_code.set_on_device" || t == "access_code.scheduled_on_device"));

    tokio::time::sleep((starts - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100)).await;
    assert_eq!(get(&seam, &upcoming).await["status"], "unset", "a code not on the lock is never set at starts_at");
}

#[tokio::test]
async fn a_revoked_api_key_gets_401_until_it_is_restored() {
    let seam = sim().await;
    let id = seam.add_access_code(&seam.add_device(normal()), SeedCode::default());
    let get_body = json!({"access_code_id": id});
    let new_key = Some(json!({"api_key": "seam_rotated_key"}));
    assert_eq!(admin(&seam, Method::PUT, "/_admin/api_key", new_key).await, 204);
    let (status, _, v) = call(&seam, "/access_codes/get", get_body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(
        (v["error"]["type"].as_str(), v["error"]["message"].as_str()),
        (Some("unauthorized"), Some("Unauthorized"))
    );
    assert_eq!(call_with_key(&seam, "seam_rotated_key", "/access_codes/get", get_body.clone()).await.0, 200);

    assert_eq!(admin(&seam, Method::PUT, "/_admin/api_key", Some(json!({"api_key": null}))).await, 204);
    assert_eq!(call(&seam, "/access_codes/get", get_body.clone()).await.0, 200, "null restores the configured key");
    assert_eq!(call_with_key(&seam, "seam_rotated_key", "/access_codes/get", get_body.clone()).await.0, 401);

    seam.set_api_key(Some("seam_other_key".into()));
    assert_eq!(call(&seam, "/access_codes/get", get_body.clone()).await.0, 401);
    seam.set_api_key(None);
    assert_eq!(call(&seam, "/access_codes/get", get_body).await.0, 200);
}

#[tokio::test]
async fn offline_access_codes_have_their_times_rounded_outward_and_others_never() {
    let seam = sim().await;
    let device = seam.add_device(normal());
    let day = (Utc::now() + chrono::Duration::days(2)).date_naive();
    let at = |days: u64, h, m, s| {
        let date = day + chrono::Days::new(days);
        Utc.with_ymd_and_hms(date.year(), date.month(), date.day(), h, m, s).unwrap()
    };
    let (starts, ends) = (at(0, 10, 17, 23), at(1, 15, 42, 10));
    let dates = json!({"starts_at": starts.to_rfc3339(), "ends_at": ends.to_rfc3339()});
    let times = |c: &Value| (c["starts_at"].as_str().unwrap().to_string(), c["ends_at"].as_str().unwrap().to_string());

    let mut body = json!({"device_id": device, "is_offline_access_code": true});
    body.as_object_mut().unwrap().extend(dates.as_object().unwrap().clone());
    let (status, _, v) = call(&seam, "/access_codes/create", body).await;
    assert_eq!(status, 200, "{v}");
    let offline = v["access_code"]["access_code_id"].as_str().unwrap().to_string();
    assert_eq!(times(&v["access_code"]), (millis(at(0, 10, 0, 0)), millis(at(1, 16, 0, 0))), "1hour by default");

    // An update of a code that already is offline: by the day this time.
    let (starts, ends) = (at(1, 9, 30, 0), at(2, 9, 0, 0));
    let (status, _, v) = call(
        &seam,
        "/access_codes/update",
        json!({"access_code_id": offline, "starts_at": starts.to_rfc3339(), "ends_at": ends.to_rfc3339(), "max_time_rounding": "1d"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(times(&get(&seam, &offline).await), (millis(at(1, 0, 0, 0)), millis(at(3, 0, 0, 0))));

    let online = seam.add_access_code(&device, SeedCode::default());
    let mut body = json!({"access_code_id": online, "max_time_rounding": "1day"});
    body.as_object_mut().unwrap().extend(dates.as_object().unwrap().clone());
    let (status, _, v) = call(&seam, "/access_codes/update", body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(times(&get(&seam, &online).await), (millis(at(0, 10, 17, 23)), millis(at(1, 15, 42, 10))));
}

#[tokio::test]
async fn codes_changed_or_deleted_behind_seams_back() {
    let seam = sim().await;
    let device = seam.add_device(normal());
    let id = seam.add_access_code(&device, SeedCode { code: Some("1111".into()), ..SeedCode::default() });
    let path = format!("/_admin/access_codes/{id}");
    let at_the_lock = json!({"code": "9876", "warning": "code_modified_external_to_seam"});
    assert_eq!(admin(&seam, Method::PATCH, &path, Some(at_the_lock)).await, 204);
    let code = get(&seam, &id).await;
    assert_eq!(
        (code["code"].as_str(), code["status"].as_str(), code["warnings"][0]["warning_code"].as_str()),
        (Some("9876"), Some("set"), Some("code_modified_external_to_seam"))
    );
    assert!(code["warnings"][0]["created_at"].is_string());
    assert_eq!(admin(&seam, Method::PATCH, &path, Some(json!({"name": "Front door"}))).await, 204);
    assert_eq!(get(&seam, &id).await["name"], "Front door");
    assert_eq!(event_types(&seam), ["access_code.modified_external_to_seam", "access_code.changed"], "no attempt");
    assert_eq!(admin(&seam, Method::PATCH, &path, Some(json!({"pin": "1234"}))).await, 400, "unknown fields");

    assert_eq!(admin(&seam, Method::DELETE, &path, None).await, 204);
    let (status, _, v) = call(&seam, "/access_codes/get", json!({"access_code_id": id})).await;
    assert_eq!((status, v["error"]["type"].as_str()), (404, Some("not_found")));
    assert_eq!(event_types(&seam).last().map(String::as_str), Some("access_code.deleted_external_to_seam"));
    assert_eq!(admin(&seam, Method::DELETE, &path, None).await, 404);
    assert_eq!(admin(&seam, Method::PATCH, &path, Some(json!({"name": "x"}))).await, 404);

    let other = seam.add_access_code(&device, SeedCode::default());
    assert!(
        seam.modify_access_code(&other, Modification { name: Some("Back door".into()), ..Modification::default() })
    );
    assert_eq!(get(&seam, &other).await["name"], "Back door");
    assert!(seam.remove_access_code(&other));
    assert!(!seam.remove_access_code(&other) && !seam.modify_access_code(&other, Modification::default()));
}

#[tokio::test]
async fn a_request_caught_in_an_outage_fails_late_even_if_the_outage_ends_meanwhile() {
    let seam = sim().await;
    let device = seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(10) });
    let id = seam.add_access_code(&device, SeedCode { code: Some("1111".into()), ..SeedCode::default() });
    seam.set_faults(Faults { stall_next: 1, stall_ms: 400, ..Faults::default() });
    let started = Instant::now();
    let caught = tokio::spawn({
        let url = seam.url();
        let id = id.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{url}/access_codes/update"))
                .bearer_auth(KEY)
                .json(&json!({"access_code_id": id, "code": "2222"}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    });
    // Once the request has arrived (it took the stall), the outage ends: the
    // next request is answered at once.
    while seam.faults().stall_next > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seam.set_faults(Faults::default());
    let (status, _, _) = call(&seam, "/access_codes/get", json!({"access_code_id": id})).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_millis(400), "only the caught request waits");
    assert_eq!(caught.await.unwrap(), 503, "its fate was drawn when it arrived");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(get(&seam, &id).await["code"], "1111", "the failed update changed nothing");
}

/// `/access_codes/delete` of this code.
async fn delete(seam: &FakeSeam, id: &str) -> (u16, HeaderMap, Value) {
    call(seam, "/access_codes/delete", json!({"access_code_id": id})).await
}

/// The action attempt of an answer, as `/action_attempts/get` has it now.
async fn attempt_now(seam: &FakeSeam, answer: &Value) -> Value {
    let id = &answer["action_attempt"]["action_attempt_id"];
    let (status, _, v) = call(seam, "/action_attempts/get", json!({"action_attempt_id": id})).await;
    assert_eq!(status, 200, "{v}");
    v["action_attempt"].clone()
}

fn has_errors(code: &Value) -> bool {
    code["errors"].as_array().is_some_and(|e| !e.is_empty())
}

fn has_warnings(code: &Value) -> bool {
    code["warnings"].as_array().is_some_and(|w| !w.is_empty())
}

/// A time-bound code begun an hour ago and ending `ends_in` from now, on a
/// new device with `behaviour`; the device's id and the code's.
fn ending_code(seam: &FakeSeam, behaviour: DeviceBehaviour, ends_in: Duration) -> (String, String) {
    let device = seam.add_device(behaviour);
    let now = Utc::now();
    let seed = SeedCode {
        starts_at: Some(now - chrono::Duration::hours(1)),
        ends_at: Some(now + chrono::Duration::from_std(ends_in).unwrap()),
        ..SeedCode::default()
    };
    let id = seam.add_access_code(&device, seed);
    (device, id)
}

#[tokio::test]
async fn a_delete_answers_a_pending_attempt_and_the_code_goes_removing_then_away() {
    let seam = sim().await;
    let device = seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(300) });
    let id = seam.add_access_code(&device, SeedCode::default());
    let kept = seam.add_access_code(&device, SeedCode::default());
    let (status, _, v) = delete(&seam, &id).await;
    assert_eq!(status, 200, "{v}");
    let attempt = &v["action_attempt"];
    assert_eq!(
        (v["ok"].as_bool(), attempt["status"].as_str(), attempt["action_type"].as_str()),
        (Some(true), Some("pending"), Some("DELETE_ACCESS_CODE"))
    );
    assert!(attempt["result"].is_null() && attempt["error"].is_null(), "{attempt}");
    assert_eq!(get(&seam, &id).await["status"], "removing");

    assert_eq!(attempt_outcome(&seam, &v).await["status"], "success");
    gone(&seam, &id).await;
    let (_, _, l) = call(&seam, "/access_codes/list", json!({"device_id": device})).await;
    let listed: Vec<&str> =
        l["access_codes"].as_array().unwrap().iter().map(|c| c["access_code_id"].as_str().unwrap()).collect();
    assert_eq!(listed, [kept.as_str()]);
    assert_eq!(event_types(&seam), ["access_code.removed_from_device", "access_code.deleted"]);
    let logged = seam.requests().into_iter().find(|r| r.path == "/access_codes/delete").unwrap();
    assert_eq!(
        (logged.access_code_id.as_deref(), logged.device_id.as_deref(), logged.status),
        (Some(id.as_str()), Some(device.as_str()), 200),
        "a delete is logged with the code's device"
    );
}

#[tokio::test]
async fn a_delete_without_an_id_or_of_an_unknown_code_or_device_is_refused() {
    let seam = sim().await;
    let (status, _, v) = call(&seam, "/access_codes/delete", json!({})).await;
    assert_eq!((status, v["error"]["type"].as_str()), (400, Some("invalid_input")));
    assert!(v["error"]["validation_errors"]["access_code_id"]["_errors"].is_array(), "names the field: {v}");
    let (status, _, v) = delete(&seam, "nope").await;
    assert_eq!((status, v["error"]["type"].as_str()), (404, Some("access_code_not_found")));
    let device = seam.add_device(normal());
    let id = seam.add_access_code(&device, SeedCode::default());
    let (status, _, v) = call(&seam, "/access_codes/delete", json!({"access_code_id": id, "device_id": "gone"})).await;
    assert_eq!((status, v["error"]["type"].as_str()), (404, Some("device_not_found")));
    let r = reqwest::Client::new()
        .get(format!("{}/access_codes/delete?access_code_id={id}", seam.url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405, "POST only");
    assert_eq!(get(&seam, &id).await["status"], "set", "nothing was deleted");

    let (status, _, v) = call(&seam, "/access_codes/delete", json!({"access_code_id": id, "device_id": device})).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn a_failing_device_keeps_a_deleted_code_set_with_failed_to_remove_from_device() {
    let seam = sim().await;
    let plain = seam.add_device(DeviceBehaviour::fails(Duration::from_millis(30)));
    // A device that fails sets with a successful attempt fails deletes the
    // plain way all the same.
    let lying = seam.add_device(DeviceBehaviour::Fails {
        delay: Duration::from_millis(30),
        error_code: "no_space_for_access_code_on_device".into(),
        attempt: AttemptResult::Success,
    });
    for device in [plain, lying] {
        let id = seam.add_access_code(&device, SeedCode::default());
        let (_, _, v) = delete(&seam, &id).await;
        let attempt = attempt_outcome(&seam, &v).await;
        assert_eq!(
            (attempt["status"].as_str(), attempt["error"]["type"].as_str()),
            (Some("error"), Some("failed_to_remove_from_device"))
        );
        assert!(attempt["error"]["message"].is_string());
        let code = get(&seam, &id).await;
        let error = &code["errors"][0];
        assert_eq!(
            (code["status"].as_str(), error["error_code"].as_str(), error["is_access_code_error"].as_bool()),
            (Some("set"), Some("failed_to_remove_from_device"), Some(true)),
            "{code}"
        );
        assert!(error["created_at"].is_string() && error["message"].is_string(), "{error}");
    }
    assert_eq!(event_types(&seam), ["access_code.failed_to_remove_from_device"; 2]);
}

#[tokio::test]
async fn a_delete_on_a_device_that_never_finishes_stays_removing_and_warns_of_the_delay() {
    let seam = sim().await;
    let device = seam.add_device(DeviceBehaviour::NeverFinishes { warn_after: Duration::from_millis(100) });
    let id = seam.add_access_code(&device, SeedCode::default());
    let (_, _, v) = delete(&seam, &id).await;
    let code = until(&seam, &id, "warned", has_warnings).await;
    assert_eq!(
        (code["status"].as_str(), code["warnings"][0]["warning_code"].as_str()),
        (Some("removing"), Some("delay_in_removing_from_device"))
    );
    assert_eq!(attempt_now(&seam, &v).await["status"], "pending");
    assert_eq!(event_types(&seam), ["access_code.delay_in_removing_from_device"]);
}

#[tokio::test]
async fn a_delete_on_an_offline_device_waits_for_it_then_the_code_is_gone() {
    let seam = sim().await;
    let device = seam.add_device(DeviceBehaviour::Offline);
    let id = seam.add_access_code(&device, SeedCode::default());
    let (_, _, v) = delete(&seam, &id).await;
    let code = until(&seam, &id, "offline error", has_errors).await;
    assert_eq!(
        (
            code["status"].as_str(),
            code["errors"][0]["error_code"].as_str(),
            code["errors"][0]["is_device_error"].as_bool()
        ),
        (Some("removing"), Some("device_offline"), Some(true))
    );
    assert_eq!(attempt_now(&seam, &v).await["status"], "pending");

    seam.set_device(&device, normal());
    assert_eq!(attempt_outcome(&seam, &v).await["status"], "success");
    gone(&seam, &id).await;
    assert_eq!(
        event_types(&seam),
        [
            "access_code.failed_to_remove_from_device",
            "device.connected",
            "access_code.removed_from_device",
            "access_code.deleted"
        ]
    );
}

#[tokio::test]
async fn a_second_delete_keeps_the_removal_under_way_and_its_attempt_succeeds_at_once() {
    let seam = sim().await;
    let id = seam.add_access_code(
        &seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(600) }),
        SeedCode::default(),
    );
    let first_sent = Instant::now();
    let (_, _, first) = delete(&seam, &id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, second) = delete(&seam, &id).await;
    assert_eq!((status, second["action_attempt"]["status"].as_str()), (200, Some("pending")), "{second}");
    assert_ne!(second["action_attempt"]["action_attempt_id"], first["action_attempt"]["action_attempt_id"]);
    assert_eq!(attempt_now(&seam, &second).await["status"], "success", "at once");
    assert_eq!(get(&seam, &id).await["status"], "removing", "while the code is still on the lock");

    gone(&seam, &id).await;
    assert!(first_sent.elapsed() < Duration::from_millis(850), "on the first delete's timer, not restarted");
    assert_eq!(attempt_now(&seam, &first).await["status"], "success");
    assert_eq!(event_types(&seam), ["access_code.removed_from_device", "access_code.deleted"]);
}

#[tokio::test]
async fn deletes_have_a_limit_of_twenty_a_minute_per_device_apart_from_updates() {
    let seam = sim().await;
    seam.set_faults(Faults { retry_after: Some(7), ..Faults::default() });
    // Removals never finish: the deleted code stays, and each delete after
    // the first is a repeat.
    let device = seam.add_device(DeviceBehaviour::NeverFinishes { warn_after: Duration::from_secs(60) });
    let deleted = seam.add_access_code(&device, SeedCode::default());
    let updated = seam.add_access_code(&device, SeedCode::default());
    for _ in 0..20 {
        assert_eq!(delete(&seam, &deleted).await.0, 200);
    }
    for i in 0..10 {
        let (status, _, v) =
            call(&seam, "/access_codes/update", json!({"access_code_id": updated, "name": format!("n{i}")})).await;
        assert_eq!(status, 200, "deletes do not count as updates: {v}");
    }
    assert_eq!(call(&seam, "/access_codes/update", json!({"access_code_id": updated, "name": "x"})).await.0, 429);

    let (status, headers, v) = delete(&seam, &deleted).await;
    assert_eq!((status, v["error"]["type"].as_str()), (429, Some("rate_limit_exceeded")), "the 21st: {v}");
    assert_eq!(headers["retry-after"].to_str().unwrap(), "7", "Retry-After as for updates");
    let elsewhere = seam.add_access_code(&seam.add_device(normal()), SeedCode::default());
    assert_eq!(delete(&seam, &elsewhere).await.0, 200, "the limit is per device");

    let unlimited = FakeSeam::spawn(SimConfig { delete_rate_limit_per_device_per_minute: 0, ..SimConfig::default() })
        .await
        .unwrap();
    let id = unlimited.add_access_code(&unlimited.add_device(DeviceBehaviour::Offline), SeedCode::default());
    for _ in 0..25 {
        assert_eq!(delete(&unlimited, &id).await.0, 200, "0 disables the limit");
    }
}

#[test]
fn the_cli_keeps_rate_limit_for_updates_and_takes_delete_rate_limit() {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: latchkey_fake_seam::Args,
    }
    let defaults = Cli::parse_from(["fake-seam"]).args;
    assert_eq!((defaults.rate_limit, defaults.delete_rate_limit), (10, 20));
    let set = Cli::parse_from(["fake-seam", "--rate-limit", "3", "--delete-rate-limit", "0"]).args;
    assert_eq!((set.rate_limit, set.delete_rate_limit), (3, 0));
}

#[tokio::test]
async fn an_update_of_a_code_being_deleted_is_accepted_but_the_code_goes_all_the_same() {
    let seam = sim().await;
    let id = seam.add_access_code(
        &seam.add_device(DeviceBehaviour::Normal { delay: Duration::from_millis(300) }),
        SeedCode { code: Some("1234".into()), ..SeedCode::default() },
    );
    let (_, _, deleting) = delete(&seam, &id).await;
    let (status, _, update) = call(&seam, "/access_codes/update", json!({"access_code_id": id, "code": "5678"})).await;
    assert_eq!(status, 200, "{update}");
    let code = get(&seam, &id).await;
    assert_eq!((code["status"].as_str(), code["code"].as_str()), (Some("removing"), Some("5678")));

    assert_eq!(attempt_outcome(&seam, &deleting).await["status"], "success");
    gone(&seam, &id).await;
    assert_eq!(attempt_now(&seam, &update).await["status"], "pending", "the update's attempt is left pending");
    assert_eq!(event_types(&seam), ["access_code.changed", "access_code.removed_from_device", "access_code.deleted"]);
}

#[tokio::test]
async fn at_its_end_a_time_bound_code_goes_removing_and_is_gone_after_the_device_delay() {
    let seam = sim().await;
    let normal_slow = DeviceBehaviour::Normal { delay: Duration::from_millis(400) };
    let (_, id) = ending_code(&seam, normal_slow, Duration::from_millis(200));
    assert_eq!(get(&seam, &id).await["status"], "set");
    until(&seam, &id, "removing at ends_at", |c| c["status"] == "removing").await;
    let removing_seen = Instant::now();
    gone(&seam, &id).await;
    assert!(removing_seen.elapsed() >= Duration::from_millis(300), "it took the device's delay");
    assert_eq!(event_types(&seam), ["access_code.removed_from_device", "access_code.deleted"]);
}

#[tokio::test]
async fn a_time_bound_code_whose_device_never_finishes_stays_removing_after_its_end() {
    let seam = sim().await;
    let never = DeviceBehaviour::NeverFinishes { warn_after: Duration::from_millis(100) };
    let (_, id) = ending_code(&seam, never, Duration::from_millis(100));
    let code = until(&seam, &id, "warned", has_warnings).await;
    assert_eq!(
        (code["status"].as_str(), code["warnings"][0]["warning_code"].as_str()),
        (Some("removing"), Some("delay_in_removing_from_device"))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&seam, &id).await["status"], "removing", "still on the lock: the guest can still get in");
    assert_eq!(event_types(&seam), ["access_code.delay_in_removing_from_device"]);
}

#[tokio::test]
async fn a_time_bound_code_whose_removal_fails_stays_removing_with_failed_to_remove_from_device() {
    let seam = sim().await;
    let (device, id) =
        ending_code(&seam, DeviceBehaviour::fails(Duration::from_millis(30)), Duration::from_millis(100));
    let code = until(&seam, &id, "failed", has_errors).await;
    let error = &code["errors"][0];
    assert_eq!(
        (code["status"].as_str(), error["error_code"].as_str(), error["is_access_code_error"].as_bool()),
        (Some("removing"), Some("failed_to_remove_from_device"), Some(true))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(&seam, &id).await, code, "for ever");
    assert_eq!(event_types(&seam), ["access_code.failed_to_remove_from_device"]);

    // A delete starts a new removal; the last try's error shows meanwhile.
    seam.set_device(&device, DeviceBehaviour::Normal { delay: Duration::from_millis(300) });
    let (status, _, v) = delete(&seam, &id).await;
    assert_eq!(status, 200, "{v}");
    let retrying = get(&seam, &id).await;
    assert_eq!(
        (retrying["status"].as_str(), retrying["errors"][0].clone()),
        (Some("removing"), error.clone()),
        "the old error, with its old time"
    );
    assert_eq!(attempt_outcome(&seam, &v).await["status"], "success");
    gone(&seam, &id).await;
}

#[tokio::test]
async fn a_time_bound_code_on_an_offline_device_stays_removing_until_the_device_is_back() {
    let seam = sim().await;
    let (device, id) = ending_code(&seam, DeviceBehaviour::Offline, Duration::from_millis(100));
    let code = until(&seam, &id, "offline error", has_errors).await;
    assert_eq!(
        (
            code["status"].as_str(),
            code["errors"][0]["error_code"].as_str(),
            code["errors"][0]["is_device_error"].as_bool()
        ),
        (Some("removing"), Some("device_offline"), Some(true))
    );
    seam.set_device(&device, normal());
    gone(&seam, &id).await;
    assert_eq!(
        event_types(&seam),
        [
            "access_code.failed_to_remove_from_device",
            "device.connected",
            "access_code.removed_from_device",
            "access_code.deleted"
        ]
    );
}

#[tokio::test]
async fn an_unset_code_whose_window_passes_without_it_ever_starting_is_removed_at_its_end() {
    let seam = sim().await;
    let device = seam.add_device(DeviceBehaviour::Fails {
        delay: Duration::from_millis(30),
        error_code: "no_space_for_access_code_on_device".into(),
        attempt: AttemptResult::Success,
    });
    let id = seam.add_access_code(&device, SeedCode::default());
    let starts = Utc::now() + chrono::Duration::milliseconds(300);
    let ends = starts + chrono::Duration::milliseconds(300);
    let dates = json!({"access_code_id": id, "starts_at": starts.to_rfc3339(), "ends_at": ends.to_rfc3339()});
    assert_eq!(call(&seam, "/access_codes/update", dates).await.0, 200);
    let code = until(&seam, &id, "failed to schedule", has_errors).await;
    assert_eq!((code["status"].as_str(), code["is_scheduled_on_device"].as_bool()), (Some("unset"), Some(false)));

    seam.set_device(&device, normal());
    gone(&seam, &id).await;
    assert!(Utc::now() >= ends, "removed at its end, not before");
    let types = event_types(&seam);
    assert_eq!(&types[types.len() - 2..], ["access_code.removed_from_device", "access_code.deleted"], "{types:?}");
    assert!(!types.iter().any(|t| t == "access_code.set_on_device"), "never set: {types:?}");
}

#[tokio::test]
async fn an_auto_created_code_with_instant_devices_is_removed_at_its_end() {
    let seam = FakeSeam::spawn(SimConfig { device_delay: Duration::ZERO, auto_create: true, ..SimConfig::default() })
        .await
        .unwrap();
    let (status, _, _) = call(&seam, "/access_codes/get", json!({"access_code_id": "life-1"})).await;
    assert_eq!(status, 200);
    let starts = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let ends = Utc::now() + chrono::Duration::milliseconds(700);
    let (status, _, _) = call(
        &seam,
        "/access_codes/update",
        json!({"access_code_id": "life-1", "code": "2468", "starts_at": starts, "ends_at": ends.to_rfc3339()}),
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _, body) = call(&seam, "/access_codes/get", json!({"access_code_id": "life-1"})).await;
    assert_eq!(status, 404, "gone after its end: {body}");
}
