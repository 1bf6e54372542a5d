//! The HTTP side: Seam's endpoints with Seam's error envelope, Bearer auth,
//! request validation as documented, faults; and the admin API (`/_admin`)
//! that tests and the demo use to script devices and faults.

use std::time::Duration;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequest, Path, Request, State, rejection::JsonRejection},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, patch, post, put},
};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    DeviceBehaviour, Faults, Issue, Modification, SeedCode, Sim,
    model::{Code, LoggedRequest, TimeRounding, World},
};

/// The router: Seam's API plus `/_admin`.
pub fn app(sim: Sim) -> Router {
    Router::new()
        .route("/_admin/devices", post(admin_add_device))
        .route("/_admin/devices/{id}", put(admin_set_device))
        .route("/_admin/access_codes", post(admin_add_code))
        .route("/_admin/access_codes/{id}", patch(admin_modify_code).delete(admin_remove_code))
        .route("/_admin/access_codes/{id}/issues", post(admin_add_issue))
        .route("/_admin/api_key", put(admin_set_api_key))
        .route("/_admin/faults", put(admin_set_faults))
        .route("/_admin/requests", get(admin_requests))
        .route("/_admin/events", get(admin_events))
        .fallback(seam_api)
        .with_state(sim)
}

enum Body {
    Json(Value),
    Text(&'static str),
    Empty,
}

struct Answer {
    status: u16,
    body: Body,
    retry_after: Option<u64>,
}

fn ok(v: Value) -> Answer {
    Answer { status: 200, body: Body::Json(v), retry_after: None }
}

fn error(status: u16, error_type: &str, message: &str) -> Answer {
    Answer {
        status,
        body: Body::Json(json!({"error": {"type": error_type, "message": message}, "ok": false})),
        retry_after: None,
    }
}

/// `invalid_input` with zod-style `validation_errors` naming the field (seed 003).
fn invalid(field: &str, rule: &str) -> Answer {
    Answer {
        status: 400,
        body: Body::Json(json!({
            "error": {
                "type": "invalid_input",
                "message": format!("{rule} for \"{field}\""),
                "validation_errors": {"_errors": [], field: {"_errors": [rule]}},
            },
            "ok": false,
        })),
        retry_after: None,
    }
}

const ROUTES: &[(&str, &[Method])] = &[
    ("/access_codes/update", &[Method::POST, Method::PUT, Method::PATCH]),
    ("/access_codes/get", &[Method::GET, Method::POST]),
    ("/access_codes/create", &[Method::POST]),
    ("/access_codes/delete", &[Method::POST]),
    ("/access_codes/list", &[Method::GET, Method::POST]),
    ("/action_attempts/get", &[Method::GET, Method::POST]),
    ("/events/list", &[Method::GET, Method::POST]),
];

async fn seam_api(State(sim): State<Sim>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let params: Result<Map<String, Value>, String> = if body.is_empty() {
        Ok(uri.query().map(query_params).unwrap_or_default())
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err("the body must be a JSON object".into()),
            Err(e) => Err(format!("the body is not JSON: {e}")),
        }
    };
    // A request's fate is drawn when it arrives: one that is going to fail
    // fails after its latency even if the faults are lifted meanwhile (what a
    // request caught in an outage sees).
    let (latency, server_error) = {
        let mut w = sim.world.lock().expect("world lock");
        draw_faults(&mut w, &path)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let now = Utc::now();
    let answer = {
        let mut w = sim.world.lock().expect("world lock");
        w.advance(now);
        let access_code_id =
            params.as_ref().ok().and_then(|p| p.get("access_code_id")).and_then(Value::as_str).map(str::to_owned);
        let code_device =
            |w: &World| access_code_id.as_ref().and_then(|id| w.codes.get(id)).map(|c| c.device_id.clone());
        // Before: a delete may take the code away; after: `auto_create` may
        // bring it.
        let before = code_device(&w);
        let answer = handle(&mut w, &method, &path, &headers, params, server_error, now);
        let device_id = before.or_else(|| code_device(&w));
        w.requests.push(LoggedRequest {
            at: now,
            method: method.to_string(),
            path,
            access_code_id,
            device_id,
            status: answer.status,
        });
        answer
    };
    respond(answer)
}

fn respond(answer: Answer) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match answer.body {
        Body::Json(mut v) => {
            if let Some(e) = v.get_mut("error") {
                e["request_id"] = json!(request_id);
            }
            (status, Json(v)).into_response()
        }
        Body::Text(t) => (status, t).into_response(),
        Body::Empty => status.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert("seam-request-id", HeaderValue::from_str(&request_id).expect("uuid is a header value"));
    if let Some(secs) = answer.retry_after {
        headers.insert("retry-after", HeaderValue::from(secs));
    }
    response
}

fn query_params(q: &str) -> Map<String, Value> {
    q.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), Value::String(v.replace("%3A", ":").replace("%2B", "+"))))
        .collect()
}

