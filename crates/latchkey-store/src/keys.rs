//! Every Redis key name of a queue, in one place. All of them share the hash
//! tag `{queue}`, so a queue's keys live in one Redis Cluster slot and its Lua
//! scripts never cross slots. The layout is documented in the README ("Wire
//! format") because producers in other languages write to it.

use crate::error::{Error, Result};

/// Key names of one queue: `<prefix>:{<queue>}:<part>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    base: String,
}

impl QueueKeys {
    /// Keys for `queue` under `prefix` (for example `latchkey` and `apply`).
    pub fn new(prefix: &str, queue: &str) -> Result<Self> {
        let rule = if queue.is_empty() || queue.len() > 64 {
            Some("must be 1 to 64 characters")
        } else if !queue.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            Some("may only contain ASCII letters, digits, '-', '_' and '.'")
        } else {
            None
        };
        if let Some(rule) = rule {
            return Err(Error::InvalidQueueName { name: queue.to_string(), rule });
        }
        if prefix.contains(['{', '}']) {
            return Err(Error::Config(format!("key prefix {prefix:?} must not contain braces")));
        }
        Ok(Self { base: format!("{prefix}:{{{queue}}}") })
    }

    /// The base key, `KEYS[1]` of every script: `latchkey:{apply}`.
    pub fn base(&self) -> &str {
        &self.base
    }
    /// LIST of ready job ids (LPUSH in, RPOP out).
    pub fn ready(&self) -> String {
        format!("{}:ready", self.base)
    }
    /// ZSET of scheduled job ids, scored by due time (epoch ms).
    pub fn scheduled(&self) -> String {
        format!("{}:scheduled", self.base)
    }
    /// ZSET of leased job ids, scored by lease expiry (epoch ms).
    pub fn leased(&self) -> String {
        format!("{}:leased", self.base)
    }
    /// ZSET of dead-letter job ids, scored by time of death (epoch ms).
    pub fn dead(&self) -> String {
        format!("{}:dead", self.base)
    }
    /// HASH of counters (pushed, completed, retried, dead, ...).
    pub fn stats(&self) -> String {
        format!("{}:stats", self.base)
    }
    /// ZSET of worker identities, scored by last heartbeat (epoch ms).
    pub fn workers(&self) -> String {
        format!("{}:workers", self.base)
    }
    /// Pub/sub channel announcing the earliest due time of new work.
    pub fn wake(&self) -> String {
        format!("{}:wake", self.base)
    }
    /// HASH of an access code's desired state: `generation`, `state` (JSON), `enqueued_at`.
    pub fn desired(&self, access_code_id: &str) -> String {
        format!("{}:desired:{access_code_id}", self.base)
    }
    /// STRING: an access code's outcome record (JSON).
    pub fn outcome(&self, access_code_id: &str) -> String {
        format!("{}:outcome:{access_code_id}", self.base)
    }
    /// LIST of an access code's state changes (JSON history entries), newest
    /// first, capped.
    pub fn history(&self, access_code_id: &str) -> String {
        format!("{}:history:{access_code_id}", self.base)
    }
    /// ZSET of the access codes whose newest generation ended `failed`,
    /// `rejected` or `timed_out` (they need a human), scored by when (ms).
    pub fn attention(&self) -> String {
        format!("{}:attention", self.base)
    }
    /// STREAM of outcome state changes, capped.
    pub fn events(&self) -> String {
        format!("{}:events", self.base)
    }
    /// STRING: when the last catch-up from Seam's `/events/list` reached
    /// (RFC 3339), and the lease of the worker catching up now.
    pub fn catch_up(&self, part: &str) -> String {
        format!("{}:catchup:{part}", self.base)
    }
    /// HASH of one job (payload, attempts, state, ...).
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.base)
    }
}

/// Checks a caller-supplied job id against the wire format's rule.
/// The rule is the one of every id latchkey takes (`latchkey_core::id_rule_broken`).
pub fn validate_job_id(id: &str) -> Result<()> {
    match latchkey_core::id_rule_broken(id) {
        Some(rule) => Err(Error::InvalidJobId { id: id.to_string(), rule }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_queue_hash_tag() {
        let k = QueueKeys::new("latchkey", "apply").unwrap();
        for key in [k.ready(), k.scheduled(), k.leased(), k.dead(), k.stats(), k.workers(), k.wake(), k.job("j1")] {
            assert!(key.starts_with("latchkey:{apply}:"), "{key}");
        }
    }

    #[test]
    fn queue_names_with_braces_or_spaces_are_refused() {
        for bad in ["", "a{b", "a b", "x".repeat(65).as_str()] {
            assert!(matches!(QueueKeys::new("latchkey", bad), Err(Error::InvalidQueueName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn job_ids_are_checked() {
        assert!(validate_job_id("ac_123:gen:7").is_ok());
        for bad in ["", "has space", "new\nline", "look\u{200b}alike", "rtl\u{202e}gnp.exe"] {
            let err = validate_job_id(bad).unwrap_err().to_string();
            assert!(err.contains("invalid job id"), "{err}");
        }
    }
}
