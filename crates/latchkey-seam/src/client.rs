//! The Seam client: one pooled reqwest client (rustls), timeouts on connect
//! and on the whole request (response body included, so a body dripping in
//! byte by byte is cut off too), Bearer auth with a key that can be replaced
//! at run time (a rotated Kubernetes secret), and every failure classified by
//! [`crate::error::classify`]. It remembers whether Seam accepted the key on
//! the last answer, for the worker's readiness and an alert.
//!
//! It trusts no answer further than it must: bodies are read up to
//! [`MAX_BODY_BYTES`], redirects are never followed (the request body holds
//! the PIN), and an access code or action attempt read by id must carry the
//! id asked for.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use latchkey_core::{AccessCode, ActionAttempt};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER, USER_AGENT};
use serde::{Serialize, de::DeserializeOwned};
use tracing::Instrument;

use crate::{
    config::{ApiKey, SeamConfig},
    error::{Error, Result, classify, excerpt},
    redact::{redact, scrub},
    request::UpdateAccessCode,
    wire,
};

/// `latchkey/<version>`, sent as the User-Agent.
pub const USER_AGENT_VALUE: &str = concat!("latchkey/", env!("CARGO_PKG_VERSION"));

/// One of Seam's events (from `/events/list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeamEvent {
    /// Seam's id of the event: the same in a webhook and in the list.
    pub event_id: String,
    /// e.g. `access_code.set_on_device`.
    pub event_type: String,
    /// The access code it is about, if any.
    pub access_code_id: Option<String>,
    /// The device it is about, if any.
    pub device_id: Option<String>,
    /// When it occurred (else when Seam created it).
    pub at: Option<DateTime<Utc>>,
}

/// The largest response body the client reads: 1 MiB, far above any Seam
/// access-code or action-attempt answer (a few KiB). A 2xx answer whose
/// `Content-Length` says more is refused before its body is read, and one
/// without (or with a wrong) `Content-Length` is read only until it passes
/// the cap: both are [`Error::Malformed`] ("body over 1 MiB"). A non-2xx
/// answer is classified by its status from at most this much of its body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What an update returned: an action attempt to follow (current API), the
/// access code (some versions), or neither (`{ok: true}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// The `UPDATE_ACCESS_CODE` attempt, when Seam returned one.
    pub action_attempt: Option<ActionAttempt>,
    /// The access code, when Seam returned it (always the one updated: another
    /// one makes the update [`Error::Malformed`]). Do not rely on it.
    pub access_code: Option<AccessCode>,
}

/// A Seam API client. Cheap to clone: clones share the connection pool, the
/// key and what is known of the key's health.
#[derive(Debug, Clone)]
pub struct SeamClient {
    http: reqwest::Client,
    endpoint: String,
    request_timeout: Duration,
    /// `Bearer <key>`, marked sensitive (never in `Debug`); replaced by
    /// [`SeamClient::set_api_key`].
    auth: Arc<RwLock<HeaderValue>>,
    /// Whether Seam's last answer refused the key (401 or 403).
    key_refused: Arc<AtomicBool>,
}

fn bearer(key: &ApiKey) -> Result<HeaderValue> {
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
        .map_err(|_| Error::Config("the Seam API key has characters not allowed in a header".into()))?;
    auth.set_sensitive(true);
    Ok(auth)
}

