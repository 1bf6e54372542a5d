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
//!   pending for ever.
//! - A code changed behind Seam's back while an update is pending keeps the
//!   change when the update finishes `set`.

use std::collections::{BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, SecondsFormat, Utc};
use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use crate::{
    AttemptResult, DeviceBehaviour, Faults, Issue, IssueKind, Modification, SeedCode, SimConfig, issue::CodeIssue,
};

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

/// A change being programmed onto the lock.
pub(crate) struct Pending {
    attempt_id: String,
    behaviour: DeviceBehaviour,
    since: DateTime<Utc>,
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
    pub removed_at: Option<DateTime<Utc>>,
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
        match self.status {
            // (an unset code whose end has passed too stays as it is)
            Status::Unset if self.is_time_bound() && self.is_scheduled_on_device => {
                self.starts_at.filter(|_| self.ends_at.is_some_and(|e| e > now))
            }
            Status::Set if self.is_time_bound() => self.ends_at,
            Status::Removing => self.removed_at,
            _ => None,
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
    pub updates_by_device: HashMap<String, VecDeque<DateTime<Utc>>>,
    webhook: Option<UnboundedSender<Value>>,
}

impl World {
    pub fn new(config: SimConfig, webhook: Option<UnboundedSender<Value>>) -> Self {
        Self {
            faults: config.faults.clone(),
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
            updates_by_device: HashMap::new(),
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
        if was_offline && behaviour != DeviceBehaviour::Offline {
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
            removed_at: None,
            wake: None,
        };
        code.status = code.settled_status(now);
        code.is_scheduled_on_device = code.status == Status::Unset;
        self.codes.insert(id.clone(), code);
        self.reindex(&id, now);
        id
    }

    /// A code created on first touch (`auto_create`), on its own device.
    pub fn auto_created(&mut self, id: &str, now: DateTime<Utc>) {
        let device = self.add_device(DeviceBehaviour::Normal { delay: self.config.device_delay });
        let new_id = self.seed_code(&device, SeedCode::default(), now);
        self.unindex(&new_id);
        let mut code = self.codes.remove(&new_id).expect("just seeded");
        code.id = id.to_string();
        self.codes.insert(id.to_string(), code);
        self.reindex(id, now);
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
        if let Some(tx) = &self.webhook {
            let _ = tx.send(event.clone());
        }
        self.events.push(event);
    }

    /// Starts programming a change onto the lock: `setting`, a pending
    /// attempt. It clears the code's errors and warnings but those marked
    /// `keep_on_update`.
    pub fn start_change(&mut self, code_id: &str, action_type: &'static str, now: DateTime<Utc>) -> Value {
        let attempt_id = uuid();
        let device_behaviour = {
            let code = &self.codes[code_id];
            self.devices
                .get(&code.device_id)
                .map_or(DeviceBehaviour::Normal { delay: self.config.device_delay }, |d| d.behaviour.clone())
        };
        let attempt = Attempt { id: attempt_id.clone(), action_type, status: "pending", error: None };
        let json = attempt.to_json();
        self.attempts.insert(attempt_id.clone(), attempt);
        let code = self.codes.get_mut(code_id).expect("code exists");
        code.status = Status::Setting;
        code.issues.retain(|i| i.keep_on_update);
        code.is_scheduled_on_device = false;
        code.removed_at = None;
        code.pending = Some(Pending { attempt_id, behaviour: device_behaviour, since: now, warned: false });
        self.reindex(code_id, now);
        json
    }

    fn finish_attempt(&mut self, attempt_id: &str, error: Option<(&str, &str)>) {
        if let Some(a) = self.attempts.get_mut(attempt_id) {
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
        match p.behaviour.clone() {
            DeviceBehaviour::Normal { delay } if after(delay) => self.finish_change(id, now),
            DeviceBehaviour::Fails { delay, error_code, attempt } if after(delay) => {
                self.fail_change(id, &error_code, attempt, now)
            }
            DeviceBehaviour::NeverFinishes { warn_after } if after(warn_after) && !p.warned => {
                p.warned = true;
                code.issues.push(CodeIssue::warning("delay_in_setting_on_device", now));
                self.emit("access_code.delay_in_setting_on_device", id, now);
            }
            DeviceBehaviour::Offline if !code.has_error("device_offline") => {
                // Seam keeps trying while the device is away: the attempt
                // stays pending and the code reports the device error.
                code.issues.push(CodeIssue::error("device_offline", now));
                self.emit("access_code.failed_to_set_on_device", id, now);
            }
            _ => {}
        }
    }

    /// The change is on the lock: the attempt succeeds and the code settles
    /// by its schedule. Errors on the code stay and do not stop it.
    fn finish_change(&mut self, id: &str, now: DateTime<Utc>) {
        let code = self.codes.get_mut(id).expect("listed");
        let Some(p) = code.pending.take() else { return };
        code.status = code.settled_status(now);
        code.is_scheduled_on_device = code.status == Status::Unset;
        let event = match code.status {
            Status::Unset => "access_code.scheduled_on_device",
            Status::Removing => "access_code.removed_from_device",
            _ => "access_code.set_on_device",
        };
        if code.status == Status::Removing {
            code.removed_at = Some(now + ChronoDuration::seconds(1));
        }
        self.finish_attempt(&p.attempt_id, None);
        self.emit(event, id, now);
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
                self.finish_attempt(&p.attempt_id, Some((error_code, "Failed to set code on device")))
            }
            AttemptResult::Success => {
                code.status = code.failed_status(now);
                self.finish_attempt(&p.attempt_id, None);
            }
        }
        self.emit("access_code.failed_to_set_on_device", id, now);
    }

    /// A code with no change pending follows its schedule: a scheduled code
    /// becomes `set` at `starts_at`, a time-bound one `removing` at
    /// `ends_at`, then disappears.
    fn follow_schedule(&mut self, id: &str, now: DateTime<Utc>) {
        let code = self.codes.get_mut(id).expect("listed");
        match code.status {
            Status::Unset
                if code.is_time_bound() && code.is_scheduled_on_device && code.settled_status(now) == Status::Set =>
            {
                code.status = Status::Set;
                code.is_scheduled_on_device = false;
                self.emit("access_code.set_on_device", id, now);
            }
            Status::Set if code.is_time_bound() && code.settled_status(now) == Status::Removing => {
                code.status = Status::Removing;
                code.removed_at = Some(now + ChronoDuration::seconds(1));
            }
            Status::Removing if code.removed_at.is_some_and(|r| now >= r) => {
                self.emit("access_code.removed_from_device", id, now);
                self.codes.remove(id);
            }
            _ => {}
        }
    }

    /// Records an update for the per-device rate limit; false when over it.
    pub fn within_rate_limit(&mut self, device_id: &str, now: DateTime<Utc>) -> bool {
        let limit = self.config.rate_limit_per_device_per_minute;
        if limit == 0 {
            return true;
        }
        let window = self.updates_by_device.entry(device_id.to_string()).or_default();
        while window.front().is_some_and(|t| now - *t >= ChronoDuration::seconds(60)) {
            window.pop_front();
        }
        if window.len() as u32 >= limit {
            return false;
        }
        window.push_back(now);
        true
    }
}
