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
use latchkey_core::{DesiredStateInput, HistoryEntry, Outcome};
use latchkey_store::{EnqueueError, OutcomeChange, Reconciliations, Waited, error_chain};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, OpenApi, ToSchema};

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

    /// The name, role and digest of the token presented, if it is one of
    /// these (a console sign-in).
    pub(crate) fn find_session(&self, presented: &str) -> Option<(String, Role, [u8; 32])> {
        self.find(presented).map(|t| (t.name.clone(), t.role, t.digest))
    }

    /// The role and digest of every token with this name.
    pub(crate) fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (Role, &'a [u8; 32])> + 'a {
        self.0.iter().filter(move |t| t.name == name).map(|t| (t.role, &t.digest))
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
    let bytes =
        std::fs::read(path).map_err(|e| format!("LATCHKEY_API_TOKENS_FILE {}: cannot be read: {e}", path.display()))?;
    parse_tokens(path, &bytes)
}

fn parse_tokens(path: &FsPath, bytes: &[u8]) -> Result<Tokens, String> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| format!("LATCHKEY_API_TOKENS_FILE {}: is not UTF-8", path.display()))?;
    Tokens::parse(text).map_err(|e| format!("LATCHKEY_API_TOKENS_FILE {}: {e}", path.display()))
}

/// Re-reads the tokens file as often as the Seam key file
/// ([`KEY_FILE_POLL`](crate::daemon::KEY_FILE_POLL)); a changed, valid file
/// replaces the tokens (a bad one is logged and the old tokens stay).
pub(crate) async fn watch_tokens(path: PathBuf, tokens: Arc<RwLock<Tokens>>) {
    let mut last = std::fs::read(&path).ok();
    loop {
        tokio::time::sleep(crate::daemon::KEY_FILE_POLL).await;
        let Some(now) = std::fs::read(&path).ok() else { continue };
        if last.as_ref() == Some(&now) {
            continue;
        }
        match parse_tokens(&path, &now) {
            Ok(t) => {
                tracing::info!(tokens = t.0.len(), "API tokens file changed; tokens replaced");
                *tokens.write().unwrap_or_else(|e| e.into_inner()) = t;
            }
            Err(e) => {
                tracing::error!(error = %e, "API tokens file changed but cannot be used; the previous tokens stay")
            }
        }
        last = Some(now);
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
        .route("/v1/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], openapi_json()) }))
        .layer(middleware::from_fn(security_headers))
        .with_state(api)
}

/// The OpenAPI 3.1 document of `/v1`, generated from the handlers and types
/// below (served at `GET /v1/openapi.json`, without a token).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "latchkey",
        description = "Record the desired state of Seam access codes and read how latchkey reconciled them. Every call but this document needs a bearer token from LATCHKEY_API_TOKENS_FILE: a read token to read, a write token to record."
    ),
    paths(put_code, delete_code, get_code, get_history, post_batch, get_events),
    components(schemas(Accepted, Problem, ProblemDetail, BatchResults, BatchResult, History, OutcomeChange)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "access codes", description = "Desired states in, outcomes out"))
)]
#[derive(Debug)]
pub struct ApiDoc;

/// The OpenAPI document as pretty JSON (`latchkey openapi`, `GET /v1/openapi.json`).
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi.components.get_or_insert_with(Default::default).add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token of LATCHKEY_API_TOKENS_FILE (NAME ROLE TOKEN lines)"))
                    .build(),
            ),
        );
    }
}

/// 202: the desired state is recorded; `generation` identifies it (wait for
/// it with `GET /v1/access-codes/{id}?wait=30&generation=N`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The access code.
    pub access_code_id: String,
    /// The generation recorded (or, for a replayed `Idempotency-Key`, the one
    /// recorded the first time).
    pub generation: u64,
}

/// A refusal or a failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// What went wrong.
    pub error: ProblemDetail,
}

/// What went wrong: `kind` is `invalid` (with `field` and `rule`),
/// `idempotency_key_reused`, `unauthorized`, `forbidden`, `not_found` or
/// `unavailable` (Redis is not reachable: try again).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemDetail {
    /// The kind of problem.
    pub kind: String,
    /// The field that broke a rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The rule it broke.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// A human-readable explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Problem {
    fn new(kind: &str, message: impl Into<String>) -> Self {
        Self { error: ProblemDetail { kind: kind.into(), field: None, rule: None, message: Some(message.into()) } }
    }

    fn unavailable() -> Self {
        Self::new("unavailable", "redis is not reachable; try again")
    }
}

