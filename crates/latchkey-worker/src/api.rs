//! The producers' HTTP API on `latchkey serve` (`/v1`), for services that do
//! not speak Redis: record desired states, read outcomes (waiting for one if
//! asked) and histories. Bearer tokens from a file, each with a role (`read`
//! or `write`), compared in constant time and never logged.

use std::{
    path::{Path as FsPath, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use latchkey_core::DesiredStateInput;
use latchkey_store::{EnqueueError, Reconciliations, Waited, error_chain};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The most desired states in one batch.
pub const MAX_BATCH: usize = 1000;
/// The longest a `GET ...?wait=` waits.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// The largest body of a single desired state.
const MAX_BODY: usize = 64 * 1024;
/// The largest batch body.
const MAX_BATCH_BODY: usize = 4 * 1024 * 1024;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read outcomes and histories.
    Read,
    /// Read, and record desired states.
    Write,
}

/// One token: its name (for logs), role, and the SHA-256 of the secret.
#[derive(Clone)]
struct Token {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// The tokens of `LATCHKEY_API_TOKENS_FILE`. `Debug` shows names and roles only.
#[derive(Clone, Default)]
pub struct Tokens(Vec<Token>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|t| (&t.name, t.role))).finish()
    }
}

impl Tokens {
    /// Reads `NAME ROLE TOKEN` lines (role `read` or `write`; `#` starts a
    /// comment; blank lines are skipped). A refusal names the line and the
    /// rule, never the token.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, role, secret] = fields[..] else {
                return Err(format!("line {}: must be NAME ROLE TOKEN", n + 1));
            };
            let role = match role {
                "read" => Role::Read,
                "write" => Role::Write,
                _ => return Err(format!("line {}: the role must be read or write", n + 1)),
            };
            if secret.len() < 16 {
                return Err(format!("line {} ({name}): the token must be at least 16 characters", n + 1));
            }
            tokens.push(Token { name: name.to_string(), role, digest: Sha256::digest(secret.as_bytes()).into() });
        }
        Ok(Self(tokens))
    }

    /// The token presented, if it is one of these: compared by digest, in
    /// constant time, against every token (no early exit).
    fn find(&self, presented: &str) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in &self.0 {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found
    }
}

/// The tokens in use, replaced when the file changes.
#[derive(Clone)]
pub(crate) struct Api {
    pub store: Reconciliations,
    pub tokens: Arc<RwLock<Tokens>>,
}

/// Reads the tokens file; refuses to start on a bad one.
pub(crate) fn read_tokens(path: &FsPath) -> Result<Tokens, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("LATCHKEY_API_TOKENS_FILE {}: cannot be read: {e}", path.display()))?;
    Tokens::parse(&text).map_err(|e| format!("LATCHKEY_API_TOKENS_FILE {}: {e}", path.display()))
}

/// Re-reads the tokens file every 2 s; a changed, valid file replaces the
/// tokens (a bad one is logged and the old tokens stay).
pub(crate) async fn watch_tokens(path: PathBuf, tokens: Arc<RwLock<Tokens>>) {
    let mut last = std::fs::read(&path).ok();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = std::fs::read(&path).ok();
        if now.is_none() || now == last {
            continue;
        }
        match read_tokens(&path) {
            Ok(t) => {
                tracing::info!(tokens = t.0.len(), "API tokens file changed; tokens replaced");
                *tokens.write().unwrap_or_else(|e| e.into_inner()) = t;
            }
            Err(e) => {
                tracing::error!(error = %e, "API tokens file changed but cannot be used; the previous tokens stay")
            }
        }
        last = now;
    }
}

/// The `/v1` routes.
pub(crate) fn router(api: Api) -> Router {
    let single = Router::new()
        .route("/v1/access-codes/{id}", put(put_code).delete(delete_code).get(get_code))
        .route("/v1/access-codes/{id}/history", get(get_history))
        .route("/v1/events", get(get_events))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    let batch =
        Router::new().route("/v1/access-codes/batch", post(post_batch)).layer(DefaultBodyLimit::max(MAX_BATCH_BODY));
    single
        .merge(batch)
        .route_layer(middleware::from_fn_with_state(api.clone(), authorize))
        .layer(middleware::from_fn(security_headers))
        .with_state(api)
}

fn problem(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// 401 without a valid token, 403 for a read token on a write.
async fn authorize(State(api): State<Api>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let found = presented
        .and_then(|p| api.tokens.read().unwrap_or_else(|e| e.into_inner()).find(p).map(|t| (t.role, t.name.clone())));
    let Some((role, name)) = found else {
        let mut r = problem(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"kind": "unauthorized", "message": "a valid bearer token is required"}}),
        );
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    let writes = !matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let mut request = request;
    request.extensions_mut().insert(Caller(name));
    if writes && role != Role::Write {
        return problem(
            StatusCode::FORBIDDEN,
            json!({"error": {"kind": "forbidden", "message": "this token may only read; recording a desired state needs a write token"}}),
        );
    }
    next.run(request).await
}

