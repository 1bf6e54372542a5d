//! Seam's JSON, private to this crate. These structs follow Seam's OpenAPI
//! document (`shared/seam-openapi-extract.json`) and turn into the core's
//! types at the edge. Unknown fields are ignored; fields Seam has not always
//! sent default to empty; a status Seam adds later is the core's `Unknown`,
//! and so, in effect, is a code `type` it adds later (see [`code_type`]).
//! None of these structs derives `Debug`: an access code's holds its PIN.

use chrono::{DateTime, Utc};
use latchkey_core::{AccessCode, ActionAttempt, AttemptStatus, CodeIssue, CodeStatus, CodeType};
use serde::Deserialize;

/// One of Seam's events, as `/events/list` returns it (and webhooks carry).
/// Only what latchkey acts on; every other field is ignored.
#[derive(Deserialize)]
pub(crate) struct EventWire {
    pub event_id: String,
    pub event_type: String,
    #[serde(default)]
    pub access_code_id: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
pub(crate) struct ListEventsResponse {
    pub events: Vec<EventWire>,
}

#[derive(Deserialize)]
pub(crate) struct AccessCodeWire {
    access_code_id: String,
    device_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    code: Option<String>,
    /// Read as text so that a type Seam adds later does not make the whole
    /// answer unreadable; see [`code_type`].
    #[serde(rename = "type")]
    code_type: String,
    status: CodeStatus,
    #[serde(default)]
    starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    errors: Vec<ErrorWire>,
    #[serde(default)]
    warnings: Vec<WarningWire>,
    #[serde(default)]
    is_scheduled_on_device: Option<bool>,
    #[serde(default)]
    is_offline_access_code: Option<bool>,
}

#[derive(Deserialize)]
struct ErrorWire {
    error_code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct WarningWire {
    warning_code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
pub(crate) struct ActionAttemptWire {
    action_attempt_id: String,
    #[serde(default)]
    action_type: String,
    status: AttemptStatus,
    #[serde(default)]
    error: Option<AttemptErrorWire>,
}

#[derive(Deserialize)]
struct AttemptErrorWire {
    #[serde(rename = "type")]
    error_type: String,
    #[serde(default)]
    message: String,
}

/// `/access_codes/update`: `{ok}`, `{action_attempt, ok}` or `{action_attempt, access_code, ok}`
/// depending on the API version.
#[derive(Deserialize)]
pub(crate) struct UpdateResponse {
    #[serde(default)]
    pub action_attempt: Option<ActionAttemptWire>,
    #[serde(default)]
    pub access_code: Option<AccessCodeWire>,
}

/// `/access_codes/delete`: `{action_attempt, ok}` (a `DELETE_ACCESS_CODE`
/// attempt), or `{ok}`.
#[derive(Deserialize)]
pub(crate) struct DeleteResponse {
    #[serde(default)]
    pub action_attempt: Option<ActionAttemptWire>,
}

#[derive(Deserialize)]
pub(crate) struct GetAccessCodeResponse {
    pub access_code: AccessCodeWire,
}

#[derive(Deserialize)]
pub(crate) struct GetActionAttemptResponse {
    pub action_attempt: ActionAttemptWire,
}

/// The core's type and status for Seam's `type` and `status`.
///
/// The core's `CodeType` has no `Unknown` yet, so a type this version does not
/// know (Seam may add one) is read as what its dates suggest (time-bound with
/// both `starts_at` and `ends_at`, ongoing otherwise) with the status `Unknown`:
/// the answer stays readable (a removal can still be watched to its end), and
/// verification never takes the code for a success, since only a `set` code
/// succeeds. Once `CodeType` has an `Unknown` variant this becomes a plain
/// field again.
fn code_type(w: &AccessCodeWire) -> (CodeType, CodeStatus) {
    match w.code_type.as_str() {
        "ongoing" => (CodeType::Ongoing, w.status),
        "time_bound" => (CodeType::TimeBound, w.status),
        other => {
            tracing::warn!(
                access_code_id = %w.access_code_id,
                seam_type = other,
                "Seam reports an access code type this version does not know; its status is taken as unknown"
            );
            let dated = w.starts_at.is_some() && w.ends_at.is_some();
            (if dated { CodeType::TimeBound } else { CodeType::Ongoing }, CodeStatus::Unknown)
        }
    }
}

impl From<AccessCodeWire> for AccessCode {
    fn from(w: AccessCodeWire) -> Self {
        let (code_type, status) = code_type(&w);
        AccessCode {
            access_code_id: w.access_code_id,
            device_id: w.device_id,
            name: w.name,
            code: w.code,
            code_type,
            status,
            starts_at: w.starts_at,
            ends_at: w.ends_at,
            errors: w
                .errors
                .into_iter()
                .map(|e| CodeIssue { code: e.error_code, message: e.message, created_at: e.created_at })
                .collect(),
            warnings: w
                .warnings
                .into_iter()
                .map(|w| CodeIssue { code: w.warning_code, message: w.message, created_at: w.created_at })
                .collect(),
            is_scheduled_on_device: w.is_scheduled_on_device,
            is_offline_access_code: w.is_offline_access_code,
        }
    }
}

impl From<ActionAttemptWire> for ActionAttempt {
    fn from(w: ActionAttemptWire) -> Self {
        ActionAttempt {
            action_attempt_id: w.action_attempt_id,
            action_type: w.action_type,
            status: w.status,
            error: w.error.map(|e| CodeIssue { code: e.error_type, message: e.message, created_at: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shapes copied from Seam's documentation (seeds 000, 002, 003).
    #[test]
    fn every_update_response_shape_seam_has_had_parses() {
        let ok_only: UpdateResponse = serde_json::from_str(r#"{"ok": true}"#).unwrap();
        assert!(ok_only.action_attempt.is_none() && ok_only.access_code.is_none());

        let with_attempt: UpdateResponse = serde_json::from_str(
            r#"{"action_attempt":{"status":"pending","action_type":"UPDATE_ACCESS_CODE","action_attempt_id":"bbb8a07d-a91d-4564-b002-8172f7cdadc4","result":null,"error":null},"ok":true}"#,
        )
        .unwrap();
        let attempt = ActionAttempt::from(with_attempt.action_attempt.unwrap());
        assert_eq!(attempt.status, AttemptStatus::Pending);

        let both: UpdateResponse = serde_json::from_str(
            r#"{"action_attempt":{"status":"pending","action_type":"UPDATE_ACCESS_CODE","action_attempt_id":"UUID-1","result":null,"error":null},
                "access_code":{"access_code_id":"00000000-0000-0000-0000-000000000000","device_id":"11111111-1111-1111-1111-111111111111","name":"New Name","code":"1111","common_code_key":null,"type":"ongoing","status":"setting","created_at":"2023-01-01T00:00:00Z","errors":[],"warnings":[],"is_managed":true},
                "ok":true}"#,
        )
        .unwrap();
        let code = AccessCode::from(both.access_code.unwrap());
        assert_eq!((code.status, code.code.as_deref()), (CodeStatus::Setting, Some("1111")));
    }

    #[test]
    fn a_time_bound_code_with_errors_and_warnings_parses() {
        let w: AccessCodeWire = serde_json::from_str(
            r#"{"access_code_id":"a","device_id":"d","name":null,"code":null,"type":"time_bound","status":"unset",
                "starts_at":"2025-02-01T16:00:00.000Z","ends_at":"2025-02-22T12:00:00.000Z","is_scheduled_on_device":true,
                "errors":[{"error_code":"device_offline","message":"offline","is_device_error":true,"created_at":"2025-01-01T00:00:00Z"}],
                "warnings":[{"warning_code":"delay_in_setting_on_device","message":"slow"}],"some_future_field":{"x":1}}"#,
        )
        .unwrap();
        let c = AccessCode::from(w);
        assert_eq!(c.code_type, CodeType::TimeBound);
        assert_eq!(c.errors[0].code, "device_offline");
        assert_eq!(c.errors[0].created_at.unwrap().to_rfc3339(), "2025-01-01T00:00:00+00:00");
        assert!(c.has_warning("delay_in_setting_on_device"));
        assert_eq!(c.starts_at.unwrap().to_rfc3339(), "2025-02-01T16:00:00+00:00");
    }

    #[test]
    fn a_code_type_seam_adds_later_is_read_with_an_unknown_status() {
        let parse = |json: &str| AccessCode::from(serde_json::from_str::<AccessCodeWire>(json).unwrap());
        let undated = parse(
            r#"{"access_code_id":"a","device_id":"d","code":"1234","type":"recurring","status":"set","errors":[],"warnings":[]}"#,
        );
        assert_eq!((undated.code_type, undated.status), (CodeType::Ongoing, CodeStatus::Unknown));
        assert_eq!(undated.code.as_deref(), Some("1234"), "the rest of the code is read as usual");
        let dated = parse(
            r#"{"access_code_id":"a","device_id":"d","type":"weekly","status":"set",
                "starts_at":"2025-02-01T16:00:00Z","ends_at":"2025-02-22T12:00:00Z"}"#,
        );
        assert_eq!((dated.code_type, dated.status), (CodeType::TimeBound, CodeStatus::Unknown));
        let known = parse(r#"{"access_code_id":"a","device_id":"d","type":"time_bound","status":"set"}"#);
        assert_eq!(
            (known.code_type, known.status),
            (CodeType::TimeBound, CodeStatus::Set),
            "known types are unchanged"
        );
        let new_status = parse(r#"{"access_code_id":"a","device_id":"d","type":"ongoing","status":"melting"}"#);
        assert_eq!((new_status.code_type, new_status.status), (CodeType::Ongoing, CodeStatus::Unknown));
    }

    #[test]
    fn an_action_attempt_status_seam_adds_later_is_unknown() {
        let w: ActionAttemptWire =
            serde_json::from_str(r#"{"action_attempt_id":"x","action_type":"UPDATE_ACCESS_CODE","status":"queued"}"#)
                .unwrap();
        assert_eq!(ActionAttempt::from(w).status, AttemptStatus::Unknown);
    }
}