/// What the scripted faults do to a request, drawn when it arrives: the
/// latency it waits, and the server error it then gets, if any.
fn draw_faults(w: &mut World, path: &str) -> (u64, Option<Answer>) {
    if w.faults.stall_next > 0 {
        w.faults.stall_next -= 1;
        return (w.faults.stall_ms, Some(Answer { status: 503, body: Body::Empty, retry_after: None }));
    }
    let errors = w.faults.error_paths.is_empty() || w.faults.error_paths.iter().any(|p| p == path);
    (w.faults.latency_ms, if errors { server_error(w) } else { None })
}

/// Draws the `error_rate` fault: the server error this request gets, if any.
fn server_error(w: &mut World) -> Option<Answer> {
    if w.faults.error_rate <= 0.0 || rand::rng().random::<f64>() >= w.faults.error_rate {
        return None;
    }
    w.fault_toggle = !w.fault_toggle;
    Some(match w.faults.fail_status.unwrap_or(if w.fault_toggle { 500 } else { 503 }) {
        503 => Answer { status: 503, body: Body::Empty, retry_after: None },
        s => Answer { status: s, body: Body::Text("Internal Server Error"), retry_after: None },
    })
}

fn handle(
    w: &mut World,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    params: Result<Map<String, Value>, String>,
    server_error: Option<Answer>,
    now: DateTime<Utc>,
) -> Answer {
    let Some((_, methods)) = ROUTES.iter().find(|(p, _)| *p == path) else {
        return error(404, "not_found", &format!("no route {path}"));
    };
    if !methods.contains(method) {
        return error(405, "method_not_allowed", &format!("{method} is not allowed on {path}"));
    }
    let expected = format!("Bearer {}", w.api_key());
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return error(401, "unauthorized", "Unauthorized");
    }
    if w.faults.force_429 > 0 {
        w.faults.force_429 -= 1;
        let mut a = error(429, "rate_limit_exceeded", "Too many requests");
        a.retry_after = w.faults.retry_after;
        return a;
    }
    if let Some(answer) = server_error {
        return answer;
    }
    let p = match params {
        Ok(p) => p,
        Err(e) => return error(400, "invalid_input", &e),
    };
    match path {
        "/access_codes/update" => update(w, &p, now),
        "/access_codes/get" => get_code(w, &p, now),
        "/access_codes/create" => create(w, &p, now),
        "/access_codes/delete" => delete(w, &p, now),
        "/access_codes/list" => list(w, &p),
        "/action_attempts/get" => match p.get("action_attempt_id").and_then(Value::as_str) {
            None => invalid("action_attempt_id", "Required"),
            Some(id) => match w.attempts.get(id) {
                Some(a) => ok(json!({"action_attempt": a.to_json(), "ok": true})),
                None => error(404, "action_attempt_not_found", "Action attempt not found"),
            },
        },
        _ => events(w, &p),
    }
}

/// The fields an update or create may set, validated as Seam documents them.
struct Changes {
    code: Option<String>,
    name: Option<String>,
    ongoing: bool,
    dates: Option<(DateTime<Utc>, DateTime<Utc>)>,
    time_bound_without_dates: bool,
    /// `max_time_rounding`, for an offline access code's times.
    rounding: TimeRounding,
}

fn parse_time(p: &Map<String, Value>, field: &str) -> Result<Option<DateTime<Utc>>, Answer> {
    match p.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| invalid(field, "Invalid datetime")),
        Some(_) => Err(invalid(field, "Expected string")),
    }
}