/// One result per item of a batch, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResults {
    /// An `Accepted` or a `Problem` per item.
    pub results: Vec<BatchResult>,
}

/// The result of one item of a batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchResult {
    /// Recorded.
    Accepted(Accepted),
    /// Refused (nothing stored for this item).
    Refused(Problem),
}

/// An access code's state changes, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// The access code.
    pub access_code_id: String,
    /// Its state changes, newest first.
    pub history: Vec<HistoryEntry>,
}

fn reply(status: StatusCode, body: &impl Serialize) -> Response {
    (status, Json(body)).into_response()
}

fn unavailable() -> Response {
    reply(StatusCode::SERVICE_UNAVAILABLE, &Problem::unavailable())
}

/// 401 without a valid token, 403 for a read token on a write.
async fn authorize(State(api): State<Api>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let found = presented.and_then(|p| api.tokens.read().unwrap_or_else(|e| e.into_inner()).find_session(p));
    let Some((name, role, _)) = found else {
        let mut r = reply(StatusCode::UNAUTHORIZED, &Problem::new("unauthorized", "a valid bearer token is required"));
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    let writes = !matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let mut request = request;
    request.extensions_mut().insert(Caller(name));
    if writes && role != Role::Write {
        return reply(
            StatusCode::FORBIDDEN,
            &Problem::new("forbidden", "this token may only read; recording a desired state needs a write token"),
        );
    }
    next.run(request).await
}

/// The name of the token a request came with (scopes idempotency keys).
#[derive(Clone)]
struct Caller(String);

/// The request's `Idempotency-Key`, scoped by the caller's token name:
/// `None` without one, an error (422) for one that breaks the id rule.
fn idempotency_key(headers: &HeaderMap, caller: &Caller) -> Result<Option<String>, Problem> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let key = v.to_str().map_err(|_| refused("Idempotency-Key", "must be printable ASCII"))?;
    if let Some(rule) = latchkey_core::id_rule_broken(key) {
        return Err(refused("Idempotency-Key", rule));
    }
    Ok(Some(format!("{}:{key}", caller.0)))
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut r = next.run(request).await;
    set_security_headers(r.headers_mut(), "default-src 'none'; frame-ancestors 'none'", "no-referrer");
    r
}

/// The headers every answer of `serve`'s public listener carries, with this
/// Content-Security-Policy and Referrer-Policy.
pub(crate) fn set_security_headers(h: &mut HeaderMap, csp: &'static str, referrer: &'static str) {
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, referrer),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, csp),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
}

fn refused(field: &str, rule: &str) -> Problem {
    Problem {
        error: ProblemDetail {
            kind: "invalid".into(),
            field: Some(field.into()),
            rule: Some(rule.into()),
            message: None,
        },
    }
}

/// A desired state from a request body, with the id from the path.
fn desired_from(id: &str, body: &[u8]) -> Result<DesiredStateInput, Problem> {
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
) -> Result<Accepted, (StatusCode, Problem)> {
    let id = input.access_code_id.clone();
    let recorded = match idem {
        Some(key) => store.enqueue_once(input, key).await,
        None => store.enqueue(input).await,
    };
    match recorded {
        Ok(generation) => Ok(Accepted { access_code_id: id, generation }),
        Err(EnqueueError::Invalid(e)) => Err((StatusCode::UNPROCESSABLE_ENTITY, refused(e.field, &e.rule))),
        Err(EnqueueError::IdempotencyKeyReused(message)) => {
            let mut p = refused("Idempotency-Key", &message);
            p.error.kind = "idempotency_key_reused".into();
            Err((StatusCode::UNPROCESSABLE_ENTITY, p))
        }
        Err(EnqueueError::Store(e)) => {
            tracing::warn!(access_code_id = %latchkey_core::shown(&id), error = %error_chain(&e), "could not record a desired state");
            Err((StatusCode::SERVICE_UNAVAILABLE, Problem::unavailable()))
        }
    }
}

/// [`record`], answered: 202 with the generation, or the refusal.
async fn record_reply(store: &Reconciliations, input: DesiredStateInput, idem: Option<&str>) -> Response {
    match record(store, input, idem).await {
        Ok(accepted) => reply(StatusCode::ACCEPTED, &accepted),
        Err((status, body)) => reply(status, &body),
    }
}

