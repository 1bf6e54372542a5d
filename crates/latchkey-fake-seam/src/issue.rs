//! Errors and warnings on an access code: kept with what the simulator needs
//! to know about them (when one clears by itself, whether an update clears
//! it), and serialized the way Seam's `access_code` schema has its `errors[]`
//! and `warnings[]`.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{Value, json};

use crate::{Issue, IssueKind, model::ts};

/// Error codes that Seam's schema files under the device, its bridge or its
/// connected account rather than under the access code, with the flags it
/// gives each. Every other error code is an access-code error
/// (`is_access_code_error: true`).
const NOT_ACCESS_CODE_ERRORS: &[(&str, &[&str])] = &[
    ("account_disconnected", &["is_connected_account_error", "is_device_error"]),
    ("salto_ks_subscription_limit_exceeded", &["is_connected_account_error", "is_device_error"]),
    // The schema gives a bridge error no `is_device_error`.
    ("bridge_disconnected", &["is_bridge_error", "is_connected_account_error"]),
    ("device_offline", &["is_device_error"]),
    ("device_removed", &["is_device_error"]),
    ("hub_disconnected", &["is_device_error"]),
    ("device_disconnected", &["is_device_error"]),
    ("empty_backup_access_code_pool", &["is_device_error"]),
    ("august_lock_not_authorized", &["is_device_error"]),
    ("august_lock_missing_bridge", &["is_device_error"]),
    ("ttlock_lock_not_paired_to_gateway", &["is_device_error"]),
    ("missing_device_credentials", &["is_device_error"]),
    ("auxiliary_heat_running", &["is_device_error"]),
    ("subscription_required", &["is_device_error"]),
    ("lockly_missing_wifi_bridge", &["is_device_error"]),
];

/// The flags an error with `error_code` carries.
fn error_flags(error_code: &str) -> &'static [&'static str] {
    NOT_ACCESS_CODE_ERRORS
        .iter()
        .find(|(code, _)| *code == error_code)
        .map_or(&["is_access_code_error"], |(_, flags)| flags)
}

/// `no_space_for_access_code_on_device` → "No space for access code on
/// device": Seam's messages are prose, and nothing should parse them.
fn in_words(code: &str) -> String {
    let words = code.replace('_', " ");
    let mut chars = words.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// One error or warning on a code.
pub(crate) struct CodeIssue {
    pub kind: IssueKind,
    /// `error_code` or `warning_code`.
    pub code: String,
    message: String,
    created_at: DateTime<Utc>,
    /// When it disappears by itself, if ever (a key in the wake index).
    pub clears_at: Option<DateTime<Utc>>,
    /// Whether it outlives an update.
    pub keep_on_update: bool,
}

impl CodeIssue {
    /// An error the simulated device raises itself; the next update clears it.
    pub fn error(code: &str, now: DateTime<Utc>) -> Self {
        Self::raised(IssueKind::Error, code, now)
    }

    /// A warning the simulated device raises itself; the next update clears it.
    pub fn warning(code: &str, now: DateTime<Utc>) -> Self {
        Self::raised(IssueKind::Warning, code, now)
    }

    fn raised(kind: IssueKind, code: &str, now: DateTime<Utc>) -> Self {
        Self {
            kind,
            code: code.to_string(),
            message: in_words(code),
            created_at: now,
            clears_at: None,
            keep_on_update: false,
        }
    }

    /// An issue a test puts on a code at `now`. A `clear_after` too long to
    /// add to `now` never clears.
    pub fn injected(issue: Issue, now: DateTime<Utc>) -> Self {
        Self {
            kind: issue.kind,
            message: issue.message.unwrap_or_else(|| in_words(&issue.code)),
            code: issue.code,
            created_at: issue.created_at.unwrap_or(now),
            clears_at: issue
                .clear_after
                .and_then(|d| ChronoDuration::from_std(d).ok())
                .and_then(|d| now.checked_add_signed(d)),
            keep_on_update: issue.keep_on_update,
        }
    }

    /// The entry of `errors[]` or `warnings[]`.
    pub fn to_json(&self) -> Value {
        match self.kind {
            IssueKind::Error => {
                let mut v =
                    json!({"error_code": self.code, "message": self.message, "created_at": ts(self.created_at)});
                for flag in error_flags(&self.code) {
                    v[*flag] = json!(true);
                }
                v
            }
            IssueKind::Warning => {
                json!({"warning_code": self.code, "message": self.message, "created_at": ts(self.created_at)})
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_the_flags_of_seams_schema() {
        let now = Utc::now();
        let flags = |code: &str| {
            let v = CodeIssue::error(code, now).to_json();
            let mut set: Vec<String> = v
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("is_"))
                .map(|(k, _)| k.clone())
                .collect();
            set.sort();
            set
        };
        assert_eq!(flags("no_space_for_access_code_on_device"), ["is_access_code_error"]);
        assert_eq!(flags("hub_disconnected"), ["is_device_error"]);
        assert_eq!(flags("account_disconnected"), ["is_connected_account_error", "is_device_error"]);
        assert_eq!(flags("bridge_disconnected"), ["is_bridge_error", "is_connected_account_error"]);
    }

    #[test]
    fn default_messages_are_the_code_in_words() {
        assert_eq!(in_words("hub_disconnected"), "Hub disconnected");
        assert_eq!(in_words(""), "");
    }
}
