//! The verification decision: given the desired state and the access code as
//! Seam reports it, what now? Pure: the clock and the jitter are arguments.
//!
//! From Seam's guide (seeds 000-002, section 2) and its lifecycle docs: poll
//! until `set`; time-bound codes are `set` only from `starts_at` on (before
//! that they are `unset`, perhaps scheduled on the device); every entry of
//! `errors` and `warnings` means what [`crate::issue::TABLE`] says. What the
//! guide leaves open, decided here:
//! - A desired state that names no schedule is verified against the schedule
//!   Seam reports: a PIN change of next week's code is `scheduled` until the
//!   code's own `starts_at`, not timed out today.
//! - A future time-bound code is looked at right after the update (until it
//!   leaves `setting`, within the timeout) and again [`PRE_START_LEAD`] before
//!   `starts_at`, so a scheduling failure is found days before the guest
//!   arrives; then at `starts_at`.
//! - An issue created before the update being verified is not about it.
//! - Times are compared to the second, or within `max_time_rounding` (default
//!   one hour) for offline codes, which Seam rounds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    desired::{DesiredState, Schedule},
    issue::{IssueEffect, REMOVAL_FAILURES, effect},
    observed::{AccessCode, CodeStatus, CodeType},
};

/// How long before `starts_at` a future time-bound code is looked at once
/// more (besides right after the update), to find scheduling failures early.
pub const PRE_START_LEAD: chrono::Duration = chrono::Duration::hours(24);

/// What to do after looking at the access code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// On the lock as desired.
    Succeeded,
    /// Seam reports issues that mean the code will not be set as desired.
    Failed {
        /// Their `error_code`s and `warning_code`s.
        issues: Vec<String>,
    },
    /// Not as desired (other values, or Seam says it was changed outside
    /// latchkey or could not be confirmed): apply again.
    Reapply {
        /// Which properties differ, or which issue codes call for it.
        reasons: Vec<String>,
    },
    /// Still not as desired, and the re-apply budget is spent.
    Drifted {
        /// As for `Reapply`.
        reasons: Vec<String>,
    },
    /// A time-bound code before its start, nothing wrong seen: look again at
    /// `check_at` (a pre-start check, or `starts_at` itself).
    Scheduled {
        /// The start Seam reports (or the desired one).
        starts_at: DateTime<Utc>,
        /// When to look next.
        check_at: DateTime<Utc>,
    },
    /// Not there yet: look again after a backoff.
    PollAgain {
        /// Why, for the record and the logs (issue codes included).
        reason: String,
    },
    /// The deadline passed before the code was `set` as desired.
    TimedOut,
}

/// The frame of one verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When the update being verified was sent. Issues Seam created before
    /// it are not about it.
    pub applied_at: DateTime<Utc>,
    /// How long verification may take: after the update for ongoing codes,
    /// after `starts_at` for time-bound ones.
    pub timeout: Duration,
    /// Re-applies already made.
    pub reapplies: u32,
    /// Re-applies allowed.
    pub max_reapplies: u32,
}

impl Window {
    /// When a code on `schedule` that is not `set` has timed out.
    pub fn deadline(&self, schedule: &Schedule) -> DateTime<Utc> {
        deadline(schedule, self.applied_at, self.timeout)
    }

    /// Until when a code still being programmed is polled before its start
    /// (after that, the pre-start checks take over).
    fn settle_by(&self) -> DateTime<Utc> {
        self.applied_at + chrono::Duration::from_std(self.timeout).unwrap_or(chrono::Duration::MAX)
    }
}

/// The schedule to verify against: the desired one, or, when the desired
/// state names none, the one Seam reports (so an edit of an upcoming code is
/// held to that code's own start).
pub fn effective_schedule(desired: &Schedule, observed: &AccessCode) -> Schedule {
    match (desired, observed.code_type, observed.starts_at, observed.ends_at) {
        (Schedule::Unchanged, CodeType::TimeBound, Some(starts_at), Some(ends_at)) => {
            Schedule::TimeBound { starts_at, ends_at }
        }
        (schedule, ..) => *schedule,
    }
}

