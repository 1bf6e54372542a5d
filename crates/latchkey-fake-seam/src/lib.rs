//! `latchkey-fake-seam`: a simulator of the Seam API good enough to test
//! latchkey against, and to try latchkey without a Seam account.
//!
//! It models one workspace of devices and access codes in memory, written from
//! Seam's documentation and OpenAPI schemas (`shared/seam-openapi-extract.json`)
//! and deliberately not from latchkey's client: a field either side names
//! wrongly fails a test. Devices behave as configured (normal, slow, failing,
//! offline, or failing on the code while the action attempt succeeds); faults
//! (5xx, 429, latency) are scripted through [`Faults`], the admin API under
//! `/_admin`, or startup flags.
//!
//! Tests can also make it behave like Seam at its worst, to catch latchkey
//! believing something false:
//! - errors and warnings put on a code ([`Sim::add_issue`]), which may clear
//!   by themselves or survive updates, and which do not stop a pending change
//!   from finishing: a code can be `set` and have errors;
//! - a code changed or deleted behind Seam's back ([`Sim::modify_access_code`],
//!   [`Sim::remove_access_code`]);
//! - the API key revoked and restored while running ([`Sim::set_api_key`]);
//! - offline access codes whose times are rounded outward to
//!   `max_time_rounding`;
//! - codes that do not come off the lock when deleted or when their stay
//!   ends, slowly or never ([`DeviceBehaviour`]), and a repeated delete whose
//!   action attempt succeeds while the code is still there.
//!
//! Every one of these is also on the admin API (no auth):
//!
//! | route | body | does |
//! |---|---|---|
//! | `POST /_admin/devices` | `{"behaviour": DeviceBehaviour}` | adds a device |
//! | `PUT /_admin/devices/{id}` | `{"behaviour": DeviceBehaviour}` | changes a device |
//! | `POST /_admin/access_codes` | `{"device_id", "code"?, "name"?, "starts_at"?, "ends_at"?}` | adds a code |
//! | `PATCH /_admin/access_codes/{id}` | [`Modification`] | changes a code behind Seam's back |
//! | `DELETE /_admin/access_codes/{id}` | | deletes a code behind Seam's back |
//! | `POST /_admin/access_codes/{id}/issues` | [`Issue`] | puts an error or warning on a code |
//! | `PUT /_admin/api_key` | `{"api_key": "..." \| null}` | accepts another key (null: the configured one) |
//! | `PUT /_admin/faults` | [`Faults`] | replaces the faults |
//! | `GET /_admin/requests`, `GET /_admin/events` | | the request log, the events |
//!
//! A malformed admin body is answered 400, an unknown id 404.

mod api;
mod issue;
mod model;
mod rate_limit;
mod webhook;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, task::JoinHandle};

pub use api::app;
pub use model::LoggedRequest;
pub use webhook::sign;

/// Durations as milliseconds in JSON (the admin API).
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }

    /// The same for an optional duration (absent or null: none).
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
        }
    }
}