/// Records the desired state of an access code.
///
/// The body is the same JSON as `latchkey enqueue --json`; `access_code_id`
/// comes from the path (if the body has one, it must be the same). A newer
/// desired state supersedes an older one. A refusal names the field and the
/// rule, and nothing is stored.
#[utoipa::path(
    put,
    path = "/v1/access-codes/{id}",
    tag = "access codes",
    params(
        ("id" = String, Path, description = "Seam's access_code_id"),
        ("Idempotency-Key" = Option<String>, Header, description = "A retried request with the same key (within 24 h, same token) returns the first generation instead of recording a new one"),
    ),
    request_body(content = DesiredStateInput, description = "The desired state"),
    responses(
        (status = 202, description = "Recorded", body = Accepted),
        (status = 401, description = "No valid token", body = Problem),
        (status = 403, description = "A read token", body = Problem),
        (status = 413, description = "The body is over 64 KiB"),
        (status = 422, description = "Refused: the field and the rule", body = Problem),
        (status = 503, description = "Redis is not reachable", body = Problem),
    )
)]
async fn put_code(
    State(api): State<Api>,
    Path(id): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (input, idem) = match (desired_from(&id, &body), idempotency_key(&headers, &caller)) {
        (Ok(i), Ok(k)) => (i, k),
        (Err(e), _) | (_, Err(e)) => return reply(StatusCode::UNPROCESSABLE_ENTITY, &e),
    };
    record_reply(&api.store, input, idem.as_deref()).await
}

#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// The lock the code is on, when the caller knows it.
    device_id: Option<String>,
}

/// Records that an access code must not exist (a cancelled booking).
///
/// latchkey deletes it from Seam and verifies it is gone; the outcome ends
/// `succeeded` once Seam confirms it.
#[utoipa::path(
    delete,
    path = "/v1/access-codes/{id}",
    tag = "access codes",
    params(
        ("id" = String, Path, description = "Seam's access_code_id"),
        DeleteQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "As for PUT"),
    ),
    responses(
        (status = 202, description = "Recorded", body = Accepted),
        (status = 401, description = "No valid token", body = Problem),
        (status = 403, description = "A read token", body = Problem),
        (status = 422, description = "Refused: the field and the rule", body = Problem),
        (status = 503, description = "Redis is not reachable", body = Problem),
    )
)]
async fn delete_code(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let idem = match idempotency_key(&headers, &caller) {
        Ok(k) => k,
        Err(e) => return reply(StatusCode::UNPROCESSABLE_ENTITY, &e),
    };
    let input = DesiredStateInput {
        access_code_id: id.clone(),
        absent: Some(true),
        device_id: q.device_id,
        ..Default::default()
    };
    record_reply(&api.store, input, idem.as_deref()).await
}

/// Records up to 1,000 desired states in one request (a check-in wave).
///
/// The body is a JSON array of desired states, each with its
/// `access_code_id`. One result per item, in order; an invalid item does not
/// stop the others.
#[utoipa::path(
    post,
    path = "/v1/access-codes/batch",
    tag = "access codes",
    request_body(content = Vec<DesiredStateInput>, description = "At most 1,000 desired states (4 MiB)"),
    responses(
        (status = 200, description = "One result per item", body = BatchResults),
        (status = 401, description = "No valid token", body = Problem),
        (status = 403, description = "A read token", body = Problem),
        (status = 413, description = "The body is over 4 MiB"),
        (status = 422, description = "Not a JSON array, or more than 1,000 items", body = Problem),
    )
)]
async fn post_batch(State(api): State<Api>, body: axum::body::Bytes) -> Response {
    let items: Vec<Value> = match serde_json::from_slice(&body) {
        Ok(items) => items,
        Err(e) => {
            return reply(StatusCode::UNPROCESSABLE_ENTITY, &refused("body", &format!("must be a JSON array: {e}")));
        }
    };
    if items.len() > MAX_BATCH {
        return reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            &refused("body", &format!("at most {MAX_BATCH} desired states per batch, not {}", items.len())),
        );
    }
    let mut results: Vec<Option<BatchResult>> = Vec::with_capacity(items.len());
    let mut pending = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match serde_json::from_value::<DesiredStateInput>(item) {
            Err(e) => results.push(Some(BatchResult::Refused(refused("body", &e.to_string())))),
            Ok(input) => {
                results.push(None);
                pending.push((i, input));
            }
        }
    }
    // The items are recorded together: their scripts go to Redis back to
    // back on the one connection (a pipeline, not a round trip each), in
    // item order. An access code that comes again waits for the wave
    // before, so its later item is the newer generation, as if sent alone.
    while !pending.is_empty() {
        let mut seen = std::collections::HashSet::new();
        let (wave, later): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|(_, input)| seen.insert(input.access_code_id.clone()));
        let recorded = futures::future::join_all(wave.into_iter().map(|(i, input)| {
            let store = &api.store;
            async move { (i, record(store, input, None).await) }
        }))
        .await;
        for (i, r) in recorded {
            results[i] = Some(match r {
                Ok(accepted) => BatchResult::Accepted(accepted),
                Err((_, e)) => BatchResult::Refused(e),
            });
        }
        pending = later;
    }
    let results = results.into_iter().map(|r| r.expect("every item has its result")).collect();
    reply(StatusCode::OK, &BatchResults { results })
}

