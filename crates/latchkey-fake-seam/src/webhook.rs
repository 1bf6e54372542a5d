//! Webhook delivery the way Seam does it, through Svix: each event is POSTed
//! with `svix-id`, `svix-timestamp` and `svix-signature` headers, and retried
//! a few times when the receiver fails.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::WebhookTarget;

/// The Svix signature of a message: `v1,` + base64(HMAC-SHA256(key,
/// "{msg_id}.{timestamp}.{body}")), where the key is the base64 part of a
/// `whsec_` secret.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &str) -> String {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = STANDARD.decode(encoded).unwrap_or_else(|_| encoded.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(format!("{msg_id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Starts delivering events to `target`; returns the sender events go to.
pub(crate) fn start(target: WebhookTarget) -> mpsc::UnboundedSender<Value> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("HTTP client");
        while let Some(event) = rx.recv().await {
            let body = event.to_string();
            let msg_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            for delay_ms in [0u64, 200, 1000, 5000] {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                let timestamp = chrono::Utc::now().timestamp();
                let sent = http
                    .post(&target.url)
                    .header("content-type", "application/json")
                    .header("svix-id", &msg_id)
                    .header("svix-timestamp", timestamp.to_string())
                    .header("svix-signature", sign(&target.secret, &msg_id, timestamp, &body))
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) => tracing::warn!(status = r.status().as_u16(), "webhook delivery refused; retrying"),
                    Err(e) => tracing::warn!(error = %e, "webhook delivery failed; retrying"),
                }
            }
        }
    });
    tx
}