fn changes(p: &Map<String, Value>, now: DateTime<Utc>) -> Result<Changes, Answer> {
    let code = match p.get("code") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => {
            if !(4..=9).contains(&c.len()) || !c.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("code", "Code must be 4 to 9 digits"));
            }
            Some(c.clone())
        }
        Some(_) => return Err(invalid("code", "Expected string")),
    };
    let name = match p.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return Err(invalid("name", "Expected string")),
    };
    let code_type = match p.get("type") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t == "ongoing" || t == "time_bound" => Some(t.as_str()),
        Some(_) => return Err(invalid("type", "Invalid enum value. Expected 'ongoing' | 'time_bound'")),
    };
    let rounding = match p.get("max_time_rounding").map(|r| r.as_str()) {
        // The schema's default.
        None => TimeRounding::Hour,
        Some(Some("1hour" | "1h")) => TimeRounding::Hour,
        Some(Some("1day" | "1d")) => TimeRounding::Day,
        Some(_) => {
            return Err(invalid("max_time_rounding", "Invalid enum value. Expected '1hour' | '1day' | '1h' | '1d'"));
        }
    };
    let (starts_at, ends_at) = (parse_time(p, "starts_at")?, parse_time(p, "ends_at")?);
    let dates = match (starts_at, ends_at) {
        (None, None) => None,
        (Some(_), None) => return Err(invalid("ends_at", "Required when starts_at is provided")),
        (None, Some(_)) => return Err(invalid("starts_at", "Required when ends_at is provided")),
        (Some(s), Some(e)) => {
            if e <= s {
                return Err(invalid("ends_at", "ends_at must be after starts_at"));
            }
            if e <= now {
                return Err(invalid("ends_at", "ends_at must be in the future"));
            }
            Some((s, e))
        }
    };
    if code_type == Some("ongoing") && dates.is_some() {
        return Err(invalid("type", "An ongoing access code cannot have starts_at or ends_at"));
    }
    Ok(Changes {
        code,
        name,
        ongoing: code_type == Some("ongoing"),
        dates,
        time_bound_without_dates: code_type == Some("time_bound") && dates.is_none(),
        rounding,
    })
}

/// Applies an update or create to the code; an offline access code's times
/// are then rounded (`Code::round_offline_times`).
fn apply(code: &mut Code, c: &Changes, p: &Map<String, Value>) {
    if let Some(v) = &c.code {
        code.code = Some(v.clone());
    }
    if let Some(v) = &c.name {
        code.name = Some(v.clone());
    }
    if c.ongoing {
        code.starts_at = None;
        code.ends_at = None;
    }
    if let Some((s, e)) = c.dates {
        code.starts_at = Some(s);
        code.ends_at = Some(e);
    }
    let flag = |k: &str| p.get(k).and_then(Value::as_bool);
    if let Some(v) = flag("is_external_modification_allowed").or(flag("allow_external_modification")) {
        code.is_external_modification_allowed = v;
    }
    if let Some(v) = flag("is_one_time_use") {
        code.is_one_time_use = v;
    }
    if let Some(v) = flag("is_offline_access_code") {
        code.is_offline_access_code = v;
    }
    code.round_offline_times(c.rounding);
}

fn update(w: &mut World, p: &Map<String, Value>, now: DateTime<Utc>) -> Answer {
    let Some(id) = p.get("access_code_id").and_then(Value::as_str).map(str::to_owned) else {
        return invalid("access_code_id", "Required");
    };
    let c = match changes(p, now) {
        Ok(c) => c,
        Err(a) => return a,
    };
    if let Err(a) = named_device_exists(w, p).and_then(|()| code_exists(w, &id, now)) {
        return a;
    }
    if c.time_bound_without_dates && !w.codes[&id].is_time_bound() {
        return invalid("starts_at", "Required to make an access code time_bound");
    }
    let device = w.codes[&id].device_id.clone();
    if !w.updates.admit(&device, now) {
        return rate_limited(w, "updates", w.updates.per_minute());
    }
    apply(w.codes.get_mut(&id).expect("checked"), &c, p);
    w.emit("access_code.changed", &id, now);
    let attempt = w.start_change(&id, "UPDATE_ACCESS_CODE", now);
    ok(json!({"action_attempt": attempt, "ok": true}))
}

/// `/access_codes/delete`: starts taking the code off its lock
/// (`World::delete_code`) and answers `{"action_attempt": {...}, "ok":
/// true}`. A `device_id`, if given, must name a device but, as with an
/// update, need not be the code's.
fn delete(w: &mut World, p: &Map<String, Value>, now: DateTime<Utc>) -> Answer {
    let Some(id) = p.get("access_code_id").and_then(Value::as_str).map(str::to_owned) else {
        return invalid("access_code_id", "Required");
    };
    if let Err(a) = named_device_exists(w, p).and_then(|()| code_exists(w, &id, now)) {
        return a;
    }
    let device = w.codes[&id].device_id.clone();
    if !w.deletes.admit(&device, now) {
        return rate_limited(w, "deletes", w.deletes.per_minute());
    }
    let attempt = w.delete_code(&id, now);
    ok(json!({"action_attempt": attempt, "ok": true}))
}

