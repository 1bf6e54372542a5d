//! The outcome record callers read: one per access code, always for its newest
//! generation, plus the progress the reconciler needs to carry on after a
//! restart (which Seam action attempt it follows, its deadline, its counters).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::observed::{AccessCode, CodeType};

/// Where a reconciliation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeState {
    /// Recorded, not started.
    Pending,
    /// Sending the update to Seam, or following its action attempt.
    Applying,
    /// Polling the access code until it is `set`.
    Verifying,
    /// A time-bound code waiting for `starts_at` before it is verified.
    Scheduled,
    /// On the lock as desired.
    Succeeded,
    /// Seam reports errors on the code or the update's action attempt failed.
    Failed,
    /// Seam refused the update (a permanent error such as `invalid_input`).
    Rejected,
    /// Not `set` before the verification deadline.
    TimedOut,
    /// A newer desired state replaced this one before it finished.
    Superseded,
    /// A time-bound code that succeeded reached its `ends_at`, and Seam
    /// confirmed it gone from the lock.
    Expired,
}

impl OutcomeState {
    /// Every state, in the order of a reconciliation's life.
    pub const ALL: [OutcomeState; 10] = [
        OutcomeState::Pending,
        OutcomeState::Applying,
        OutcomeState::Verifying,
        OutcomeState::Scheduled,
        OutcomeState::Succeeded,
        OutcomeState::Failed,
        OutcomeState::Rejected,
        OutcomeState::TimedOut,
        OutcomeState::Superseded,
        OutcomeState::Expired,
    ];

    /// Whether nothing more will happen for this generation.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OutcomeState::Succeeded
                | OutcomeState::Failed
                | OutcomeState::Rejected
                | OutcomeState::TimedOut
                | OutcomeState::Superseded
                | OutcomeState::Expired
        )
    }

    /// The name used in the record and the stream.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeState::Pending => "pending",
            OutcomeState::Applying => "applying",
            OutcomeState::Verifying => "verifying",
            OutcomeState::Scheduled => "scheduled",
            OutcomeState::Succeeded => "succeeded",
            OutcomeState::Failed => "failed",
            OutcomeState::Rejected => "rejected",
            OutcomeState::TimedOut => "timed_out",
            OutcomeState::Superseded => "superseded",
            OutcomeState::Expired => "expired",
        }
    }
}

/// Why a reconciliation did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutcomeError {
    /// Seam's error type (`invalid_input`, an action attempt's error type,
    /// `access_code_not_found`), `access_code_errors`, `access_code_warnings`,
    /// `drifted`, `timed_out`, `not_removed`, `stay_ended` or `gave_up`.
    pub kind: String,
    /// A human-readable explanation.
    pub message: String,
    /// The code's `error_code`s and `warning_code`s behind it, when Seam
    /// reported issues on the code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<String>,
}

/// The record under `latchkey:{reconcile}:outcome:<access_code_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Outcome {
    /// The access code.
    pub access_code_id: String,
    /// The desired state's generation this record is about (the newest).
    pub generation: u64,
    /// Where it is.
    pub state: OutcomeState,
    /// When this generation was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// Last change of this record.
    pub updated_at: DateTime<Utc>,
    /// When it reached a terminal state.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Update calls sent to Seam for this generation.
    #[serde(default)]
    pub attempts: u32,
    /// Verification polls made.
    #[serde(default)]
    pub polls: u32,
    /// Re-applies after the code was found changed outside latchkey.
    #[serde(default)]
    pub reapplies: u32,
    /// The update's action attempt while it is followed.
    #[serde(default)]
    pub action_attempt_id: Option<String>,
    /// When the update was accepted by Seam.
    #[serde(default)]
    pub applied_at: Option<DateTime<Utc>>,
    /// The access code's device, once known (its rate limit applies).
    #[serde(default)]
    pub device_id: Option<String>,
    /// When latchkey last sent an update for this access code, whatever the
    /// generation (carried over to new generations, to space updates out).
    #[serde(default)]
    pub last_update_at: Option<DateTime<Utc>>,
    /// Verification gives up at this time.
    #[serde(default)]
    pub verify_deadline: Option<DateTime<Utc>>,
    /// The access code as last seen on Seam.
    #[serde(default)]
    pub last_seen: Option<AccessCode>,
    /// Why it did not succeed.
    #[serde(default)]
    pub error: Option<OutcomeError>,
    /// Drift repaired since the code was verified: re-applies after a resync
    /// look found it changed or missing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drift_repairs: u32,
    /// The last drift a resync look found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drift: Option<Drift>,
    /// When Seam confirmed the code gone (a cancellation, or its end of stay);
    /// carried over to later generations, so an update of a deleted code says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Outcome {
    /// The record a fresh generation starts with.
    pub fn pending(access_code_id: &str, generation: u64, now: DateTime<Utc>) -> Self {
        Self {
            access_code_id: access_code_id.to_string(),
            generation,
            state: OutcomeState::Pending,
            enqueued_at: now,
            updated_at: now,
            finished_at: None,
            attempts: 0,
            polls: 0,
            reapplies: 0,
            action_attempt_id: None,
            applied_at: None,
            last_update_at: None,
            device_id: None,
            verify_deadline: None,
            last_seen: None,
            error: None,
            drift_repairs: 0,
            last_drift: None,
            deleted_at: None,
        }
    }

    /// When a succeeded time-bound code's stay ends: it is then watched until
    /// Seam confirms it gone (`expired`).
    pub fn stay_ends_at(&self) -> Option<DateTime<Utc>> {
        let seen = self.last_seen.as_ref()?;
        (self.state == OutcomeState::Succeeded && seen.code_type == CodeType::TimeBound)
            .then_some(seen.ends_at)
            .flatten()
    }

    /// Whether the code's life is over (deleted, or expired, and this record
    /// is final): its records may be forgotten after the retention period.
    pub fn is_forgettable(&self) -> bool {
        self.state.is_terminal() && self.deleted_at.is_some()
    }

    /// Moves to `state` at `now` (setting `finished_at` for terminal states).
    pub fn moved(mut self, state: OutcomeState, now: DateTime<Utc>) -> Self {
        self.state = state;
        self.updated_at = now;
        if state.is_terminal() {
            self.finished_at = Some(now);
        }
        self
    }

    /// Ends the reconciliation with `state` and an error.
    pub fn ended(self, state: OutcomeState, error: OutcomeError, now: DateTime<Utc>) -> Self {
        let mut o = self.moved(state, now);
        o.error = Some(error);
        o
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A difference between the lock and the desired state found after the code
/// was verified: someone changed it at the lock or in another app, or the
/// lock dropped it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Drift {
    /// When the resync look found it.
    pub at: DateTime<Utc>,
    /// What differed (`code`, `name`, `starts_at`..., an issue code, or `missing`).
    pub differences: Vec<String>,
    /// When the repairs of the current day started being counted, and how
    /// many were made since (a code that keeps drifting is not repaired in a
    /// loop).
    pub window_start: DateTime<Utc>,
    /// Repairs since `window_start`.
    pub repairs_in_window: u32,
}