impl SeamClient {
    /// Builds the client. Fails only on an unusable configuration.
    pub fn new(config: &SeamConfig) -> Result<Self> {
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // A redirect would send the body (the PIN) and the key wherever
            // it points; Seam's API never redirects. A 3xx is an error.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            endpoint: config.endpoint.clone(),
            request_timeout: config.request_timeout,
            auth: Arc::new(RwLock::new(bearer(&config.api_key)?)),
            key_refused: Arc::default(),
        })
    }

    /// Uses `key` from the next request on (every clone does). Seam gets a
    /// fresh chance to accept it: the refusal remembered is forgotten.
    pub fn set_api_key(&self, key: &ApiKey) -> Result<()> {
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = bearer(key)?;
        self.set_key_refused(false);
        Ok(())
    }

    /// Whether Seam refused the API key on its last answer (401 or 403) and
    /// has accepted nothing since: no reconciliation can make progress.
    pub fn key_refused(&self) -> bool {
        self.key_refused.load(Ordering::Relaxed)
    }

    fn set_key_refused(&self, refused: bool) {
        if self.key_refused.swap(refused, Ordering::Relaxed) != refused {
            metrics::gauge!("latchkey_seam_key_refused").set(if refused { 1.0 } else { 0.0 });
            if refused {
                tracing::error!("Seam refuses the API key (HTTP 401/403); reconciliations wait until it works again");
            } else {
                tracing::info!("Seam accepts the API key again");
            }
        }
    }

    /// `POST /access_codes/update`. An access code in the answer must be the
    /// one updated, or the answer is [`Error::Malformed`].
    pub async fn update_access_code(&self, update: &UpdateAccessCode) -> Result<UpdateOutcome> {
        let (status, r): (u16, wire::UpdateResponse) = self.post("/access_codes/update", update).await?;
        let access_code: Option<AccessCode> = r.access_code.map(Into::into);
        if let Some(code) = &access_code {
            same_id(status, "access code", &update.access_code_id, &code.access_code_id)?;
        }
        Ok(UpdateOutcome { action_attempt: r.action_attempt.map(Into::into), access_code })
    }

    /// `POST /access_codes/delete`: the `DELETE_ACCESS_CODE` action attempt,
    /// when Seam returned one. A code Seam does not know is an error for which
    /// [`Error::is_not_found`] holds (callers that want it gone may treat it so).
    pub async fn delete_access_code(&self, access_code_id: &str) -> Result<Option<ActionAttempt>> {
        let body = serde_json::json!({ "access_code_id": access_code_id });
        let (_, r): (u16, wire::DeleteResponse) = self.post("/access_codes/delete", &body).await?;
        Ok(r.action_attempt.map(Into::into))
    }

    /// `POST /access_codes/get`, with `None` when Seam has no such code (404
    /// `not_found`): the answer a removal waits for.
    pub async fn find_access_code(&self, access_code_id: &str) -> Result<Option<AccessCode>> {
        match self.get_access_code(access_code_id).await {
            Err(e) if e.is_not_found() => Ok(None),
            other => other.map(Some),
        }
    }

    /// `POST /access_codes/get`. An answer about another access code is
    /// [`Error::Malformed`]: verifying a code against another's data would
    /// report a success (or a failure) that never happened.
    pub async fn get_access_code(&self, access_code_id: &str) -> Result<AccessCode> {
        let body = serde_json::json!({ "access_code_id": access_code_id });
        let (status, r): (u16, wire::GetAccessCodeResponse) = self.post("/access_codes/get", &body).await?;
        let code = AccessCode::from(r.access_code);
        same_id(status, "access code", access_code_id, &code.access_code_id)?;
        Ok(code)
    }

    /// `POST /events/list`: events of these types that occurred at or after
    /// `since`, at most `limit` (Seam's maximum page is not documented; at
    /// most 500 are asked for). Seam does not document their order; callers
    /// must not depend on it.
    pub async fn list_events(&self, since: DateTime<Utc>, event_types: &[&str], limit: u32) -> Result<Vec<SeamEvent>> {
        let body = serde_json::json!({
            "since": since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "event_types": event_types,
            "limit": limit.min(500),
        });
        let (_, r): (u16, wire::ListEventsResponse) = self.post("/events/list", &body).await?;
        Ok(r.events
            .into_iter()
            .map(|e| SeamEvent {
                at: e.occurred_at.or(e.created_at),
                event_id: e.event_id,
                event_type: e.event_type,
                access_code_id: e.access_code_id,
                device_id: e.device_id,
            })
            .collect())
    }

    /// `POST /action_attempts/get`. An answer about another action attempt is
    /// [`Error::Malformed`].
    pub async fn get_action_attempt(&self, action_attempt_id: &str) -> Result<ActionAttempt> {
        let body = serde_json::json!({ "action_attempt_id": action_attempt_id });
        let (status, r): (u16, wire::GetActionAttemptResponse) = self.post("/action_attempts/get", &body).await?;
        let attempt = ActionAttempt::from(r.action_attempt);
        same_id(status, "action attempt", action_attempt_id, &attempt.action_attempt_id)?;
        Ok(attempt)
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &'static str, body: &B) -> Result<(u16, T)> {
        let started = Instant::now();
        let result = self.exchange(path, body).instrument(tracing::info_span!("seam request", endpoint = path)).await;
        let elapsed = started.elapsed();
        let elapsed_ms = elapsed.as_millis() as u64;
        let class = match &result {
            Ok((status, _)) => {
                tracing::debug!(path, status, elapsed_ms, "seam request");
                status_class(*status)
            }
            Err(e) => {
                tracing::debug!(path, elapsed_ms, error = %e, "seam request failed");
                e.status().map_or("transport", status_class)
            }
        };
        metrics::counter!("latchkey_seam_requests_total", "endpoint" => path, "status_class" => class).increment(1);
        metrics::histogram!("latchkey_seam_request_duration_seconds", "endpoint" => path).record(elapsed.as_secs_f64());
        let (status, bytes) = result?;
        match serde_json::from_slice(&bytes) {
            Ok(parsed) => Ok((status, parsed)),
            Err(e) => Err(Error::Malformed { status, detail: unreadable(&e, &bytes) }),
        }
    }

    /// Sends the request and reads the body (at most [`MAX_BODY_BYTES`]);
    /// non-2xx answers become errors.
    async fn exchange<B: Serialize + ?Sized>(&self, path: &'static str, body: &B) -> Result<(u16, Vec<u8>)> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() { Error::Timeout(self.request_timeout, e) } else { Error::Connect(e) }
        };
        let auth = self.auth.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut response = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .header(AUTHORIZATION, auth)
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        self.set_key_refused(status == 401 || status == 403);
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (retry_after, location) = (header(RETRY_AFTER), header(LOCATION));
        let success = (200..300).contains(&status);
        let announced = response.content_length().filter(|&n| n > MAX_BODY_BYTES as u64);
        let bytes = match announced {
            // Refused unread: the connection is dropped, not drained.
            Some(n) if success => {
                return Err(Error::Malformed { status, detail: format!("{} (Content-Length {n})", over_cap()) });
            }
            // An error page this big is not Seam's envelope: its status says enough.
            Some(_) => Vec::new(),
            None => {
                let mut bytes = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(transport)? {
                    if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                        if success {
                            return Err(Error::Malformed { status, detail: over_cap() });
                        }
                        bytes.extend_from_slice(&chunk[..MAX_BODY_BYTES - bytes.len()]);
                        break;
                    }
                    bytes.extend_from_slice(&chunk);
                }
                bytes
            }
        };
        if success {
            Ok((status, bytes))
        } else {
            Err(classify(status, retry_after.as_deref(), location.as_deref(), &bytes, chrono::Utc::now()))
        }
    }
}

