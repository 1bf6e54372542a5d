//! The desired state of an access code, as a producer asks for it, parsed once
//! into a form that cannot be wrong: a `DesiredState` exists only if every rule
//! holds, and a refusal names the field and the rule.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::observed::CodeType;

/// What a producer sends: every field optional but `access_code_id`, times as
/// ISO 8601 strings. Unknown fields are refused, so a typo is not silently lost.
/// `Debug` shows no PIN.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    as = DesiredState,
    description = "The desired state of an access code: every field optional but access_code_id (left out, the field stays as it is on Seam); unknown fields are refused. Ongoing: type ongoing. Time-bound: starts_at and ends_at (type time_bound, or left out). Cancelled: absent true, with only access_code_id and device_id."
)]
pub struct DesiredStateInput {
    /// Seam's id of the access code to reconcile (required in a batch; a
    /// `PUT` takes it from the path).
    #[schema(required = false)]
    pub access_code_id: String,
    /// The PIN: digits only, 4 to 9 of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9]{4,9}$")]
    pub code: Option<String>,
    /// The code's name on Seam.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `ongoing` or `time_bound`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<CodeType>)]
    pub code_type: Option<String>,
    /// Start of validity, ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    /// End of validity, ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    /// The device holding the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// `true`: the code must not exist (a cancelled booking). Only
    /// `access_code_id` and `device_id` may come with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absent: Option<bool>,
    /// The other update parameters of Seam's reference, passed through.
    #[serde(flatten)]
    pub options: UpdateOptions,
}

/// Seam's other update parameters (seed 004), sent as given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpdateOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_external_modification: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_external_modification_allowed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_managed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_offline_access_code: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_one_time_use: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time_rounding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_native_scheduling: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_code_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_backup_access_code_pool: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_offline_access_code: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_for_offline_device: Option<bool>,
}

impl UpdateOptions {
    /// The first parameter given, by Seam's name.
    fn first_given(&self) -> Option<&'static str> {
        let o = self;
        [
            ("allow_external_modification", o.allow_external_modification.is_some()),
            ("is_external_modification_allowed", o.is_external_modification_allowed.is_some()),
            ("is_managed", o.is_managed.is_some()),
            ("is_offline_access_code", o.is_offline_access_code.is_some()),
            ("is_one_time_use", o.is_one_time_use.is_some()),
            ("max_time_rounding", o.max_time_rounding.is_some()),
            ("prefer_native_scheduling", o.prefer_native_scheduling.is_some()),
            ("preferred_code_length", o.preferred_code_length.is_some()),
            ("use_backup_access_code_pool", o.use_backup_access_code_pool.is_some()),
            ("use_offline_access_code", o.use_offline_access_code.is_some()),
            ("attempt_for_offline_device", o.attempt_for_offline_device.is_some()),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    }
}

/// When the code should work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Schedule {
    /// Neither `type` nor dates given: leave the code's schedule as it is.
    Unchanged,
    /// Always (converts a time-bound code: seed 002, special case 2).
    Ongoing,
    /// Between these times (converts an ongoing code: seed 000, special case 1).
    TimeBound {
        /// Start of validity.
        starts_at: DateTime<Utc>,
        /// End of validity, after `starts_at`.
        ends_at: DateTime<Utc>,
    },
}

/// A desired state that satisfies every rule. `Debug` shows no PIN.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Seam's id of the access code.
    pub access_code_id: String,
    /// The PIN, if it should change.
    pub code: Option<String>,
    /// The name, if it should change.
    pub name: Option<String>,
    /// The schedule.
    pub schedule: Schedule,
    /// The device, if given.
    pub device_id: Option<String>,
    /// The code must not exist: delete it (and nothing else is set).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub absent: bool,
    /// Other update parameters.
    pub options: UpdateOptions,
}

/// How `Debug` shows a PIN: whether there is one, never what it is.
pub(crate) fn pin_shown(code: &Option<String>) -> Option<&'static str> {
    code.as_ref().map(|_| "[redacted]")
}

impl fmt::Debug for DesiredStateInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DesiredStateInput")
            .field("access_code_id", &self.access_code_id)
            .field("code", &pin_shown(&self.code))
            .field("name", &self.name)
            .field("code_type", &self.code_type)
            .field("starts_at", &self.starts_at)
            .field("ends_at", &self.ends_at)
            .field("device_id", &self.device_id)
            .field("absent", &self.absent)
            .field("options", &self.options)
            .finish()
    }
}