/// How a device handles access-code changes: putting a code on the lock (an
/// update or create) and taking it off (`/access_codes/delete`, or the end of
/// a time-bound code's stay, when the code goes `removing`).
///
/// In JSON (the admin API) it is tagged by `kind`: `{"kind": "normal",
/// "delay_ms": 200}`, `{"kind": "never_finishes", "warn_after_ms": 1000}`,
/// `{"kind": "fails", "delay_ms": 50, "error_code"?: "...", "attempt"?:
/// "error" | "success"}`, `{"kind": "offline"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceBehaviour {
    /// Applies a change after `delay`: the action attempt succeeds and the code
    /// becomes `set` (or `unset` and scheduled, for a future time-bound code).
    /// A code taken off is gone after `delay`, with the events
    /// `access_code.removed_from_device` then `access_code.deleted`.
    Normal {
        /// Time to program the lock.
        #[serde(with = "millis", rename = "delay_ms")]
        delay: Duration,
    },
    /// Never finishes: the code stays `setting`, the attempt `pending`, and
    /// after `warn_after` Seam reports `delay_in_setting_on_device`. A code
    /// taken off stays `removing` for ever (a guest past checkout can still
    /// get in), with `delay_in_removing_from_device` after `warn_after`.
    NeverFinishes {
        /// When the delay warning appears.
        #[serde(with = "millis", rename = "warn_after_ms")]
        warn_after: Duration,
    },
    /// Fails after `delay`: the code gets the error `error_code` and Seam
    /// emits `access_code.failed_to_set_on_device`.
    ///
    /// With `attempt: Error` the action attempt errors too and the code stays
    /// `setting`. With `attempt: Success` the attempt succeeds although the
    /// code is not on the lock: an upcoming time-bound code stays `unset`
    /// (`is_scheduled_on_device: false`) and never becomes `set`, any other
    /// code stays `setting`. That is how Seam reports a scheduling failure
    /// (`no_space_for_access_code_on_device`) right after an update of a
    /// future code: whoever trusts the attempt is wrong.
    ///
    /// Taking a code off fails after `delay` whatever `error_code` and
    /// `attempt` say: the code stays on the lock with
    /// `failed_to_remove_from_device` (event
    /// `access_code.failed_to_remove_from_device`) and a delete's attempt
    /// errors with that type. A deleted code goes back to `set` (`unset`
    /// before its start); a time-bound code at its end stays `removing`.
    Fails {
        /// Time before the failure.
        #[serde(with = "millis", rename = "delay_ms")]
        delay: Duration,
        /// The error the code gets (default `failed_to_set_on_device`).
        #[serde(default = "failed_to_set_on_device")]
        error_code: String,
        /// How the action attempt ends (default: it errors).
        #[serde(default)]
        attempt: AttemptResult,
    },
    /// Offline: the code reports `device_offline` and the attempt stays
    /// pending until the device is back; a code being taken off stays
    /// `removing` until then. Back online, the device carries on with its
    /// new behaviour.
    Offline,
}

impl DeviceBehaviour {
    /// A device that fails the plain way after `delay`: the code gets
    /// `failed_to_set_on_device` and the action attempt errors.
    pub fn fails(delay: Duration) -> Self {
        DeviceBehaviour::Fails { delay, error_code: failed_to_set_on_device(), attempt: AttemptResult::Error }
    }
}

fn failed_to_set_on_device() -> String {
    "failed_to_set_on_device".into()
}

/// How the action attempt of a failing change ends ([`DeviceBehaviour::Fails`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptResult {
    /// `status: error`, with the code's error as its `error.type`.
    #[default]
    Error,
    /// `status: success`: the attempt says nothing of the failure.
    Success,
}

/// Faults applied to every Seam API request (not to the admin API).
///
/// These are the faults of the service as a whole. Faults of one access code
/// are scripted on the code ([`Sim::add_issue`], [`Sim::modify_access_code`],
/// [`Sim::remove_access_code`]), and a revoked API key with
/// [`Sim::set_api_key`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Fraction (0 to 1) of requests answered with a server error. Drawn when
    /// a request arrives: it fails after its `latency_ms` even if the faults
    /// change meanwhile.
    pub error_rate: f64,
    /// The paths `error_rate` applies to (e.g. `/access_codes/get`: an
    /// outage of reads while changes go through); empty: every path.
    pub error_paths: Vec<String>,
    /// The server error to answer; unset: alternately 500 (a text body) and
    /// 503 (an empty body).
    pub fail_status: Option<u16>,
    /// Added to every response, milliseconds.
    pub latency_ms: u64,
    /// The next this-many requests are answered 429.
    pub force_429: u32,
    /// `Retry-After` (seconds) sent with 429s; none when unset.
    pub retry_after: Option<u64>,
    /// The next this-many requests are caught in an outage: each waits
    /// `stall_ms`, then is answered 503 (whatever the faults are by then).
    pub stall_next: u32,
    /// See `stall_next`.
    pub stall_ms: u64,
}

