//! `latchkey-core`: what latchkey knows about access codes, with no I/O, no
//! clock reads and no async. The Seam client turns Seam's JSON into these
//! types; the reconciler decides with them.

pub mod desired;
pub mod issue;
pub mod observed;
pub mod outcome;
pub mod verify;

pub use desired::{
    DesiredState, DesiredStateInput, InvalidDesiredState, Schedule, UpdateOptions, id_rule_broken, is_invisible, shown,
};
pub use issue::{IssueEffect, IssueKind, IssueRule};
pub use observed::{AccessCode, ActionAttempt, AttemptStatus, CodeIssue, CodeStatus, CodeType};
pub use outcome::{
    Drift, HistoryEntry, KIND_ACCESS_CODE_ERRORS, KIND_ACCESS_CODE_WARNINGS, KIND_GAVE_UP, KIND_NOT_REMOVED,
    KIND_STAY_ENDED, Outcome, OutcomeError, OutcomeState, Step,
};
pub use verify::{
    PRE_START_LEAD, Verdict, Window, deadline, differences, effective_schedule, first_poll_at, judge, judge_gone,
    next_resync, not_about, off_the_lock, phase_of, poll_delay, pre_start_check_at,
};
