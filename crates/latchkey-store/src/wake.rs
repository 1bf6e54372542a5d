//! The wake-up signal between the push-message router and an idle fetch loop.
//!
//! `Notify::notify_one` stores a permit when nobody waits, so a wake-up that
//! arrives while the worker is busy fetching is not lost: the next wait returns
//! at once. `min_due` remembers the earliest due time announced since the last
//! fetch, so a job scheduled for later moves the worker's timer instead of
//! causing a fetch now.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

#[derive(Debug)]
pub(crate) struct Wake {
    notify: Notify,
    min_due: AtomicU64,
}

impl Default for Wake {
    fn default() -> Self {
        Self { notify: Notify::new(), min_due: AtomicU64::new(u64::MAX) }
    }
}

impl Wake {
    /// Something became (or becomes at `due_ms`, Redis clock) available.
    pub(crate) fn due(&self, due_ms: u64) {
        self.min_due.fetch_min(due_ms, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// Forget announcements: called right before a fetch, which sees them all.
    pub(crate) fn reset(&self) {
        self.min_due.store(u64::MAX, Ordering::Release);
    }

    /// The earliest due time announced since the last reset.
    pub(crate) fn min_due(&self) -> u64 {
        self.min_due.load(Ordering::Acquire)
    }

    pub(crate) async fn notified(&self) {
        self.notify.notified().await
    }
}