/// When the first verification poll should happen: at once for ongoing codes
/// (and for desired states that name no schedule), at `starts_at` for
/// time-bound ones (at once if it has passed).
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

/// The next look at a future time-bound code that shows nothing wrong:
/// [`PRE_START_LEAD`] before `starts_at` while that is still ahead, else
/// `starts_at`.
pub fn pre_start_check_at(starts_at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let early = starts_at - PRE_START_LEAD;
    if now < early { early } else { starts_at }
}

/// A stable number for an access code (FNV-1a of its id): its place in a
/// spread window, the same in every worker and every run.
pub fn phase_of(access_code_id: &str) -> u64 {
    access_code_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The next resync look at a live code after `now`: each code at its own
/// phase of the interval (from [`phase_of`]), so a million codes come due
/// evenly spread over it, never in the same second, and a code's looks stay
/// one interval apart whenever its job runs.
pub fn next_resync(access_code_id: &str, now: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let interval_ms = (interval.as_millis() as i64).max(1);
    let phase = (phase_of(access_code_id) % interval_ms as u64) as i64;
    let now_ms = now.timestamp_millis();
    let next = (now_ms - phase).div_euclid(interval_ms) * interval_ms + phase + interval_ms;
    DateTime::from_timestamp_millis(next).unwrap_or(now)
}

/// Delay before poll number `poll` (from 1): full jitter over
/// `min(cap, base * 2^(poll-1))`; `jitter` is uniform in `[0, 1)`.
pub fn poll_delay(poll: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << poll.saturating_sub(1).min(20));
    exp.min(cap).mul_f64(jitter.clamp(0.0, 1.0))
}

