//! The simulated workspace: devices, access codes, action attempts, events,
//! and how time moves them (`advance`). Field names and enums follow Seam's
//! OpenAPI schemas `access_code`, `action_attempt` and the `access_code.*`
//! events.

use std::collections::{BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use crate::{DeviceBehaviour, Faults, SeedCode, SimConfig};

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
    pub errors: Vec<Value>,
    pub warnings: Vec<Value>,
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
            "errors": self.errors,
            "warnings": self.warnings,
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

    /// When time next moves this code along, if ever: its device finishing a
    /// change, or its schedule.
    fn next_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after =
            |since: DateTime<Utc>, d: std::time::Duration| since + ChronoDuration::from_std(d).unwrap_or_default();
        if let Some(p) = &self.pending {
            return match &p.behaviour {
                DeviceBehaviour::Normal { delay } | DeviceBehaviour::Fails { delay } => Some(after(p.since, *delay)),
                DeviceBehaviour::NeverFinishes { warn_after } => (!p.warned).then(|| after(p.since, *warn_after)),
                DeviceBehaviour::Offline => self.errors.is_empty().then_some(now),
            };
        }
        match self.status {
            // (an unset code whose end has passed too stays as it is)
            Status::Unset if self.is_time_bound() && self.errors.is_empty() => {
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
    /// Codes that time will change, by when: `advance` looks at these only.
    wakes: BTreeSet<(DateTime<Utc>, String)>,
    pub updates_by_device: HashMap<String, VecDeque<DateTime<Utc>>>,
    webhook: Option<UnboundedSender<Value>>,
}

fn code_error(error_code: &str, message: &str, now: DateTime<Utc>) -> Value {
    json!({"error_code": error_code, "message": message, "is_access_code_error": true, "created_at": ts(now)})
}

fn device_error(error_code: &str, message: &str, now: DateTime<Utc>) -> Value {
    json!({"error_code": error_code, "message": message, "is_device_error": true, "created_at": ts(now)})
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
            wakes: BTreeSet::new(),
            updates_by_device: HashMap::new(),
            webhook,
        }
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
                    code.errors.retain(|e| e["error_code"] != "device_offline");
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
            errors: vec![],
            warnings: vec![],
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
        let mut code = self.codes.remove(&new_id).expect("just seeded");
        if let Some(at) = code.wake.take() {
            self.wakes.remove(&(at, new_id));
        }
        code.id = id.to_string();
        self.codes.insert(id.to_string(), code);
        self.reindex(id, now);
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

    /// Starts programming a change onto the lock: `setting`, a pending attempt.
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
        code.errors.clear();
        code.warnings.clear();
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
        let Some(code) = self.codes.get_mut(id) else { return };
        if let Some(at) = code.wake.take() {
            self.wakes.remove(&(at, id.to_string()));
        }
        code.wake = code.next_wake(now);
        if let Some(at) = code.wake {
            self.wakes.insert((at, id.to_string()));
        }
    }

    fn advance_code(&mut self, id: &str, now: DateTime<Utc>) {
        let code = self.codes.get_mut(id).expect("listed");
        if let Some(p) = &mut code.pending {
            let elapsed = now - p.since;
            let after = |d: std::time::Duration| elapsed >= ChronoDuration::from_std(d).unwrap_or_default();
            match p.behaviour.clone() {
                DeviceBehaviour::Normal { delay } if after(delay) => {
                    let attempt = p.attempt_id.clone();
                    code.pending = None;
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
                    self.finish_attempt(&attempt, None);
                    self.emit(event, id, now);
                }
                DeviceBehaviour::Fails { delay } if after(delay) => {
                    let attempt = p.attempt_id.clone();
                    code.pending = None;
                    code.errors = vec![code_error("failed_to_set_on_device", "Failed to set code on device", now)];
                    self.finish_attempt(&attempt, Some(("failed_to_set_on_device", "Failed to set code on device")));
                    self.emit("access_code.failed_to_set_on_device", id, now);
                }
                DeviceBehaviour::NeverFinishes { warn_after } if after(warn_after) && !p.warned => {
                    p.warned = true;
                    code.warnings = vec![
                        json!({"warning_code": "delay_in_setting_on_device", "message": "Delay in setting access code on device", "created_at": ts(now)}),
                    ];
                    self.emit("access_code.delay_in_setting_on_device", id, now);
                }
                DeviceBehaviour::Offline if code.errors.is_empty() => {
                    // Seam keeps trying while the device is away: the attempt
                    // stays pending and the code reports the device error.
                    code.errors = vec![device_error("device_offline", "Device is offline", now)];
                    self.emit("access_code.failed_to_set_on_device", id, now);
                }
                _ => {}
            }
            return;
        }
        // On the lock: a time-bound code follows its schedule.
        match code.status {
            Status::Unset
                if code.is_time_bound() && code.errors.is_empty() && code.settled_status(now) == Status::Set =>
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
