//! Rate limits shared by every worker process, kept in Redis beside the
//! reconcile queue: Seam's limit of access-code updates per device (an exact
//! sliding window), and an optional budget for the whole API key (GCRA). A
//! caller that may not go now gets the wait and reschedules its job for then;
//! nothing sleeps on a worker slot.

use std::time::Duration;

use crate::{error::Result, reconcile::Reconciliations, scripts::SCRIPTS};

/// Added to the device window: Seam counts requests when they arrive, a few
/// milliseconds after they were admitted here, and that delay varies.
pub const GUARD_BAND: Duration = Duration::from_millis(250);

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Updates allowed per device in any `device_window` (Seam: 10 per minute).
    pub device_limit: u32,
    /// Deletes allowed per device in any `device_window` (Seam: 20 per minute),
    /// counted apart from updates.
    pub delete_limit: u32,
    /// The sliding window of `device_limit` and `delete_limit`.
    pub device_window: Duration,
    /// Requests per second for the whole API key; 0 for no budget.
    pub key_rate: u32,
    /// Requests the key budget allows at once.
    pub key_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self { device_limit: 10, delete_limit: 20, device_window: Duration::from_secs(60), key_rate: 0, key_burst: 1 }
    }
}

/// A change to an access code on a device. Seam limits each kind per device
/// in its own window: 10 updates and 20 deletes a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `/access_codes/update`.
    Update,
    /// `/access_codes/delete`.
    Delete,
}

/// The longest a 429 holds a device, whatever Seam's `Retry-After` said.
pub const MAX_DEVICE_HOLD: Duration = Duration::from_secs(15 * 60);

impl Change {
    /// This kind's allowance per device and window.
    fn limit(self, limits: &Limits) -> u32 {
        match self {
            Change::Update => limits.device_limit,
            Change::Delete => limits.delete_limit,
        }
    }

    /// The part of the key naming this kind's window of `device`.
    fn window_of(self, device: &str) -> String {
        match self {
            Change::Update => device.to_string(),
            Change::Delete => format!("delete:{device}"),
        }
    }
}

impl Reconciliations {
    /// Takes a slot for one request when the limits allow it now: the key
    /// budget, and, for a change to a code on a device, that device's window
    /// for its kind. Otherwise takes nothing and returns how long to wait.
    pub async fn admit(&self, change: Option<(Change, &str)>, limits: &Limits) -> Result<Option<Duration>> {
        let interval_ms = if limits.key_rate == 0 { 0 } else { (1000 / limits.key_rate.max(1)).max(1) };
        let (window, limit) = change.map_or((String::new(), 0), |(c, device)| (c.window_of(device), c.limit(limits)));
        let mut conn = self.queue().redis.conn();
        let wait_ms: u64 = SCRIPTS
            .throttle
            .key(self.queue().home().base())
            .arg(window)
            .arg(limit)
            .arg((limits.device_window + GUARD_BAND).as_millis() as u64)
            .arg(interval_ms)
            .arg(limits.key_burst.max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms)))
    }

    /// After Seam answered 429 to a `change` on `device`: send that device no
    /// more changes of that kind for `hold`, at least 1 ms and at most
    /// [`MAX_DEVICE_HOLD`] (Seam's `Retry-After` is not trusted further).
    pub async fn hold_device(&self, change: Change, device: &str, hold: Duration, limits: &Limits) -> Result<()> {
        let hold = hold.clamp(Duration::from_millis(1), MAX_DEVICE_HOLD);
        let mut conn = self.queue().redis.conn();
        let _: i64 = SCRIPTS
            .backoff_device
            .key(self.queue().home().base())
            .arg(change.window_of(device))
            .arg(change.limit(limits))
            .arg(hold.as_millis() as u64)
            .arg((limits.device_window + GUARD_BAND).as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}
