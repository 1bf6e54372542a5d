//! The reconciler, shaped like kube-runtime's: each run loads the access
//! code's newest desired state and outcome record (fetch), asks the core what
//! step comes next (plan), does it against Seam (act), records the result with
//! a compare-and-set, and says when to look again ([`Next`]). Failures go
//! through one policy, [`Reconciler::on_seam_error`].
//!
//! Level-triggered: the job only names the access code; a newer desired state
//! is picked up by the next run, never overwritten by an older one.

use std::{sync::Mutex, time::Duration};

use apalis::prelude::AbortError;
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use latchkey_core::{
    AccessCode, ActionAttempt, AttemptStatus, CodeIssue, DesiredState, Drift, KIND_ACCESS_CODE_ERRORS,
    KIND_ACCESS_CODE_WARNINGS, KIND_GAVE_UP, KIND_NOT_REMOVED, KIND_STAY_ENDED, Outcome, OutcomeError, OutcomeState,
    Schedule, Step, Verdict, Window, deadline, effective_schedule, judge, judge_gone, next_resync, not_about,
    off_the_lock, phase_of, poll_delay, pre_start_check_at,
};
use latchkey_seam::{ErrorClass, SeamClient, UpdateAccessCode};
use latchkey_store::{Change, JobInfo, Limits, Next, RECONCILE_QUEUE, Reconciliations, Recorded, error_chain};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::observe;

/// The payload of a reconciliation job: which access code. Everything else is
/// read from Redis when the job runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileJob {
    /// Seam's id of the access code.
    pub access_code_id: String,
}

/// Tunables of the reconciliation.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long verification may take: after the update for ongoing codes,
    /// after `starts_at` for time-bound ones.
    pub verify_timeout: Duration,
    /// First verification poll interval (grows exponentially, with full jitter).
    pub poll_base: Duration,
    /// Longest verification poll interval.
    pub poll_cap: Duration,
    /// Re-applies allowed when the code is found changed outside latchkey.
    pub max_reapplies: u32,
    /// Quick in-process retries of a transient Seam failure before the job is
    /// handed back to the queue for a durable, backed-off retry.
    pub quick_retries: usize,
    /// Least time between two update calls for one access code: newer desired
    /// states arriving meanwhile are coalesced into the next call.
    pub min_update_interval: Duration,
    /// How long to follow a pending action attempt before judging the access
    /// code itself (the deadline still applies).
    pub attempt_patience: Duration,
    /// Seam's rate limits, enforced across all workers.
    pub limits: Limits,
    /// How long after a time-bound code's `ends_at` Seam may take to remove
    /// it before the outcome says it was not removed.
    pub removal_grace: Duration,
    /// How often a code that succeeded is read again to catch drift (changed
    /// at the lock or in another app, dropped by the lock); `None`: never.
    pub resync: Option<Duration>,
    /// Drift repairs allowed per code per day before it ends `drifted`.
    pub max_drift_repairs: u32,
    /// Verifications of time-bound codes are spread over this window after
    /// `starts_at` (by access code), so a check-in minute is not one spike.
    pub verify_spread: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            verify_timeout: Duration::from_secs(15 * 60),
            poll_base: Duration::from_secs(1),
            poll_cap: Duration::from_secs(60),
            max_reapplies: 2,
            quick_retries: 2,
            min_update_interval: Duration::from_secs(1),
            attempt_patience: Duration::from_secs(10),
            limits: Limits::default(),
            removal_grace: Duration::from_secs(15 * 60),
            resync: Some(Duration::from_secs(6 * 3600)),
            max_drift_repairs: 3,
            verify_spread: Duration::from_secs(5),
        }
    }
}

/// What a run needs: the store, the Seam client and the settings. The lease
/// a run holds comes with its job ([`JobInfo::lease`]).
#[derive(Debug, Clone)]
pub struct Reconciler {
    /// Desired states and outcomes.
    pub store: Reconciliations,
    /// Seam.
    pub seam: SeamClient,
    /// Tunables.
    pub settings: Settings,
}

type RunResult = Result<Next, apalis::prelude::BoxDynError>;

/// Steps one run may take in a row before it goes back through the queue
/// (so a code that keeps being superseded cannot hold a worker slot forever).
const MAX_STEPS_PER_RUN: usize = 4;

/// How far ahead of a worker's clock Seam's may run, as far as a code's end
/// of stay is concerned: a code found gone this close before its `ends_at`
/// was removed at its end of stay ([`Run::watch`]).
const SEAM_CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

fn ms(t: DateTime<Utc>) -> u64 {
    t.timestamp_millis().max(0) as u64
}

impl Reconciler {
    /// One run for one access code, in a span carrying its id and generation.
    pub async fn run(&self, job: &ReconcileJob, info: &JobInfo) -> RunResult {
        let span = tracing::info_span!("reconcile", access_code_id = %job.access_code_id, generation = tracing::field::Empty, attempt = info.attempt);
        let started = std::time::Instant::now();
        observe::job_started(RECONCILE_QUEUE);
        let result =
            Run { r: self, info: info.clone(), carried: Mutex::default() }.run_inner(job).instrument(span).await;
        let how = match &result {
            Ok(Next::Done) => "done",
            Ok(Next::RunAt(_)) => "continued",
            Ok(Next::Wait(_)) => "waiting",
            Ok(Next::Settled) => "continued",
            Err(_) => "failed",
        };
        observe::job_finished(RECONCILE_QUEUE, how, started.elapsed());
        result
    }
}

/// One run of one job: the reconciler, and the job as this run holds it
/// (attempt, lease).
struct Run<'a> {
    r: &'a Reconciler,
    info: JobInfo,
    /// What this run last read and wrote (the desired state of the step, and
    /// the record it then wrote), handed to the next step of the same run
    /// instead of reading both again: the record is what this run wrote
    /// under its lease, and every later write is fenced by generation and
    /// lease, so a newer desired state arriving meanwhile is seen at the next
    /// write (`Superseded`), before anything is sent to Seam.
    carried: Mutex<Carried>,
}

/// See [`Run::carried`].
#[derive(Default)]
struct Carried {
    desired: Option<(u64, DesiredState)>,
    written: Option<Outcome>,
    /// The run has read the records once: the fetch's copy is spent.
    read: bool,
}

