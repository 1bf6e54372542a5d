//! The simulated workspace: devices, access codes, action attempts, events,
//! and how time moves them (`advance`). Field names and enums follow Seam's
//! OpenAPI schemas `access_code`, `action_attempt` and the `access_code.*`
//! events.
//!
//! Where Seam's docs are silent, the simulator does the worst plausible thing:
//! - An offline access code's times are rounded outward to
//!   `max_time_rounding` (`starts_at` down, `ends_at` up): the widest
//!   difference from what was asked.
//! - Errors and warnings do not stop a pending change from finishing, nor a
//!   scheduled code from becoming `set` at `starts_at`: a code can be `set`
//!   and have errors, so its status alone proves nothing.
//! - A failure on the code can come with an action attempt that succeeds
//!   (`DeviceBehaviour::Fails` with `attempt: success`), and an upcoming code
//!   that failed that way stays `unset` like a scheduled one, told apart only
//!   by its error and `is_scheduled_on_device: false`.
//! - An error that survives an update keeps its old `created_at`.
//! - Errors and warnings put on a code by a test, and their clearing by
//!   themselves, emit no event: webhooks cannot be relied on to learn of them.
//! - A code deleted behind Seam's back leaves its pending action attempt
//!   (an update's or a delete's) pending for ever, and a delete leaves that
//!   of the update it interrupts pending for ever.
//! - A code changed behind Seam's back while an update is pending keeps the
//!   change when the update finishes `set`.
//! - An update of a code being removed is accepted (`access_code.changed`, a
//!   pending attempt, its fields changed) but the removal goes on: the code
//!   disappears and the update's attempt stays pending for ever.
//! - A second delete of a code already being removed (by a delete, or at its
//!   `ends_at`) answers a new pending attempt that succeeds at once, whatever
//!   becomes of the removal under way, whose timer it does not restart: the
//!   removal may still fail or never finish, so only the code's
//!   disappearance proves it gone. A code left `removing` by a removal that
//!   failed is not being removed: a delete of it starts a new removal.
//! - A removal (a delete, or a time-bound code's end) leaves the code's errors
//!   and warnings as they are, where an update clears them: while a delete is
//!   retried, the `failed_to_remove_from_device` of the last try still shows.
//! - A time-bound code whose removal at `ends_at` fails stays `removing` with
//!   `failed_to_remove_from_device` for ever, still on the lock: the guest who
//!   checked out can still get in. A delete that fails puts the code back
//!   where its schedule has it on the lock (`set`; `unset` before `starts_at`;
//!   that same `removing` after `ends_at`), with the fields of any update it
//!   interrupted although that update never finished.
//! - A removal waiting for an offline device emits
//!   `access_code.failed_to_remove_from_device` although Seam keeps trying, as
//!   a change waiting for one emits `access_code.failed_to_set_on_device`.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, SecondsFormat, Utc};
use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use crate::{
    AttemptResult, DeviceBehaviour, Faults, Issue, IssueKind, Modification, SeedCode, SimConfig, issue::CodeIssue,
    rate_limit::RateLimit,
};

/// The error a device that cannot take a code off raises on it, and the
/// `error.type` of the delete's attempt.
const FAILED_TO_REMOVE: &str = "failed_to_remove_from_device";

