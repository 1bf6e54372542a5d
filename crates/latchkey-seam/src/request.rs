//! The body of `POST /access_codes/update`, with every parameter of Seam's
//! current reference (seed 004). Absent parameters are not sent, so an update
//! changes only what it names.

use chrono::{DateTime, Utc};
use latchkey_core::CodeType;
use serde::Serialize;

/// An update of one access code. Only `access_code_id` is required. Its
/// `Debug` hides the PIN.
#[derive(Clone, Default, PartialEq, Serialize)]
pub struct UpdateAccessCode {
    /// The access code to update.
    pub access_code_id: String,
    /// New PIN: digits only, 4 to 9 of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// New name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `ongoing` converts a time-bound code to ongoing (seed 002, special case 2).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub code_type: Option<CodeType>,
    /// Start of validity; with `ends_at`, converts an ongoing code to time-bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    /// End of validity: in the future and after `starts_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    /// The device holding the code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Whether external modification of the code is allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_external_modification: Option<bool>,
    /// Same, under its newer name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_external_modification_allowed: Option<bool>,
    /// Whether Seam manages the code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_managed: Option<bool>,
    /// Whether it is an offline access code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_offline_access_code: Option<bool>,
    /// Whether an offline code works once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_one_time_use: Option<bool>,
    /// Maximum rounding adjustment (`1hour`, `1day`, `1h`, `1d`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_time_rounding: Option<String>,
    /// Use the lock's own scheduling for time-bound codes when it has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefer_native_scheduling: Option<bool>,
    /// Code length to pick when no `code` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_code_length: Option<u32>,
    /// Use Seam's backup code pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_backup_access_code_pool: Option<bool>,
    /// Use an offline access code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_offline_access_code: Option<bool>,
    /// Try even when the device is offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_for_offline_device: Option<bool>,
}

impl std::fmt::Debug for UpdateAccessCode {
    /// The parameters sent, as Seam would see them, with `code` as `[redacted]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = serde_json::to_value(self).map_err(|_| std::fmt::Error)?;
        if let Some(code) = shown.get_mut("code") {
            *code = serde_json::Value::from(crate::redact::REDACTED);
        }
        write!(f, "UpdateAccessCode {shown}")
    }
}

impl From<&latchkey_core::DesiredState> for UpdateAccessCode {
    /// The update that makes the code match `desired`: ongoing is sent as
    /// `type: ongoing` (seed 002), time-bound as the two dates (seed 000); an
    /// unchanged schedule sends neither.
    fn from(desired: &latchkey_core::DesiredState) -> Self {
        use latchkey_core::Schedule;
        let (code_type, starts_at, ends_at) = match desired.schedule {
            Schedule::Unchanged => (None, None, None),
            Schedule::Ongoing => (Some(CodeType::Ongoing), None, None),
            Schedule::TimeBound { starts_at, ends_at } => (None, Some(starts_at), Some(ends_at)),
        };
        let o = &desired.options;
        UpdateAccessCode {
            access_code_id: desired.access_code_id.clone(),
            code: desired.code.clone(),
            name: desired.name.clone(),
            code_type,
            starts_at,
            ends_at,
            device_id: desired.device_id.clone(),
            allow_external_modification: o.allow_external_modification,
            is_external_modification_allowed: o.is_external_modification_allowed,
            is_managed: o.is_managed,
            is_offline_access_code: o.is_offline_access_code,
            is_one_time_use: o.is_one_time_use,
            max_time_rounding: o.max_time_rounding.clone(),
            prefer_native_scheduling: o.prefer_native_scheduling,
            preferred_code_length: o.preferred_code_length,
            use_backup_access_code_pool: o.use_backup_access_code_pool,
            use_offline_access_code: o.use_offline_access_code,
            attempt_for_offline_device: o.attempt_for_offline_device,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_parameters_are_sent_under_seams_names() {
        let req = UpdateAccessCode {
            access_code_id: "ac".into(),
            code_type: Some(CodeType::Ongoing),
            preferred_code_length: Some(6),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({"access_code_id": "ac", "type": "ongoing", "preferred_code_length": 6})
        );
        let tb = UpdateAccessCode {
            access_code_id: "ac".into(),
            starts_at: Some("2025-02-01T16:00:00Z".parse().unwrap()),
            ends_at: Some("2025-02-22T12:00:00Z".parse().unwrap()),
            ..Default::default()
        };
        let v = serde_json::to_value(&tb).unwrap();
        assert_eq!(v["starts_at"], "2025-02-01T16:00:00Z");
        assert!(v.get("type").is_none(), "dates alone convert to time-bound (seed 000, special case 1)");
    }

    #[test]
    fn debug_hides_the_pin() {
        let req = UpdateAccessCode { access_code_id: "ac".into(), code: Some("975310".into()), ..Default::default() };
        let shown = format!("{req:?}");
        assert!(!shown.contains("975310") && shown.contains("[redacted]") && shown.contains("\"ac\""), "{shown}");
    }

    #[test]
    fn a_desired_state_maps_to_the_update_seams_guide_describes() {
        let now = "2026-01-01T00:00:00Z".parse().unwrap();
        let parse = |v: serde_json::Value| {
            serde_json::from_value::<latchkey_core::DesiredStateInput>(v).unwrap().validate(now).unwrap()
        };
        let ongoing = UpdateAccessCode::from(&parse(
            serde_json::json!({"access_code_id": "a", "type": "ongoing", "code": "1234"}),
        ));
        assert_eq!(
            (ongoing.code_type, ongoing.starts_at, ongoing.code.as_deref()),
            (Some(CodeType::Ongoing), None, Some("1234"))
        );
        let tb = UpdateAccessCode::from(&parse(
            serde_json::json!({"access_code_id": "a", "starts_at": "2026-02-01T00:00:00Z", "ends_at": "2026-02-02T00:00:00Z", "is_one_time_use": true}),
        ));
        assert_eq!(tb.code_type, None, "dates alone convert to time-bound");
        assert!(tb.starts_at.is_some() && tb.ends_at.is_some());
        assert_eq!(tb.is_one_time_use, Some(true));
    }
}