impl Run<'_> {
    /// Steps until one says to look again later. A step that is due at once
    /// (verify an ongoing code right after its update, start over with a newer
    /// generation) runs in this same run, re-reading the records first, rather
    /// than going back through the queue: two Redis scripts fewer, and no wait.
    async fn run_inner(&mut self, job: &ReconcileJob) -> RunResult {
        for step in 0..MAX_STEPS_PER_RUN {
            let next = match self.step(job).await {
                // A step continued in this run began with a fresh budget
                // (below), but the queue settles a failure by the attempt the
                // job was fetched with: on its last, a failure of the next
                // step would be buried (and a code left `verifying` for ever)
                // where a continuation through the queue would have had its
                // attempts afresh. Go back to the queue as that continuation,
                // a moment later. (A record that cannot be read is still
                // buried at once.)
                Err(e) if step > 0 && e.downcast_ref::<AbortError>().is_none() => {
                    tracing::warn!(error = %error_chain(e.as_ref()), "a step continued in this run failed; it runs again through the queue");
                    return Ok(Next::RunAt(ms(Utc::now()) + self.poll_delay(1).as_millis() as u64));
                }
                next => next?,
            };
            match next {
                Next::RunAt(at) if at <= ms(Utc::now()) => {
                    // The step succeeded: the next one starts with a fresh budget,
                    // as a continuation through the queue would.
                    self.info.attempt = 1;
                }
                next => return Ok(next),
            }
        }
        Ok(Next::RunAt(0))
    }

    /// Fetch, plan, act: one step.
    async fn step(&self, job: &ReconcileJob) -> RunResult {
        let (carried, first_read) = {
            let mut c = self.carried.lock().unwrap_or_else(|e| e.into_inner());
            let written = c.written.take();
            let carried = match (&c.desired, written) {
                (Some((generation, desired)), Some(outcome)) if outcome.generation == *generation => {
                    Some((desired.clone(), outcome))
                }
                _ => None,
            };
            (carried, !std::mem::replace(&mut c.read, true))
        };
        if let Some((desired, outcome)) = carried {
            return self.act(desired, outcome).await;
        }
        // The first read is the records the fetch handed over with the job
        // (read at the instant of the lease); a later step reads them again.
        let loaded = if first_read {
            self.r.store.load_fetched(&job.access_code_id, &self.info).await
        } else {
            self.r.store.load_leased(&job.access_code_id, &self.info.lease).await
        };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            // A record that cannot be read will not become readable by trying
            // again: a dead letter with the reason at once (its outcome ends
            // `gave_up` if it can be read; enqueueing the code again sets an
            // unreadable record aside and starts afresh).
            Err(e) if !e.is_retryable() => return Err(Box::new(AbortError::new(e))),
            Err(e) => return Err(e.into()),
        };
        let Some(loaded) = loaded else {
            tracing::warn!("no desired state recorded for this access code; nothing to do");
            return Ok(Next::Done);
        };
        tracing::Span::current().record("generation", loaded.generation);
        self.carried.lock().unwrap_or_else(|e| e.into_inner()).desired =
            Some((loaded.generation, loaded.desired.clone()));
        self.act(loaded.desired, loaded.outcome).await
    }

    /// Plans and acts on a desired state and its record.
    async fn act(&self, desired: DesiredState, outcome: Outcome) -> RunResult {
        match Step::of(&outcome) {
            Step::Done => Ok(Next::Done),
            Step::Apply => self.apply(&desired, outcome).await,
            Step::FollowAttempt(id) => self.follow_attempt(&desired, outcome, &id).await,
            Step::Verify if removal(&desired, outcome.applied_at).is_some() => {
                self.verify_gone(&desired, outcome).await
            }
            Step::Verify => self.verify(&desired, outcome).await,
            Step::Watch { ends_at } => self.watch(&desired, outcome, ends_at).await,
        }
    }

    /// Sends the desired state: an update, or a delete for an absent code.
    /// The record says `applying` (compare-and-set) right before the call, so
    /// a stale run stops here instead of sending an older state after a newer
    /// one.
    async fn apply(&self, desired: &DesiredState, mut outcome: Outcome) -> RunResult {
        let now = Utc::now();
        if let Some(last) = outcome.last_update_at {
            let allowed = last + chrono::Duration::from_std(self.r.settings.min_update_interval).unwrap_or_default();
            if now < allowed {
                tracing::debug!(
                    wait_ms = (allowed - now).num_milliseconds(),
                    "updated moments ago; newer states coalesce into the next update"
                );
                // (a wait, not progress: the job's failures so far still count)
                return Ok(Next::Wait(ms(allowed)));
            }
        }
        let device = match desired.device_id.clone().or_else(|| outcome.device_id.clone()) {
            Some(device) => device,
            // The device's rate limit needs the device: learn it once.
            None => match self
                .quick_retry(|| self.r.seam.get_access_code(&desired.access_code_id))
                .await
                .and_then(|code| about(&desired.access_code_id, None, code))
            {
                Ok(code) => code.device_id,
                // A code that must not exist and does not: done.
                Err(e) if desired.absent && e.is_not_found() => return self.gone(desired, outcome, now).await,
                Err(e) if e.is_not_found() && stay_ended(desired, now).is_some() => {
                    return self.on_read_error(desired, e, outcome).await;
                }
                Err(e) => return self.on_seam_error(e, outcome, OutcomeState::Rejected).await,
            },
        };
        outcome.device_id = Some(device.clone());
        // A time-bound code whose stay ended before its change could be sent
        // (held by a backlog, a rate limit, an outage) must not be on the
        // lock now, whatever PIN it has there: it is removed instead (Seam
        // refuses an update that ends in the past), and ends `stay_ended`
        // once Seam no longer has it ([`Run::on_read_error`]).
        let remove = removal(desired, Some(now)).is_some();
        let change = if remove { Change::Delete } else { Change::Update };
        if let Some(wait) = self.r.store.admit(Some((change, &device)), &self.r.settings.limits).await? {
            observe::rate_limit_wait("device");
            tracing::debug!(wait_ms = wait.as_millis() as u64, %device, "device at its rate limit; call rescheduled");
            return self.save_then(&outcome, Next::wait(wait)).await;
        }
        outcome.attempts += 1;
        // (a re-queued dead letter starts over: its failure no longer holds)
        outcome.error = None;
        outcome.finished_at = None;
        outcome.last_update_at = Some(now);
        outcome.applied_at = Some(now);
        outcome.verify_deadline = Some(deadline(&desired.schedule, now, self.r.settings.verify_timeout));
        outcome.action_attempt_id = None;
        let outcome = outcome.moved(OutcomeState::Applying, now);
        if let Some(stop) = self.save(&outcome).await? {
            return Ok(stop);
        }
        let sent = if remove {
            if !desired.absent {
                tracing::warn!("the stay ended before its change could be sent; removing the code instead");
            }
            self.send_fenced(|| self.r.seam.delete_access_code(&desired.access_code_id)).await?
        } else {
            let update = UpdateAccessCode::from(desired);
            self.send_fenced(|| async { Ok(self.r.seam.update_access_code(&update).await?.action_attempt) }).await?
        };
        let Some(result) = sent else {
            tracing::warn!("this run lost the job's lease before retrying its call; another run carries on");
            return Ok(Next::Done);
        };
        match result {
            // Already gone: what an absent code should be.
            Err(e) if desired.absent && e.is_not_found() => self.gone(desired, outcome, Utc::now()).await,
            Err(e) if remove && e.is_not_found() => self.on_read_error(desired, e, outcome).await,
            Err(e) => {
                if let ErrorClass::RateLimited(after) = e.class() {
                    // Seam says the device had enough: hold it, so no worker sends it more.
                    let hold = after.unwrap_or(self.r.settings.limits.device_window);
                    self.r.store.hold_device(change, &device, hold, &self.r.settings.limits).await?;
                }
                self.on_seam_error(e, outcome, OutcomeState::Rejected).await
            }
            Ok(attempt) => match attempt {
                Some(a) if a.status == AttemptStatus::Pending => {
                    let mut o = outcome.moved(OutcomeState::Applying, Utc::now());
                    o.action_attempt_id = Some(a.action_attempt_id);
                    self.save_then(&o, Next::after(self.r.settings.poll_base)).await
                }
                Some(a) if a.status == AttemptStatus::Error => self.attempt_failed(desired, outcome, a.error).await,
                _ => self.start_verifying(desired, outcome).await,
            },
        }
    }

    /// Follows the update's action attempt until it settles. The first look
    /// goes to the code instead ([`Run::look_first`]).
    async fn follow_attempt(&self, desired: &DesiredState, mut outcome: Outcome, id: &str) -> RunResult {
        if let Some(wait) = self.key_budget_wait(Share::Fresh).await? {
            return Ok(Next::wait(wait));
        }
        if outcome.polls == 0 {
            match self.look_first(desired, outcome).await {
                Ok(looked) => return looked,
                Err(back) => outcome = back,
            }
            if let Some(wait) = self.key_budget_wait(Share::Fresh).await? {
                return Ok(Next::wait(wait));
            }
        }
        match self.quick_retry(|| self.r.seam.get_action_attempt(id)).await {
            Err(e) => self.on_seam_error(e, outcome, OutcomeState::Failed).await,
            Ok(a) => match a.status {
                AttemptStatus::Success => self.start_verifying(desired, outcome).await,
                AttemptStatus::Error => self.attempt_failed(desired, outcome, a.error).await,
                _ => {
                    // Still pending. Past the patience (or the deadline), judge
                    // the access code itself: its status is the truth.
                    let now = Utc::now();
                    if now >= self.patience_ends(&outcome) {
                        tracing::info!("the action attempt is still pending; verifying the access code instead");
                        return self.start_verifying(desired, outcome).await;
                    }
                    outcome.polls += 1;
                    self.follow_later(outcome, now).await
                }
            },
        }
    }

    /// The first look after a call reads the code, not the attempt. A code
    /// Seam shows as desired (set, or scheduled for its start, with no issue
    /// raised since the update; gone after a delete) is the truth whatever
    /// the attempt says yet: the reconciliation ends on two requests, the
    /// call and one get, where asking the attempt first costs a third. That
    /// is a quick device, or a slow one whose `set_on_device` event brought
    /// this run (its `access_code.changed` echo does not:
    /// [`latchkey_store::CodeEvent`]). Anything else proves nothing while the
    /// call is pending (the code is `setting` or `removing`, or still shows
    /// its old fields): the look is counted and the attempt is followed from
    /// the next one on, so a slow device costs no request more than
    /// following the attempt from the start would. A read that failed for
    /// now (rate limited, unreadable) is no verdict: the outcome comes back
    /// (`Err`) and the attempt is asked at once.
    async fn look_first(&self, desired: &DesiredState, mut outcome: Outcome) -> Result<RunResult, Outcome> {
        let removing = removal(desired, outcome.applied_at).is_some();
        let read =
            if removing { self.find_code(&outcome).await } else { self.read_code(desired, &outcome).await.map(Some) };
        let found = match read {
            Ok(found) => found,
            Err(e) if matches!(e.class(), ErrorClass::Permanent | ErrorClass::Unauthorized) => {
                return Ok(self.on_read_error(desired, e, outcome).await);
            }
            Err(e) => {
                tracing::debug!(error = %error_chain(&e), "the first look failed; asking the attempt");
                return Err(outcome);
            }
        };
        let now = Utc::now();
        match found {
            None if removing => {
                outcome.polls += 1;
                Ok(self.gone(desired, outcome, now).await)
            }
            Some(code)
                if !removing
                    && matches!(
                        judge(desired, &code, self.window(&outcome), now),
                        Verdict::Succeeded | Verdict::Scheduled { .. }
                    ) =>
            {
                let mut o = outcome.moved(OutcomeState::Verifying, now);
                o.action_attempt_id = None;
                Ok(self.judged(desired, o, code, false).await)
            }
            found => {
                tracing::debug!(status = ?found.as_ref().map(|c| c.status), "not as desired yet; following the attempt");
                outcome.polls += 1;
                outcome.last_seen = found;
                Ok(self.follow_later(outcome, now).await)
            }
        }
    }

    /// When following a pending attempt gives way to judging the code: the
    /// patience after the call, or the deadline if that comes first.
    fn patience_ends(&self, outcome: &Outcome) -> DateTime<Utc> {
        let sent = outcome.last_update_at.unwrap_or(outcome.updated_at);
        let patience = sent + chrono::Duration::from_std(self.r.settings.attempt_patience).unwrap_or_default();
        patience.min(outcome.verify_deadline.unwrap_or(patience))
    }

    /// The next look at a pending attempt: backed off, and never past the
    /// patience or the deadline.
    async fn follow_later(&self, outcome: Outcome, now: DateTime<Utc>) -> RunResult {
        let at = self.next_poll(now, outcome.polls, self.patience_ends(&outcome));
        self.save_then(&outcome, Next::RunAt(at)).await
    }

    /// Seam accepted the update: look at the code at once. An ongoing code is
    /// polled until it is set; a future time-bound code is looked at now to
    /// catch scheduling failures early, then at the pre-start checks and at
    /// `starts_at` ([`judge`] says when).
    async fn start_verifying(&self, desired: &DesiredState, outcome: Outcome) -> RunResult {
        let now = Utc::now();
        let mut o = outcome.moved(OutcomeState::Verifying, now);
        o.action_attempt_id = None;
        if o.verify_deadline.is_none() {
            o.verify_deadline = Some(deadline(&desired.schedule, now, self.r.settings.verify_timeout));
        }
        // The first look is now, in this run, and what it finds is recorded
        // (`succeeded`, or `verifying` with the poll counted): `verifying` is
        // written on its own only when the look recorded nothing (a wait for
        // the key budget, a transient failure), exactly as before the look.
        self.carried.lock().unwrap_or_else(|e| e.into_inner()).written = None;
        let looked = if removal(desired, o.applied_at).is_some() {
            self.verify_gone(desired, o.clone()).await
        } else {
            self.verify(desired, o.clone()).await
        };
        if self.carried.lock().unwrap_or_else(|e| e.into_inner()).written.is_some() {
            return looked;
        }
        match looked {
            Ok(next) => self.save_then(&o, next).await,
            Err(e) => match self.save(&o).await? {
                Some(stop) => Ok(stop),
                None => Err(e),
            },
        }
    }

    async fn verify(&self, desired: &DesiredState, outcome: Outcome) -> RunResult {
        let revisiting = outcome.may_recover();
        if revisiting && outcome.verify_deadline.is_none_or(|d| Utc::now() >= d) {
            // The window closed on a failure: it stands.
            return Ok(Next::Done);
        }
        if let Some(wait) = self.key_budget_wait(Share::Fresh).await? {
            return Ok(Next::wait(wait));
        }
        let observed = match self.read_code(desired, &outcome).await {
            Ok(code) => code,
            Err(e) => return self.on_read_error(desired, e, outcome).await,
        };
        self.judged(desired, outcome, observed, revisiting).await
    }

    /// A request about the code failed (a look while verifying, or a read or
    /// delete in [`Run::apply`]). A time-bound code Seam no longer has once
    /// its stay ended is gone as it should be, but was never seen set:
    /// Seam removed it at `ends_at` while a slow lock was still setting it
    /// (or an update came late in the stay), or latchkey deleted it because
    /// its change came due only after the stay. The generation failed, and
    /// the outcome says so (`stay_ended`), not "deleted, or never existed".
    /// Anything else is [`Run::on_seam_error`].
    async fn on_read_error(&self, desired: &DesiredState, err: latchkey_seam::Error, outcome: Outcome) -> RunResult {
        let now = Utc::now();
        if err.is_not_found()
            && let Some(ends_at) = stay_ended(desired, now)
        {
            return self.ended_stay(outcome, ends_at, now).await;
        }
        self.on_seam_error(err, outcome, OutcomeState::Failed).await
    }

    /// Records that the stay ended at `ends_at` before its code was seen
    /// set, and Seam no longer has the code ([`Run::on_read_error`]).
    async fn ended_stay(&self, outcome: Outcome, ends_at: DateTime<Utc>, now: DateTime<Utc>) -> RunResult {
        let end = ends_at.to_rfc3339();
        let message = if outcome.applied_at.is_some_and(|sent| sent >= ends_at) {
            format!(
                "the stay ended at {end} before the change could be sent (a backlog, a rate limit or an outage held it): latchkey removed the access code instead, and Seam no longer has it; the guest never had this PIN"
            )
        } else {
            format!(
                "the stay ended at {end} before Seam showed the access code set, and Seam removes a time-bound code when its stay ends (HTTP 404): the guest may never have had a working code"
            )
        };
        tracing::error!(error = %message, "the stay ended before the code was seen set");
        let error = OutcomeError { kind: KIND_STAY_ENDED.into(), message, error_codes: vec![] };
        let mut o = outcome.ended(OutcomeState::Failed, error, now);
        // (gone from Seam: an update cannot bring it back, and its records
        // are forgotten after the retention, as a deleted code's)
        o.last_seen = None;
        o.action_attempt_id = None;
        o.deleted_at = Some(now);
        self.finish(o).await
    }

    /// Reads the access code, checked to be the one asked for, on the
    /// device it should be on.
    async fn read_code(&self, desired: &DesiredState, outcome: &Outcome) -> latchkey_seam::Result<AccessCode> {
        let device = desired.device_id.as_deref().or(outcome.device_id.as_deref());
        self.quick_retry(|| self.r.seam.get_access_code(&desired.access_code_id))
            .await
            .and_then(|code| about(&desired.access_code_id, device, code))
    }

    /// The verification window of the update recorded in `outcome`.
    fn window(&self, outcome: &Outcome) -> Window {
        Window {
            applied_at: outcome.applied_at.unwrap_or(outcome.enqueued_at),
            timeout: self.r.settings.verify_timeout,
            reapplies: outcome.reapplies,
            max_reapplies: self.r.settings.max_reapplies,
        }
    }

    /// Judges the code as seen (one poll more) and records the verdict.
    /// `revisiting`: the record ended in a failure Seam may turn around.
    async fn judged(
        &self,
        desired: &DesiredState,
        mut outcome: Outcome,
        observed: AccessCode,
        revisiting: bool,
    ) -> RunResult {
        let now = Utc::now();
        outcome.polls += 1;
        let window = self.window(&outcome);
        let schedule = effective_schedule(&desired.schedule, &observed);
        let deadline = window.deadline(&schedule);
        outcome.verify_deadline = Some(deadline);
        let verdict = judge(desired, &observed, window, now);
        tracing::debug!(?verdict, status = ?observed.status, "verified");
        outcome.last_seen = Some(observed.clone());
        if revisiting && !matches!(verdict, Verdict::Failed { .. }) {
            // Seam turned it around: the failure no longer holds.
            outcome.error = None;
            outcome.finished_at = None;
        }
        match verdict {
            Verdict::Succeeded => {
                let o = outcome.moved(OutcomeState::Succeeded, now);
                // Watched from now on: resync looks for drift, and its end of stay.
                let next = self.next_watch(&o);
                self.finish_then(o, next).await
            }
            Verdict::Failed { issues } => {
                let error = issues_error(&observed, issues);
                // Seam keeps retrying after some failures: look again while the window is open.
                let next = match schedule {
                    Schedule::TimeBound { starts_at, .. } if now < starts_at => {
                        let check_at = pre_start_check_at(starts_at, now);
                        if check_at == starts_at {
                            self.spread(&desired.access_code_id, check_at)
                        } else {
                            ms(check_at)
                        }
                    }
                    _ => ms(now) + self.poll_delay(outcome.polls).as_millis() as u64,
                };
                let next = if next < ms(deadline) { Next::RunAt(next) } else { Next::Done };
                if revisiting {
                    outcome.error = Some(error);
                    outcome.updated_at = now;
                    return self.save_then(&outcome, next).await;
                }
                self.finish_then(outcome.ended(OutcomeState::Failed, error, now), next).await
            }
            Verdict::Reapply { reasons } => {
                tracing::warn!(?reasons, "the code on Seam is not as desired; applying again");
                outcome.reapplies += 1;
                self.save_then(&outcome.moved(OutcomeState::Pending, now), Next::RunAt(ms(now))).await
            }
            Verdict::Drifted { reasons } => {
                let error = OutcomeError {
                    kind: "drifted".into(),
                    message: format!(
                        "still not as desired ({}) after {} re-applies",
                        reasons.join(", "),
                        outcome.reapplies
                    ),
                    error_codes: reasons.into_iter().filter(|r| observed.issues().any(|(_, i)| &i.code == r)).collect(),
                };
                self.finish(outcome.ended(OutcomeState::Failed, error, now)).await
            }
            Verdict::Scheduled { starts_at, check_at } => {
                let at =
                    if check_at == starts_at { self.spread(&desired.access_code_id, check_at) } else { ms(check_at) };
                tracing::debug!(%starts_at, %check_at, "scheduled; nothing wrong seen");
                self.save_then(&outcome.moved(OutcomeState::Scheduled, now), Next::RunAt(at)).await
            }
            Verdict::PollAgain { reason } => {
                tracing::debug!(reason, polls = outcome.polls, "not set yet");
                let at = self.next_poll(now, outcome.polls, deadline);
                self.save_then(&outcome.moved(OutcomeState::Verifying, now), Next::RunAt(at)).await
            }
            Verdict::TimedOut => {
                let error = OutcomeError {
                    kind: "timed_out".into(),
                    message: format!("not set as desired by the deadline; last seen {}", observed.summary()),
                    error_codes: observed.issues().map(|(_, i)| i.code.clone()).collect(),
                };
                self.timed_out(outcome, error, now).await
            }
        }
    }

    /// The deadline passed before the code was seen set as desired. Seam
    /// keeps trying after it, so the code is looked at again at each resync
    /// ([`Run::watch_timed_out`]).
    async fn timed_out(&self, outcome: Outcome, error: OutcomeError, now: DateTime<Utc>) -> RunResult {
        let o = outcome.ended(OutcomeState::TimedOut, error, now);
        let next = self.next_watch(&o);
        self.finish_then(o, next).await
    }

    /// The code is gone after a removal: as an absent desired state wants,
    /// or, for a stay that ended before its change was sent, `stay_ended`.
    async fn gone(&self, desired: &DesiredState, outcome: Outcome, now: DateTime<Utc>) -> RunResult {
        if let Some(ends_at) = stay_ended(desired, now) {
            return self.ended_stay(outcome, ends_at, now).await;
        }
        let mut o = outcome.moved(OutcomeState::Succeeded, now);
        o.last_seen = None;
        o.action_attempt_id = None;
        o.deleted_at = Some(now);
        self.finish(o).await
    }

    /// After a delete: polls until Seam answers 404.
    async fn verify_gone(&self, desired: &DesiredState, mut outcome: Outcome) -> RunResult {
        let after = removal(desired, outcome.applied_at).unwrap_or(Removal::Cancellation);
        let observed = match self.look(&outcome, Share::Fresh, None).await {
            Ok(code) => code,
            Err(stop) => return stop,
        };
        let now = Utc::now();
        outcome.polls += 1;
        let since = outcome.applied_at.unwrap_or(outcome.enqueued_at);
        let deadline = deadline(&Schedule::Unchanged, since, self.r.settings.verify_timeout);
        outcome.verify_deadline = Some(deadline);
        let verdict = judge_gone(observed.as_ref(), since, deadline, now);
        outcome.last_seen = observed;
        match verdict {
            Verdict::Succeeded => self.gone(desired, outcome, now).await,
            Verdict::Failed { issues } => self.not_removed(outcome, issues, after).await,
            Verdict::TimedOut => self.not_removed(outcome, vec![], after).await,
            _ => {
                let at = self.next_poll(now, outcome.polls, deadline);
                self.save_then(&outcome.moved(OutcomeState::Verifying, now), Next::RunAt(at)).await
            }
        }
    }

    /// When a code that succeeded is looked at next: its next resync look
    /// (when resync is on) or its end of stay, whichever comes first.
    fn next_watch(&self, o: &Outcome) -> Next {
        let id = &o.access_code_id;
        let end = o.stay_ends_at().map(|e| self.spread(id, e));
        let resync = self.r.settings.resync.map(|interval| ms(next_resync(id, Utc::now(), interval)));
        match (end, resync) {
            (Some(e), Some(r)) => Next::RunAt(e.min(r)),
            (Some(at), None) | (None, Some(at)) => Next::RunAt(at),
            (None, None) => Next::Done,
        }
    }

    /// A code that succeeded, looked at again: past its `ends_at`, it must go
    /// (`watch_end`); otherwise a resync look compares the lock with the
    /// desired state and repairs drift.
    async fn watch(&self, desired: &DesiredState, mut outcome: Outcome, ends_at: Option<DateTime<Utc>>) -> RunResult {
        if outcome.state == OutcomeState::TimedOut {
            return self.watch_timed_out(desired, outcome).await;
        }
        if let Some(ends_at) = ends_at
            && Utc::now() >= ends_at
        {
            return self.watch_end(desired, outcome, ends_at).await;
        }
        if self.r.settings.resync.is_none() {
            return Ok(self.next_watch(&outcome));
        }
        // (Seam failing this look proves nothing about the lock: the outcome
        // stands, and the next look is as planned)
        let observed = match self.look(&outcome, Share::Background, Some(self.next_watch(&outcome))).await {
            Ok(code) => code,
            Err(stop) => return stop,
        };
        let now = Utc::now();
        outcome.polls += 1;
        if observed.is_none()
            && let Some(ends_at) = ends_at
            && now + SEAM_CLOCK_SKEW >= ends_at
        {
            // Gone in the last moments of its stay: Seam removing it at its
            // own `ends_at`, by a clock a little ahead of this one. That is
            // the end of the stay, confirmed from `ends_at` (`expired`), not
            // drift: an update cannot bring a deleted code back.
            tracing::debug!(%ends_at, "gone just before its end of stay; confirmed at ends_at");
            return Ok(Next::RunAt(self.spread(&desired.access_code_id, ends_at)));
        }
        let drift = match &observed {
            None => vec!["missing".to_string()],
            Some(code) => {
                let window = Window { reapplies: 0, max_reapplies: 1, ..self.window(&outcome) };
                match judge(desired, code, window, now) {
                    Verdict::Reapply { reasons } | Verdict::Drifted { reasons } => reasons,
                    Verdict::Failed { issues } => issues,
                    // Shown off the lock while it should be usable, with nothing
                    // to explain it (the lock lost it: a reset, a battery swap).
                    _ if off_the_lock(desired, code, window.applied_at, now) => vec!["status".to_string()],
                    // As desired, or the lock is out of reach: nothing to repair now.
                    _ => vec![],
                }
            }
        };
        if observed.is_some() {
            outcome.last_seen = observed;
        }
        if drift.is_empty() {
            outcome.updated_at = now;
            let next = self.next_watch(&outcome);
            return self.save_then(&outcome, next).await;
        }
        self.repair_drift(outcome, drift, now).await
    }

    /// A code that timed out, at a resync: Seam keeps trying after
    /// latchkey's deadline, so a lock back online may have set it since. Set
    /// as desired, it is `succeeded` after all, and watched as any code that
    /// succeeded; otherwise the record stands and the next resync looks
    /// again, while the desired state is in effect (not past its stay) and
    /// Seam has the code.
    async fn watch_timed_out(&self, desired: &DesiredState, mut outcome: Outcome) -> RunResult {
        if self.r.settings.resync.is_none() || stay_ended(desired, Utc::now()).is_some() {
            return Ok(Next::Done);
        }
        let standing = self.next_watch(&outcome);
        let Some(code) = (match self.look(&outcome, Share::Background, Some(standing)).await {
            Ok(code) => code,
            Err(stop) => return stop,
        }) else {
            return Ok(Next::Done);
        };
        let now = Utc::now();
        outcome.polls += 1;
        if judge(desired, &code, self.window(&outcome), now) == Verdict::Succeeded {
            tracing::info!(timed_out_at = ?outcome.finished_at, "set after the verification deadline: succeeded after all");
            outcome.error = None;
            outcome.last_seen = Some(code);
            let o = outcome.moved(OutcomeState::Succeeded, now);
            let next = self.next_watch(&o);
            return self.finish_then(o, next).await;
        }
        outcome.last_seen = Some(code);
        outcome.updated_at = now;
        self.save_then(&outcome, standing).await
    }

    /// The lock no longer matches a code that succeeded: apply it again, at
    /// most `max_drift_repairs` times a day; a code that keeps drifting ends
    /// `failed` (`drifted`) instead of being repaired in a loop.
    async fn repair_drift(&self, mut outcome: Outcome, differences: Vec<String>, now: DateTime<Utc>) -> RunResult {
        let day = chrono::Duration::hours(24);
        let (window_start, repairs) = match &outcome.last_drift {
            Some(d) if now - d.window_start < day => (d.window_start, d.repairs_in_window),
            _ => (now, 0),
        };
        let mut drift = Drift { at: now, differences: differences.clone(), window_start, repairs_in_window: repairs };
        if repairs >= self.r.settings.max_drift_repairs {
            outcome.last_drift = Some(drift);
            let error = OutcomeError {
                kind: "drifted".into(),
                message: format!(
                    "the lock keeps drifting from the desired state ({}): {repairs} repairs since {}; not repaired again",
                    differences.join(", "),
                    window_start.to_rfc3339()
                ),
                error_codes: vec![],
            };
            return self.finish(outcome.ended(OutcomeState::Failed, error, now)).await;
        }
        tracing::warn!(?differences, repairs = repairs + 1, "the lock drifted from the desired state; applying again");
        drift.repairs_in_window += 1;
        outcome.last_drift = Some(drift);
        outcome.drift_repairs += 1;
        outcome.reapplies = 0;
        outcome.finished_at = None;
        self.save_then(&outcome.moved(OutcomeState::Pending, now), Next::RunAt(ms(now))).await
    }

    /// A time-bound code that succeeded: from its `ends_at`, polls until Seam
    /// confirms it gone (`expired`), for at most the removal grace.
    async fn watch_end(&self, desired: &DesiredState, mut outcome: Outcome, ends_at: DateTime<Utc>) -> RunResult {
        let now = Utc::now();
        if now < ends_at {
            return Ok(Next::RunAt(self.spread(&desired.access_code_id, ends_at)));
        }
        let observed = match self.look(&outcome, Share::Fresh, None).await {
            Ok(code) => code,
            Err(stop) => return stop,
        };
        let now = Utc::now();
        outcome.polls += 1;
        let grace = chrono::Duration::from_std(self.r.settings.removal_grace).unwrap_or(chrono::Duration::MAX);
        let deadline = ends_at + grace;
        match judge_gone(observed.as_ref(), ends_at, deadline, now) {
            Verdict::Succeeded => {
                let mut o = outcome.moved(OutcomeState::Expired, now);
                o.deleted_at = Some(now);
                self.finish(o).await
            }
            Verdict::Failed { issues } => {
                outcome.last_seen = observed;
                self.not_removed(outcome, issues, Removal::EndOfStay).await
            }
            Verdict::TimedOut => {
                outcome.last_seen = observed;
                self.not_removed(outcome, vec![], Removal::EndOfStay).await
            }
            _ => {
                // Still `succeeded` (it was, for its stay) while Seam removes
                // it: the record only counts the look.
                outcome.updated_at = now;
                let at = self.next_poll(now, outcome.polls, deadline);
                self.save_then(&outcome, Next::RunAt(at)).await
            }
        }
    }

    /// A code that must be gone is still on the lock: loud, because a guest
    /// who should not get in still may.
    async fn not_removed(&self, outcome: Outcome, issues: Vec<String>, after: Removal) -> RunResult {
        let seen = outcome.last_seen.as_ref().map_or("nothing".to_string(), AccessCode::summary);
        let message = format!(
            "still on the lock after its {} (last seen: {seen}); a guest who should not get in still may",
            after.as_str().replace('_', " ")
        );
        tracing::error!(after = after.as_str(), %seen, "an access code that must be gone is still on the lock");
        observe::not_removed(after.as_str());
        let error = OutcomeError { kind: KIND_NOT_REMOVED.into(), message, error_codes: issues };
        self.finish(outcome.ended(OutcomeState::Failed, error, Utc::now())).await
    }

    async fn attempt_failed(
        &self,
        desired: &DesiredState,
        outcome: Outcome,
        error: Option<latchkey_core::CodeIssue>,
    ) -> RunResult {
        if let Some(after) = removal(desired, outcome.applied_at) {
            let issues = error.map(|e| vec![e.code]).unwrap_or_default();
            return self.not_removed(outcome, issues, after).await;
        }
        let (kind, message) = error
            .map_or(("action_attempt_error".to_string(), "the update's action attempt failed".to_string()), |e| {
                (e.code, e.message)
            });
        self.finish(outcome.ended(
            OutcomeState::Failed,
            OutcomeError { kind, message, error_codes: vec![] },
            Utc::now(),
        ))
        .await
    }

    /// The one place failures of Seam calls are decided: permanent ones end
    /// the reconciliation (`permanent_state`: `rejected` for an update,
    /// `failed` otherwise); transient ones go back to the queue for a backed-off
    /// retry (at least `Retry-After` when rate limited) until the last attempt,
    /// which ends it as `failed`.
    async fn on_seam_error(
        &self,
        err: latchkey_seam::Error,
        outcome: Outcome,
        permanent_state: OutcomeState,
    ) -> RunResult {
        let now = Utc::now();
        let class = err.class();
        if class == ErrorClass::Unauthorized {
            // Not this job's fault: no attempt used, no outcome changed. The
            // client reports the refused key (readiness, metric, alert); work
            // resumes by itself once the key works again.
            let wait = self.auth_wait();
            tracing::warn!(error = %error_chain(&err), wait_ms = wait.as_millis() as u64, "Seam refuses the API key; waiting");
            return Ok(Next::wait(wait));
        }
        let (kind, message) = if err.is_not_found() {
            let seam_type = err.api_error().map_or("not_found", |e| e.error_type.as_str());
            let message = match outcome.deleted_at {
                Some(at) => format!(
                    "the access code {:?} was deleted at {} (cancelled, or its stay ended; HTTP 404 {seam_type}): an update cannot bring it back, create a new access code",
                    outcome.access_code_id,
                    at.to_rfc3339()
                ),
                None => format!(
                    "Seam has no access code {:?} (HTTP 404 {seam_type}): it was deleted, or never existed in this workspace",
                    outcome.access_code_id
                ),
            };
            ("access_code_not_found".to_string(), message)
        } else {
            let kind = err.api_error().map_or_else(|| format!("{class:?}").to_lowercase(), |e| e.error_type.clone());
            (kind, error_chain(&err))
        };
        if class == ErrorClass::Permanent {
            tracing::error!(error = %message, "Seam refused the request; giving up on this generation");
            return self
                .finish(outcome.ended(permanent_state, OutcomeError { kind, message, error_codes: vec![] }, now))
                .await;
        }
        if self.last_try(&err) {
            tracing::error!(error = %message, attempts = self.info.attempt, "Seam kept failing; giving up on this generation");
            let error = OutcomeError {
                kind: KIND_GAVE_UP.into(),
                message: format!("after {} attempts: {message}", self.info.attempt),
                error_codes: vec![],
            };
            return self.finish(outcome.ended(OutcomeState::Failed, error, now)).await;
        }
        if let ErrorClass::RateLimited(after) = class {
            // Not a failure of this step: wait, without using up an attempt,
            // what Seam asked (the client caps it at MAX_RETRY_AFTER), never
            // less than the normal backoff, and never past a verification's
            // deadline: a code still rate limited at its deadline times out.
            if outcome.state == OutcomeState::Verifying
                && let Some(deadline) = outcome.verify_deadline
                && now >= deadline
            {
                let error = OutcomeError {
                    kind: "timed_out".into(),
                    message: format!("Seam kept rate limiting the verification until the deadline: {message}"),
                    error_codes: vec![],
                };
                return self.timed_out(outcome, error, now).await;
            }
            let floor = self.poll_delay(outcome.polls.max(1)).max(self.r.settings.poll_base);
            let wait = after.unwrap_or(self.r.settings.poll_cap.min(Duration::from_secs(10))).max(floor);
            let at = match (outcome.state, outcome.verify_deadline) {
                (OutcomeState::Verifying, Some(deadline)) => (ms(now) + wait.as_millis() as u64).min(ms(deadline)),
                _ => ms(now) + wait.as_millis() as u64,
            };
            observe::rate_limit_wait("seam");
            tracing::warn!(wait_ms = at.saturating_sub(ms(now)), "rate limited by Seam; waiting");
            return Ok(Next::Wait(at));
        }
        Err(Box::new(err))
    }

    /// Whether [`Run::on_seam_error`] gives the generation up on this
    /// failure: one worth trying again (the key refused is waited out), on
    /// the job's last attempt.
    fn last_try(&self, e: &latchkey_seam::Error) -> bool {
        !matches!(e.class(), ErrorClass::Unauthorized | ErrorClass::Permanent)
            && self.info.attempt >= self.info.max_attempts
    }

    /// How long a run waits while Seam refuses the API key: the longest poll
    /// interval (at most 30 s), with jitter so waiting jobs do not return at once.
    fn auth_wait(&self) -> Duration {
        let cap = self.r.settings.poll_cap.min(Duration::from_secs(30));
        cap.mul_f64(0.5 + rand::rng().random::<f64>() / 2.0)
    }

    /// The in-process retries of a transient Seam failure, before the
    /// queue's durable backoff takes over.
    fn quick_backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1))
            .with_max_times(self.r.settings.quick_retries)
            .with_jitter()
    }

    /// Retries a transient failure of a read a couple of times in process.
    async fn quick_retry<T, F, Fut>(&self, call: F) -> latchkey_seam::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = latchkey_seam::Result<T>>,
    {
        call.retry(self.quick_backoff())
            .when(|e: &latchkey_seam::Error| e.class() == ErrorClass::Transient)
            .notify(|e, d| tracing::warn!(error = %error_chain(e), retry_in_ms = d.as_millis() as u64, "Seam call failed; retrying"))
            .await
    }

    /// Sends a change (an update or a delete), retrying transient failures a
    /// couple of times in process. The first call follows the `applying`
    /// record, which checked this run's lease; before each retry the lease is
    /// checked (and renewed) again, so a run cut off from Redis while its
    /// retries were pending, whose job another run has taken over, never sends
    /// its older state after the newer one. `None` when the lease is lost.
    async fn send_fenced<F, Fut>(
        &self,
        mut call: F,
    ) -> Result<Option<latchkey_seam::Result<Option<ActionAttempt>>>, latchkey_store::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = latchkey_seam::Result<Option<ActionAttempt>>>,
    {
        let mut delays = self.quick_backoff().build();
        loop {
            let result = call().await;
            match (&result, delays.next()) {
                (Err(e), Some(delay)) if e.class() == ErrorClass::Transient => {
                    tracing::warn!(error = %error_chain(e), retry_in_ms = delay.as_millis() as u64, "Seam call failed; retrying");
                    tokio::time::sleep(delay).await;
                    if !self.r.store.hold(&self.info.id, &self.info.lease).await? {
                        return Ok(None);
                    }
                }
                _ => return Ok(Some(result)),
            }
        }
    }

    /// The key budget's wait before a read, if any (no Redis call without a
    /// budget). A resync look may use only half the burst, so it never
    /// starves fresh work of the budget.
    async fn key_budget_wait(&self, share: Share) -> Result<Option<Duration>, latchkey_store::Error> {
        let limits = &self.r.settings.limits;
        if limits.key_rate == 0 {
            return Ok(None);
        }
        let limits = match share {
            Share::Fresh => *limits,
            Share::Background => Limits { key_burst: (limits.key_burst / 2).max(1), ..*limits },
        };
        let wait = self.r.store.admit(None, &limits).await?;
        if wait.is_some() {
            observe::rate_limit_wait("api_key");
        }
        Ok(wait)
    }

    /// `at` plus this access code's place in the spread window (a stable hash).
    fn spread(&self, access_code_id: &str, at: DateTime<Utc>) -> u64 {
        let window = self.r.settings.verify_spread.as_millis() as u64;
        if window == 0 {
            return ms(at);
        }
        ms(at) + phase_of(access_code_id) % window
    }

    /// The code as Seam has it now, `None` once it is gone (404), read within
    /// the key budget (`share` of it) and with the quick in-process retries.
    /// `Err` is what the run returns instead: a wait for the budget, or what
    /// the one error policy decided. A look that only checks on a recorded
    /// verdict (a resync look) names the run's next step, `standing`: when
    /// Seam keeps failing it, the policy would give the generation up
    /// (`gave_up`), though a look Seam did not answer says nothing about the
    /// lock; the outcome stands instead, and the run goes on to `standing`.
    async fn look(
        &self,
        outcome: &Outcome,
        share: Share,
        standing: Option<Next>,
    ) -> Result<Option<AccessCode>, RunResult> {
        match self.key_budget_wait(share).await {
            Ok(Some(wait)) => return Err(Ok(Next::wait(wait))),
            Ok(None) => {}
            Err(e) => return Err(Err(e.into())),
        }
        match self.find_code(outcome).await {
            Ok(code) => Ok(code),
            Err(e) => Err(match standing {
                Some(next) if self.last_try(&e) => {
                    tracing::warn!(error = %error_chain(&e), attempts = self.info.attempt, state = ?outcome.state, "Seam kept failing a look at a code whose outcome is recorded; it stands until the next look");
                    Ok(next)
                }
                _ => self.on_seam_error(e, outcome.clone(), OutcomeState::Failed).await,
            }),
        }
    }

    /// Reads the access code, `None` when Seam has none (404), checked to be
    /// the one asked for, on the device the record names.
    async fn find_code(&self, outcome: &Outcome) -> latchkey_seam::Result<Option<AccessCode>> {
        let device = outcome.device_id.as_deref();
        self.quick_retry(|| self.r.seam.find_access_code(&outcome.access_code_id))
            .await
            .and_then(|code| code.map(|code| about(&outcome.access_code_id, device, code)).transpose())
    }

    /// When to poll next (backing off with `polls`), never past `deadline`.
    fn next_poll(&self, now: DateTime<Utc>, polls: u32, deadline: DateTime<Utc>) -> u64 {
        (ms(now) + self.poll_delay(polls).as_millis() as u64).min(ms(deadline)).max(ms(now))
    }

    fn poll_delay(&self, polls: u32) -> Duration {
        poll_delay(polls, self.r.settings.poll_base, self.r.settings.poll_cap, rand::rng().random::<f64>())
    }

    /// Records a terminal outcome; the job is done either way.
    async fn finish(&self, outcome: Outcome) -> RunResult {
        self.finish_then(outcome, Next::Done).await
    }

    /// Records a terminal outcome, then `next` (a failure that Seam may still
    /// turn around is looked at again).
    async fn finish_then(&self, outcome: Outcome, next: Next) -> RunResult {
        match outcome.state {
            OutcomeState::Succeeded => tracing::info!(attempts = outcome.attempts, polls = outcome.polls, "reconciled"),
            state => {
                tracing::warn!(state = state.as_str(), error = ?outcome.error, "reconciliation ended without success")
            }
        }
        let next = match self.save_for(&outcome, next).await? {
            Ok(next) => next,
            Err(stop) => return Ok(stop),
        };
        let since_enqueue = outcome.finished_at.and_then(|f| (f - outcome.enqueued_at).to_std().ok());
        observe::outcome(outcome.state.as_str(), since_enqueue);
        Ok(next)
    }

    async fn save_then(&self, outcome: &Outcome, next: Next) -> RunResult {
        Ok(match self.save_for(outcome, next).await? {
            Ok(next) | Err(next) => next,
        })
    }

    /// Writes the record as the run's last write before `next`. A
    /// continuation later (`Next::RunAt` in the future) puts the job back in
    /// the same script, one round trip instead of two, and is then
    /// `Next::Settled`. `Err(stop)` when the run must stop instead (see
    /// [`save`](Self::save)).
    async fn save_for(&self, outcome: &Outcome, next: Next) -> Result<Result<Next, Next>, latchkey_store::Error> {
        let Next::RunAt(at) = next else {
            return Ok(self.save(outcome).await?.map_or(Ok(next), Err));
        };
        if at <= ms(Utc::now()) {
            return Ok(self.save(outcome).await?.map_or(Ok(next), Err));
        }
        self.info.settling();
        let recorded = self.r.store.record_then_continue(outcome, &self.info.lease, at).await?;
        Ok(self.on_recorded(outcome, recorded).map_or(Ok(Next::Settled), Err))
    }

    /// Writes the record. `Some(next)` when the run must stop instead: a newer
    /// generation exists (run again at once to pick it up) or the lease is gone.
    async fn save(&self, outcome: &Outcome) -> Result<Option<Next>, latchkey_store::Error> {
        let recorded = self.r.store.record(outcome, &self.info.lease).await?;
        Ok(self.on_recorded(outcome, recorded))
    }

    /// What a record's write means for the run: `None` to go on.
    fn on_recorded(&self, outcome: &Outcome, recorded: Recorded) -> Option<Next> {
        Some(match recorded {
            Recorded::Written => {
                self.carried.lock().unwrap_or_else(|e| e.into_inner()).written = Some(outcome.clone());
                return None;
            }
            Recorded::Superseded => {
                self.carried.lock().unwrap_or_else(|e| e.into_inner()).written = None;
                tracing::info!("a newer desired state arrived; starting over with it");
                Next::RunAt(0)
            }
            Recorded::LeaseLost => {
                self.carried.lock().unwrap_or_else(|e| e.into_inner()).written = None;
                tracing::warn!("this worker lost the job's lease; another worker carries on");
                Next::Done
            }
        })
    }
}