/// How far Seam may move a code's times: offline codes are rounded to
/// `max_time_rounding` (Seam's default `1hour`); other codes are not rounded,
/// and Seam reports times to the millisecond, so they must match to the second.
pub fn time_tolerance(desired: &DesiredState, observed: &AccessCode) -> chrono::Duration {
    let asked_offline = desired.options.is_offline_access_code.or(desired.options.use_offline_access_code);
    if !observed.is_offline_access_code.or(asked_offline).unwrap_or(false) {
        return chrono::Duration::seconds(1);
    }
    match desired.options.max_time_rounding.as_deref() {
        Some("1day" | "1d") => chrono::Duration::days(1),
        _ => chrono::Duration::hours(1),
    }
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
    let tolerance = time_tolerance(desired, observed);
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

/// The issues on `observed` that are about the update being verified (raised
/// at or after `applied_at`, or undated), with what each means.
fn current_issues(
    observed: &AccessCode,
    applied_at: DateTime<Utc>,
) -> impl Iterator<Item = (IssueEffect, crate::IssueKind, &str)> {
    observed
        .issues()
        .filter(move |(_, i)| i.created_at.is_none_or(|c| c >= applied_at))
        .map(|(kind, i)| (effect(kind, &i.code), kind, i.code.as_str()))
}

fn reapply_or_drift(reasons: Vec<String>, window: Window) -> Verdict {
    if window.reapplies < window.max_reapplies { Verdict::Reapply { reasons } } else { Verdict::Drifted { reasons } }
}

/// Why `observed` cannot be Seam's answer about access code `access_code_id`
/// on `device` (the device the code is known to be on, when known), or `None`
/// when it can: an answer about another code, or from another device, or
/// naming its device with an id latchkey would refuse from a producer, is not
/// evidence of anything and must never count as success.
pub fn not_about(access_code_id: &str, device: Option<&str>, observed: &AccessCode) -> Option<String> {
    if observed.access_code_id != access_code_id {
        return Some(format!(
            "Seam answered about access code \"{}\", not {access_code_id:?}",
            crate::desired::shown(&observed.access_code_id)
        ));
    }
    if let Some(rule) = crate::desired::id_rule_broken(&observed.device_id) {
        return Some(format!("Seam's device_id for the access code {rule}"));
    }
    match device {
        Some(device) if device != observed.device_id => Some(format!(
            "Seam answered that the access code is on device {:?}, not on {device:?} where it is known to be",
            observed.device_id
        )),
        _ => None,
    }
}

/// Decides what to do with what Seam reports.
pub fn judge(desired: &DesiredState, observed: &AccessCode, window: Window, now: DateTime<Utc>) -> Verdict {
    let issues: Vec<_> = current_issues(observed, window.applied_at).collect();
    let named = |wanted: IssueEffect, errors_only: bool| -> Vec<String> {
        issues
            .iter()
            .filter(|(e, kind, _)| *e == wanted && (!errors_only || *kind == crate::IssueKind::Error))
            .map(|(_, _, code)| code.to_string())
            .collect()
    };
    let failing = named(IssueEffect::Fail, false);
    if !failing.is_empty() {
        return Verdict::Failed { issues: failing };
    }
    let reapply = named(IssueEffect::Reapply, false);
    if !reapply.is_empty() {
        return reapply_or_drift(reapply, window);
    }
    let schedule = effective_schedule(&desired.schedule, observed);
    let deadline = window.deadline(&schedule);
    // A device out of reach keeps the code from being verified, whatever its
    // status says; Seam keeps trying, so wait, within the deadline.
    let unreachable = named(IssueEffect::Wait, true);
    if !unreachable.is_empty() {
        return if now >= deadline {
            Verdict::TimedOut
        } else {
            Verdict::PollAgain { reason: format!("waiting: {}", unreachable.join(", ")) }
        };
    }
    let differences: Vec<String> = differences(desired, observed).into_iter().map(String::from).collect();
    if observed.status == CodeStatus::Set {
        return if differences.is_empty() { Verdict::Succeeded } else { reapply_or_drift(differences, window) };
    }
    if let Schedule::TimeBound { starts_at, .. } = schedule
        && now < starts_at
    {
        let settling = observed.status == CodeStatus::Setting || !differences.is_empty();
        if settling && now < window.settle_by() {
            return Verdict::PollAgain { reason: poll_reason(observed) };
        }
        if !differences.is_empty() {
            return reapply_or_drift(differences, window);
        }
        return Verdict::Scheduled { starts_at, check_at: pre_start_check_at(starts_at, now) };
    }
    if now >= deadline {
        return Verdict::TimedOut;
    }
    Verdict::PollAgain { reason: poll_reason(observed) }
}

/// Decides what to do while a code must disappear from the lock (a
/// cancellation, or the end of its stay). `observed` is `None` once Seam
/// answers 404: the code is gone. A removal failure Seam reports (raised at or
/// after `since`) fails at once; anything else (`removing`, a delay, a device
/// away) is waited for until `deadline`.
pub fn judge_gone(
    observed: Option<&AccessCode>,
    since: DateTime<Utc>,
    deadline: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Verdict {
    let Some(observed) = observed else {
        return Verdict::Succeeded;
    };
    let failures: Vec<String> = current_issues(observed, since)
        .filter(|(_, kind, code)| *kind == crate::IssueKind::Error && REMOVAL_FAILURES.contains(code))
        .map(|(_, _, code)| code.to_string())
        .collect();
    if !failures.is_empty() {
        return Verdict::Failed { issues: failures };
    }
    if now >= deadline {
        return Verdict::TimedOut;
    }
    let waiting: Vec<&str> = current_issues(observed, since)
        .filter(|(effect, ..)| *effect == IssueEffect::Wait)
        .map(|(_, _, code)| code)
        .collect();
    let reason = if waiting.is_empty() { poll_reason(observed) } else { format!("waiting: {}", waiting.join(", ")) };
    Verdict::PollAgain { reason }
}

/// Whether a resync look at a code that succeeded finds it shown as not on
/// the lock while it should be usable: `unset` or `unknown` for an ongoing
/// code, or a time-bound one within its stay (by the desired schedule, or
/// Seam's for a desired state that names none), with no issue raised since
/// `applied_at` that means Seam is still at work (a device out of reach, a
/// delay): that is a wait, not a drift. `setting` and `removing` are Seam
/// at work too; a removal ends in a 404, which is drift of its own.
pub fn off_the_lock(
    desired: &DesiredState,
    observed: &AccessCode,
    applied_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    if !matches!(observed.status, CodeStatus::Unset | CodeStatus::Unknown) {
        return false;
    }
    let in_effect = match effective_schedule(&desired.schedule, observed) {
        Schedule::TimeBound { starts_at, ends_at } => starts_at <= now && now < ends_at,
        Schedule::Ongoing => true,
        Schedule::Unchanged => observed.code_type == CodeType::Ongoing,
    };
    in_effect && !current_issues(observed, applied_at).any(|(e, ..)| e == IssueEffect::Wait)
}

fn poll_reason(observed: &AccessCode) -> String {
    let delays: Vec<&str> = observed
        .warnings
        .iter()
        .filter(|w| effect(crate::IssueKind::Warning, &w.code) == IssueEffect::Wait)
        .map(|w| w.code.as_str())
        .collect();
    if !delays.is_empty() {
        return format!("Seam reports {}", delays.join(", "));
    }
    match observed.status {
        CodeStatus::Setting => "still setting",
        CodeStatus::Unset => "not on the lock yet",
        CodeStatus::Removing => "being removed",
        CodeStatus::Set => "set",
        CodeStatus::Unknown => "status unknown",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        desired::{DesiredStateInput, UpdateOptions},
        issue::{IssueKind, TABLE},
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
        AccessCode::sample(status)
    }

    fn issue(code: &str, created_at: Option<&str>) -> CodeIssue {
        CodeIssue { code: code.into(), message: format!("{code} happened"), created_at: created_at.map(t) }
    }

    #[test]
    fn an_answer_about_another_code_or_device_is_not_about_this_code() {
        let set = code(CodeStatus::Set);
        assert_eq!(not_about("ac", Some("d"), &set), None);
        assert_eq!(not_about("ac", None, &set), None);
        let why = not_about("ac_other", None, &set).unwrap();
        assert!(why.contains("\"ac\"") && why.contains("ac_other"), "{why}");
        assert!(not_about("ac", Some("d_other"), &set).unwrap().contains("d_other"));
        let forged = AccessCode { device_id: "d\u{202e}x".into(), ..set.clone() };
        assert!(not_about("ac", None, &forged).unwrap().contains("invisible"));
        let spoofed = AccessCode { access_code_id: "ac\u{200b}".into(), ..set };
        let why = not_about("ac", None, &spoofed).unwrap();
        assert!(why.contains("\\u{200b}"), "the look-alike is shown escaped: {why}");
    }

    /// Applied at NOW, 15 minutes to verify, two re-applies allowed.
    fn window() -> Window {
        Window { applied_at: t(NOW), timeout: Duration::from_secs(900), reapplies: 0, max_reapplies: 2 }
    }

    fn ongoing() -> DesiredState {
        desired(r#"{"access_code_id":"ac","code":"1234","name":"Guest","type":"ongoing"}"#)
    }

    /// A time-bound code starting next week, as Seam shows it before its start.
    fn upcoming(status: CodeStatus) -> AccessCode {
        let mut c = code(status);
        c.code_type = CodeType::TimeBound;
        c.starts_at = Some(t("2026-03-08T15:00:00.000Z"));
        c.ends_at = Some(t("2026-03-12T11:00:00.000Z"));
        c.is_scheduled_on_device = Some(status == CodeStatus::Unset);
        c
    }

    #[test]
    fn a_code_that_should_be_usable_but_is_shown_off_the_lock_is_found_at_a_resync_look() {
        let (applied, now) = (t("2026-03-01T11:00:00Z"), t(NOW));
        let d = ongoing();
        assert!(off_the_lock(&d, &code(CodeStatus::Unset), applied, now));
        assert!(off_the_lock(&d, &code(CodeStatus::Unknown), applied, now));
        for busy in [CodeStatus::Set, CodeStatus::Setting, CodeStatus::Removing] {
            assert!(!off_the_lock(&d, &code(busy), applied, now), "{busy:?}");
        }
        // A device out of reach, or a delay, since the update: Seam is at it.
        for (kind, name) in [(IssueKind::Error, "device_offline"), (IssueKind::Warning, "delay_in_setting_on_device")] {
            let mut c = code(CodeStatus::Unset);
            let i = issue(name, Some("2026-03-01T11:30:00Z"));
            match kind {
                IssueKind::Error => c.errors.push(i),
                IssueKind::Warning => c.warnings.push(i),
            }
            assert!(!off_the_lock(&d, &c, applied, now), "{name}");
        }
        // A time-bound code: only within its stay.
        let stay = desired(
            r#"{"access_code_id":"ac","code":"1234","starts_at":"2026-03-01T10:00:00Z","ends_at":"2026-03-02T10:00:00Z"}"#,
        );
        let mut c = upcoming(CodeStatus::Unset);
        (c.starts_at, c.ends_at) = (Some(t("2026-03-01T10:00:00Z")), Some(t("2026-03-02T10:00:00Z")));
        assert!(off_the_lock(&stay, &c, applied, now));
        assert!(!off_the_lock(&stay, &c, applied, t("2026-03-01T09:00:00Z")), "before its start");
        assert!(!off_the_lock(&stay, &c, applied, t("2026-03-02T10:00:00Z")), "at its end");
        // A desired state that names no schedule goes by Seam's.
        let unchanged = desired(r#"{"access_code_id":"ac","code":"1234"}"#);
        assert!(off_the_lock(&unchanged, &code(CodeStatus::Unset), applied, now));
        assert!(!off_the_lock(&unchanged, &upcoming(CodeStatus::Unset), applied, now), "a stay not begun");
    }

    #[test]
    fn the_verdict_table() {
        let (d, w, now) = (ongoing(), window(), t(NOW));
        assert_eq!(judge(&d, &code(CodeStatus::Set), w, now), Verdict::Succeeded);
        assert_eq!(
            judge(&d, &code(CodeStatus::Setting), w, now),
            Verdict::PollAgain { reason: "still setting".into() }
        );
        let mut delayed = code(CodeStatus::Setting);
        delayed.warnings.push(issue("delay_in_setting_on_device", None));
        assert!(matches!(judge(&d, &delayed, w, now), Verdict::PollAgain { reason } if reason.contains("delay")));
        let mut failed = code(CodeStatus::Setting);
        failed.errors.push(issue("failed_to_set_on_device", Some(NOW)));
        assert_eq!(judge(&d, &failed, w, now), Verdict::Failed { issues: vec!["failed_to_set_on_device".into()] });
        assert_eq!(judge(&d, &code(CodeStatus::Setting), w, t("2026-03-01T12:15:00Z")), Verdict::TimedOut);
        let mut changed = code(CodeStatus::Set);
        changed.code = Some("9999".into());
        assert_eq!(judge(&d, &changed, w, now), Verdict::Reapply { reasons: vec!["code".into()] });
        let spent = Window { reapplies: 2, ..w };
        assert_eq!(judge(&d, &changed, spent, now), Verdict::Drifted { reasons: vec!["code".into()] });
    }

    /// One test per row of the issue table: the verdict for a `set` code
    /// carrying that issue, raised after the update.
    #[test]
    fn every_row_of_the_issue_table_decides_the_verdict() {
        let (d, w, now) = (ongoing(), window(), t(NOW));
        for row in TABLE {
            let mut c = code(CodeStatus::Set);
            let i = issue(row.code, Some("2026-03-01T12:00:01Z"));
            match row.kind {
                IssueKind::Error => c.errors.push(i),
                IssueKind::Warning => c.warnings.push(i),
            }
            let verdict = judge(&d, &c, w, now);
            let expected = match (row.effect, row.kind) {
                (IssueEffect::Fail, _) => Verdict::Failed { issues: vec![row.code.into()] },
                (IssueEffect::Reapply, _) => Verdict::Reapply { reasons: vec![row.code.into()] },
                (IssueEffect::Wait, IssueKind::Error) => {
                    Verdict::PollAgain { reason: format!("waiting: {}", row.code) }
                }
                // A delay warning on a code Seam says is set does not undo it.
                (IssueEffect::Wait, IssueKind::Warning) | (IssueEffect::Harmless, _) => Verdict::Succeeded,
            };
            assert_eq!(verdict, expected, "{:?} {}", row.kind, row.code);
        }
    }

    #[test]
    fn errors_win_over_set() {
        let mut c = code(CodeStatus::Set);
        c.errors.push(issue("duplicate_code_on_device", None));
        assert!(matches!(judge(&ongoing(), &c, window(), t(NOW)), Verdict::Failed { .. }));
    }

    #[test]
    fn an_issue_raised_before_the_update_is_not_about_it() {
        let mut c = code(CodeStatus::Set);
        c.errors.push(issue("failed_to_set_on_device", Some("2026-03-01T11:59:59Z")));
        c.warnings.push(issue("code_modified_external_to_seam", Some("2026-02-28T08:00:00Z")));
        assert_eq!(judge(&ongoing(), &c, window(), t(NOW)), Verdict::Succeeded);
    }

    #[test]
    fn an_unreachable_device_is_waited_for_then_times_out() {
        let mut c = code(CodeStatus::Setting);
        c.errors.push(issue("hub_disconnected", Some(NOW)));
        let w = window();
        assert_eq!(
            judge(&ongoing(), &c, w, t("2026-03-01T12:05:00Z")),
            Verdict::PollAgain { reason: "waiting: hub_disconnected".into() }
        );
        assert_eq!(judge(&ongoing(), &c, w, t("2026-03-01T12:15:00Z")), Verdict::TimedOut);
        // Seam may say `set` while the hub is away: not verified until it is back.
        c.status = CodeStatus::Set;
        assert!(matches!(judge(&ongoing(), &c, w, t(NOW)), Verdict::PollAgain { .. }));
    }

    #[test]
    fn a_time_bound_code_waits_for_its_start_then_must_be_set() {
        let d =
            desired(r#"{"access_code_id":"ac","starts_at":"2026-03-08T15:00:00Z","ends_at":"2026-03-12T11:00:00Z"}"#);
        let w = window();
        let scheduled = upcoming(CodeStatus::Unset);
        assert_eq!(
            judge(&d, &scheduled, w, t(NOW)),
            Verdict::Scheduled { starts_at: t("2026-03-08T15:00:00Z"), check_at: t("2026-03-07T15:00:00Z") },
            "a week ahead: the next look is a day before the start"
        );
        assert_eq!(
            judge(&d, &scheduled, w, t("2026-03-07T16:00:00Z")),
            Verdict::Scheduled { starts_at: t("2026-03-08T15:00:00Z"), check_at: t("2026-03-08T15:00:00Z") }
        );
        let started = t("2026-03-08T15:00:01Z");
        assert_eq!(judge(&d, &scheduled, w, started), Verdict::PollAgain { reason: "not on the lock yet".into() });
        assert_eq!(judge(&d, &upcoming(CodeStatus::Set), w, started), Verdict::Succeeded);
        assert_eq!(judge(&d, &scheduled, w, t("2026-03-08T15:15:00Z")), Verdict::TimedOut);
        // Still ongoing on Seam's side: the conversion has not happened.
        assert_eq!(
            judge(&d, &code(CodeStatus::Set), w, t(NOW)),
            Verdict::Reapply { reasons: vec!["type".into(), "starts_at".into(), "ends_at".into()] }
        );
    }

    #[test]
    fn a_pin_change_of_an_upcoming_code_is_held_to_the_codes_own_start() {
        // The desired state names no dates: "change next week's guest PIN".
        let d = desired(r#"{"access_code_id":"ac","code":"1234"}"#);
        let w = window();
        let expected = Verdict::Scheduled { starts_at: t("2026-03-08T15:00:00Z"), check_at: t("2026-03-07T15:00:00Z") };
        assert_eq!(judge(&d, &upcoming(CodeStatus::Unset), w, t(NOW)), expected);
        // Long after the ongoing-style deadline, still scheduled, not timed out.
        assert!(matches!(
            judge(&d, &upcoming(CodeStatus::Unset), w, t("2026-03-05T00:00:00Z")),
            Verdict::Scheduled { .. }
        ));
        assert_eq!(
            w.deadline(&effective_schedule(&d.schedule, &upcoming(CodeStatus::Unset))),
            t("2026-03-08T15:15:00Z")
        );
        assert_eq!(judge(&d, &upcoming(CodeStatus::Set), w, t("2026-03-08T15:00:02Z")), Verdict::Succeeded);
    }

    #[test]
    fn scheduling_failures_of_a_future_code_are_found_before_its_start() {
        let d =
            desired(r#"{"access_code_id":"ac","starts_at":"2026-03-08T15:00:00Z","ends_at":"2026-03-12T11:00:00Z"}"#);
        let mut c = upcoming(CodeStatus::Unset);
        c.errors.push(issue("no_space_for_access_code_on_device", Some("2026-03-01T12:00:02Z")));
        assert_eq!(
            judge(&d, &c, window(), t("2026-03-01T12:00:03Z")),
            Verdict::Failed { issues: vec!["no_space_for_access_code_on_device".into()] }
        );
        // Being programmed right after the update: polled, not left for a week.
        let setting = upcoming(CodeStatus::Setting);
        assert!(matches!(judge(&d, &setting, window(), t(NOW)), Verdict::PollAgain { .. }));
        // Still `setting` after the timeout: the pre-start checks take over.
        assert!(matches!(judge(&d, &setting, window(), t("2026-03-01T12:16:00Z")), Verdict::Scheduled { .. }));
    }

    #[test]
    fn only_offline_codes_get_the_rounding_tolerance() {
        let mut d =
            desired(r#"{"access_code_id":"ac","starts_at":"2026-03-02T15:20:00Z","ends_at":"2026-03-05T11:10:00Z"}"#);
        let mut c = code(CodeStatus::Set);
        c.code_type = CodeType::TimeBound;
        c.starts_at = Some(t("2026-03-02T15:00:00Z"));
        c.ends_at = Some(t("2026-03-05T12:00:00Z"));
        assert_eq!(differences(&d, &c), vec!["starts_at", "ends_at"]);
        d.options = UpdateOptions { max_time_rounding: Some("1hour".into()), ..UpdateOptions::default() };
        assert_eq!(differences(&d, &c), vec!["starts_at", "ends_at"], "not an offline code: Seam does not round");
        c.is_offline_access_code = Some(true);
        assert!(differences(&d, &c).is_empty(), "an offline code is rounded to the hour");
        d.options.max_time_rounding = None;
        assert!(differences(&d, &c).is_empty(), "Seam's default rounding is an hour");
        c.starts_at = Some(t("2026-03-02T00:00:00Z"));
        assert_eq!(differences(&d, &c), vec!["starts_at"], "a day off is more than an hour");
        d.options.max_time_rounding = Some("1d".into());
        assert!(differences(&d, &c).is_empty());
        // Milliseconds as Seam reports them are not a difference.
        let mut exact = code(CodeStatus::Set);
        exact.code_type = CodeType::TimeBound;
        exact.starts_at = Some(t("2026-03-02T15:20:00.000Z"));
        exact.ends_at = Some(t("2026-03-05T11:10:00.400Z"));
        d.options = UpdateOptions::default();
        assert!(differences(&d, &exact).is_empty());
    }

    #[test]
    fn a_code_that_must_go_is_waited_for_until_seam_says_it_is_gone() {
        let (since, deadline) = (t(NOW), t("2026-03-01T12:15:00Z"));
        assert_eq!(judge_gone(None, since, deadline, t(NOW)), Verdict::Succeeded, "404: gone");
        let mut removing = code(CodeStatus::Removing);
        removing.warnings.push(issue("delay_in_removing_from_device", Some(NOW)));
        assert!(matches!(
            judge_gone(Some(&removing), since, deadline, t(NOW)),
            Verdict::PollAgain { reason } if reason.contains("delay_in_removing_from_device")
        ));
        let mut offline = code(CodeStatus::Removing);
        offline.errors.push(issue("device_offline", Some(NOW)));
        assert_eq!(
            judge_gone(Some(&offline), since, deadline, t(NOW)),
            Verdict::PollAgain { reason: "waiting: device_offline".into() }
        );
        assert_eq!(judge_gone(Some(&code(CodeStatus::Set)), since, deadline, deadline), Verdict::TimedOut);
        for failure in REMOVAL_FAILURES {
            let mut stuck = code(CodeStatus::Set);
            stuck.errors.push(issue(failure, Some("2026-03-01T12:00:02Z")));
            assert_eq!(
                judge_gone(Some(&stuck), since, deadline, t(NOW)),
                Verdict::Failed { issues: vec![failure.to_string()] }
            );
        }
        // A failure to set it, or one from before the removal began, is not about the removal.
        let mut old = code(CodeStatus::Removing);
        old.errors.push(issue("failed_to_remove_from_device", Some("2026-03-01T11:00:00Z")));
        old.errors.push(issue("no_space_for_access_code_on_device", Some(NOW)));
        assert!(matches!(judge_gone(Some(&old), since, deadline, t(NOW)), Verdict::PollAgain { .. }));
    }

    #[test]
    fn resync_looks_are_spread_over_the_interval_and_one_interval_apart() {
        let interval = Duration::from_secs(6 * 3600);
        let now = t(NOW);
        let next = next_resync("ac_1", now, interval);
        assert!(next > now && next <= now + chrono::Duration::hours(6), "{next}");
        assert_eq!(next_resync("ac_1", next, interval), next + chrono::Duration::hours(6), "one interval apart");
        assert_eq!(next_resync("ac_1", now + chrono::Duration::minutes(1), interval), next, "a stable phase");
        // A thousand codes land all over the interval, not in one spike.
        let mut hours = [0u32; 6];
        for i in 0..1000 {
            let at = next_resync(&format!("ac_{i}"), now, interval);
            hours[((at - now).num_minutes() / 60).clamp(0, 5) as usize] += 1;
        }
        assert!(hours.iter().all(|n| (100..=250).contains(n)), "{hours:?}");
    }

    #[test]
    fn first_poll_and_deadline_follow_the_schedule() {
        let now = t(NOW);
        let fifteen = Duration::from_secs(900);
        assert_eq!(first_poll_at(&Schedule::Ongoing, now), now);
        assert_eq!(first_poll_at(&Schedule::Unchanged, now), now);
        let tb = Schedule::TimeBound { starts_at: t("2026-03-02T15:00:00Z"), ends_at: t("2026-03-03T15:00:00Z") };
        assert_eq!(first_poll_at(&tb, now), t("2026-03-02T15:00:00Z"));
        assert_eq!(deadline(&tb, now, fifteen), t("2026-03-02T15:15:00Z"));
        assert_eq!(deadline(&Schedule::Ongoing, now, fifteen), t("2026-03-01T12:15:00Z"));
        let started = Schedule::TimeBound { starts_at: t("2026-03-01T11:00:00Z"), ends_at: t("2026-03-03T15:00:00Z") };
        assert_eq!(first_poll_at(&started, now), now, "a start in the past: verify at once");
        assert_eq!(pre_start_check_at(t("2026-03-01T13:00:00Z"), now), t("2026-03-01T13:00:00Z"));
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
