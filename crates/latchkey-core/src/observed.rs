//! The observed state of an access code and of an action attempt, as Seam
//! reports them. The statuses ([`CodeStatus`], [`AttemptStatus`]) keep an
//! `Unknown` variant so that a value Seam adds later is seen, not a parse
//! failure. [`CodeType`] has none yet (the desired-state parser matches it
//! exhaustively); the Seam client reads a type it does not know as a code
//! whose status is `Unknown`, which is never taken for a success.
//! An [`AccessCode`]'s `Debug` never shows its PIN.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::issue::IssueKind;

/// Where an access code is in its life on the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CodeStatus {
    /// Being programmed onto the lock.
    Setting,
    /// On the lock and usable.
    Set,
    /// Not on the lock (time-bound codes before `starts_at`, or after removal).
    Unset,
    /// Being removed from the lock.
    Removing,
    /// Seam does not know, or a value this version does not know.
    #[serde(other)]
    Unknown,
}

impl CodeStatus {
    /// Seam's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeStatus::Setting => "setting",
            CodeStatus::Set => "set",
            CodeStatus::Unset => "unset",
            CodeStatus::Removing => "removing",
            CodeStatus::Unknown => "unknown",
        }
    }
}

/// Whether a code works always or only between `starts_at` and `ends_at`.
/// Exactly Seam's two values, which is also what a desired state may ask for;
/// see the module docs for a type Seam adds later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CodeType {
    /// Works until removed.
    Ongoing,
    /// Works between `starts_at` and `ends_at`.
    TimeBound,
}

impl CodeType {
    /// Seam's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeType::Ongoing => "ongoing",
            CodeType::TimeBound => "time_bound",
        }
    }
}

/// An entry of an access code's `errors` or `warnings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CodeIssue {
    /// `error_code` or `warning_code`, e.g. `failed_to_set_on_device`.
    pub code: String,
    /// Seam's human-readable message.
    pub message: String,
    /// When Seam raised it; an issue older than the update being verified is
    /// not about that update. Absent in older API versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// An access code as Seam last reported it. Its `Debug` shows `code` (the
/// PIN) as `[redacted]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessCode {
    /// Seam's id of the access code.
    pub access_code_id: String,
    /// The lock it belongs to.
    pub device_id: String,
    /// Its name on Seam (may be shown differently on the lock).
    pub name: Option<String>,
    /// The PIN; null while Seam waits for one to be assigned.
    pub code: Option<String>,
    /// Ongoing or time-bound.
    pub code_type: CodeType,
    /// Where it is in its life on the lock.
    pub status: CodeStatus,
    /// Start of validity (time-bound codes).
    pub starts_at: Option<DateTime<Utc>>,
    /// End of validity (time-bound codes).
    pub ends_at: Option<DateTime<Utc>>,
    /// Anything wrong with it: any entry means it is not healthy.
    pub errors: Vec<CodeIssue>,
    /// Things to watch, e.g. `delay_in_setting_on_device`.
    pub warnings: Vec<CodeIssue>,
    /// A time-bound code loaded onto the lock ahead of `starts_at`.
    #[serde(default)]
    pub is_scheduled_on_device: Option<bool>,
    /// An offline (algorithmic) code, whose times Seam rounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_offline_access_code: Option<bool>,
}

impl std::fmt::Debug for AccessCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessCode")
            .field("access_code_id", &self.access_code_id)
            .field("device_id", &self.device_id)
            .field("name", &self.name)
            .field("code", &crate::desired::pin_shown(&self.code))
            .field("code_type", &self.code_type)
            .field("status", &self.status)
            .field("starts_at", &self.starts_at)
            .field("ends_at", &self.ends_at)
            .field("errors", &self.errors)
            .field("warnings", &self.warnings)
            .field("is_scheduled_on_device", &self.is_scheduled_on_device)
            .field("is_offline_access_code", &self.is_offline_access_code)
            .finish()
    }
}

