//! The verification decision: given the desired state and the access code as
//! Seam reports it, what now? Pure: the clock and the jitter are arguments.
//! Follows Seam's guide (seeds 000-002, section 2): poll until `set`; any
//! `errors` entry means failure; a `delay_in_setting_on_device` warning means
//! keep waiting, within a budget; time-bound codes are expected `set` only
//! from `starts_at` on.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    desired::{DesiredState, Schedule},
    observed::{AccessCode, CodeStatus, CodeType},
};

/// What to do after looking at the access code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// On the lock as desired.
    Succeeded,
    /// Seam reports errors on the code: these error codes.
    Failed {
        /// `error_code` of each entry.
        error_codes: Vec<String>,
    },
    /// `set`, but with other values than desired (changed outside latchkey):
    /// apply again.
    Reapply {
        /// Which properties differ.
        differences: Vec<&'static str>,
    },
    /// `set` with other values, and the re-apply budget is spent.
    Drifted {
        /// Which properties differ.
        differences: Vec<&'static str>,
    },
    /// A time-bound code before its start: look again at this time.
    WaitUntil(DateTime<Utc>),
    /// Not there yet: look again after a backoff.
    PollAgain {
        /// Why, for the record.
        reason: &'static str,
    },
    /// The deadline passed before the code was `set`.
    TimedOut,
}

/// Budgets of one verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// After this, a code that is not `set` has timed out.
    pub deadline: DateTime<Utc>,
    /// Re-applies already made for drift.
    pub reapplies: u32,
    /// Re-applies allowed.
    pub max_reapplies: u32,
}

/// When the first verification poll should happen: at once for ongoing codes,
/// at `starts_at` for time-bound ones (at once if it has passed).
pub fn first_poll_at(schedule: &Schedule, now: DateTime<Utc>) -> DateTime<Utc> {
    match schedule {
        Schedule::TimeBound { starts_at, .. } if *starts_at > now => *starts_at,
        _ => now,
    }
}

/// The verification deadline: `timeout` after the apply for ongoing codes,
/// `timeout` after `starts_at` (or after the apply, if later) for time-bound ones.
pub fn deadline(schedule: &Schedule, applied_at: DateTime<Utc>, timeout: Duration) -> DateTime<Utc> {
    let from = first_poll_at(schedule, applied_at);
    from + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX)
}

/// Delay before poll number `poll` (from 1): full jitter over
/// `min(cap, base * 2^(poll-1))`; `jitter` is uniform in `[0, 1)`.
pub fn poll_delay(poll: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << poll.saturating_sub(1).min(20));
    exp.min(cap).mul_f64(jitter.clamp(0.0, 1.0))
}

/// The properties of `observed` that differ from `desired`. Only what the
/// desired state names is compared.
pub fn differences(desired: &DesiredState, observed: &AccessCode) -> Vec<&'static str> {
    let mut out = Vec::new();
    if desired.code.is_some() && desired.code != observed.code {
        out.push("code");
    }
    if desired.name.is_some() && desired.name != observed.name {
        out.push("name");
    }
    // Seam may round times to `max_time_rounding`; otherwise compare to the second.
    let tolerance = match desired.options.max_time_rounding.as_deref() {
        Some("1day" | "1d") => chrono::Duration::days(1),
        Some(_) => chrono::Duration::hours(1),
        None => chrono::Duration::seconds(1),
    };
    let near = |want: DateTime<Utc>, got: Option<DateTime<Utc>>| got.is_some_and(|g| (g - want).abs() < tolerance);
    match desired.schedule {
        Schedule::Unchanged => {}
        Schedule::Ongoing => {
            if observed.code_type != CodeType::Ongoing {
                out.push("type");
            }
        }
        Schedule::TimeBound { starts_at, ends_at } => {
            if observed.code_type != CodeType::TimeBound {
                out.push("type");
            }
            if !near(starts_at, observed.starts_at) {
                out.push("starts_at");
            }
            if !near(ends_at, observed.ends_at) {
                out.push("ends_at");
            }
        }
    }
    out
}