#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct GetQuery {
    /// Seconds to wait for `generation` to finish (at most 60).
    wait: Option<u64>,
    /// The generation to wait for (required with `wait`).
    generation: Option<u64>,
}

fn not_found(id: &str) -> Response {
    reply(
        StatusCode::NOT_FOUND,
        &Problem::new(
            "not_found",
            format!("no desired state was ever recorded for access code {:?}", latchkey_core::shown(id)),
        ),
    )
}

/// Reads an access code's outcome record.
///
/// With `wait` and `generation`: waits (at most 60 s) until that generation
/// is terminal or superseded, then answers the record as it is (its `state`
/// and `generation` say which; a wait that runs out answers the record as it
/// stands).
#[utoipa::path(
    get,
    path = "/v1/access-codes/{id}",
    tag = "access codes",
    params(("id" = String, Path, description = "Seam's access_code_id"), GetQuery),
    responses(
        (status = 200, description = "The outcome record", body = Outcome),
        (status = 401, description = "No valid token", body = Problem),
        (status = 404, description = "No desired state was ever recorded for it", body = Problem),
        (status = 422, description = "`wait` without `generation`", body = Problem),
        (status = 503, description = "Redis is not reachable", body = Problem),
    )
)]
async fn get_code(State(api): State<Api>, Path(id): Path<String>, Query(q): Query<GetQuery>) -> Response {
    let unavailable = |e: latchkey_store::Error| {
        tracing::warn!(error = %error_chain(&e), "could not read an outcome");
        unavailable()
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
            return reply(StatusCode::UNPROCESSABLE_ENTITY, &refused("generation", "is required with wait"));
        }
        _ => match api.store.outcome(&id).await {
            Ok(o) => o,
            Err(e) => return unavailable(e),
        },
    };
    match outcome {
        Some(o) => reply(StatusCode::OK, &o),
        None => not_found(&id),
    }
}

/// Reads an access code's state changes, newest first.
#[utoipa::path(
    get,
    path = "/v1/access-codes/{id}/history",
    tag = "access codes",
    params(("id" = String, Path, description = "Seam's access_code_id")),
    responses(
        (status = 200, description = "Its state changes", body = History),
        (status = 401, description = "No valid token", body = Problem),
        (status = 404, description = "No history (never recorded, or expired)", body = Problem),
        (status = 503, description = "Redis is not reachable", body = Problem),
    )
)]
async fn get_history(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.store.history(&id).await {
        Ok(h) if h.is_empty() => not_found(&id),
        Ok(history) => reply(StatusCode::OK, &History { access_code_id: id, history }),
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "could not read a history");
            unavailable()
        }
    }
}

/// Follows outcome changes as Server-Sent Events.
///
/// Each event is `event: outcome`, `id:` where the streams stand right after
/// it (each partition has its stream; the id holds one entry id per
/// partition, joined by `.`), `data:` an `OutcomeChange` as JSON; from now
/// on, or after `Last-Event-ID` (each stream keeps its newest 100,000
/// changes). A comment every 15 s keeps the
/// connection alive.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "access codes",
    params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses(
        (status = 200, description = "A stream of `outcome` events whose data is an OutcomeChange", content_type = "text/event-stream", body = String),
        (status = 401, description = "No valid token", body = Problem),
        (status = 422, description = "Last-Event-ID is not an id this stream sent", body = Problem),
    )
)]
// Read every 250 ms without blocking the shared Redis connection.
async fn get_events(State(api): State<Api>, headers: HeaderMap) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let after = match headers.get("last-event-id").map(|v| v.to_str().unwrap_or("")) {
        Some(id) if api.store.parse_position(id).is_none() => {
            return reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                &refused(
                    "Last-Event-ID",
                    "must be an event id this stream sent: one <ms>-<seq> stream id per partition, joined by '.'",
                ),
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