/// The name of the token a request came with (scopes idempotency keys).
#[derive(Clone)]
struct Caller(String);

/// The request's `Idempotency-Key`, scoped by the caller's token name:
/// `None` without one, an error (422) for one that breaks the id rule.
fn idempotency_key(headers: &HeaderMap, caller: &Caller) -> Result<Option<String>, Value> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let key = v.to_str().map_err(|_| refused("Idempotency-Key", "must be printable ASCII"))?;
    if let Some(rule) = latchkey_core::id_rule_broken(key) {
        return Err(refused("Idempotency-Key", rule));
    }
    Ok(Some(format!("{}:{key}", caller.0)))
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut r = next.run(request).await;
    let h = r.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

fn refused(field: &str, rule: &str) -> Value {
    json!({"error": {"kind": "invalid", "field": field, "rule": rule}})
}

/// A desired state from a request body, with the id from the path.
fn desired_from(id: &str, body: &[u8]) -> Result<DesiredStateInput, Value> {
    let mut v: Value = serde_json::from_slice(body).map_err(|e| refused("body", &format!("must be JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else { return Err(refused("body", "must be a JSON object")) };
    match obj.get("access_code_id") {
        Some(Value::String(given)) if given != id => {
            return Err(refused("access_code_id", "must equal the id in the path (or be left out)"));
        }
        _ => {}
    }
    obj.insert("access_code_id".into(), Value::String(id.to_string()));
    serde_json::from_value(v).map_err(|e| refused("body", &e.to_string()))
}

/// Records one desired state (once per idempotency key, when given): its
/// generation, or the refusal as JSON.
async fn record(
    store: &Reconciliations,
    input: DesiredStateInput,
    idem: Option<&str>,
) -> Result<u64, (StatusCode, Value)> {
    let id = input.access_code_id.clone();
    let recorded = match idem {
        Some(key) => store.enqueue_once(input, key).await,
        None => store.enqueue(input).await,
    };
    match recorded {
        Ok(generation) => Ok(generation),
        Err(EnqueueError::Invalid(e)) => Err((StatusCode::UNPROCESSABLE_ENTITY, refused(e.field, &e.rule))),
        Err(EnqueueError::IdempotencyKeyReused(message)) => Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": {"kind": "idempotency_key_reused", "field": "Idempotency-Key", "rule": message}}),
        )),
        Err(EnqueueError::Store(e)) => {
            tracing::warn!(access_code_id = %latchkey_core::shown(&id), error = %error_chain(&e), "could not record a desired state");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"kind": "unavailable", "message": "redis is not reachable; try again"}}),
            ))
        }
    }
}

/// `PUT /v1/access-codes/{id}`: 202 `{access_code_id, generation}`, 422 with
/// the field and the rule (nothing stored).
async fn put_code(
    State(api): State<Api>,
    Path(id): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (input, idem) = match (desired_from(&id, &body), idempotency_key(&headers, &caller)) {
        (Ok(i), Ok(k)) => (i, k),
        (Err(e), _) | (_, Err(e)) => return problem(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    match record(&api.store, input, idem.as_deref()).await {
        Ok(generation) => problem(StatusCode::ACCEPTED, json!({"access_code_id": id, "generation": generation})),
        Err((status, body)) => problem(status, body),
    }
}

#[derive(serde::Deserialize)]
struct DeleteQuery {
    device_id: Option<String>,
}

/// `DELETE /v1/access-codes/{id}`: records that the code must not exist.
async fn delete_code(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let idem = match idempotency_key(&headers, &caller) {
        Ok(k) => k,
        Err(e) => return problem(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let input = DesiredStateInput {
        access_code_id: id.clone(),
        absent: Some(true),
        device_id: q.device_id,
        ..Default::default()
    };
    match record(&api.store, input, idem.as_deref()).await {
        Ok(generation) => problem(StatusCode::ACCEPTED, json!({"access_code_id": id, "generation": generation})),
        Err((status, body)) => problem(status, body),
    }
}

/// `POST /v1/access-codes/batch`: a JSON array of desired states (each with
/// its `access_code_id`), at most [`MAX_BATCH`]; one result per item, in
/// order. An invalid item does not stop the others.
async fn post_batch(State(api): State<Api>, body: axum::body::Bytes) -> Response {
    let items: Vec<Value> = match serde_json::from_slice(&body) {
        Ok(items) => items,
        Err(e) => {
            return problem(StatusCode::UNPROCESSABLE_ENTITY, refused("body", &format!("must be a JSON array: {e}")));
        }
    };
    if items.len() > MAX_BATCH {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            refused("body", &format!("at most {MAX_BATCH} desired states per batch, not {}", items.len())),
        );
    }
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let id = item.get("access_code_id").and_then(Value::as_str).unwrap_or("").to_string();
        let result = match serde_json::from_value::<DesiredStateInput>(item) {
            Err(e) => refused("body", &e.to_string()),
            Ok(input) => match record(&api.store, input, None).await {
                Ok(generation) => json!({"access_code_id": id, "generation": generation}),
                Err((_, e)) => e,
            },
        };
        results.push(result);
    }
    problem(StatusCode::OK, json!({"results": results}))
}

#[derive(serde::Deserialize)]
struct GetQuery {
    /// Seconds to wait for `generation` to finish (at most 60).
    wait: Option<u64>,
    generation: Option<u64>,
}

fn not_found(id: &str) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        json!({"error": {"kind": "not_found", "message": format!("no desired state was ever recorded for access code {:?}", latchkey_core::shown(id))}}),
    )
}

