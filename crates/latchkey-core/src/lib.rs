//! `latchkey-core`: what latchkey knows about access codes, with no I/O, no
//! clock reads and no async. The Seam client turns Seam's JSON into these
//! types; the reconciler decides with them.

pub mod desired;
pub mod observed;
pub mod outcome;
pub mod verify;

pub use desired::{DesiredState, DesiredStateInput, InvalidDesiredState, Schedule, UpdateOptions};
pub use observed::{AccessCode, ActionAttempt, AttemptStatus, CodeIssue, CodeStatus, CodeType};
pub use outcome::{Outcome, OutcomeError, OutcomeState, Step};
pub use verify::{Budget, Verdict, deadline, differences, first_poll_at, judge, poll_delay};