/// Where to deliver events as Svix-signed webhooks.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// The endpoint.
    pub url: String,
    /// The signing secret, `whsec_` followed by base64.
    pub secret: String,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget").field("url", &self.url).field("secret", &"[redacted]").finish()
    }
}

/// How the simulator behaves.
#[derive(Clone)]
pub struct SimConfig {
    /// The Bearer token accepted.
    pub api_key: String,
    /// Delay of devices created without a behaviour (auto-created, `--devices`).
    pub device_delay: Duration,
    /// Unknown access code ids are created on first touch instead of 404
    /// (for benchmark peers that invent their ids). Only the first: a code
    /// removed since (deleted, or past its stay) stays gone.
    pub auto_create: bool,
    /// Faults from the start.
    pub faults: Faults,
    /// Access-code updates per device per sliding minute before 429 (Seam's
    /// documented limit is 10); 0 disables.
    pub rate_limit_per_device_per_minute: u32,
    /// Access-code deletes per device per sliding minute before 429, counted
    /// apart from updates (Seam's documented limit is 20); 0 disables.
    pub delete_rate_limit_per_device_per_minute: u32,
    /// Webhook delivery, if any.
    pub webhook: Option<WebhookTarget>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            api_key: "seam_test_key".into(),
            device_delay: Duration::from_millis(200),
            auto_create: false,
            faults: Faults::default(),
            rate_limit_per_device_per_minute: 10,
            delete_rate_limit_per_device_per_minute: 20,
            webhook: None,
        }
    }
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("api_key", &"[redacted]")
            .field("device_delay", &self.device_delay)
            .field("auto_create", &self.auto_create)
            .field("faults", &self.faults)
            .field("rate_limit_per_device_per_minute", &self.rate_limit_per_device_per_minute)
            .field("delete_rate_limit_per_device_per_minute", &self.delete_rate_limit_per_device_per_minute)
            .field("webhook", &self.webhook)
            .finish()
    }
}

/// An access code that exists before the test starts, already `set`.
#[derive(Debug, Clone, Default)]
pub struct SeedCode {
    /// The PIN (default: a random 4-digit one).
    pub code: Option<String>,
    /// The name (default `seeded`).
    pub name: Option<String>,
    /// With `ends_at`: a time-bound code.
    pub starts_at: Option<DateTime<Utc>>,
    /// With `starts_at`: a time-bound code.
    pub ends_at: Option<DateTime<Utc>>,
}

/// An error or warning to put on an access code ([`Sim::add_issue`]), the way
/// a hub dropping off or a provider's hiccup shows up in Seam.
///
/// It is serialized as Seam does: an error as `{"error_code", "message",
/// "created_at"}` with `"is_access_code_error": true`, or, for the codes
/// Seam's schema files under the device, its bridge or its account
/// (`device_offline`, `hub_disconnected`, `device_disconnected`,
/// `account_disconnected`, `bridge_disconnected`, ...), the flags the schema
/// gives them (`is_device_error`, `is_bridge_error`,
/// `is_connected_account_error`); a warning as `{"warning_code", "message",
/// "created_at"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issue {
    /// Error or warning.
    pub kind: IssueKind,
    /// Seam's `error_code` or `warning_code`, e.g. `hub_disconnected`.
    pub code: String,
    /// Default: the code in words.
    #[serde(default)]
    pub message: Option<String>,
    /// Default: when it is added. An older time, with `keep_on_update`,
    /// models an error left over from before an update.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// It disappears by itself this long after it was added (a transient hub
    /// error). Unset: it stays until an update clears it, or for ever with
    /// `keep_on_update`.
    #[serde(default, with = "millis::option", rename = "clear_after_ms")]
    pub clear_after: Option<Duration>,
    /// It survives updates, which otherwise clear a code's errors and
    /// warnings.
    #[serde(default)]
    pub keep_on_update: bool,
}

impl Issue {
    /// An error with the default message, created now, cleared by the next
    /// update.
    pub fn error(code: impl Into<String>) -> Self {
        Self::new(IssueKind::Error, code.into())
    }

