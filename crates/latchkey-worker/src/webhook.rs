//! Seam's webhooks, as Svix delivers them: the signature check (pure) and the
//! `POST /webhooks/seam` handler. A delivery whose signature holds pulls the
//! jobs of the access codes it names forward, so they read Seam now instead
//! of at their next poll. An event is a trigger, never the truth: it comes
//! late, twice or out of order, and the run judges what Seam says when asked.

use std::{fmt, time::Duration};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use latchkey_store::{Reconciliations, error_chain};
use metrics::counter;
use sha2::Sha256;

/// The largest delivery read; a larger one is refused before it is read whole
/// (Seam's events are well under 4 KiB).
pub const MAX_DELIVERY_BYTES: usize = 64 * 1024;

/// How far a delivery's `svix-timestamp` may be from now, either way, as Svix
/// specifies: an old delivery replayed is refused.
pub const TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// A webhook signing secret (`whsec_` and base64, as Seam shows it). `Debug`
/// shows nothing of it.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

impl WebhookSecret {
    /// Reads `whsec_<base64>` (the prefix is optional); the error does not
    /// repeat the secret.
    pub fn parse(secret: &str) -> Result<Self, String> {
        let encoded = secret.trim();
        let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
        match STANDARD.decode(encoded) {
            Ok(key) if !key.is_empty() => Ok(Self(key)),
            _ => Err("the webhook secret must be whsec_ followed by base64, as Seam shows it".into()),
        }
    }
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A Svix header is missing or not text.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `svix-timestamp` is not a number of seconds.
    #[error("svix-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    /// `svix-timestamp` is more than [`TIMESTAMP_TOLERANCE`] from now.
    #[error("svix-timestamp is {0} s from now, more than 5 minutes (a replay, or a clock far off)")]
    OutOfTolerance(i64),
    /// No `v1` signature matches.
    #[error("no signature matches")]
    NoMatch,
}

/// Checks a delivery as Svix specifies: HMAC-SHA256 with the secret over
/// `{svix-id}.{svix-timestamp}.{body}`, base64; `svix-signature` holds one or
/// more space-separated `v1,<signature>` (several during a secret rotation),
/// any of which may match; compared in constant time.
pub fn verify(
    secret: &WebhookSecret,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| Refusal::BadTimestamp)?;
    let off = ts.saturating_sub(now.timestamp());
    if off.unsigned_abs() > TIMESTAMP_TOLERANCE.as_secs() {
        return Err(Refusal::OutOfTolerance(off));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.trim().as_bytes());
    mac.update(b".");
    mac.update(body);
    for candidate in signatures.split_whitespace() {
        let Some(sig) = candidate.strip_prefix("v1,") else { continue };
        let Ok(sig) = STANDARD.decode(sig) else { continue };
        // `verify_slice` compares in constant time.
        if mac.clone().verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(Refusal::NoMatch)
}

/// What the handler needs.
#[derive(Clone)]
pub(crate) struct Hooks {
    pub store: Reconciliations,
    pub secret: WebhookSecret,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, Refusal> {
    headers.get(name).and_then(|v| v.to_str().ok()).ok_or(Refusal::MissingHeader(name))
}

/// The label of an event type in metrics: the names of the events latchkey
/// acts on, else `other` (an attacker with no secret never gets this far, but
/// a label stays bounded).
fn event_label(event_type: &str) -> &'static str {
    crate::events::ACCESS_CODE_EVENTS.iter().find(|k| **k == event_type).copied().unwrap_or("other")
}

