//! What each of Seam's access-code `errors` and `warnings` means for
//! verification, in one table ([`TABLE`]). Seam's guide says only that any
//! entry needs attention; the table says which attention: wait, fail, apply
//! again, or record and carry on. Codes are from Seam's OpenAPI document
//! (`shared/seam-openapi-extract.json`, schema `access_code`); a test checks
//! that every code there has a row.

use serde::Serialize;

/// Whether an entry came from a code's `errors` or its `warnings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// An entry of `errors`.
    Error,
    /// An entry of `warnings`.
    Warning,
}

/// What an issue on the code means for the reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueEffect {
    /// The device, its hub, bridge or account is out of reach, or still being
    /// programmed; Seam keeps trying. Keep polling until the deadline and
    /// report the issue while waiting. Blocks success while present.
    Wait,
    /// The code will not be set as desired without someone acting (no space,
    /// duplicate, wrong length, a provider refusing). Ends `failed`; Seam may
    /// still retry, so the outcome is judged again while the window is open.
    Fail,
    /// The code on the lock is not what latchkey set (changed at the lock or
    /// in another app), or the provider could not confirm it: apply again,
    /// as for drift, a bounded number of times, then end `failed`.
    Reapply,
    /// Recorded in `last_seen`, does not block success.
    Harmless,
}

/// One row: an issue code, where Seam reports it, and what latchkey does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueRule {
    /// `errors` or `warnings`.
    pub kind: IssueKind,
    /// `error_code` or `warning_code`.
    pub code: &'static str,
    /// What latchkey does about it.
    pub effect: IssueEffect,
}

const fn row(kind: IssueKind, code: &'static str, effect: IssueEffect) -> IssueRule {
    IssueRule { kind, code, effect }
}

use IssueEffect::{Fail, Harmless, Reapply, Wait};
use IssueKind::{Error, Warning};

/// Every issue code Seam documents for access codes, and what it means here.
/// The README's "What an outcome means" is written from this table.
pub const TABLE: &[IssueRule] = &[
    // Out of reach or still programming: Seam keeps trying by itself.
    row(Error, "device_offline", Wait),
    row(Error, "device_disconnected", Wait),
    row(Error, "hub_disconnected", Wait),
    row(Error, "bridge_disconnected", Wait),
    row(Error, "account_disconnected", Wait),
    row(Error, "august_lock_temporarily_offline", Wait),
    row(Error, "august_device_programming_delay", Wait),
    row(Error, "hubitat_device_programming_delay", Wait),
    // The code will not be set until someone acts.
    row(Error, "failed_to_set_on_device", Fail),
    row(Error, "failed_to_remove_from_device", Fail),
    row(Error, "no_space_for_access_code_on_device", Fail),
    row(Error, "duplicate_code_on_device", Fail),
    row(Error, "duplicate_code_attempt_prevented", Fail),
    row(Error, "smartthings_failed_to_set_access_code", Fail),
    row(Error, "smartthings_failed_to_set_after_multiple_retries", Fail),
    row(Error, "smartthings_no_free_slots_available", Fail),
    row(Error, "hubitat_no_free_positions_available", Fail),
    row(Error, "august_lock_invalid_code_length", Fail),
    row(Error, "august_lock_missing_keypad", Fail),
    row(Error, "august_lock_missing_bridge", Fail),
    row(Error, "august_lock_not_authorized", Fail),
    row(Error, "ttlock_lock_not_paired_to_gateway", Fail),
    row(Error, "lockly_missing_wifi_bridge", Fail),
    row(Error, "salto_ks_user_not_subscribed", Fail),
    row(Error, "salto_ks_subscription_limit_exceeded", Fail),
    row(Error, "wyze_duplicate_code_name", Fail),
    row(Error, "wyze_potential_duplicate_code", Fail),
    row(Error, "dormakaba_oracode_invalid_time_range", Fail),
    row(Error, "kwikset_insufficient_permissions", Fail),
    row(Error, "kwikset_unable_to_confirm_deletion", Fail),
    row(Error, "keynest_unsupported_third_party_locker", Fail),
    row(Error, "missing_device_credentials", Fail),
    row(Error, "subscription_required", Fail),
    row(Error, "device_removed", Fail),
    row(Error, "empty_backup_access_code_pool", Fail),
    // Not what latchkey set, or not confirmed: apply again, bounded.
    row(Error, "code_modified_external_to_seam", Reapply),
    row(Error, "kwikset_unable_to_confirm_code", Reapply),
    // A thermostat's error; it says nothing about a PIN.
    row(Error, "auxiliary_heat_running", Harmless),
    // Warnings: a delay means keep waiting.
    row(Warning, "delay_in_setting_on_device", Wait),
    row(Warning, "delay_in_removing_from_device", Wait),
    row(Warning, "august_device_programming_delay", Wait),
    row(Warning, "august_lock_temporarily_offline", Wait),
    // Warnings on a code that is `set` but not as latchkey set it.
    row(Warning, "code_modified_external_to_seam", Reapply),
    // Named in Seam's troubleshooting guide, not in the schema's list.
    row(Warning, "schedule_externally_modified", Reapply),
    row(Warning, "kwikset_unable_to_confirm_code", Reapply),
    row(Warning, "smartthings_failed_to_set_access_code", Reapply),
    row(Warning, "schlage_creation_outage", Reapply),
    // Warnings that say the code does not work as desired until someone acts.
    row(Warning, "ultraloq_access_code_disabled", Fail),
    row(Warning, "management_transferred", Fail),
    row(Warning, "schlage_detected_duplicate", Fail),
    // Warnings that do not say the code is wrong.
    row(Warning, "third_party_integration_detected", Harmless),
    row(Warning, "igloo_algopin_must_be_used_within_24_hours", Harmless),
];