    /// A warning with the default message, created now, cleared by the next
    /// update.
    pub fn warning(code: impl Into<String>) -> Self {
        Self::new(IssueKind::Warning, code.into())
    }

    fn new(kind: IssueKind, code: String) -> Self {
        Self { kind, code, message: None, created_at: None, clear_after: None, keep_on_update: false }
    }
}

/// Whether an [`Issue`] is one of the code's `errors` or `warnings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// In `errors`: the code is not healthy.
    Error,
    /// In `warnings`.
    Warning,
}

/// A change made to an access code behind Seam's back, at the lock's keypad
/// or in the lock maker's app ([`Sim::modify_access_code`]). Fields left
/// unset are unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Modification {
    /// The new PIN.
    pub code: Option<String>,
    /// The new name.
    pub name: Option<String>,
    /// A warning Seam raises about the change, e.g.
    /// `code_modified_external_to_seam`; with it the event is
    /// `access_code.modified_external_to_seam`, without it
    /// `access_code.changed` (Seam took the change in silently).
    pub warning: Option<String>,
    /// The lock lost the code (a reset, a battery swap) and Seam now shows
    /// it `unset`, with no issue raised: Seam's docs do not say what it
    /// shows then, so this is the worst plausible (nothing but the status).
    pub lost: bool,
}

/// The simulator's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Sim {
    pub(crate) world: Arc<Mutex<model::World>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sim")
    }
}

impl Sim {
    /// A fresh workspace; starts the clock and, if configured, webhook delivery
    /// (needs a tokio runtime).
    pub fn new(config: SimConfig) -> Self {
        let webhook = config.webhook.clone().map(webhook::start);
        let sim = Sim { world: Arc::new(Mutex::new(model::World::new(config, webhook))) };
        let weak = Arc::downgrade(&sim.world);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                let Some(world) = weak.upgrade() else { return };
                world.lock().expect("world lock").advance(Utc::now());
            }
        });
        sim
    }

    fn with<T>(&self, f: impl FnOnce(&mut model::World) -> T) -> T {
        let mut w = self.world.lock().expect("world lock");
        w.advance(Utc::now());
        f(&mut w)
    }

    /// Adds a device; returns its id.
    pub fn add_device(&self, behaviour: DeviceBehaviour) -> String {
        self.with(|w| w.add_device(behaviour))
    }

    /// Changes how a device behaves from now on.
    pub fn set_device(&self, device_id: &str, behaviour: DeviceBehaviour) {
        self.with(|w| w.set_device(device_id, behaviour, Utc::now()))
    }

    /// Adds an access code already on the lock; returns its id.
    pub fn add_access_code(&self, device_id: &str, seed: SeedCode) -> String {
        self.with(|w| w.seed_code(device_id, seed, Utc::now()))
    }

    /// The faults as they are now (counters such as `stall_next` count down).
    pub fn faults(&self) -> Faults {
        self.with(|w| w.faults.clone())
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        self.with(|w| w.faults = faults)
    }

    /// Accepts `api_key` instead of the key in [`SimConfig`] from now on, as
    /// when a key is revoked and replaced while latchkey runs; `None` accepts
    /// the configured key again. One key is accepted at a time: any other
    /// gets 401 `unauthorized`.
    pub fn set_api_key(&self, api_key: Option<String>) {
        self.with(|w| w.api_key_override = api_key)
    }

    /// Puts an error or warning on an access code; false if there is no such
    /// code. It shows until it clears by itself or an update clears it, and
    /// it does not stop a pending change from finishing.
    pub fn add_issue(&self, access_code_id: &str, issue: Issue) -> bool {
        self.with(|w| w.add_issue(access_code_id, issue, Utc::now()))
    }

    /// Changes an access code as someone at the lock or in another app would:
    /// no action attempt, an event (see [`Modification::warning`]); false if
    /// there is no such code.
    pub fn modify_access_code(&self, access_code_id: &str, change: Modification) -> bool {
        self.with(|w| w.modify_code(access_code_id, change, Utc::now()))
    }

    /// Deletes an access code behind Seam's back: it disappears (get answers
    /// 404) with the event `access_code.deleted_external_to_seam`; false if
    /// there is no such code.
    pub fn remove_access_code(&self, access_code_id: &str) -> bool {
        self.with(|w| w.remove_code(access_code_id, Utc::now()))
    }

    /// Every Seam API request received, rejected ones included.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.with(|w| w.requests.clone())
    }

    /// An access code as the API would return it now.
    pub fn access_code(&self, id: &str) -> Option<serde_json::Value> {
        self.with(|w| w.codes.get(id).map(|c| c.to_json(&w.workspace_id)))
    }

    /// Every event emitted so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.with(|w| w.events.clone())
    }
}