impl fmt::Debug for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DesiredState")
            .field("access_code_id", &self.access_code_id)
            .field("code", &pin_shown(&self.code))
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("device_id", &self.device_id)
            .field("absent", &self.absent)
            .field("options", &self.options)
            .finish()
    }
}

/// Whether `c` is a bidirectional embedding, override or isolate: text after
/// it shows in another order than it is written.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` is invisible or reorders text around it: format characters
/// (zero-width spaces and joiners, the byte order mark, soft hyphen) and the
/// bidirectional embeddings, overrides and isolates. An id holding one can
/// look exactly like another id in a log line or on a page.
pub fn is_invisible(c: char) -> bool {
    is_bidi_control(c)
        || matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{E0000}'..='\u{E0FFF}')
}

/// An id from outside, safe to put in a message: at most 64 characters, and
/// every control or invisible character escaped (`\u{202e}`).
pub fn shown(id: &str) -> String {
    let mut out = String::new();
    for (i, c) in id.chars().enumerate() {
        if i == 64 {
            out.push('…');
            break;
        }
        if c.is_control() || is_invisible(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The rule of an id (an access code's, a device's, a job's), or `None` when
/// `id` keeps it: 1 to 200 bytes, no whitespace, control or invisible
/// characters (see [`is_invisible`]).
pub fn id_rule_broken(id: &str) -> Option<&'static str> {
    if id.is_empty() || id.len() > 200 {
        Some("must be 1 to 200 bytes")
    } else if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain whitespace or control characters")
    } else if id.chars().any(is_invisible) {
        Some("must not contain invisible or text-direction characters (zero-width, bidirectional overrides)")
    } else {
        None
    }
}

/// Why a desired state was refused: the field and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {rule}")]
pub struct InvalidDesiredState {
    /// The offending field.
    pub field: &'static str,
    /// The rule, in words.
    pub rule: String,
}

fn invalid(field: &'static str, rule: impl Into<String>) -> InvalidDesiredState {
    InvalidDesiredState { field, rule: rule.into() }
}

fn parse_time(field: &'static str, value: &str) -> Result<DateTime<Utc>, InvalidDesiredState> {
    DateTime::parse_from_rfc3339(value.trim()).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        invalid(
            field,
            format!("{value:?} is not an ISO 8601 date-time with an offset, e.g. 2025-02-01T16:00:00Z ({e})"),
        )
    })
}