/// `POST /webhooks/seam`. 401 for a delivery whose signature does not hold
/// (nothing changes), 413 over [`MAX_DELIVERY_BYTES`] (the router's body
/// limit), 503 when Redis cannot be reached (Svix delivers again later), else
/// 204 at once: the only work inline is one Redis script.
pub(crate) async fn seam(State(hooks): State<Hooks>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let checked = (|| {
        let id = header(&headers, "svix-id")?;
        let ts = header(&headers, "svix-timestamp")?;
        let sigs = header(&headers, "svix-signature")?;
        verify(&hooks.secret, id, ts, sigs, &body, Utc::now()).map(|()| id.to_string())
    })();
    let delivery = match checked {
        Ok(id) => id,
        Err(refusal) => {
            counter!("latchkey_webhook_deliveries_total", "result" => "refused").increment(1);
            tracing::warn!(%refusal, "webhook delivery refused");
            return (StatusCode::UNAUTHORIZED, format!("refused: {refusal}\n"));
        }
    };
    let event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            // Signed by Seam but unreadable: acknowledged (a retry would be
            // the same), counted.
            counter!("latchkey_webhook_deliveries_total", "result" => "unreadable").increment(1);
            return (StatusCode::NO_CONTENT, String::new());
        }
    };
    let event_type = event.get("event_type").and_then(|v| v.as_str()).unwrap_or("");
    let label = event_label(event_type);
    let field = |name: &str| event.get(name).and_then(|v| v.as_str());
    // De-duplicated on Seam's event id (the same in a retried delivery and in
    // `/events/list`, which the workers catch up from), else on `svix-id`.
    let event_id = field("event_id").filter(|id| latchkey_core::id_rule_broken(id).is_none());
    let delivery = event_id.or(Some(delivery.as_str()).filter(|id| latchkey_core::id_rule_broken(id).is_none()));
    let done = match crate::events::Trigger::of(event_type, field("access_code_id"), field("device_id")) {
        None => {
            // Not about anything this version acts on: acknowledged.
            counter!("latchkey_webhook_events_total", "event_type" => label, "result" => "ignored").increment(1);
            return (StatusCode::NO_CONTENT, String::new());
        }
        Some(trigger) => trigger.pull(&hooks.store, delivery).await,
    };
    match done {
        Ok(None) => {
            counter!("latchkey_webhook_deliveries_total", "result" => "duplicate").increment(1);
            tracing::debug!(delivery = delivery.unwrap_or_default(), "webhook event seen before; nothing to do");
            (StatusCode::NO_CONTENT, String::new())
        }
        Ok(Some(pulled)) => {
            counter!("latchkey_webhook_deliveries_total", "result" => "accepted").increment(1);
            // (a code latchkey does not manage, or one not waiting, is dropped)
            let result = if pulled > 0 { "pulled_forward" } else { "dropped" };
            counter!("latchkey_webhook_events_total", "event_type" => label, "result" => result).increment(1);
            tracing::debug!(event_type = label, pulled, "webhook event");
            (StatusCode::NO_CONTENT, String::new())
        }
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "webhook delivery could not be recorded; Seam delivers it again");
            (StatusCode::SERVICE_UNAVAILABLE, "redis is not reachable; deliver again later\n".to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    /// Svix's own example: this secret, id, timestamp and body give this signature.
    #[test]
    fn svix_reference_vector_verifies() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = latchkey_fake_seam_free_sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let at = DateTime::from_timestamp(1614265330, 0).unwrap();
        assert_eq!(verify(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &sig, body, at), Ok(()));
    }

    /// The signing side, written out again here from Svix's docs (the
    /// simulator signs with its own copy, so each checks the other).
    fn latchkey_fake_seam_free_sign(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
        let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn forged_replayed_and_unsigned_deliveries_are_refused() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let ts = now().timestamp();
        let body = br#"{"event_type":"access_code.set_on_device","access_code_id":"ac1"}"#;
        let good = latchkey_fake_seam_free_sign(SECRET, "msg_1", ts, body);
        let t = ts.to_string();
        assert_eq!(verify(&secret, "msg_1", &t, &good, body, now()), Ok(()));
        // Another body, id or secret: no match.
        assert_eq!(verify(&secret, "msg_1", &t, &good, b"{}", now()), Err(Refusal::NoMatch));
        assert_eq!(verify(&secret, "msg_2", &t, &good, body, now()), Err(Refusal::NoMatch));
        let other = WebhookSecret::parse("whsec_c2VjcmV0LW9mLWFub3RoZXItd29ya3NwYWNl").unwrap();
        assert_eq!(verify(&other, "msg_1", &t, &good, body, now()), Err(Refusal::NoMatch));
        // Replayed after more than 5 minutes, or from too far ahead.
        let old = latchkey_fake_seam_free_sign(SECRET, "msg_1", ts - 301, body);
        assert_eq!(
            verify(&secret, "msg_1", &(ts - 301).to_string(), &old, body, now()),
            Err(Refusal::OutOfTolerance(-301))
        );
        assert!(verify(&secret, "msg_1", &(ts + 400).to_string(), &good, body, now()).is_err());
        assert_eq!(verify(&secret, "msg_1", "soon", &good, body, now()), Err(Refusal::BadTimestamp));
        // Rotation: any of several signatures may match; other versions are skipped.
        let several = format!("v1,bm90IGl0 v2,{} {good}", &good[3..]);
        assert_eq!(verify(&secret, "msg_1", &t, &several, body, now()), Ok(()));
        assert_eq!(verify(&secret, "msg_1", &t, "", body, now()), Err(Refusal::NoMatch));
    }

    #[test]
    fn a_secret_is_whsec_base64_and_never_shown() {
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
        assert!(WebhookSecret::parse("").is_err());
        let s = WebhookSecret::parse(SECRET).unwrap();
        assert_eq!(format!("{s:?}"), "WebhookSecret([redacted])");
        let err = WebhookSecret::parse("whsec_not base64 at all").unwrap_err();
        assert!(!err.contains("not base64 at all"));
    }
}