/// Decides what to do with what Seam reports.
pub fn judge(desired: &DesiredState, observed: &AccessCode, budget: Budget, now: DateTime<Utc>) -> Verdict {
    if !observed.errors.is_empty() {
        return Verdict::Failed { error_codes: observed.errors.iter().map(|e| e.code.clone()).collect() };
    }
    if observed.status == CodeStatus::Set {
        let differences = differences(desired, observed);
        return if differences.is_empty() {
            Verdict::Succeeded
        } else if budget.reapplies < budget.max_reapplies {
            Verdict::Reapply { differences }
        } else {
            Verdict::Drifted { differences }
        };
    }
    if let Schedule::TimeBound { starts_at, .. } = desired.schedule
        && now < starts_at
        && differences(desired, observed).is_empty()
    {
        return Verdict::WaitUntil(starts_at);
    }
    if now >= budget.deadline {
        return Verdict::TimedOut;
    }
    let reason = if observed.has_warning("delay_in_setting_on_device") {
        "Seam reports a delay in setting the code on the device"
    } else {
        match observed.status {
            CodeStatus::Setting => "still setting",
            CodeStatus::Unset => "not on the lock yet",
            CodeStatus::Removing => "being removed",
            _ => "status unknown",
        }
    };
    Verdict::PollAgain { reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        desired::{DesiredStateInput, UpdateOptions},
        observed::CodeIssue,
    };

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-03-01T12:00:00Z";

    fn desired(json: &str) -> DesiredState {
        serde_json::from_str::<DesiredStateInput>(json).unwrap().validate(t(NOW)).unwrap()
    }

    fn code(status: CodeStatus) -> AccessCode {
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
        }
    }

    fn budget(deadline: &str) -> Budget {
        Budget { deadline: t(deadline), reapplies: 0, max_reapplies: 2 }
    }

    #[test]
    fn the_verdict_table() {
        let ongoing = desired(r#"{"access_code_id":"ac","code":"1234","name":"Guest","type":"ongoing"}"#);
        let b = budget("2026-03-01T12:15:00Z");
        let now = t(NOW);
        assert_eq!(judge(&ongoing, &code(CodeStatus::Set), b, now), Verdict::Succeeded);
        assert_eq!(judge(&ongoing, &code(CodeStatus::Setting), b, now), Verdict::PollAgain { reason: "still setting" });
        let mut delayed = code(CodeStatus::Setting);
        delayed.warnings.push(CodeIssue { code: "delay_in_setting_on_device".into(), message: String::new() });
        assert!(matches!(judge(&ongoing, &delayed, b, now), Verdict::PollAgain { reason } if reason.contains("delay")));
        let mut failed = code(CodeStatus::Setting);
        failed.errors.push(CodeIssue { code: "failed_to_set_on_device".into(), message: String::new() });
        assert_eq!(
            judge(&ongoing, &failed, b, now),
            Verdict::Failed { error_codes: vec!["failed_to_set_on_device".into()] }
        );
        assert_eq!(judge(&ongoing, &code(CodeStatus::Setting), b, t("2026-03-01T12:15:00Z")), Verdict::TimedOut);
        let mut changed = code(CodeStatus::Set);
        changed.code = Some("9999".into());
        assert_eq!(judge(&ongoing, &changed, b, now), Verdict::Reapply { differences: vec!["code"] });
        let spent = Budget { reapplies: 2, ..b };
        assert_eq!(judge(&ongoing, &changed, spent, now), Verdict::Drifted { differences: vec!["code"] });
    }

    #[test]
    fn errors_win_over_set() {
        let d = desired(r#"{"access_code_id":"ac"}"#);
        let mut c = code(CodeStatus::Set);
        c.errors.push(CodeIssue { code: "duplicate_code_on_device".into(), message: String::new() });
        assert!(matches!(judge(&d, &c, budget("2026-03-01T13:00:00Z"), t(NOW)), Verdict::Failed { .. }));
    }

    #[test]
    fn a_time_bound_code_waits_for_its_start_then_must_be_set() {
        let d =
            desired(r#"{"access_code_id":"ac","starts_at":"2026-03-02T15:00:00Z","ends_at":"2026-03-05T11:00:00Z"}"#);
        let mut scheduled = code(CodeStatus::Unset);
        scheduled.code_type = CodeType::TimeBound;
        scheduled.starts_at = Some(t("2026-03-02T15:00:00.000Z"));
        scheduled.ends_at = Some(t("2026-03-05T11:00:00Z"));
        scheduled.is_scheduled_on_device = Some(true);
        let b = budget("2026-03-02T15:15:00Z");
        assert_eq!(judge(&d, &scheduled, b, t(NOW)), Verdict::WaitUntil(t("2026-03-02T15:00:00Z")));
        assert_eq!(
            judge(&d, &scheduled, b, t("2026-03-02T15:00:01Z")),
            Verdict::PollAgain { reason: "not on the lock yet" }
        );
        let mut set = scheduled.clone();
        set.status = CodeStatus::Set;
        assert_eq!(judge(&d, &set, b, t("2026-03-02T15:00:01Z")), Verdict::Succeeded);
        // Still ongoing on Seam's side: the conversion has not happened yet.
        let mut still_ongoing = code(CodeStatus::Set);
        still_ongoing.code_type = CodeType::Ongoing;
        assert_eq!(
            judge(&d, &still_ongoing, b, t(NOW)),
            Verdict::Reapply { differences: vec!["type", "starts_at", "ends_at"] }
        );
    }

    #[test]
    fn rounding_widens_the_date_comparison() {
        let mut d =
            desired(r#"{"access_code_id":"ac","starts_at":"2026-03-02T15:20:00Z","ends_at":"2026-03-05T11:10:00Z"}"#);
        let mut c = code(CodeStatus::Set);
        c.code_type = CodeType::TimeBound;
        c.starts_at = Some(t("2026-03-02T15:00:00Z"));
        c.ends_at = Some(t("2026-03-05T11:00:00Z"));
        assert_eq!(differences(&d, &c), vec!["starts_at", "ends_at"]);
        d.options = UpdateOptions { max_time_rounding: Some("1hour".into()), ..UpdateOptions::default() };
        assert!(differences(&d, &c).is_empty());
    }

    #[test]
    fn first_poll_and_deadline_follow_the_schedule() {
        let now = t(NOW);
        let fifteen = Duration::from_secs(900);
        assert_eq!(first_poll_at(&Schedule::Ongoing, now), now);
        let tb = Schedule::TimeBound { starts_at: t("2026-03-02T15:00:00Z"), ends_at: t("2026-03-03T15:00:00Z") };
        assert_eq!(first_poll_at(&tb, now), t("2026-03-02T15:00:00Z"));
        assert_eq!(deadline(&tb, now, fifteen), t("2026-03-02T15:15:00Z"));
        assert_eq!(deadline(&Schedule::Ongoing, now, fifteen), t("2026-03-01T12:15:00Z"));
        let started = Schedule::TimeBound { starts_at: t("2026-03-01T11:00:00Z"), ends_at: t("2026-03-03T15:00:00Z") };
        assert_eq!(first_poll_at(&started, now), now, "a start in the past: verify at once");
    }

    #[test]
    fn poll_delays_grow_to_the_cap_with_full_jitter() {
        let (base, cap) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(poll_delay(1, base, cap, 0.999_999), Duration::from_secs(1).mul_f64(0.999_999));
        assert_eq!(poll_delay(4, base, cap, 0.5), Duration::from_secs(4));
        assert_eq!(poll_delay(30, base, cap, 0.5), Duration::from_secs(30));
        assert_eq!(poll_delay(3, base, cap, 0.0), Duration::ZERO);
    }
}
