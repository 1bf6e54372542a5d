//! `latchkey-fake-seam`: a simulator of the Seam API good enough to test
//! latchkey against, and to try latchkey without a Seam account.
//!
//! It models one workspace of devices and access codes in memory, written from
//! Seam's documentation and OpenAPI schemas (`shared/seam-openapi-extract.json`)
//! and deliberately not from latchkey's client: a field either side names
//! wrongly fails a test. Devices behave as configured (normal, slow, failing,
//! offline); faults (5xx, 429, latency) are scripted through [`Faults`], the
//! admin API under `/_admin`, or startup flags.

mod api;
mod model;
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
}

/// How a device handles access-code changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceBehaviour {
    /// Applies a change after `delay`: the action attempt succeeds and the code
    /// becomes `set` (or `unset` and scheduled, for a future time-bound code).
    Normal {
        /// Time to program the lock.
        #[serde(with = "millis", rename = "delay_ms")]
        delay: Duration,
    },
    /// Never finishes: the code stays `setting`, the attempt `pending`, and
    /// after `warn_after` Seam reports `delay_in_setting_on_device`.
    NeverFinishes {
        /// When the delay warning appears.
        #[serde(with = "millis", rename = "warn_after_ms")]
        warn_after: Duration,
    },
    /// Fails after `delay`: the attempt errors and the code gets
    /// `failed_to_set_on_device`.
    Fails {
        /// Time before the failure.
        #[serde(with = "millis", rename = "delay_ms")]
        delay: Duration,
    },
    /// Offline: the code reports `device_offline` and the attempt stays
    /// pending until the device is back.
    Offline,
}

/// Faults applied to every Seam API request (not to the admin API).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Fraction (0 to 1) of requests answered with a server error.
    pub error_rate: f64,
    /// The server error to answer; unset: alternately 500 (a text body) and
    /// 503 (an empty body).
    pub fail_status: Option<u16>,
    /// Added to every response, milliseconds.
    pub latency_ms: u64,
    /// The next this-many requests are answered 429.
    pub force_429: u32,
    /// `Retry-After` (seconds) sent with 429s; none when unset.
    pub retry_after: Option<u64>,
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
    /// (for benchmark peers that invent their ids).
    pub auto_create: bool,
    /// Faults from the start.
    pub faults: Faults,
    /// Access-code updates per device per sliding minute before 429 (Seam's
    /// documented limit is 10); 0 disables.
    pub rate_limit_per_device_per_minute: u32,
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

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        self.with(|w| w.faults = faults)
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