/// `error.kind` of a reconciliation that failed on errors Seam reports on the code.
pub const KIND_ACCESS_CODE_ERRORS: &str = "access_code_errors";
/// `error.kind` of a code still on the lock past its deadline for removal (a
/// cancellation, or its `ends_at` plus the removal grace): a guest who should
/// not get in still may.
pub const KIND_NOT_REMOVED: &str = "not_removed";
/// `error.kind` of a reconciliation latchkey stopped trying: Seam kept failing
/// transiently until the attempts ran out, or its job became a dead letter.
pub const KIND_GAVE_UP: &str = "gave_up";
/// `error.kind` of one that failed on warnings alone (e.g. `ultraloq_access_code_disabled`).
pub const KIND_ACCESS_CODE_WARNINGS: &str = "access_code_warnings";
/// `error.kind` of a time-bound code whose stay ended before Seam showed it
/// set: Seam removed it at `ends_at` while it was still being set, or
/// latchkey removed it because its change came due only after the stay. It
/// is gone, and the guest may never have had a working code.
pub const KIND_STAY_ENDED: &str = "stay_ended";

impl Outcome {
    /// Whether this record is a `failed` that Seam may still turn around: it
    /// failed on issues Seam reports on the code, and Seam keeps retrying
    /// after some of them. Verification looks again until `verify_deadline`
    /// and records `succeeded` if the issues clear and the code is set.
    pub fn may_recover(&self) -> bool {
        self.state == OutcomeState::Failed
            && self
                .error
                .as_ref()
                .is_some_and(|e| e.kind == KIND_ACCESS_CODE_ERRORS || e.kind == KIND_ACCESS_CODE_WARNINGS)
    }
}

/// One state change in an access code's history (`latchkey history ID`):
/// enough to answer "why did the guest's PIN not work on Tuesday?" without
/// the PIN itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// When the state changed.
    pub at: DateTime<Utc>,
    /// Which generation.
    pub generation: u64,
    /// The state it changed to.
    pub state: OutcomeState,
    /// `kind: message` when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What Seam showed then ([`AccessCode::summary`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<String>,
}

impl HistoryEntry {
    /// The entry for `outcome` as it is now.
    pub fn of(outcome: &Outcome) -> Self {
        Self {
            at: outcome.updated_at,
            generation: outcome.generation,
            state: outcome.state,
            error: outcome.error.as_ref().map(|e| format!("{}: {}", e.kind, e.message)),
            seen: outcome.last_seen.as_ref().map(AccessCode::summary),
        }
    }
}

/// What a reconciliation run does next, from the record alone (so a run that
/// crashed anywhere is simply run again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the desired state to Seam (again, if a run died mid-call: an
    /// update carrying the whole desired state is safe to resend).
    Apply,
    /// Follow the update's action attempt.
    FollowAttempt(String),
    /// Poll the access code.
    Verify,
    /// A code that succeeded: look again (a resync, for drift) and, for a
    /// time-bound code, from its `ends_at` confirm it goes. A code that timed
    /// out: look again at each resync while its desired state is in effect,
    /// in case Seam set it after all.
    Watch {
        /// The end of its stay, for a time-bound code.
        ends_at: Option<DateTime<Utc>>,
    },
    /// Finished: nothing to do.
    Done,
}