/// Why a body over the cap is refused: "body over 1 MiB".
fn over_cap() -> String {
    format!("body over {} MiB", MAX_BODY_BYTES >> 20)
}

/// The detail of a 2xx body that does not parse: the parser's message and an
/// excerpt of the body, with the PINs hidden from both (the parser quotes the
/// value it choked on, which may be the PIN).
fn unreadable(e: &serde_json::Error, body: &[u8]) -> String {
    let redacted = redact(&String::from_utf8_lossy(body));
    // Scrub the message without its position, so a short PIN does not eat the
    // digits of the line and column.
    let message = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let message = match message.strip_suffix(&position) {
        Some(m) => format!("{}{position}", scrub(m, &redacted.secrets)),
        None => scrub(&message, &redacted.secrets),
    };
    format!("the body could not be read: {message}; body: {}", excerpt(body))
}

/// An answer about another object than the one asked for is malformed.
fn same_id(status: u16, what: &str, asked: &str, answered: &str) -> Result<()> {
    if asked == answered {
        return Ok(());
    }
    Err(Error::Malformed {
        status,
        detail: format!("asked for {what} {asked:?}, Seam answered about {what} {answered:?}"),
    })
}

/// `2xx`, `4xx`, `5xx`: the `status_class` label of `latchkey_seam_requests_total`.
fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
