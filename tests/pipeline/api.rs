//! The producers' HTTP API on `latchkey serve` (`/v1`): record desired states,
//! read outcomes (waiting for one), histories; tokens with roles; every
//! refusal names what is wrong and stores nothing.

use std::time::Duration;

use latchkey_fake_seam::SeedCode;
use latchkey_tests::app::{AppOptions, TEST_READ_TOKEN, TEST_WRITE_TOKEN, TestApp, spawn_app};
use serde_json::{Value, json};

use crate::device;

struct Client<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
}

impl Client<'_> {
    fn new(app: &TestApp) -> Client<'_> {
        Client { app, http: reqwest::Client::new() }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.app.serve_url.as_ref().unwrap()));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.headers()["cache-control"], "no-store");
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn a_producer_records_desired_states_and_reads_outcomes_over_http() {
    let app = spawn_app(AppOptions { api: true, ..AppOptions::default() }).await;
    let c = Client::new(&app);
    let d = device(&app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    use reqwest::Method;

    // PUT: 202 with the generation; the id comes from the path.
    let (status, body) = c
        .send(
            Method::PUT,
            &format!("/v1/access-codes/{id}"),
            Some(TEST_WRITE_TOKEN),
            Some(r#"{"code":"7070","name":"Guest"}"#.into()),
        )
        .await;
    assert_eq!((status, body["generation"].as_u64()), (202, Some(1)), "{body}");
    // GET with wait: the outcome once generation 1 is over.
    let (status, o) =
        c.send(Method::GET, &format!("/v1/access-codes/{id}?wait=20&generation=1"), Some(TEST_READ_TOKEN), None).await;
    assert_eq!((status, o["state"].as_str()), (200, Some("succeeded")), "{o}");
    assert_eq!(o["last_seen"]["code"], "7070");
    let (status, h) = c.send(Method::GET, &format!("/v1/access-codes/{id}/history"), Some(TEST_READ_TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(h["history"][0]["state"], "succeeded", "{h}");

    // DELETE: the code must not exist; it is deleted at Seam.
    let (status, body) = c.send(Method::DELETE, &format!("/v1/access-codes/{id}"), Some(TEST_WRITE_TOKEN), None).await;
    assert_eq!((status, body["generation"].as_u64()), (202, Some(2)), "{body}");
    let (_, o) =
        c.send(Method::GET, &format!("/v1/access-codes/{id}?wait=20&generation=2"), Some(TEST_READ_TOKEN), None).await;
    assert_eq!(o["state"], "succeeded", "{o}");
    assert!(app.seam.requests().iter().any(|r| r.path == "/access_codes/delete"));

    // A batch: one result per item, an invalid item does not stop the others,
    // and a code that comes twice ends with its later item, as if sent alone.
    let other = app.seam.add_access_code(&d, SeedCode::default());
    let twice = app.seam.add_access_code(&d, SeedCode::default());
    let batch = json!([
        {"access_code_id": other, "code": "8080"},
        {"access_code_id": twice, "code": "1111"},
        {"access_code_id": "ac_bad", "code": "12"},
        {"access_code_id": "ac_typo", "cdoe": "1234"},
        {"access_code_id": twice, "code": "2222"},
    ]);
    let (status, r) =
        c.send(Method::POST, "/v1/access-codes/batch", Some(TEST_WRITE_TOKEN), Some(batch.to_string())).await;
    assert_eq!(status, 200, "{r}");
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(results[0]["generation"], 1, "{r}");
    assert_eq!((&results[1]["generation"], &results[4]["generation"]), (&json!(1), &json!(2)), "{r}");
    assert_eq!(results[2]["error"]["field"], "code", "{r}");
    assert!(results[3]["error"]["rule"].as_str().unwrap().contains("cdoe"), "{r}");
    let (_, o) = c
        .send(Method::GET, &format!("/v1/access-codes/{twice}?wait=20&generation=2"), Some(TEST_READ_TOKEN), None)
        .await;
    assert_eq!(o["state"], "succeeded", "{o}");
    assert_eq!(app.seam.access_code(&twice).unwrap()["code"], "2222", "the later item is on the lock");
    assert!(app.store.outcome("ac_bad").await.unwrap().is_none(), "a refused item stores nothing");
    app.stop().await;
}

#[tokio::test]
async fn every_refusal_says_why_and_stores_nothing() {
    let app = spawn_app(AppOptions { api: true, workers: 0, ..AppOptions::default() }).await;
    let c = Client::new(&app);
    use reqwest::Method;
    let put = |token: Option<&'static str>, body: &str| {
        let body = body.to_string();
        let c = &c;
        async move { c.send(Method::PUT, "/v1/access-codes/ac1", token, Some(body)).await }
    };
    // No token, a wrong one, a read token on a write.
    let (status, body) = put(None, r#"{"code":"1234"}"#).await;
    assert_eq!((status, body["error"]["kind"].as_str()), (401, Some("unauthorized")));
    assert_eq!(put(Some("tok_not_a_real_token_at_all"), r#"{"code":"1234"}"#).await.0, 401);
    let (status, body) = put(Some(TEST_READ_TOKEN), r#"{"code":"1234"}"#).await;
    assert_eq!((status, body["error"]["kind"].as_str()), (403, Some("forbidden")));
    // Bad JSON, a field that breaks a rule, an id that disagrees with the path.
    let (status, body) = put(Some(TEST_WRITE_TOKEN), "{not json").await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("body")), "{body}");
    let (status, body) = put(Some(TEST_WRITE_TOKEN), r#"{"code":"12ab"}"#).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("code")), "{body}");
    assert!(!body.to_string().contains("12ab"), "a refusal never repeats a PIN: {body}");
    let (status, body) = put(Some(TEST_WRITE_TOKEN), r#"{"access_code_id":"ac2","code":"1234"}"#).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("access_code_id")), "{body}");
    // Too large a body.
    let huge = format!(r#"{{"code":"1234","name":"{}"}}"#, "x".repeat(100 * 1024));
    assert_eq!(put(Some(TEST_WRITE_TOKEN), &huge).await.0, 413);
    // An unknown id; a wait without a generation.
    let (status, body) = c.send(Method::GET, "/v1/access-codes/ac_never", Some(TEST_READ_TOKEN), None).await;
    assert_eq!((status, body["error"]["kind"].as_str()), (404, Some("not_found")), "{body}");
    let (status, _) = c.send(Method::GET, "/v1/access-codes/ac_never?wait=1", Some(TEST_READ_TOKEN), None).await;
    assert_eq!(status, 422);
    // A batch over the cap.
    let many: Vec<Value> = (0..1001).map(|i| json!({"access_code_id": format!("ac{i}"), "code": "1234"})).collect();
    let (status, body) = c
        .send(Method::POST, "/v1/access-codes/batch", Some(TEST_WRITE_TOKEN), Some(Value::from(many).to_string()))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(app.store.outcome("ac1").await.unwrap().is_none(), "nothing was stored");
    assert!(app.store.outcome("ac0").await.unwrap().is_none(), "nothing was stored");

    // A long-poll that runs out answers the record as it is: no worker here.
    let (status, body) = put(Some(TEST_WRITE_TOKEN), r#"{"code":"1234"}"#).await;
    assert_eq!(status, 202, "{body}");
    let started = std::time::Instant::now();
    let (status, o) =
        c.send(Method::GET, "/v1/access-codes/ac1?wait=1&generation=1", Some(TEST_READ_TOKEN), None).await;
    assert_eq!((status, o["state"].as_str()), (200, Some("pending")), "{o}");
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited");
    app.stop().await;
}

#[tokio::test]
async fn a_retried_request_with_its_idempotency_key_makes_no_new_generation() {
    let app = spawn_app(AppOptions { api: true, workers: 0, ..AppOptions::default() }).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/access-codes/ac_idem", app.serve_url.as_ref().unwrap());
    let put = async |key: &str, body: &str| {
        let r = http
            .put(&url)
            .bearer_auth(TEST_WRITE_TOKEN)
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let first = put("booking-42-v1", r#"{"code":"4242"}"#).await;
    assert_eq!((first.0, first.1["generation"].as_u64()), (202, Some(1)), "{first:?}");
    // The producer did not hear back and sends it again: the same generation.
    let again = put("booking-42-v1", r#"{"code":"4242"}"#).await;
    assert_eq!((again.0, again.1["generation"].as_u64()), (202, Some(1)), "{again:?}");
    // The key with another request is refused; nothing is stored.
    let reused = put("booking-42-v1", r#"{"code":"9999"}"#).await;
    assert_eq!((reused.0, reused.1["error"]["kind"].as_str()), (422, Some("idempotency_key_reused")), "{reused:?}");
    let bad = put("has space", r#"{"code":"4242"}"#).await;
    assert_eq!((bad.0, bad.1["error"]["field"].as_str()), (422, Some("Idempotency-Key")), "{bad:?}");
    // Another key is another request.
    let next = put("booking-42-v2", r#"{"code":"9999"}"#).await;
    assert_eq!(next.1["generation"].as_u64(), Some(2), "{next:?}");
    let o = app.store.outcome("ac_idem").await.unwrap().unwrap();
    assert_eq!(o.generation, 2);
    app.stop().await;
}

/// Reads Server-Sent Events from `response` until `until` holds of one (or
/// 20 s pass); returns every (id, data) read.
async fn read_events(response: &mut reqwest::Response, until: impl Fn(&Value) -> bool) -> Vec<(String, Value)> {
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk()).await.expect("events in time").unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk.expect("the stream stays open")));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::to_string);
            if let (Some(id), Some(data)) = (field("id: "), field("data: ")) {
                let data: Value = serde_json::from_str(&data).unwrap();
                let done = until(&data);
                events.push((id, data));
                if done {
                    return events;
                }
            }
        }
    }
}

#[tokio::test]
async fn outcome_changes_stream_as_server_sent_events_and_resume_after_the_last_one_seen() {
    let app = spawn_app(AppOptions { api: true, ..AppOptions::default() }).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/events", app.serve_url.as_ref().unwrap());
    let mut live = http.get(&url).bearer_auth(TEST_READ_TOKEN).send().await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let d = device(&app, 50);
    let id = app.seam.add_access_code(&d, SeedCode::default());
    app.store.enqueue(crate::want(json!({"access_code_id": id, "code": "5151"}))).await.unwrap();
    let of_code = |v: &Value| v["access_code_id"] == id.as_str();
    let seen = read_events(&mut live, |v| of_code(v) && v["state"] == "succeeded").await;
    let states: Vec<&str> =
        seen.iter().filter(|(_, v)| of_code(v)).map(|(_, v)| v["state"].as_str().unwrap()).collect();
    assert_eq!(states.first(), Some(&"pending"), "{states:?}");
    assert_eq!(states.last(), Some(&"succeeded"), "{states:?}");
    drop(live);
    // A consumer that saw only the first event resumes after it and gets the rest.
    let (first_id, _) = &seen[0];
    let mut resumed =
        http.get(&url).bearer_auth(TEST_READ_TOKEN).header("last-event-id", first_id).send().await.unwrap();
    let again = read_events(&mut resumed, |v| of_code(v) && v["state"] == "succeeded").await;
    assert_eq!(again.first().map(|(i, _)| i), seen.get(1).map(|(i, _)| i), "resumed right after {first_id}");
    // A Last-Event-ID this stream never sent is refused.
    let bad = http.get(&url).bearer_auth(TEST_READ_TOKEN).header("last-event-id", "yesterday").send().await.unwrap();
    assert_eq!(bad.status(), 422);
    drop(resumed);
    app.stop().await;
}

#[tokio::test]
async fn a_long_poll_outlasts_the_listeners_usual_ten_second_answer() {
    // No worker: the generation stays pending, and the wait runs its course.
    let app = spawn_app(AppOptions { api: true, workers: 0, ..AppOptions::default() }).await;
    let c = Client::new(&app);
    let (status, _) = c
        .send(
            reqwest::Method::PUT,
            "/v1/access-codes/ac_slow",
            Some(TEST_WRITE_TOKEN),
            Some(r#"{"code":"1234"}"#.into()),
        )
        .await;
    assert_eq!(status, 202);
    let started = std::time::Instant::now();
    let (status, o) = c
        .send(reqwest::Method::GET, "/v1/access-codes/ac_slow?wait=12&generation=1", Some(TEST_READ_TOKEN), None)
        .await;
    assert_eq!((status, o["state"].as_str()), (200, Some("pending")), "{o}");
    assert!(started.elapsed() >= Duration::from_secs(12), "answered after {:?}", started.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_token_and_describes_every_route() {
    let app = spawn_app(AppOptions { api: true, ..AppOptions::default() }).await;
    let r = reqwest::get(format!("{}/v1/openapi.json", app.serve_url.as_ref().unwrap())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, methods) in [
        ("/v1/access-codes/{id}", &["put", "delete", "get"][..]),
        ("/v1/access-codes/{id}/history", &["get"]),
        ("/v1/access-codes/batch", &["post"]),
        ("/v1/events", &["get"]),
    ] {
        for m in methods {
            assert!(doc["paths"][path][m].is_object(), "{m} {path} is not in the document");
        }
    }
    // The refusal a producer handles is the one the document promises.
    assert_eq!(
        doc["paths"]["/v1/access-codes/{id}"]["put"]["responses"]["422"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    assert!(doc["components"]["schemas"]["DesiredState"].is_object());
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    app.stop().await;
}

#[tokio::test]
async fn the_python_and_node_examples_record_a_pin_and_wait_for_the_lock() {
    let app = spawn_app(AppOptions { api: true, ..AppOptions::default() }).await;
    let d = device(&app, 50);
    let examples = latchkey_tests::workspace_root().join("examples");
    for (program, script, pin) in
        [("python3", examples.join("python/enqueue.py"), "3131"), ("node", examples.join("node/enqueue.mjs"), "4141")]
    {
        let id = app.seam.add_access_code(&d, SeedCode::default());
        let out = tokio::process::Command::new(program)
            .arg(&script)
            .args([id.as_str(), pin])
            .env("LATCHKEY_URL", app.serve_url.as_ref().unwrap())
            .env("LATCHKEY_TOKEN", TEST_WRITE_TOKEN)
            .output()
            .await
            .unwrap_or_else(|e| panic!("{program} must be installed to run the examples: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{program}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("{id} generation 1: succeeded")), "{stdout}");
        let o = app.store.outcome(&id).await.unwrap().unwrap();
        assert_eq!(o.last_seen.unwrap().code.as_deref(), Some(pin));
    }
    app.stop().await;
}