impl Step {
    /// The step an outcome record calls for.
    pub fn of(outcome: &Outcome) -> Step {
        match outcome.state {
            OutcomeState::Pending => Step::Apply,
            OutcomeState::Applying => match &outcome.action_attempt_id {
                Some(id) => Step::FollowAttempt(id.clone()),
                None => Step::Apply,
            },
            OutcomeState::Verifying | OutcomeState::Scheduled => Step::Verify,
            // (an absent code that succeeded is gone: nothing to watch)
            OutcomeState::Succeeded if outcome.last_seen.is_some() => Step::Watch { ends_at: outcome.stay_ends_at() },
            // Seam keeps trying after latchkey's deadline (a lock back
            // online sets the code later): looked at again while it may yet
            // be set ([`Step::Watch`] of a `timed_out` record).
            OutcomeState::TimedOut if outcome.last_seen.is_some() => Step::Watch { ends_at: None },
            _ if outcome.may_recover() => Step::Verify,
            // latchkey stopped trying (attempts ran out, or the job became a
            // dead letter); its job runs again only when an operator re-queues
            // it, which means: try again from the start.
            OutcomeState::Failed if outcome.error.as_ref().is_some_and(|e| e.kind == KIND_GAVE_UP) => Step::Apply,
            _ => Step::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_with_documented_names() {
        let now: DateTime<Utc> = "2026-03-01T12:00:00Z".parse().unwrap();
        let o = Outcome::pending("ac1", 3, now).moved(OutcomeState::TimedOut, now);
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["state"], "timed_out");
        assert_eq!(v["generation"], 3);
        assert_eq!(v["finished_at"], "2026-03-01T12:00:00Z");
        assert_eq!(serde_json::from_value::<Outcome>(v).unwrap(), o);
        assert!(!OutcomeState::Scheduled.is_terminal() && OutcomeState::Superseded.is_terminal());
    }

    #[test]
    fn each_state_calls_for_one_step() {
        let now: DateTime<Utc> = "2026-03-01T12:00:00Z".parse().unwrap();
        let at = |s| Outcome::pending("a", 1, now).moved(s, now);
        assert_eq!(Step::of(&at(OutcomeState::Pending)), Step::Apply);
        assert_eq!(Step::of(&at(OutcomeState::Applying)), Step::Apply, "a run that died mid-update applies again");
        let mut following = at(OutcomeState::Applying);
        following.action_attempt_id = Some("aa".into());
        assert_eq!(Step::of(&following), Step::FollowAttempt("aa".into()));
        assert_eq!(Step::of(&at(OutcomeState::Scheduled)), Step::Verify);
        assert_eq!(Step::of(&at(OutcomeState::Verifying)), Step::Verify);
        let mut recoverable = at(OutcomeState::Failed);
        recoverable.error =
            Some(OutcomeError { kind: KIND_ACCESS_CODE_ERRORS.into(), message: String::new(), error_codes: vec![] });
        assert_eq!(Step::of(&recoverable), Step::Verify, "a failure on the code's issues is looked at again");
        recoverable.error.as_mut().unwrap().kind = "invalid_input".into();
        assert_eq!(Step::of(&recoverable), Step::Done, "a refusal is final");
        recoverable.error.as_mut().unwrap().kind = KIND_GAVE_UP.into();
        assert_eq!(Step::of(&recoverable), Step::Apply, "a re-queued dead letter starts over");
        let mut stay = at(OutcomeState::Succeeded);
        let ends: DateTime<Utc> = "2026-03-04T11:00:00Z".parse().unwrap();
        stay.last_seen = Some(AccessCode {
            access_code_id: "a".into(),
            device_id: "d".into(),
            name: None,
            code: None,
            code_type: CodeType::TimeBound,
            status: crate::CodeStatus::Set,
            starts_at: Some(now),
            ends_at: Some(ends),
            errors: vec![],
            warnings: vec![],
            is_scheduled_on_device: None,
            is_offline_access_code: None,
        });
        assert_eq!(
            Step::of(&stay),
            Step::Watch { ends_at: Some(ends) },
            "a time-bound code is watched to its end of stay"
        );
        stay.last_seen.as_mut().unwrap().code_type = CodeType::Ongoing;
        assert_eq!(Step::of(&stay), Step::Watch { ends_at: None }, "an ongoing code is watched for drift");
        stay.state = OutcomeState::TimedOut;
        assert_eq!(Step::of(&stay), Step::Watch { ends_at: None }, "Seam may set it after the deadline");
        stay.state = OutcomeState::Expired;
        assert_eq!(Step::of(&stay), Step::Done);
        for s in OutcomeState::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert_eq!(Step::of(&at(s)), Step::Done);
        }
    }
}
