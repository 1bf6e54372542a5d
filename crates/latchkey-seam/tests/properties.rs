//! Property tests of the response side: any status, header and body Seam (or
//! something in front of it) might send is classified, never a panic.

use chrono::Utc;
use latchkey_seam::{ErrorClass, MAX_RETRY_AFTER, classify, parse_retry_after};
use proptest::prelude::*;

proptest! {
    #[test]
    fn any_answer_is_classified(status in 100u16..600, retry_after in proptest::option::of(".{0,40}"), location in proptest::option::of(".{0,60}"), body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let err = classify(status, retry_after.as_deref(), location.as_deref(), &body, Utc::now());
        let class = err.class();
        match status {
            429 => prop_assert!(matches!(class, ErrorClass::RateLimited(_))),
            408 | 500..=599 => prop_assert_eq!(class, ErrorClass::Transient),
            401 | 403 => prop_assert_eq!(class, ErrorClass::Unauthorized),
            400..=499 => prop_assert_eq!(class, ErrorClass::Permanent),
            _ => prop_assert_eq!(class, ErrorClass::Malformed),
        }
        prop_assert!(!err.to_string().is_empty());
    }

    #[test]
    fn retry_after_never_panics(value in ".{0,60}") {
        let _ = parse_retry_after(&value, Utc::now());
    }

    #[test]
    fn retry_after_is_never_zero_nor_over_the_maximum(value in "[0-9]{1,40}|.{0,60}", days in -1_000_000i64..1_000_000) {
        let now = Utc::now();
        let date = (now + chrono::Duration::days(days)).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        for v in [value, date] {
            if let Some(wait) = parse_retry_after(&v, now) {
                prop_assert!(!wait.is_zero() && wait <= MAX_RETRY_AFTER, "{v:?} -> {wait:?}");
            }
        }
    }

    #[test]
    fn no_excerpt_of_a_body_shows_its_pin(pin in "[0-9]{4,9}", prefix in ".{0,300}", cut in 0usize..600, status in 100u16..600) {
        let body = format!(r#"{prefix}{{"access_code":{{"access_code_id":"a","code":"{pin}","type":"ongoing"}},"ok":true}}"#);
        // Cut anywhere, mid-PIN included, as a capped or broken body would be.
        let body = &body.as_bytes()[..cut.min(body.len())];
        let err = classify(status, None, None, body, Utc::now());
        let shown = format!("{err} {err:?}");
        // (`Debug` writes a character it cannot show as `\u{...}`: its code
        // point's digits are not the PIN, however they read)
        prop_assert!(!without_unicode_escapes(&shown).contains(&pin), "{}", shown);
    }

    #[test]
    fn seam_shaped_error_bodies_keep_their_type(t in "[a-z_]{1,30}", m in ".{0,50}") {
        let body = serde_json::json!({"error": {"type": t, "message": m}, "ok": false}).to_string();
        let err = classify(400, None, None, body.as_bytes(), Utc::now());
        prop_assert_eq!(err.api_error().map(|e| e.error_type.clone()), Some(t));
    }
}

/// `s` without the `\u{...}` escapes `Debug` writes.
fn without_unicode_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("\\u{") {
        out.push_str(&rest[..at]);
        rest = match rest[at..].find('}') {
            Some(end) => &rest[at + end + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}