/// A simulator serving on a loopback port.
#[derive(Debug)]
pub struct FakeSeam {
    sim: Sim,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl FakeSeam {
    /// Starts a simulator on 127.0.0.1 and a free port.
    pub async fn spawn(config: SimConfig) -> std::io::Result<FakeSeam> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sim = Sim::new(config);
        let router = app(sim.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(FakeSeam { sim, addr, server })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving.
    pub async fn shutdown(self) {
        self.server.abort();
        let _ = self.server.await;
    }
}

impl std::ops::Deref for FakeSeam {
    type Target = Sim;

    fn deref(&self) -> &Sim {
        &self.sim
    }
}

/// Serves a simulator on `listener` until the process ends.
pub async fn serve(listener: TcpListener, config: SimConfig) -> std::io::Result<()> {
    axum::serve(listener, app(Sim::new(config))).await
}

/// `latchkey fake-seam` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7401")]
    pub listen: SocketAddr,
    /// The Bearer token to accept.
    #[arg(long, env = "FAKE_SEAM_API_KEY", default_value = "seam_test_key", hide_env_values = true)]
    pub api_key: String,
    /// How long devices take to apply a change, milliseconds.
    #[arg(long, default_value_t = 200)]
    pub device_delay_ms: u64,
    /// Fraction of requests answered 500/503.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Latency added to every response, milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Create unknown access codes on first touch instead of answering 404.
    #[arg(long)]
    pub auto_create: bool,
    /// Access-code updates per device per minute before 429 (0: no limit).
    #[arg(long, default_value_t = 10)]
    pub rate_limit: u32,
    /// Access-code deletes per device per minute before 429 (0: no limit).
    #[arg(long, default_value_t = 20)]
    pub delete_rate_limit: u32,
    /// Create this many normal devices at startup and print their ids.
    #[arg(long, default_value_t = 0)]
    pub devices: usize,
    /// Deliver events as webhooks to this URL.
    #[arg(long, requires = "webhook_secret")]
    pub webhook_url: Option<String>,
    /// Webhook signing secret (`whsec_...`).
    #[arg(long, env = "FAKE_SEAM_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
}

/// Runs the simulator from its flags until the process ends.
pub async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = SimConfig {
        api_key: args.api_key,
        device_delay: Duration::from_millis(args.device_delay_ms),
        auto_create: args.auto_create,
        faults: Faults { error_rate: args.error_rate, latency_ms: args.latency_ms, ..Faults::default() },
        rate_limit_per_device_per_minute: args.rate_limit,
        delete_rate_limit_per_device_per_minute: args.delete_rate_limit,
        webhook: args.webhook_url.zip(args.webhook_secret).map(|(url, secret)| WebhookTarget { url, secret }),
    };
    let listener = TcpListener::bind(args.listen).await?;
    let sim = Sim::new(config.clone());
    println!("fake-seam listening on http://{}", listener.local_addr()?);
    for _ in 0..args.devices {
        println!("device {}", sim.add_device(DeviceBehaviour::Normal { delay: config.device_delay }));
    }
    axum::serve(listener, app(sim)).await?;
    Ok(())
}
