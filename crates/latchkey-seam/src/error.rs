//! The client's one error type. Every failure is classified here, once:
//! transient (worth retrying with backoff), rate-limited (retry after a
//! delay), permanent (retrying cannot help) or malformed (Seam answered
//! something we cannot read). Callers decide with [`Error::class`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Seam's error envelope: `{"error": {"type", "message", ...}, "ok": false}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct ApiError {
    /// `error.type`, e.g. `invalid_input`, `access_code_not_found`.
    #[serde(rename = "type")]
    pub error_type: String,
    /// Seam's message.
    #[serde(default)]
    pub message: String,
    /// For `invalid_input`: which fields broke which rules.
    #[serde(default)]
    pub validation_errors: Option<serde_json::Value>,
    /// Seam's request id, to quote to Seam support.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// How a failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again with backoff: connection failures, timeouts, 5xx, 408.
    Transient,
    /// Try again after at least this long (when Seam said), or back off.
    RateLimited(Option<Duration>),
    /// Seam does not accept the API key (401, 403): the worker's fault, not
    /// the job's. Wait for the key to be fixed; nothing about the job is wrong.
    Unauthorized,
    /// Retrying cannot help: the request is wrong, or names something Seam
    /// does not have.
    Permanent,
    /// Seam's answer could not be read.
    Malformed,
}

/// A failed Seam call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be made, or it broke before an answer.
    #[error("could not reach Seam")]
    Connect(#[source] reqwest::Error),
    /// No complete answer within the request timeout.
    #[error("Seam did not answer within {0:?}")]
    Timeout(Duration, #[source] reqwest::Error),
    /// 5xx or 408: Seam or something in front of it failed; try again.
    #[error("Seam failed with HTTP {status}{}", describe(.error))]
    Server {
        /// HTTP status.
        status: u16,
        /// Seam's error, when the body had one.
        error: Option<ApiError>,
    },
    /// 429.
    #[error("rate limited by Seam (HTTP 429){}", .retry_after.map(|d| format!(", retry after {} ms", d.as_millis())).unwrap_or_default())]
    RateLimited {
        /// From `Retry-After` (seconds or HTTP-date), when present.
        retry_after: Option<Duration>,
        /// Seam's error, when the body had one.
        error: Option<ApiError>,
    },
    /// A 4xx that retrying will not fix.
    #[error("Seam rejected the request with HTTP {status}{}", describe(&Some(.error.clone())))]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Seam's error (type `unknown` when the body had none).
        error: ApiError,
    },
    /// A response whose body is not what Seam's API says.
    #[error("Seam answered HTTP {status} with a body that could not be read: {detail}")]
    Malformed {
        /// HTTP status.
        status: u16,
        /// What was wrong.
        detail: String,
    },
    /// The client could not be configured.
    #[error("invalid Seam client configuration: {0}")]
    Config(String),
}

fn describe(error: &Option<ApiError>) -> String {
    match error {
        Some(e) if e.message.is_empty() => format!(": {}", e.error_type),
        Some(e) => format!(": {}: {}", e.error_type, e.message),
        None => String::new(),
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// How to handle this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Connect(_) | Error::Timeout(..) | Error::Server { .. } => ErrorClass::Transient,
            Error::RateLimited { retry_after, .. } => ErrorClass::RateLimited(*retry_after),
            Error::Rejected { status: 401 | 403, .. } => ErrorClass::Unauthorized,
            Error::Rejected { .. } | Error::Config(_) => ErrorClass::Permanent,
            Error::Malformed { .. } => ErrorClass::Malformed,
        }
    }

    /// The HTTP status Seam answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Server { status, .. } | Error::Rejected { status, .. } | Error::Malformed { status, .. } => {
                Some(*status)
            }
            Error::RateLimited { .. } => Some(429),
            Error::Connect(_) | Error::Timeout(..) | Error::Config(_) => None,
        }
    }

    /// Whether Seam said the access code (or action attempt) does not exist:
    /// 404 with `not_found` (what `/access_codes/get` answers) or
    /// `access_code_not_found` (`/access_codes/update` and `delete`).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Rejected { status: 404, error } if error.error_type == "not_found" || error.error_type == "access_code_not_found")
    }

    /// Seam's error type and message, when it sent one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Error::Server { error, .. } | Error::RateLimited { error, .. } => error.as_ref(),
            Error::Rejected { error, .. } => Some(error),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    error: ApiError,
}