/// Errors that say a code that must go (cancelled, or past its stay) was not
/// removed from the lock. Other issues do not matter while a code is removed.
pub const REMOVAL_FAILURES: &[&str] = &["failed_to_remove_from_device", "kwikset_unable_to_confirm_deletion"];

/// What an issue code means. A code missing from the table (one Seam adds
/// later) is treated as the worst plausible thing for its kind: an unknown
/// error fails the reconciliation (and is judged again while the window is
/// open); an unknown warning is recorded and does not block success, since
/// Seam's warnings are by definition not failures.
pub fn effect(kind: IssueKind, code: &str) -> IssueEffect {
    TABLE.iter().find(|r| r.kind == kind && r.code == code).map_or(
        match kind {
            IssueKind::Error => IssueEffect::Fail,
            IssueKind::Warning => IssueEffect::Harmless,
        },
        |r| r.effect,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn each_code_has_one_row() {
        let mut seen = HashSet::new();
        for r in TABLE {
            assert!(seen.insert((r.kind, r.code)), "{:?} {} twice", r.kind, r.code);
        }
    }

    #[test]
    fn unknown_codes_get_the_documented_defaults() {
        assert_eq!(effect(IssueKind::Error, "brand_new_error"), IssueEffect::Fail);
        assert_eq!(effect(IssueKind::Warning, "brand_new_warning"), IssueEffect::Harmless);
        assert_eq!(effect(IssueKind::Error, "delay_in_setting_on_device"), IssueEffect::Fail, "kinds are apart");
    }

    /// Every `error_code` and `warning_code` of Seam's published schema has a
    /// row, so a code Seam adds shows up here rather than as a surprise.
    #[test]
    fn every_code_in_seams_schema_has_a_row() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/seam-openapi-extract.json");
        let Ok(text) = std::fs::read_to_string(path) else {
            panic!("{path}: Seam's OpenAPI extract is expected beside the project (shared/)");
        };
        let doc: serde_json::Value = serde_json::from_str(&text).expect("the extract is JSON");
        let props = &doc["schemas"]["access_code"]["properties"];
        for (list, field, kind) in
            [("errors", "error_code", IssueKind::Error), ("warnings", "warning_code", IssueKind::Warning)]
        {
            let variants = props[list]["items"]["oneOf"].as_array().expect("a oneOf of issue shapes");
            for v in variants {
                for code in v["properties"][field]["enum"].as_array().expect("an enum of codes") {
                    let code = code.as_str().expect("a string");
                    assert!(
                        TABLE.iter().any(|r| r.kind == kind && r.code == code),
                        "{kind:?} {code} from Seam's schema has no row in issue::TABLE"
                    );
                }
            }
        }
    }
}