/// The `device_id` an update or delete may name must exist (404
/// `device_not_found`).
fn named_device_exists(w: &World, p: &Map<String, Value>) -> Result<(), Answer> {
    match p.get("device_id").and_then(Value::as_str) {
        Some(device) if !w.devices.contains_key(device) => Err(error(404, "device_not_found", "Device not found")),
        _ => Ok(()),
    }
}

/// The code an update or delete names must exist (404
/// `access_code_not_found`), unless `auto_create` makes it now.
fn code_exists(w: &mut World, id: &str, now: DateTime<Utc>) -> Result<(), Answer> {
    if !w.exists_or_auto_created(id, now) {
        return Err(error(404, "access_code_not_found", "Access code not found"));
    }
    Ok(())
}

/// 429 for a device over Seam's per-device limit on access-code `what`
/// (`updates`, `deletes`), with the scripted `Retry-After`, if any.
fn rate_limited(w: &World, what: &str, per_minute: u32) -> Answer {
    let mut a = error(
        429,
        "rate_limit_exceeded",
        &format!("Too many access code {what} for this device; at most {per_minute} per minute"),
    );
    a.retry_after = w.faults.retry_after;
    a
}

fn get_code(w: &mut World, p: &Map<String, Value>, now: DateTime<Utc>) -> Answer {
    let id = match (
        p.get("access_code_id").and_then(Value::as_str),
        p.get("device_id").and_then(Value::as_str),
        p.get("code").and_then(Value::as_str),
    ) {
        (Some(id), _, _) => id.to_string(),
        (None, Some(device), Some(code)) => {
            match w.codes.values().find(|c| c.device_id == device && c.code.as_deref() == Some(code)) {
                Some(c) => c.id.clone(),
                None => return code_not_found(),
            }
        }
        _ => return invalid("access_code_id", "Required unless device_id and code are given"),
    };
    w.exists_or_auto_created(&id, now);
    match w.codes.get(&id) {
        Some(c) => ok(json!({"access_code": c.to_json(&w.workspace_id), "ok": true})),
        None => code_not_found(),
    }
}

/// What `/access_codes/get` answers for a code that does not exist: the
/// generic `not_found`, unlike update and delete (`access_code_not_found`).
fn code_not_found() -> Answer {
    error(404, "not_found", "Access code not found")
}

fn create(w: &mut World, p: &Map<String, Value>, now: DateTime<Utc>) -> Answer {
    let Some(device) = p.get("device_id").and_then(Value::as_str).map(str::to_owned) else {
        return invalid("device_id", "Required");
    };
    let c = match changes(p, now) {
        Ok(c) => c,
        Err(a) => return a,
    };
    if !w.devices.contains_key(&device) {
        return error(404, "device_not_found", "Device not found");
    }
    let id = w.seed_code(&device, SeedCode { code: c.code.clone(), name: c.name.clone(), ..SeedCode::default() }, now);
    apply(w.codes.get_mut(&id).expect("just created"), &c, p);
    w.emit("access_code.created", &id, now);
    let attempt = w.start_change(&id, "CREATE_ACCESS_CODE", now);
    let code = w.codes[&id].to_json(&w.workspace_id);
    ok(json!({"access_code": code, "action_attempt": attempt, "ok": true}))
}

fn list(w: &World, p: &Map<String, Value>) -> Answer {
    let device = p.get("device_id").and_then(Value::as_str);
    let ids: Option<Vec<&str>> =
        p.get("access_code_ids").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect());
    if device.is_none() && ids.is_none() {
        return invalid("device_id", "Required unless access_code_ids is given");
    }
    let limit = p.get("limit").and_then(Value::as_u64).unwrap_or(500) as usize;
    let mut codes: Vec<&Code> = w
        .codes
        .values()
        .filter(|c| device.is_none_or(|d| c.device_id == d))
        .filter(|c| ids.as_ref().is_none_or(|ids| ids.contains(&c.id.as_str())))
        .collect();
    codes.sort_by_key(|c| c.created_at);
    let list: Vec<Value> = codes.into_iter().take(limit).map(|c| c.to_json(&w.workspace_id)).collect();
    ok(
        json!({"access_codes": list, "pagination": {"has_next_page": false, "next_page_cursor": null, "next_page_url": null}, "ok": true}),
    )
}