/// Classifies a non-2xx answer from its status, `Retry-After` header and body.
/// `now` is needed for an HTTP-date `Retry-After`.
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8], now: DateTime<Utc>) -> Error {
    let error = serde_json::from_slice::<Envelope>(body).ok().map(|e| e.error);
    match status {
        429 => Error::RateLimited { retry_after: retry_after.and_then(|v| parse_retry_after(v, now)), error },
        408 | 500..=599 => Error::Server { status, error },
        400..=499 => Error::Rejected {
            status,
            error: error.unwrap_or_else(|| ApiError {
                error_type: "unknown".into(),
                message: excerpt(body),
                validation_errors: None,
                request_id: None,
            }),
        },
        _ => Error::Malformed { status, detail: format!("unexpected status; body: {}", excerpt(body)) },
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The start of a body, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let mut cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(t: &str) -> Vec<u8> {
        format!(r#"{{"error":{{"type":"{t}","message":"m","request_id":"r1"}},"ok":false}}"#).into_bytes()
    }

    #[test]
    fn every_status_and_error_type_is_classified_once() {
        let now = Utc::now();
        let cases: &[(u16, &str, ErrorClass)] = &[
            (400, "invalid_input", ErrorClass::Permanent),
            (401, "unauthorized", ErrorClass::Unauthorized),
            (403, "forbidden", ErrorClass::Unauthorized),
            (404, "access_code_not_found", ErrorClass::Permanent),
            (404, "device_not_found", ErrorClass::Permanent),
            (404, "not_found", ErrorClass::Permanent),
            (404, "action_attempt_not_found", ErrorClass::Permanent),
            (405, "method_not_allowed", ErrorClass::Permanent),
            (409, "duplicate_access_code", ErrorClass::Permanent),
            (422, "whatever", ErrorClass::Permanent),
            (408, "timeout", ErrorClass::Transient),
            (429, "rate_limited", ErrorClass::RateLimited(None)),
            (500, "internal_server_error", ErrorClass::Transient),
            (502, "bad_gateway", ErrorClass::Transient),
            (503, "service_unavailable", ErrorClass::Transient),
            (504, "gateway_timeout", ErrorClass::Transient),
        ];
        for &(status, error_type, class) in cases {
            let err = classify(status, None, &envelope(error_type), now);
            assert_eq!(err.class(), class, "{status} {error_type}");
            assert_eq!(err.api_error().map(|e| e.error_type.as_str()), Some(error_type), "{status}");
        }
    }

    #[test]
    fn both_of_seams_names_for_an_unknown_access_code_mean_not_found() {
        let now = Utc::now();
        assert!(classify(404, None, &envelope("not_found"), now).is_not_found());
        assert!(classify(404, None, &envelope("access_code_not_found"), now).is_not_found());
        assert!(!classify(404, None, &envelope("device_not_found"), now).is_not_found());
        assert!(!classify(400, None, &envelope("not_found"), now).is_not_found());
    }

    #[test]
    fn a_4xx_without_an_envelope_is_still_permanent_and_says_what_came() {
        let err = classify(404, None, b"<html>nope</html>", Utc::now());
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert_eq!(err.api_error().unwrap().error_type, "unknown");
        assert!(err.to_string().contains("<html>nope</html>"), "{err}");
    }

    #[test]
    fn a_5xx_with_an_empty_body_is_transient() {
        let err = classify(503, None, b"", Utc::now());
        assert_eq!(err.class(), ErrorClass::Transient);
        assert!(err.api_error().is_none());
    }

    #[test]
    fn validation_errors_are_kept() {
        let body = br#"{"error":{"type":"invalid_input","message":"Required","validation_errors":{"_errors":[],"access_code_id":{"_errors":["Required"]}}},"ok":false}"#;
        let err = classify(400, None, body, Utc::now());
        let v = err.api_error().unwrap().validation_errors.as_ref().unwrap();
        assert_eq!(v["access_code_id"]["_errors"][0], "Required");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:30Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after("12", now), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a past date means now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(classify(429, Some("3"), b"", now).class(), ErrorClass::RateLimited(Some(Duration::from_secs(3))));
    }
}
