//! The wake-up signal between the push-message router and an idle fetch loop.
//!
//! `Notify::notify_one` stores a permit when nobody waits, so a wake-up that
//! arrives while the worker is busy fetching is not lost: the next wait returns
//! at once. Each partition remembers the earliest due time announced on its
//! channel since its last fetch, so a job scheduled for later moves the
//! worker's timer instead of causing a fetch now, and a push to one partition
//! causes a fetch of that partition only.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

#[derive(Debug)]
pub(crate) struct Wake {
    notify: Notify,
    min_due: Box<[AtomicU64]>,
}

impl Wake {
    /// For a queue of `partitions` partitions.
    pub(crate) fn new(partitions: usize) -> Self {
        Self { notify: Notify::new(), min_due: (0..partitions.max(1)).map(|_| AtomicU64::new(u64::MAX)).collect() }
    }

    /// Something became (or becomes at `due_ms`, Redis clock) available in
    /// `partition`.
    pub(crate) fn due(&self, partition: usize, due_ms: u64) {
        if let Some(min) = self.min_due.get(partition) {
            min.fetch_min(due_ms, Ordering::AcqRel);
        }
        self.notify.notify_one();
    }

    /// Every partition may have work now (the connection came back, or the
    /// worker closes).
    pub(crate) fn all_due(&self) {
        for min in &self.min_due {
            min.store(0, Ordering::Release);
        }
        self.notify.notify_one();
    }

    /// The earliest due time announced for `partition` since the last take,
    /// forgetting it: called right before a fetch of that partition, which
    /// sees them all.
    pub(crate) fn take(&self, partition: usize) -> u64 {
        self.min_due.get(partition).map_or(u64::MAX, |m| m.swap(u64::MAX, Ordering::AcqRel))
    }

    /// The earliest due time announced for `partition`, kept.
    pub(crate) fn peek(&self, partition: usize) -> u64 {
        self.min_due.get(partition).map_or(u64::MAX, |m| m.load(Ordering::Acquire))
    }

    pub(crate) async fn notified(&self) {
        self.notify.notified().await
    }
}
