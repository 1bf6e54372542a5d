//! The wake-up signal between the push-message router and an idle fetch loop.
//!
//! `Notify::notify_one` stores a permit when nobody waits, so a wake-up that
//! arrives while the worker is busy fetching is not lost: the next wait returns
//! at once. Each partition remembers the earliest due time announced on its
//! channel since its last fetch, so a job scheduled for later moves the
//! worker's timer instead of causing a fetch now, and a push to one partition
//! causes a fetch of that partition only. Partitions are added when the
//! worker learns of a `repartition`.

use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Wake {
    notify: Notify,
    /// Per partition, by the backend's index.
    min_due: Mutex<Vec<u64>>,
}

impl Wake {
    fn with<T>(&self, f: impl FnOnce(&mut Vec<u64>) -> T) -> T {
        f(&mut self.min_due.lock().expect("wake lock"))
    }

    /// Something became (or becomes at `due_ms`, Redis clock) available in
    /// `partition`.
    pub(crate) fn due(&self, partition: usize, due_ms: u64) {
        self.with(|m| {
            if m.len() <= partition {
                m.resize(partition + 1, u64::MAX);
            }
            m[partition] = m[partition].min(due_ms);
        });
        self.notify.notify_one();
    }

    /// The worker fetches partitions `0..n` (more once it learns of a
    /// `repartition`): [`Wake::all_due`] covers each of them, including
    /// those no wake-up has named yet.
    pub(crate) fn cover(&self, n: usize) {
        self.with(|m| {
            if m.len() < n {
                m.resize(n, u64::MAX);
            }
        });
    }

    /// Every partition may have work now (the worker has just subscribed,
    /// the connection came back, the idle poll passed, or the worker closes).
    pub(crate) fn all_due(&self) {
        self.with(|m| m.iter_mut().for_each(|d| *d = 0));
        self.notify.notify_one();
    }

    /// The earliest due time announced for `partition` since the last take,
    /// forgetting it: called right before a fetch of that partition, which
    /// sees them all.
    pub(crate) fn take(&self, partition: usize) -> u64 {
        self.with(|m| m.get_mut(partition).map_or(u64::MAX, |d| std::mem::replace(d, u64::MAX)))
    }

    /// The earliest due time announced for `partition`, kept.
    pub(crate) fn peek(&self, partition: usize) -> u64 {
        self.with(|m| m.get(partition).copied().unwrap_or(u64::MAX))
    }

    pub(crate) async fn notified(&self) {
        self.notify.notified().await
    }
}
