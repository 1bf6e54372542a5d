//! The client's one error type. Every failure is classified here, once:
//! transient (worth retrying with backoff), rate-limited (retry after a
//! delay), permanent (retrying cannot help) or malformed (Seam answered
//! something we cannot use). Callers decide with [`Error::class`].
//!
//! What Seam (or anything in front of it) sends is not trusted: `Retry-After`
//! is bounded ([`MAX_RETRY_AFTER`], see [`parse_retry_after`]), a body is
//! quoted only as a short excerpt with its PINs hidden, and a redirect is
//! reported, never followed.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;

use crate::redact::redact;

/// The longest wait a `Retry-After` can ask for: 15 minutes. A longer one
/// (`Retry-After: 99999999`, a date next year, more seconds than fit in a
/// `u64`) is read as this much, so a misbehaving answer cannot hold a device
/// for longer; see [`parse_retry_after`].
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

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
    /// Try again later. `Some(d)`: Seam asked for `d`, with
    /// `0 < d <= MAX_RETRY_AFTER`. `None`: Seam gave no usable hint (no
    /// `Retry-After`, garbage, zero, or a date already past); the caller must
    /// back off by its own rule. Never `Some(Duration::ZERO)`, so waiting
    /// `hint.unwrap_or(backoff)` never loops without a pause.
    RateLimited(Option<Duration>),
    /// Seam does not accept the API key (401, 403): the worker's fault, not
    /// the job's. Wait for the key to be fixed; nothing about the job is wrong.
    Unauthorized,
    /// Retrying cannot help: the request is wrong, or names something Seam
    /// does not have.
    Permanent,
    /// Seam's answer could not be used: a body that is not what Seam's API
    /// says, one over [`crate::MAX_BODY_BYTES`], an access code or action
    /// attempt other than the one asked for, or a redirect (Seam's API never
    /// redirects; one means a wrong `SEAM_ENDPOINT` or something in between,
    /// so it is worth retrying later, but never following).
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
        /// From `Retry-After` (seconds or HTTP-date) by [`parse_retry_after`]'s
        /// rule: never zero, at most [`MAX_RETRY_AFTER`], `None` without a
        /// usable hint.
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
    /// An answer the client cannot use: a body that is not what Seam's API
    /// says or is over [`crate::MAX_BODY_BYTES`], another access code (or
    /// action attempt) than the one asked for, a redirect (3xx, never
    /// followed), or a status Seam does not use.
    #[error("Seam answered HTTP {status} with something the client cannot use: {detail}")]
    Malformed {
        /// HTTP status.
        status: u16,
        /// What was wrong. Any excerpt of the body in it has its PINs hidden;
        /// a redirect names only the host it pointed to.
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

/// Classifies a non-2xx answer from its status, `Retry-After` and `Location`
/// headers and body (possibly cut at [`crate::MAX_BODY_BYTES`]). `now` is
/// needed for an HTTP-date `Retry-After`. A 3xx is [`Error::Malformed`],
/// naming the status and the host `Location` points to (not its path or
/// query); the client never follows it.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    location: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Error {
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
        300..=399 => Error::Malformed { status, detail: redirect(location) },
        _ => Error::Malformed { status, detail: format!("unexpected status; body: {}", excerpt(body)) },
    }
}

/// What a redirect pointed to, without path or query (which may carry anything).
fn redirect(location: Option<&str>) -> String {
    let to = match location.map(str::trim) {
        None => "without a Location".to_string(),
        Some(l) => {
            // A scheme-relative `//host/path` names a host too.
            let absolute = if l.starts_with("//") { format!("http:{l}") } else { l.to_string() };
            match reqwest::Url::parse(&absolute) {
                Ok(url) => match (url.host_str(), url.port()) {
                    (Some(host), Some(port)) => format!("to host {host}:{port}"),
                    (Some(host), None) => format!("to host {host}"),
                    (None, _) => format!("to a {} URL", url.scheme()),
                },
                Err(_) if l.starts_with('/') => "to another path on the same host".to_string(),
                Err(_) => "to a relative or unreadable Location".to_string(),
            }
        }
    };
    format!("a redirect {to}, which the client does not follow (is SEAM_ENDPOINT right?)")
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3), bounded.
///
/// The rule, which [`ErrorClass::RateLimited`] carries to the caller:
/// - a wait longer than [`MAX_RETRY_AFTER`] (however long, even more seconds
///   than a `u64` holds) is `Some(MAX_RETRY_AFTER)`;
/// - a zero wait or a date already past is `None`: no useful hint, the caller
///   backs off by its own rule (never `Some(Duration::ZERO)`);
/// - anything else that is not delay-seconds (digits only) or an HTTP-date
///   (IMF-fixdate, RFC 850 or asctime) is `None`.
///
/// It never panics and never overflows.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Only digits: a parse failure can only be a number too big for u64.
        value.parse::<u64>().map_or(MAX_RETRY_AFTER, |secs| Duration::from_secs(secs.min(MAX_RETRY_AFTER.as_secs())))
    } else {
        let at = http_date(value)?;
        // Negative (a past date): no hint.
        at.signed_duration_since(now).to_std().ok()?.min(MAX_RETRY_AFTER)
    };
    (!wait.is_zero()).then_some(wait)
}

/// The three HTTP-date formats RFC 9110 §5.6.7 says a recipient accepts.
fn http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc2822(value) {
        return Some(at.with_timezone(&Utc));
    }
    // RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`).
    let rfc850 =
        value.strip_suffix(" GMT").and_then(|v| NaiveDateTime::parse_from_str(v, "%A, %d-%b-%y %H:%M:%S").ok());
    rfc850.or_else(|| NaiveDateTime::parse_from_str(value, "%a %b %e %H:%M:%S %Y").ok()).map(|n| n.and_utc())
}