/// A time-bound desired state's `ends_at`, once its stay has ended at `now`.
fn stay_ended(desired: &DesiredState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match desired.schedule {
        Schedule::TimeBound { ends_at, .. } if !desired.absent && ends_at <= now => Some(ends_at),
        _ => None,
    }
}

/// Whether a change of `desired` sent at `sent` (the record's `applied_at`)
/// removes the code, and why: an absent desired state, or a time-bound one
/// whose stay had ended when its change was sent. [`Run::apply`] sends a
/// delete then, and the removal is verified as one: gone, or `not_removed`.
fn removal(desired: &DesiredState, sent: Option<DateTime<Utc>>) -> Option<Removal> {
    if desired.absent {
        return Some(Removal::Cancellation);
    }
    sent.and_then(|sent| stay_ended(desired, sent)).map(|_| Removal::EndOfStay)
}

/// Seam's answer about `access_code_id` (on `device`, when known), refused as
/// malformed when it is about another code or device ([`not_about`]): it must
/// never count as evidence about this one.
fn about(access_code_id: &str, device: Option<&str>, code: AccessCode) -> latchkey_seam::Result<AccessCode> {
    match not_about(access_code_id, device, &code) {
        None => Ok(code),
        Some(detail) => Err(latchkey_seam::Error::Malformed { status: 200, detail }),
    }
}

