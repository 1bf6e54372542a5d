//! The Seam client: one pooled reqwest client (rustls), timeouts on connect
//! and on the whole request, Bearer auth with a key that can be replaced at
//! run time (a rotated Kubernetes secret), and every failure classified by
//! [`crate::error::classify`]. It remembers whether Seam accepted the key on
//! the last answer, for the worker's readiness and an alert.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use latchkey_core::{AccessCode, ActionAttempt};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use serde::{Serialize, de::DeserializeOwned};
use tracing::Instrument;

use crate::{
    config::{ApiKey, SeamConfig},
    error::{Error, Result, classify, excerpt},
    request::UpdateAccessCode,
    wire,
};

/// `latchkey/<version>`, sent as the User-Agent.
pub const USER_AGENT_VALUE: &str = concat!("latchkey/", env!("CARGO_PKG_VERSION"));

/// What an update returned: an action attempt to follow (current API), the
/// access code (some versions), or neither (`{ok: true}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// The `UPDATE_ACCESS_CODE` attempt, when Seam returned one.
    pub action_attempt: Option<ActionAttempt>,
    /// The access code, when Seam returned it. Do not rely on it.
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

    /// `POST /access_codes/update`.
    pub async fn update_access_code(&self, update: &UpdateAccessCode) -> Result<UpdateOutcome> {
        let r: wire::UpdateResponse = self.post("/access_codes/update", update).await?;
        Ok(UpdateOutcome {
            action_attempt: r.action_attempt.map(Into::into),
            access_code: r.access_code.map(Into::into),
        })
    }

    /// `POST /access_codes/delete`: the `DELETE_ACCESS_CODE` action attempt,
    /// when Seam returned one. A code Seam does not know is an error for which
    /// [`Error::is_not_found`] holds (callers that want it gone may treat it so).
    pub async fn delete_access_code(&self, access_code_id: &str) -> Result<Option<ActionAttempt>> {
        let body = serde_json::json!({ "access_code_id": access_code_id });
        let r: wire::DeleteResponse = self.post("/access_codes/delete", &body).await?;
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

    /// `POST /access_codes/get`.
    pub async fn get_access_code(&self, access_code_id: &str) -> Result<AccessCode> {
        let body = serde_json::json!({ "access_code_id": access_code_id });
        let r: wire::GetAccessCodeResponse = self.post("/access_codes/get", &body).await?;
        Ok(r.access_code.into())
    }

    /// `POST /action_attempts/get`.
    pub async fn get_action_attempt(&self, action_attempt_id: &str) -> Result<ActionAttempt> {
        let body = serde_json::json!({ "action_attempt_id": action_attempt_id });
        let r: wire::GetActionAttemptResponse = self.post("/action_attempts/get", &body).await?;
        Ok(r.action_attempt.into())
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &'static str, body: &B) -> Result<T> {
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
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Malformed { status, detail: format!("{e}; body: {}", excerpt(&bytes)) })
    }

    /// Sends the request and reads the whole body; non-2xx answers become errors.
    async fn exchange<B: Serialize + ?Sized>(&self, path: &'static str, body: &B) -> Result<(u16, Vec<u8>)> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() { Error::Timeout(self.request_timeout, e) } else { Error::Connect(e) }
        };
        let auth = self.auth.read().unwrap_or_else(|e| e.into_inner()).clone();
        let response = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .header(AUTHORIZATION, auth)
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        self.set_key_refused(status == 401 || status == 403);
        let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = response.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            Ok((status, bytes.to_vec()))
        } else {
            Err(classify(status, retry_after.as_deref(), &bytes, chrono::Utc::now()))
        }
    }
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