impl AccessCode {
    /// Whether Seam reports a warning with this code.
    pub fn has_warning(&self, code: &str) -> bool {
        self.warnings.iter().any(|w| w.code == code)
    }

    /// What Seam shows of it, in a few words and without the PIN: status,
    /// type, and the codes of its errors and warnings.
    pub fn summary(&self) -> String {
        let mut s = format!("{} {}", self.code_type.as_str(), self.status.as_str());
        let list = |issues: &[CodeIssue]| issues.iter().map(|i| i.code.as_str()).collect::<Vec<_>>().join(", ");
        if !self.errors.is_empty() {
            s.push_str(&format!("; errors {}", list(&self.errors)));
        }
        if !self.warnings.is_empty() {
            s.push_str(&format!("; warnings {}", list(&self.warnings)));
        }
        s
    }

    /// Every error and warning with its kind, errors first.
    pub fn issues(&self) -> impl Iterator<Item = (IssueKind, &CodeIssue)> {
        let errors = self.errors.iter().map(|e| (IssueKind::Error, e));
        errors.chain(self.warnings.iter().map(|w| (IssueKind::Warning, w)))
    }
}

/// Where an action attempt (Seam's handle on an asynchronous change) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Still running.
    Pending,
    /// Done.
    Success,
    /// Failed; see the attempt's error.
    Error,
    /// A value this version does not know.
    #[serde(other)]
    Unknown,
}

/// An action attempt, e.g. the `UPDATE_ACCESS_CODE` an update starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionAttempt {
    /// Seam's id of the attempt.
    pub action_attempt_id: String,
    /// E.g. `UPDATE_ACCESS_CODE`.
    pub action_type: String,
    /// Pending, success or error.
    pub status: AttemptStatus,
    /// Seam's error type and message when it failed.
    pub error: Option<CodeIssue>,
}

#[cfg(test)]
impl AccessCode {
    /// A code for tests: `ac` on device `d`, PIN 1234, named Guest, ongoing.
    pub(crate) fn sample(status: CodeStatus) -> Self {
        AccessCode {
            access_code_id: "ac".into(),
            device_id: "d".into(),
            name: Some("Guest".into()),
            code: Some("1234".into()),
            code_type: CodeType::Ongoing,
            status,
            starts_at: None,
            ends_at: None,
            errors: vec![],
            warnings: vec![],
            is_scheduled_on_device: None,
            is_offline_access_code: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_status_values_are_kept_as_unknown() {
        let s: CodeStatus = serde_json::from_str("\"melting\"").unwrap();
        assert_eq!(s, CodeStatus::Unknown);
        let a: AttemptStatus = serde_json::from_str("\"later\"").unwrap();
        assert_eq!(a, AttemptStatus::Unknown);
    }

    #[test]
    fn known_values_keep_their_names_both_ways() {
        for s in [CodeStatus::Setting, CodeStatus::Set, CodeStatus::Unset, CodeStatus::Removing, CodeStatus::Unknown] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<CodeStatus>(&json).unwrap(), s);
        }
        for t in [CodeType::Ongoing, CodeType::TimeBound] {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(serde_json::from_str::<CodeType>(&json).unwrap(), t);
        }
        for (a, name) in
            [(AttemptStatus::Pending, "pending"), (AttemptStatus::Success, "success"), (AttemptStatus::Error, "error")]
        {
            assert_eq!(serde_json::from_str::<AttemptStatus>(&format!("\"{name}\"")).unwrap(), a);
        }
    }

    #[test]
    fn debug_of_an_access_code_hides_the_pin() {
        let code = AccessCode {
            access_code_id: "ac_1".into(),
            code: Some("86420".into()),
            ..AccessCode::sample(CodeStatus::Set)
        };
        let shown = format!("{code:?} {code:#?}");
        assert!(!shown.contains("86420"), "{shown}");
        assert!(shown.contains("[redacted]") && shown.contains("ac_1") && shown.contains("Guest"), "{shown}");
        let none = AccessCode { code: None, ..code };
        assert!(format!("{none:?}").contains("code: None"));
    }
}