impl DesiredStateInput {
    /// Checks every rule and returns the desired state, or the first broken rule.
    /// `now` decides whether `ends_at` is in the future.
    pub fn validate(self, now: DateTime<Utc>) -> Result<DesiredState, InvalidDesiredState> {
        let id = self.access_code_id.trim();
        if let Some(rule) = id_rule_broken(id) {
            return Err(invalid("access_code_id", rule));
        }
        if let Some(device) = &self.device_id
            && let Some(rule) = id_rule_broken(device)
        {
            return Err(invalid("device_id", rule));
        }
        let absent = self.absent == Some(true);
        if absent {
            let named = [
                ("code", self.code.is_some()),
                ("name", self.name.is_some()),
                ("type", self.code_type.is_some()),
                ("starts_at", self.starts_at.is_some()),
                ("ends_at", self.ends_at.is_some()),
            ];
            let option = self.options.first_given().map(|f| (f, true));
            if let Some((field, _)) = named.into_iter().find(|(_, given)| *given).or(option) {
                return Err(invalid(
                    field,
                    "cannot be combined with \"absent\": true (an absent code has no other properties)",
                ));
            }
        }
        if let Some(code) = &self.code
            && (!(4..=9).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()))
        {
            // (the value is not repeated: it may be close to a guest's PIN)
            return Err(invalid("code", "must be 4 to 9 digits"));
        }
        if let Some(name) = &self.name {
            if name.chars().count() > 200 {
                return Err(invalid("name", "must be at most 200 characters"));
            }
            if name.chars().any(|c| c.is_control() || is_bidi_control(c)) {
                return Err(invalid(
                    "name",
                    "must not contain control characters or bidirectional overrides (U+202A to U+202E, U+2066 to U+2069)",
                ));
            }
        }
        let code_type = match self.code_type.as_deref() {
            None => None,
            Some("ongoing") => Some(CodeType::Ongoing),
            Some("time_bound") => Some(CodeType::TimeBound),
            Some(other) => {
                return Err(invalid("type", format!("{other:?} is not one of \"ongoing\", \"time_bound\"")));
            }
        };
        let starts_at = self.starts_at.as_deref().map(|v| parse_time("starts_at", v)).transpose()?;
        let ends_at = self.ends_at.as_deref().map(|v| parse_time("ends_at", v)).transpose()?;
        let schedule = match (code_type, starts_at, ends_at) {
            (Some(CodeType::Ongoing), None, None) => Schedule::Ongoing,
            (Some(CodeType::Ongoing), _, _) => {
                return Err(invalid("type", "\"ongoing\" cannot be combined with starts_at or ends_at"));
            }
            (_, Some(starts_at), Some(ends_at)) => {
                if ends_at <= starts_at {
                    return Err(invalid("ends_at", "must be after starts_at"));
                }
                if ends_at <= now {
                    return Err(invalid("ends_at", "must be in the future"));
                }
                Schedule::TimeBound { starts_at, ends_at }
            }
            (_, Some(_), None) => {
                return Err(invalid("ends_at", "is required with starts_at (both or neither)"));
            }
            (_, None, Some(_)) => {
                return Err(invalid("starts_at", "is required with ends_at (both or neither)"));
            }
            (Some(CodeType::TimeBound), None, None) => {
                return Err(invalid("type", "\"time_bound\" needs starts_at and ends_at"));
            }
            (None, None, None) => Schedule::Unchanged,
        };
        if let Some(r) = &self.options.max_time_rounding
            && !["1hour", "1day", "1h", "1d"].contains(&r.as_str())
        {
            return Err(invalid("max_time_rounding", format!("{r:?} is not one of 1hour, 1day, 1h, 1d")));
        }
        Ok(DesiredState {
            access_code_id: id.to_string(),
            code: self.code,
            name: self.name,
            schedule,
            device_id: self.device_id,
            absent,
            options: self.options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn input(json: &str) -> DesiredStateInput {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_full_time_bound_state_is_accepted() {
        let d = input(r#"{"access_code_id":"ac1","code":"4321","name":"Guest","starts_at":"2026-02-01T16:00:00Z","ends_at":"2026-02-22T12:00:00+01:00","is_one_time_use":false}"#)
            .validate(now())
            .unwrap();
        assert_eq!(d.code.as_deref(), Some("4321"));
        let Schedule::TimeBound { starts_at, ends_at } = d.schedule else { panic!("{:?}", d.schedule) };
        assert_eq!(starts_at.to_rfc3339(), "2026-02-01T16:00:00+00:00");
        assert_eq!(ends_at.to_rfc3339(), "2026-02-22T11:00:00+00:00");
        assert_eq!(d.options.is_one_time_use, Some(false));
    }

    #[test]
    fn each_broken_rule_is_named_with_its_field() {
        let cases = [
            (r#"{"access_code_id":""}"#, "access_code_id"),
            (r#"{"access_code_id":"a","code":"12a4"}"#, "code"),
            (r#"{"access_code_id":"a","code":"123"}"#, "code"),
            (r#"{"access_code_id":"a","code":"1234567890"}"#, "code"),
            (r#"{"access_code_id":"a","type":"weekly"}"#, "type"),
            (
                r#"{"access_code_id":"a","type":"ongoing","starts_at":"2026-02-01T00:00:00Z","ends_at":"2026-02-02T00:00:00Z"}"#,
                "type",
            ),
            (r#"{"access_code_id":"a","type":"time_bound"}"#, "type"),
            (
                r#"{"access_code_id":"a","starts_at":"2026-02-02T00:00:00Z","ends_at":"2026-02-01T00:00:00Z"}"#,
                "ends_at",
            ),
            (
                r#"{"access_code_id":"a","starts_at":"2025-02-01T00:00:00Z","ends_at":"2025-02-02T00:00:00Z"}"#,
                "ends_at",
            ),
            (r#"{"access_code_id":"a","starts_at":"tomorrow","ends_at":"2026-02-02T00:00:00Z"}"#, "starts_at"),
            (r#"{"access_code_id":"a","starts_at":"2026-02-01T00:00:00Z"}"#, "ends_at"),
            (r#"{"access_code_id":"a","ends_at":"2026-02-01T00:00:00Z"}"#, "starts_at"),
            (r#"{"access_code_id":"a","max_time_rounding":"1week"}"#, "max_time_rounding"),
        ];
        for (json, field) in cases {
            let err = input(json).validate(now()).unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
        }
    }

    #[test]
    fn hostile_ids_names_and_devices_are_refused_by_field() {
        let huge = "d".repeat(40 << 20);
        let cases = [
            (format!(r#"{{"access_code_id":"a","device_id":"{huge}"}}"#), "device_id", "1 to 200 bytes"),
            (r#"{"access_code_id":"a","device_id":""}"#.to_string(), "device_id", "1 to 200 bytes"),
            (r#"{"access_code_id":"a","device_id":"d 1"}"#.to_string(), "device_id", "whitespace"),
            (r#"{"access_code_id":"ac\u200b1"}"#.to_string(), "access_code_id", "invisible"),
            (r#"{"access_code_id":"ac\u202e1"}"#.to_string(), "access_code_id", "invisible"),
            (r#"{"access_code_id":"ac1","device_id":"\ufeffd1"}"#.to_string(), "device_id", "invisible"),
            (r#"{"access_code_id":"a","name":"Guest\u0007"}"#.to_string(), "name", "control"),
            (r#"{"access_code_id":"a","name":"Guest\u202eevil"}"#.to_string(), "name", "bidirectional"),
            (r#"{"access_code_id":"a","name":"Guest\ninjected log line"}"#.to_string(), "name", "control"),
        ];
        for (json, field, rule) in cases {
            let err = input(&json).validate(now()).unwrap_err();
            assert_eq!(err.field, field, "{}: {err}", &json[..json.len().min(80)]);
            assert!(err.rule.contains(rule), "{err}");
        }
        // Names people really use stay accepted: accents, other scripts, emoji joined by ZWJ.
        for name in ["Zoë & Anaïs", "שלום", "👨\u{200d}👩\u{200d}👧 family"] {
            let json = serde_json::json!({"access_code_id": "a", "name": name}).to_string();
            assert!(input(&json).validate(now()).is_ok(), "{name}");
        }
    }

    #[test]
    fn no_pin_in_a_refusal_or_in_debug() {
        let err = input(r#"{"access_code_id":"a","code":"98765432109"}"#).validate(now()).unwrap_err();
        assert!(!err.to_string().contains("98765"), "{err}");
        let raw = input(r#"{"access_code_id":"a","code":"918273"}"#);
        assert!(!format!("{raw:?}").contains("918273"));
        assert!(!format!("{:?}", raw.validate(now()).unwrap()).contains("918273"));
    }

    #[test]
    fn absence_is_a_desired_state_of_its_own() {
        let d = input(r#"{"access_code_id":"a","absent":true,"device_id":"d1"}"#).validate(now()).unwrap();
        assert!(d.absent && d.code.is_none() && d.schedule == Schedule::Unchanged);
        assert_eq!(d.device_id.as_deref(), Some("d1"));
        assert!(!input(r#"{"access_code_id":"a","absent":false,"code":"1234"}"#).validate(now()).unwrap().absent);
        for (json, field) in [
            (r#"{"access_code_id":"a","absent":true,"code":"1234"}"#, "code"),
            (
                r#"{"access_code_id":"a","absent":true,"starts_at":"2026-02-01T00:00:00Z","ends_at":"2026-02-02T00:00:00Z"}"#,
                "starts_at",
            ),
            (r#"{"access_code_id":"a","absent":true,"is_one_time_use":true}"#, "is_one_time_use"),
        ] {
            let err = input(json).validate(now()).unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
            assert!(err.rule.contains("absent"), "{err}");
        }
        // A desired state stored before `absent` existed still reads.
        let old: DesiredState =
            serde_json::from_str(r#"{"access_code_id":"a","code":null,"name":null,"schedule":{"type":"unchanged"},"device_id":null,"options":{}}"#)
                .unwrap();
        assert!(!old.absent);
    }

    #[test]
    fn unknown_fields_are_refused_not_dropped() {
        let err = serde_json::from_str::<DesiredStateInput>(r#"{"access_code_id":"a","start_at":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("start_at"), "{err}");
    }

    #[test]
    fn type_alone_or_nothing_set_the_schedule() {
        assert_eq!(
            input(r#"{"access_code_id":"a","type":"ongoing"}"#).validate(now()).unwrap().schedule,
            Schedule::Ongoing
        );
        assert_eq!(
            input(r#"{"access_code_id":"a","name":"x"}"#).validate(now()).unwrap().schedule,
            Schedule::Unchanged
        );
    }
}