/// The start of a body, for error messages, with every PIN hidden (the
/// value of any `code` or `pin` member, see [`crate::redact`]) before it is
/// cut, so a cut cannot leave part of one.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = redact(&text).text;
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
            let err = classify(status, None, None, &envelope(error_type), now);
            assert_eq!(err.class(), class, "{status} {error_type}");
            assert_eq!(err.api_error().map(|e| e.error_type.as_str()), Some(error_type), "{status}");
        }
    }

    #[test]
    fn both_of_seams_names_for_an_unknown_access_code_mean_not_found() {
        let now = Utc::now();
        assert!(classify(404, None, None, &envelope("not_found"), now).is_not_found());
        assert!(classify(404, None, None, &envelope("access_code_not_found"), now).is_not_found());
        assert!(!classify(404, None, None, &envelope("device_not_found"), now).is_not_found());
        assert!(!classify(400, None, None, &envelope("not_found"), now).is_not_found());
    }

    #[test]
    fn a_4xx_without_an_envelope_is_still_permanent_and_says_what_came() {
        let err = classify(404, None, None, b"<html>nope</html>", Utc::now());
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert_eq!(err.api_error().unwrap().error_type, "unknown");
        assert!(err.to_string().contains("<html>nope</html>"), "{err}");
    }

    #[test]
    fn a_5xx_with_an_empty_body_is_transient() {
        let err = classify(503, None, None, b"", Utc::now());
        assert_eq!(err.class(), ErrorClass::Transient);
        assert!(err.api_error().is_none());
    }

    #[test]
    fn validation_errors_are_kept() {
        let body = br#"{"error":{"type":"invalid_input","message":"Required","validation_errors":{"_errors":[],"access_code_id":{"_errors":["Required"]}}},"ok":false}"#;
        let err = classify(400, None, None, body, Utc::now());
        let v = err.api_error().unwrap().validation_errors.as_ref().unwrap();
        assert_eq!(v["access_code_id"]["_errors"][0], "Required");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:30Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after("12", now), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now),
            Some(Duration::from_secs(30)),
            "RFC 850"
        );
        assert_eq!(parse_retry_after("Wed Oct 21 07:28:00 2015", now), Some(Duration::from_secs(30)), "asctime");
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            classify(429, Some("3"), None, b"", now).class(),
            ErrorClass::RateLimited(Some(Duration::from_secs(3)))
        );
    }

    #[test]
    fn retry_after_is_clamped_to_max_retry_after() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:30Z").unwrap().with_timezone(&Utc);
        assert_eq!(MAX_RETRY_AFTER, Duration::from_secs(900));
        for huge in [
            "900",
            "901",
            "99999999",
            "18446744073709551615",
            "18446744073709551616",
            "999999999999999999999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Wed, 21 Oct 2015 08:00:00 GMT",
        ] {
            assert_eq!(parse_retry_after(huge, now), Some(MAX_RETRY_AFTER), "{huge}");
        }
        assert_eq!(
            classify(429, Some("18446744073709551615"), None, b"", now).class(),
            ErrorClass::RateLimited(Some(MAX_RETRY_AFTER))
        );
        assert!(classify(429, Some("99999999"), None, b"", now).to_string().contains("900000 ms"));
    }

    #[test]
    fn a_zero_or_past_retry_after_is_no_hint_never_a_zero_wait() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:30Z").unwrap().with_timezone(&Utc);
        for none in [
            "0",
            "000",
            " 0 ",
            "Wed, 21 Oct 2015 07:00:00 GMT",
            "Wed, 21 Oct 2015 07:27:30 GMT",
            "Thu, 01 Jan 1970 00:00:00 GMT",
        ] {
            assert_eq!(parse_retry_after(none, now), None, "{none:?}");
        }
        assert_eq!(classify(429, Some("0"), None, b"", now).class(), ErrorClass::RateLimited(None));
    }

    #[test]
    fn a_garbage_retry_after_is_no_hint() {
        let now = Utc::now();
        for garbage in ["", "-5", "+5", "1.5", "5s", "1e3", "0x10", "soon", "Wed, 99 Oct 2015 07:00:00 GMT", "٣"] {
            assert_eq!(parse_retry_after(garbage, now), None, "{garbage:?}");
        }
    }

    #[test]
    fn a_redirect_is_malformed_and_names_only_the_host() {
        let now = Utc::now();
        let err = classify(307, None, Some("https://evil.example:8443/access_codes/update?code=1234#x"), b"", now);
        assert_eq!(err.class(), ErrorClass::Malformed);
        let shown = err.to_string();
        assert!(shown.contains("HTTP 307") && shown.contains("evil.example:8443"), "{shown}");
        assert!(!shown.contains("1234") && !shown.contains("access_codes"), "{shown}");
        assert!(classify(301, None, Some("//cdn.example/x?code=1"), b"", now).to_string().contains("host cdn.example"));
        assert!(classify(302, None, Some("/elsewhere?code=1"), b"", now).to_string().contains("same host"));
        assert!(classify(308, None, None, b"", now).to_string().contains("without a Location"));
    }

    #[test]
    fn body_excerpts_never_show_a_pin() {
        let now = Utc::now();
        let body = br#"{"access_code":{"access_code_id":"a","code":"24680","type":"ongoing"},"ok":true}"#;
        for err in [classify(404, None, None, body, now), classify(200, None, None, body, now)] {
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("24680"), "{shown}");
            assert!(shown.contains("[redacted]") && shown.contains("access_code_id"), "{shown}");
        }
        // Cut off mid-PIN (a body over the cap, or a connection that broke).
        let err = classify(400, None, None, br#"{"access_code":{"code":"135"#, now);
        assert!(!err.to_string().contains("135"), "{err}");
    }
}
