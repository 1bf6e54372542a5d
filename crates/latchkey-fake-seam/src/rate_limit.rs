//! Seam's per-device rate limits ("Rate Limits and Guardrails"): each kind
//! of access-code request (updates, deletes) has its own sliding minute per
//! device, so using up one does not slow the other.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Duration as ChronoDuration, Utc};

/// At most `per_minute` requests of one kind per device in any sliding
/// minute.
pub(crate) struct RateLimit {
    /// The limit; 0 disables it.
    per_minute: u32,
    /// When each device's admitted requests of the last minute came, oldest
    /// first.
    by_device: HashMap<String, VecDeque<DateTime<Utc>>>,
}

impl RateLimit {
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, by_device: HashMap::new() }
    }

    /// The limit, for the message of a 429.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Records a request for `device_id` at `now`; false when the device is
    /// over the limit, in which case the request is not counted (a refused
    /// request does not push the window on).
    pub fn admit(&mut self, device_id: &str, now: DateTime<Utc>) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let window = self.by_device.entry(device_id.to_string()).or_default();
        while window.front().is_some_and(|t| now - *t >= ChronoDuration::seconds(60)) {
            window.pop_front();
        }
        if window.len() as u32 >= self.per_minute {
            return false;
        }
        window.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_over_the_limit_is_admitted_again_a_minute_after_its_oldest_request() {
        let start = Utc::now();
        let mut limit = RateLimit::new(2);
        assert!(limit.admit("d", start) && limit.admit("d", start + ChronoDuration::seconds(10)));
        assert!(!limit.admit("d", start + ChronoDuration::seconds(59)));
        assert!(limit.admit("other", start + ChronoDuration::seconds(59)), "per device");
        assert!(limit.admit("d", start + ChronoDuration::seconds(60)));
        assert!(!limit.admit("d", start + ChronoDuration::seconds(61)));
    }

    #[test]
    fn zero_disables_the_limit() {
        let mut limit = RateLimit::new(0);
        assert!((0..100).all(|_| limit.admit("d", Utc::now())));
    }
}