fn events(w: &World, p: &Map<String, Value>) -> Answer {
    let since = match parse_time(p, "since") {
        Ok(s) => s,
        Err(a) => return a,
    };
    let field = |k: &str| p.get(k).and_then(Value::as_str);
    let types: Option<Vec<&str>> =
        p.get("event_types").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect());
    let limit = p.get("limit").and_then(Value::as_u64).unwrap_or(500) as usize;
    let list: Vec<Value> = w
        .events
        .iter()
        .filter(|e| field("access_code_id").is_none_or(|id| e["access_code_id"] == id))
        .filter(|e| field("device_id").is_none_or(|id| e["device_id"] == id))
        .filter(|e| field("event_type").is_none_or(|t| e["event_type"] == t))
        .filter(|e| types.as_ref().is_none_or(|ts| ts.iter().any(|t| e["event_type"] == *t)))
        .filter(|e| {
            since.is_none_or(|s| {
                e["occurred_at"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).is_some_and(|t| t >= s)
            })
        })
        .take(limit)
        .cloned()
        .collect();
    ok(json!({"events": list, "ok": true}))
}

/// An admin request's JSON body; a malformed one is answered 400 with what
/// is wrong with it (axum alone would say 415 or 422).
struct AdminJson<T>(T);

impl<S: Send + Sync, T> FromRequest<S> for AdminJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(AdminJson(v)),
            Err(e) => Err((StatusCode::BAD_REQUEST, e.body_text()).into_response()),
        }
    }
}

/// 204 when the admin call found what it names, 404 when not.
fn found(found: bool, what: &'static str) -> Response {
    if found { StatusCode::NO_CONTENT.into_response() } else { (StatusCode::NOT_FOUND, what).into_response() }
}

#[derive(Deserialize)]
struct DeviceBody {
    behaviour: DeviceBehaviour,
}

async fn admin_add_device(State(sim): State<Sim>, AdminJson(b): AdminJson<DeviceBody>) -> Json<Value> {
    Json(json!({"device_id": sim.add_device(b.behaviour)}))
}

async fn admin_set_device(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    AdminJson(b): AdminJson<DeviceBody>,
) -> Response {
    let known = sim.world.lock().expect("world lock").devices.contains_key(&id);
    if known {
        sim.set_device(&id, b.behaviour);
    }
    found(known, "no such device")
}

#[derive(Deserialize)]
struct SeedBody {
    device_id: String,
    code: Option<String>,
    name: Option<String>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
}

async fn admin_add_code(State(sim): State<Sim>, AdminJson(b): AdminJson<SeedBody>) -> Response {
    if !sim.world.lock().expect("world lock").devices.contains_key(&b.device_id) {
        return (StatusCode::NOT_FOUND, "no such device").into_response();
    }
    let id = sim.add_access_code(
        &b.device_id,
        SeedCode { code: b.code, name: b.name, starts_at: b.starts_at, ends_at: b.ends_at },
    );
    Json(json!({"access_code_id": id})).into_response()
}

async fn admin_modify_code(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    AdminJson(change): AdminJson<Modification>,
) -> Response {
    found(sim.modify_access_code(&id, change), "no such access code")
}

async fn admin_remove_code(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    found(sim.remove_access_code(&id), "no such access code")
}

async fn admin_add_issue(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    AdminJson(issue): AdminJson<Issue>,
) -> Response {
    found(sim.add_issue(&id, issue), "no such access code")
}

/// `{"api_key": "..."}`; `null` (or no `api_key`) for the configured key.
#[derive(Deserialize)]
struct ApiKeyBody {
    api_key: Option<String>,
}

async fn admin_set_api_key(State(sim): State<Sim>, AdminJson(b): AdminJson<ApiKeyBody>) -> StatusCode {
    sim.set_api_key(b.api_key);
    StatusCode::NO_CONTENT
}

async fn admin_set_faults(State(sim): State<Sim>, AdminJson(f): AdminJson<Faults>) -> StatusCode {
    sim.set_faults(f);
    StatusCode::NO_CONTENT
}

async fn admin_requests(State(sim): State<Sim>) -> Json<Vec<LoggedRequest>> {
    Json(sim.requests())
}

async fn admin_events(State(sim): State<Sim>) -> Json<Vec<Value>> {
    Json(sim.events())
}