/// `GET /v1/access-codes/{id}`: the outcome record. With `wait` and
/// `generation`: waits (at most 60 s) until that generation is terminal or
/// superseded, then answers the record as it is (its `state` says which).
async fn get_code(State(api): State<Api>, Path(id): Path<String>, Query(q): Query<GetQuery>) -> Response {
    let unavailable = |e: latchkey_store::Error| {
        tracing::warn!(error = %error_chain(&e), "could not read an outcome");
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": {"kind": "unavailable", "message": "redis is not reachable; try again"}}),
        )
    };
    let outcome = match (q.wait, q.generation) {
        (Some(wait), Some(generation)) => {
            let wait = Duration::from_secs(wait).min(MAX_WAIT);
            match api.store.wait_for_outcome(&id, generation, wait).await {
                Ok(Waited::Finished(o) | Waited::Superseded(o)) => Some(o),
                Ok(Waited::TimedOut(o)) => o,
                Err(e) => return unavailable(e),
            }
        }
        (Some(_), None) => {
            return problem(StatusCode::UNPROCESSABLE_ENTITY, refused("generation", "is required with wait"));
        }
        _ => match api.store.outcome(&id).await {
            Ok(o) => o,
            Err(e) => return unavailable(e),
        },
    };
    match outcome {
        Some(o) => problem(StatusCode::OK, serde_json::to_value(o).unwrap_or_default()),
        None => not_found(&id),
    }
}

/// `GET /v1/access-codes/{id}/history`: its state changes, newest first.
async fn get_history(State(api): State<Api>, Path(id): Path<String>, _headers: HeaderMap) -> Response {
    match api.store.history(&id).await {
        Ok(h) if h.is_empty() => not_found(&id),
        Ok(h) => problem(StatusCode::OK, json!({"access_code_id": id, "history": h})),
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "could not read a history");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"kind": "unavailable", "message": "redis is not reachable; try again"}}),
            )
        }
    }
}

/// `GET /v1/events`: outcome changes as Server-Sent Events (`event:
/// outcome`, `id:` the stream entry, `data:` `{id, access_code_id,
/// generation, state}`), from now on, or after `Last-Event-ID` (the stream
/// keeps the newest 100,000 changes). Read every 250 ms without blocking the
/// shared Redis connection; a comment every 15 s keeps the connection alive.
async fn get_events(State(api): State<Api>, headers: HeaderMap) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let after = match headers.get("last-event-id").map(|v| v.to_str().unwrap_or("")) {
        Some(id) if !latchkey_store::is_stream_id(id) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                refused("Last-Event-ID", "must be an event id this stream sent, such as 1700000000000-0"),
            );
        }
        other => other.map(str::to_string),
    };
    let stream = futures::stream::unfold((api.store.clone(), after), |(store, mut after)| async move {
        loop {
            match store.changes_after(after.as_deref(), 100).await {
                Ok((reached, changes)) => {
                    after = Some(reached);
                    if !changes.is_empty() {
                        let events: Vec<Result<Event, std::convert::Infallible>> = changes
                            .into_iter()
                            .map(|c| {
                                Ok(Event::default()
                                    .event("outcome")
                                    .id(c.id.clone())
                                    .data(serde_json::to_string(&c).unwrap_or_default()))
                            })
                            .collect();
                        return Some((futures::stream::iter(events), (store, after)));
                    }
                }
                Err(e) => tracing::debug!(error = %error_chain(&e), "events: redis not reachable; trying again"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Sse::new(futures::StreamExt::flatten(stream)).keep_alive(KeepAlive::default()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_name_role_token_lines_and_never_shown() {
        let t = Tokens::parse(
            "# producers\nbooking write tok_booking_0123456789\n\nconsole read  tok_console_0123456789 # on-call\n",
        )
        .unwrap();
        assert_eq!(t.find("tok_booking_0123456789").map(|t| t.role), Some(Role::Write));
        assert_eq!(t.find("tok_console_0123456789").map(|t| t.role), Some(Role::Read));
        assert!(t.find("tok_console_012345678").is_none());
        assert!(!format!("{t:?}").contains("tok_"), "{t:?}");
        for (bad, rule) in [
            ("a write", "NAME ROLE TOKEN"),
            ("a admin tok_0123456789abcdef", "read or write"),
            ("a read short", "at least 16"),
        ] {
            let err = Tokens::parse(bad).unwrap_err();
            assert!(err.contains("line 1") && err.contains(rule), "{err}");
            assert!(!err.contains("tok_") && !err.contains("short"), "{err}");
        }
    }
}
