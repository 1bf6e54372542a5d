//! Property tests of the parsers: whatever a producer sends, validation never
//! panics, and whatever it accepts satisfies every documented rule.

use chrono::{DateTime, Utc};
use latchkey_core::{DesiredStateInput, Schedule};
use proptest::prelude::*;

fn now() -> DateTime<Utc> {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

fn time_string() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..4_000_000_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap().to_rfc3339()),
        "[0-9T:+Z.-]{0,30}",
        ".{0,20}",
    ]
}

proptest! {
    #[test]
    fn accepted_states_satisfy_every_rule(
        id in "[a-z0-9 _-]{0,12}",
        code in proptest::option::of("[0-9a-z]{0,11}"),
        code_type in proptest::option::of(prop_oneof![Just("ongoing".to_string()), Just("time_bound".to_string()), ".{0,10}"]),
        starts_at in proptest::option::of(time_string()),
        ends_at in proptest::option::of(time_string()),
    ) {
        let input = DesiredStateInput { access_code_id: id, code, code_type, starts_at, ends_at, ..DesiredStateInput::default() };
        match input.validate(now()) {
            Err(e) => prop_assert!(!e.rule.is_empty()),
            Ok(d) => {
                prop_assert!(!d.access_code_id.is_empty() && !d.access_code_id.contains(' '));
                if let Some(c) = &d.code {
                    prop_assert!((4..=9).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit()));
                }
                if let Schedule::TimeBound { starts_at, ends_at } = d.schedule {
                    prop_assert!(ends_at > starts_at && ends_at > now());
                }
            }
        }
    }

    #[test]
    fn arbitrary_json_never_panics(raw in ".{0,200}") {
        if let Ok(input) = serde_json::from_str::<DesiredStateInput>(&raw) {
            let _ = input.validate(now());
        }
    }
}