/// How much of the key budget a read may use.
#[derive(Debug, Clone, Copy)]
enum Share {
    /// Verifying a change: all of it.
    Fresh,
    /// A resync look at a code that succeeded: half the burst.
    Background,
}

/// Why a code had to go.
#[derive(Debug, Clone, Copy)]
enum Removal {
    /// An absent desired state (a cancelled booking).
    Cancellation,
    /// A time-bound code's `ends_at` (check-out).
    EndOfStay,
}

impl Removal {
    fn as_str(self) -> &'static str {
        match self {
            Removal::Cancellation => "cancellation",
            Removal::EndOfStay => "end_of_stay",
        }
    }
}

/// The outcome error of a failure on the code's own issues: Seam's messages,
/// and whether errors or warnings alone are behind it.
fn issues_error(observed: &AccessCode, issues: Vec<String>) -> OutcomeError {
    let named: Vec<&CodeIssue> = observed.issues().map(|(_, i)| i).filter(|i| issues.contains(&i.code)).collect();
    let message = named.iter().map(|i| format!("{}: {}", i.code, i.message)).collect::<Vec<_>>().join("; ");
    let any_error = observed.errors.iter().any(|e| issues.contains(&e.code));
    OutcomeError {
        kind: if any_error { KIND_ACCESS_CODE_ERRORS } else { KIND_ACCESS_CODE_WARNINGS }.into(),
        message,
        error_codes: issues,
    }
}