/// One Seam API request as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedRequest {
    /// When it arrived.
    pub at: DateTime<Utc>,
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/access_codes/update`.
    pub path: String,
    /// The access code it named, if any.
    pub access_code_id: Option<String>,
    /// The device it concerned (named, or the access code's), if known.
    pub device_id: Option<String>,
    /// The status answered.
    pub status: u16,
}

pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) struct Device {
    pub behaviour: DeviceBehaviour,
    pub connected_account_id: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Setting,
    Set,
    Unset,
    Removing,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Setting => "setting",
            Status::Set => "set",
            Status::Unset => "unset",
            Status::Removing => "removing",
        }
    }
}

/// The unit Seam may round an offline access code's times to
/// (`max_time_rounding`: `1hour`/`1h`, the default, or `1day`/`1d`).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum TimeRounding {
    #[default]
    Hour,
    Day,
}

impl TimeRounding {
    fn span(self) -> ChronoDuration {
        match self {
            TimeRounding::Hour => ChronoDuration::hours(1),
            TimeRounding::Day => ChronoDuration::days(1),
        }
    }
}

/// Which way a pending change goes: onto the lock or off it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// An update or create being programmed: the code is `setting`.
    Program,
    /// A delete, or a time-bound code's end: the code is `removing`.
    Remove,
}

impl Direction {
    /// The warning a device that is slow to do it raises.
    fn delay_warning(self) -> &'static str {
        match self {
            Direction::Program => "delay_in_setting_on_device",
            Direction::Remove => "delay_in_removing_from_device",
        }
    }

    /// The event of that warning.
    fn delay_event(self) -> &'static str {
        match self {
            Direction::Program => "access_code.delay_in_setting_on_device",
            Direction::Remove => "access_code.delay_in_removing_from_device",
        }
    }

    /// The event of a device that failed to do it (or is offline).
    fn failure_event(self) -> &'static str {
        match self {
            Direction::Program => "access_code.failed_to_set_on_device",
            Direction::Remove => "access_code.failed_to_remove_from_device",
        }
    }
}

/// A change the lock is working on.
pub(crate) struct Pending {
    direction: Direction,
    /// Its action attempt; none for the removal Seam starts itself at a
    /// time-bound code's end.
    attempt_id: Option<String>,
    /// The device's behaviour when the change started (or when the device
    /// came back online).
    behaviour: DeviceBehaviour,
    since: DateTime<Utc>,
    /// Whether the delay warning has been raised.
    warned: bool,
}

pub(crate) struct Code {
    pub id: String,
    pub device_id: String,
    pub name: Option<String>,
    pub code: Option<String>,
    pub created_at: DateTime<Utc>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub status: Status,
    /// Its `errors` and `warnings`, in the order they were raised.
    pub issues: Vec<CodeIssue>,
    pub is_scheduled_on_device: bool,
    pub is_external_modification_allowed: bool,
    pub is_one_time_use: bool,
    pub is_offline_access_code: bool,
    pub pending: Option<Pending>,
    /// When time next changes this code (its entry in `World::wakes`).
    wake: Option<DateTime<Utc>>,
}

impl Code {
    pub fn is_time_bound(&self) -> bool {
        self.starts_at.is_some() && self.ends_at.is_some()
    }

    /// The code as `/access_codes/get` returns it (schema `access_code`).
    pub fn to_json(&self, workspace_id: &str) -> Value {
        let mut v = json!({
            "access_code_id": self.id,
            "device_id": self.device_id,
            "workspace_id": workspace_id,
            "name": self.name,
            "code": self.code,
            "common_code_key": null,
            "type": if self.is_time_bound() { "time_bound" } else { "ongoing" },
            "status": self.status.as_str(),
            "created_at": ts(self.created_at),
            "errors": self.issues_json(IssueKind::Error),
            "warnings": self.issues_json(IssueKind::Warning),
            "is_managed": true,
            "is_backup_access_code_available": false,
            "is_external_modification_allowed": self.is_external_modification_allowed,
            "is_one_time_use": self.is_one_time_use,
            "is_offline_access_code": self.is_offline_access_code,
            "is_waiting_for_code_assignment": false,
        });
        if self.is_time_bound() {
            v["starts_at"] = json!(self.starts_at.map(ts));
            v["ends_at"] = json!(self.ends_at.map(ts));
            v["is_scheduled_on_device"] = json!(self.is_scheduled_on_device);
        }
        v
    }

    fn issues_json(&self, kind: IssueKind) -> Vec<Value> {
        self.issues.iter().filter(|i| i.kind == kind).map(CodeIssue::to_json).collect()
    }

    fn has_error(&self, error_code: &str) -> bool {
        self.issues.iter().any(|i| i.kind == IssueKind::Error && i.code == error_code)
    }

    /// Whether the lock is taking it off (a delete, or its end).
    fn is_being_removed(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.direction == Direction::Remove)
    }

    /// When time next changes this code, if ever: the earliest of its
    /// timeline (a change finishing, its schedule) and an issue clearing.
    fn next_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let clears = self.issues.iter().filter_map(|i| i.clears_at).min();
        [self.timeline_wake(now), clears].into_iter().flatten().min()
    }

    /// When its device next acts on a pending change, or its schedule next
    /// moves it.
    fn timeline_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after =
            |since: DateTime<Utc>, d: std::time::Duration| since + ChronoDuration::from_std(d).unwrap_or_default();
        if let Some(p) = &self.pending {
            return match &p.behaviour {
                DeviceBehaviour::Normal { delay } | DeviceBehaviour::Fails { delay, .. } => {
                    Some(after(p.since, *delay))
                }
                DeviceBehaviour::NeverFinishes { warn_after } => (!p.warned).then(|| after(p.since, *warn_after)),
                DeviceBehaviour::Offline => (!self.has_error("device_offline")).then_some(now),
            };
        }
        if !self.is_time_bound() {
            return None;
        }
        match self.status {
            Status::Unset if self.is_scheduled_on_device => self.starts_at,
            // A code that never made it onto the lock is removed at its end
            // all the same.
            Status::Unset | Status::Set => self.ends_at,
            // `setting` after a failed change, `removing` after a failed
            // removal: for ever.
            Status::Setting | Status::Removing => None,
        }
    }

    /// Where a code that is on the lock stands at `now`, from its schedule.
    fn settled_status(&self, now: DateTime<Utc>) -> Status {
        match (self.starts_at, self.ends_at) {
            (Some(s), Some(_)) if now < s => Status::Unset,
            (Some(_), Some(e)) if now >= e => Status::Removing,
            _ => Status::Set,
        }
    }

    /// Where a code that did not make it onto the lock stands: an upcoming
    /// time-bound code `unset` (its window has not begun), any other still
    /// `setting`.
    fn failed_status(&self, now: DateTime<Utc>) -> Status {
        if self.settled_status(now) == Status::Unset { Status::Unset } else { Status::Setting }
    }

    /// Widens an offline access code's time window to whole `unit`s, as Seam
    /// may (`max_time_rounding`); other codes keep their times. Seam's docs do
    /// not say which way it rounds: outward (`starts_at` down, `ends_at` up)
    /// is the worst plausible choice for a checker, as it is the widest
    /// difference from the times asked for. A time too far off to round
    /// (after 2262) is kept.
    pub fn round_offline_times(&mut self, unit: TimeRounding) {
        if !self.is_offline_access_code {
            return;
        }
        let span = unit.span();
        self.starts_at = self.starts_at.map(|t| t.duration_trunc(span).unwrap_or(t));
        self.ends_at = self.ends_at.map(|t| t.duration_round_up(span).unwrap_or(t));
    }
}

pub(crate) struct Attempt {
    pub id: String,
    pub action_type: &'static str,
    pub status: &'static str,
    pub error: Option<(String, String)>,
}

impl Attempt {
    pub fn to_json(&self) -> Value {
        json!({
            "action_attempt_id": self.id,
            "action_type": self.action_type,
            "status": self.status,
            "result": if self.status == "success" { json!({}) } else { Value::Null },
            "error": self.error.as_ref().map(|(t, m)| json!({"type": t, "message": m})),
        })
    }
}

pub(crate) struct World {
    pub config: SimConfig,
    pub faults: Faults,
    pub fault_toggle: bool,
    pub workspace_id: String,
    pub devices: HashMap<String, Device>,
    pub codes: HashMap<String, Code>,
    pub attempts: HashMap<String, Attempt>,
    pub events: Vec<Value>,
    pub requests: Vec<LoggedRequest>,
    /// The Bearer token accepted instead of `config.api_key`, if any (a
    /// revoked key, `Sim::set_api_key`).
    pub api_key_override: Option<String>,
    /// Codes that time will change, by when: `advance` looks at these only.
    wakes: BTreeSet<(DateTime<Utc>, String)>,
    /// Seam's per-device limit on access-code updates.
    pub updates: RateLimit,
    /// Seam's per-device limit on access-code deletes, counted apart.
    pub deletes: RateLimit,
    /// Ids `auto_create` has made: a removed one is not made again.
    auto_created: HashSet<String>,
    webhook: Option<UnboundedSender<Value>>,
}

impl World {
    pub fn new(config: SimConfig, webhook: Option<UnboundedSender<Value>>) -> Self {
        Self {
            faults: config.faults.clone(),
            updates: RateLimit::new(config.rate_limit_per_device_per_minute),
            deletes: RateLimit::new(config.delete_rate_limit_per_device_per_minute),
            auto_created: HashSet::new(),
            config,
            fault_toggle: false,
            workspace_id: uuid(),
            devices: HashMap::new(),
            codes: HashMap::new(),
            attempts: HashMap::new(),
            events: Vec::new(),
            requests: Vec::new(),
            api_key_override: None,
            wakes: BTreeSet::new(),
            webhook,
        }
    }

    /// The Bearer token Seam requests must carry now.
    pub fn api_key(&self) -> &str {
        self.api_key_override.as_deref().unwrap_or(&self.config.api_key)
    }

    pub fn add_device(&mut self, behaviour: DeviceBehaviour) -> String {
        let id = uuid();
        self.devices.insert(id.clone(), Device { behaviour, connected_account_id: uuid() });
        id
    }

    /// Changes a device's behaviour. Codes waiting on an offline device start
    /// over with the new behaviour.
    pub fn set_device(&mut self, device_id: &str, behaviour: DeviceBehaviour, now: DateTime<Utc>) {
        let Some(device) = self.devices.get_mut(device_id) else { return };
        let was_offline = device.behaviour == DeviceBehaviour::Offline;
        device.behaviour = behaviour.clone();
        let offline = behaviour == DeviceBehaviour::Offline;
        if was_offline != offline {
            self.emit_device(if offline { "device.disconnected" } else { "device.connected" }, device_id, now);
        }
        if was_offline && !offline {
            let mut moved = Vec::new();
            for code in self.codes.values_mut().filter(|c| c.device_id == device_id) {
                if let Some(p) = &mut code.pending {
                    p.behaviour = behaviour.clone();
                    p.since = now;
                    code.issues.retain(|i| !(i.kind == IssueKind::Error && i.code == "device_offline"));
                    moved.push(code.id.clone());
                }
            }
            for id in moved {
                self.reindex(&id, now);
            }
        }
    }

    pub fn seed_code(&mut self, device_id: &str, seed: SeedCode, now: DateTime<Utc>) -> String {
        let id = uuid();
        let mut code = Code {
            id: id.clone(),
            device_id: device_id.to_string(),
            name: Some(seed.name.unwrap_or_else(|| "seeded".into())),
            code: Some(seed.code.unwrap_or_else(|| format!("{:04}", rand::rng().random_range(0..10_000)))),
            created_at: now,
            starts_at: seed.starts_at,
            ends_at: seed.ends_at,
            status: Status::Set,
            issues: Vec::new(),
            is_scheduled_on_device: false,
            is_external_modification_allowed: false,
            is_one_time_use: false,
            is_offline_access_code: false,
            pending: None,
            wake: None,
        };
        code.status = code.settled_status(now);
        code.is_scheduled_on_device = code.status == Status::Unset;
        let ended = code.status == Status::Removing;
        self.codes.insert(id.clone(), code);
        if ended {
            self.start_removal(&id, None, now);
        } else {
            self.reindex(&id, now);
        }
        id
    }

    /// Whether code `id` exists, creating it on its first touch when
    /// `auto_create` is on (on a device of its own). Only the first touch: a
    /// code that was removed since stays gone, as on Seam.
    pub fn exists_or_auto_created(&mut self, id: &str, now: DateTime<Utc>) -> bool {
        if self.codes.contains_key(id) {
            return true;
        }
        if !self.config.auto_create || !self.auto_created.insert(id.to_string()) {
            return false;
        }
        let device = self.add_device(DeviceBehaviour::Normal { delay: self.config.device_delay });
        let new_id = self.seed_code(&device, SeedCode::default(), now);
        self.unindex(&new_id);
        let mut code = self.codes.remove(&new_id).expect("just seeded");
        code.id = id.to_string();
        self.codes.insert(id.to_string(), code);
        self.reindex(id, now);
        true
    }

    /// Puts an injected error or warning on a code; false if there is none.
    pub fn add_issue(&mut self, id: &str, issue: Issue, now: DateTime<Utc>) -> bool {
        let Some(code) = self.codes.get_mut(id) else { return false };
        code.issues.push(CodeIssue::injected(issue, now));
        self.reindex(id, now);
        true
    }

    /// Changes a code's PIN or name behind Seam's back (no action attempt);
    /// false if there is no such code.
    pub fn modify_code(&mut self, id: &str, change: Modification, now: DateTime<Utc>) -> bool {
        let Some(code) = self.codes.get_mut(id) else { return false };
        if let Some(pin) = change.code {
            code.code = Some(pin);
        }
        if let Some(name) = change.name {
            code.name = Some(name);
        }
        if change.lost {
            code.status = Status::Unset;
            code.is_scheduled_on_device = false;
        }
        let event = match change.warning {
            Some(warning) => {
                code.issues.push(CodeIssue::warning(&warning, now));
                "access_code.modified_external_to_seam"
            }
            None => "access_code.changed",
        };
        self.emit(event, id, now);
        true
    }

    /// Deletes a code behind Seam's back; false if there is no such code.
    pub fn remove_code(&mut self, id: &str, now: DateTime<Utc>) -> bool {
        if !self.codes.contains_key(id) {
            return false;
        }
        self.emit("access_code.deleted_external_to_seam", id, now);
        self.unindex(id);
        self.codes.remove(id);
        true
    }

    /// A device event (`device.connected`, `device.disconnected`), as Seam
    /// sends it: about the device, with no access code.
    pub fn emit_device(&mut self, event_type: &str, device_id: &str, now: DateTime<Utc>) {
        let Some(device) = self.devices.get(device_id) else { return };
        let event = json!({
            "event_id": uuid(),
            "event_type": event_type,
            "workspace_id": self.workspace_id,
            "device_id": device_id,
            "connected_account_id": device.connected_account_id,
            "created_at": ts(now),
            "occurred_at": ts(now),
        });
        self.publish(event);
    }

    /// Keeps an event for `/events/list` and delivers it as a webhook, if set.
    fn publish(&mut self, event: serde_json::Value) {
        if let Some(tx) = &self.webhook {
            let _ = tx.send(event.clone());
        }
        self.events.push(event);
    }

    pub fn emit(&mut self, event_type: &str, code_id: &str, now: DateTime<Utc>) {
        let Some(code) = self.codes.get(code_id) else { return };
        let connected = self.devices.get(&code.device_id).map(|d| d.connected_account_id.clone());
        let event = json!({
            "event_id": uuid(),
            "event_type": event_type,
            "workspace_id": self.workspace_id,
            "access_code_id": code_id,
            "device_id": code.device_id,
            "connected_account_id": connected,
            "created_at": ts(now),
            "occurred_at": ts(now),
        });
        self.publish(event);
    }

    /// Starts programming a change onto the lock: `setting`, a pending
    /// attempt, returned as answered. It clears the code's errors and
    /// warnings but those marked `keep_on_update`. A code being removed is
    /// left to its removal, and the attempt pending for ever (see the list at
    /// the top).
    pub fn start_change(&mut self, code_id: &str, action_type: &'static str, now: DateTime<Utc>) -> Value {
        let (attempt_id, json) = self.new_attempt(action_type);
        if self.codes[code_id].is_being_removed() {
            return json;
        }
        let behaviour = self.device_behaviour(code_id);
        let code = self.codes.get_mut(code_id).expect("code exists");
        code.status = Status::Setting;
        code.issues.retain(|i| i.keep_on_update);
        code.is_scheduled_on_device = false;
        code.pending = Some(Pending {
            direction: Direction::Program,
            attempt_id: Some(attempt_id),
            behaviour,
            since: now,
            warned: false,
        });
        self.reindex(code_id, now);
        json
    }

    /// Starts taking a code off its lock for `/access_codes/delete`; returns
    /// its `DELETE_ACCESS_CODE` attempt as answered (pending).
    ///
    /// A code already being removed (a second delete, or its end come)
    /// keeps that removal and its timer, and the new attempt succeeds at once
    /// whatever becomes of the removal: the worst plausible reading of a
    /// repeated delete, as it tells whoever trusts attempts that a code is
    /// gone while it may yet fail to go, or never go. A code left `removing`
    /// by a failed removal gets a new removal, as any other.
    pub fn delete_code(&mut self, code_id: &str, now: DateTime<Utc>) -> Value {
        let (attempt_id, json) = self.new_attempt("DELETE_ACCESS_CODE");
        if self.codes[code_id].is_being_removed() {
            self.finish_attempt(Some(&attempt_id), None);
        } else {
            self.start_removal(code_id, Some(attempt_id), now);
        }
        json
    }

    /// The device starts taking a code off the lock, as its behaviour says:
    /// `removing` until it is gone or the removal fails. Its errors and
    /// warnings stay. A change it interrupts leaves its attempt pending.
    fn start_removal(&mut self, code_id: &str, attempt_id: Option<String>, now: DateTime<Utc>) {
        let behaviour = self.device_behaviour(code_id);
        let code = self.codes.get_mut(code_id).expect("code exists");
        code.status = Status::Removing;
        code.pending = Some(Pending { direction: Direction::Remove, attempt_id, behaviour, since: now, warned: false });
        self.reindex(code_id, now);
    }

    /// How the code's device handles changes now; a code seeded on a device
    /// the simulator does not know (`Sim::add_access_code` takes any id) gets
    /// a normal one.
    fn device_behaviour(&self, code_id: &str) -> DeviceBehaviour {
        self.devices
            .get(&self.codes[code_id].device_id)
            .map_or(DeviceBehaviour::Normal { delay: self.config.device_delay }, |d| d.behaviour.clone())
    }

    /// Records a new pending action attempt; returns its id and itself as
    /// answered now.
    fn new_attempt(&mut self, action_type: &'static str) -> (String, Value) {
        let id = uuid();
        let attempt = Attempt { id: id.clone(), action_type, status: "pending", error: None };
        let json = attempt.to_json();
        self.attempts.insert(id.clone(), attempt);
        (id, json)
    }

    /// Ends an attempt: it succeeds, or errors with `(type, message)`. A
    /// change without one (Seam's own removal at a code's end) has nothing to
    /// end.
    fn finish_attempt(&mut self, attempt_id: Option<&str>, error: Option<(&str, &str)>) {
        if let Some(a) = attempt_id.and_then(|id| self.attempts.get_mut(id)) {
            a.status = if error.is_some() { "error" } else { "success" };
            a.error = error.map(|(t, m)| (t.to_string(), m.to_string()));
        }
    }

    /// Moves every code along its timeline up to `now`, emitting events. Only
    /// the codes whose wake time has come are looked at.
    pub fn advance(&mut self, now: DateTime<Utc>) {
        let mut due = Vec::new();
        while let Some(first) = self.wakes.first()
            && first.0 <= now
        {
            let (_, id) = self.wakes.pop_first().expect("just seen");
            if let Some(code) = self.codes.get_mut(&id) {
                code.wake = None;
                due.push(id);
            }
        }
        for id in due {
            self.advance_code(&id, now);
            self.reindex(&id, now);
        }
    }

    /// Puts a code at its next wake time in `wakes` (or out of it).
    fn reindex(&mut self, id: &str, now: DateTime<Utc>) {
        self.unindex(id);
        let Some(code) = self.codes.get_mut(id) else { return };
        code.wake = code.next_wake(now);
        if let Some(at) = code.wake {
            self.wakes.insert((at, id.to_string()));
        }
    }

    /// Takes a code out of `wakes`.
    fn unindex(&mut self, id: &str) {
        if let Some(at) = self.codes.get_mut(id).and_then(|c| c.wake.take()) {
            self.wakes.remove(&(at, id.to_string()));
        }
    }

    /// Moves one due code along: issues whose time is up clear, then its
    /// device acts on a pending change, or its schedule moves it.
    fn advance_code(&mut self, id: &str, now: DateTime<Utc>) {
        let code = self.codes.get_mut(id).expect("listed");
        code.issues.retain(|i| i.clears_at.is_none_or(|t| t > now));
        if code.pending.is_some() {
            self.advance_change(id, now);
        } else {
            self.follow_schedule(id, now);
        }
    }

    /// The device's part in a pending change, by its behaviour.
    fn advance_change(&mut self, id: &str, now: DateTime<Utc>) {
        let code = self.codes.get_mut(id).expect("listed");
        let Some(p) = &mut code.pending else { return };
        let elapsed = now - p.since;
        let after = |d: std::time::Duration| elapsed >= ChronoDuration::from_std(d).unwrap_or_default();
        let direction = p.direction;
        match p.behaviour.clone() {
            DeviceBehaviour::Normal { delay } if after(delay) => match direction {
                Direction::Program => self.finish_change(id, now),
                Direction::Remove => self.finish_removal(id, now),
            },
            DeviceBehaviour::Fails { delay, error_code, attempt } if after(delay) => match direction {
                Direction::Program => self.fail_change(id, &error_code, attempt, now),
                Direction::Remove => self.fail_removal(id, now),
            },
            DeviceBehaviour::NeverFinishes { warn_after } if after(warn_after) && !p.warned => {
                p.warned = true;
                code.issues.push(CodeIssue::warning(direction.delay_warning(), now));
                self.emit(direction.delay_event(), id, now);
            }
            DeviceBehaviour::Offline if !code.has_error("device_offline") => {
                // Seam keeps trying while the device is away: the attempt
                // stays pending and the code reports the device error.
                code.issues.push(CodeIssue::error("device_offline", now));
                self.emit(direction.failure_event(), id, now);
            }
            _ => {}
        }
    }

    /// The change is on the lock: the attempt succeeds and the code settles
    /// by its schedule, or, if its stay ended meanwhile, comes off again.
    /// Errors on the code stay and do not stop it.
    fn finish_change(&mut self, id: &str, now: DateTime<Utc>) {
        let code = self.codes.get_mut(id).expect("listed");
        let Some(p) = code.pending.take() else { return };
        let status = code.settled_status(now);
        if status != Status::Removing {
            code.status = status;
            code.is_scheduled_on_device = status == Status::Unset;
        }
        self.finish_attempt(p.attempt_id.as_deref(), None);
        match status {
            Status::Removing => self.start_removal(id, None, now),
            Status::Unset => self.emit("access_code.scheduled_on_device", id, now),
            _ => self.emit("access_code.set_on_device", id, now),
        }
    }

    /// The change did not make it onto the lock: the code gets `error_code`;
    /// the attempt errors, or succeeds and leaves the code `unset` or
    /// `setting` (see `DeviceBehaviour::Fails`).
    fn fail_change(&mut self, id: &str, error_code: &str, attempt: AttemptResult, now: DateTime<Utc>) {
        let code = self.codes.get_mut(id).expect("listed");
        let Some(p) = code.pending.take() else { return };
        code.issues.push(CodeIssue::error(error_code, now));
        match attempt {
            AttemptResult::Error => {
                self.finish_attempt(p.attempt_id.as_deref(), Some((error_code, "Failed to set code on device")))
            }
            AttemptResult::Success => {
                code.status = code.failed_status(now);
                self.finish_attempt(p.attempt_id.as_deref(), None);
            }
        }
        self.emit("access_code.failed_to_set_on_device", id, now);
    }

    /// The code is off the lock: its attempt, if any, succeeds, and it is
    /// gone (`/access_codes/get` answers 404).
    fn finish_removal(&mut self, id: &str, now: DateTime<Utc>) {
        let code = self.codes.get_mut(id).expect("listed");
        let Some(p) = code.pending.take() else { return };
        self.finish_attempt(p.attempt_id.as_deref(), None);
        self.emit("access_code.removed_from_device", id, now);
        self.emit("access_code.deleted", id, now);
        self.unindex(id);
        self.codes.remove(id);
    }

    /// The code stays on the lock: it gets `failed_to_remove_from_device`
    /// (raised anew, replacing one from an earlier try), goes back where its
    /// schedule has it (so stays `removing` once its stay has ended, see the
    /// list at the top), and the delete's attempt, if any, errors.
    fn fail_removal(&mut self, id: &str, now: DateTime<Utc>) {
        let code = self.codes.get_mut(id).expect("listed");
        let Some(p) = code.pending.take() else { return };
        code.issues.retain(|i| !(i.kind == IssueKind::Error && i.code == FAILED_TO_REMOVE));
        code.issues.push(CodeIssue::error(FAILED_TO_REMOVE, now));
        code.status = code.settled_status(now);
        self.finish_attempt(p.attempt_id.as_deref(), Some((FAILED_TO_REMOVE, "Failed to remove code from device")));
        self.emit("access_code.failed_to_remove_from_device", id, now);
    }

    /// A time-bound code with no change pending follows its schedule: a
    /// scheduled code becomes `set` at `starts_at`; at `ends_at` one that is
    /// on the lock, or was meant to be (`unset`), starts coming off as its
    /// device behaves.
    fn follow_schedule(&mut self, id: &str, now: DateTime<Utc>) {
        let code = self.codes.get_mut(id).expect("listed");
        if !code.is_time_bound() {
            return;
        }
        match (code.status, code.settled_status(now)) {
            (Status::Unset, Status::Set) if code.is_scheduled_on_device => {
                code.status = Status::Set;
                code.is_scheduled_on_device = false;
                self.emit("access_code.set_on_device", id, now);
            }
            (Status::Unset | Status::Set, Status::Removing) => self.start_removal(id, None, now),
            _ => {}
        }
    }
}
