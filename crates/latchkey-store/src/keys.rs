//! Every Redis key name of a queue, in one place. A queue is split into
//! partitions: one partition's keys share a hash tag (`{queue}` when there is
//! one partition, `{queue:i}` when there are several), so they live in one
//! Redis Cluster slot and a Lua script never crosses slots; a job is always in
//! the partition its id hashes to ([`partition_of`]). The layout is documented
//! in the README ("Wire format") because producers in other languages write
//! to it.

use crate::error::{Error, Result};

/// Key names of one queue: `<prefix>:{<queue>}:<part>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    base: std::sync::Arc<str>,
}

/// Most partitions a queue may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// The partition (0 to `partitions - 1`) of the job or access code `id`: the
/// CRC-32 (IEEE 802.3, as zlib computes it) of its UTF-8 bytes, modulo
/// `partitions`. Stable across versions and languages: Python's
/// `zlib.crc32(id.encode()) % partitions`, Node's `zlib.crc32(id) % partitions`.
pub fn partition_of(id: &str, partitions: u32) -> u32 {
    crc32fast::hash(id.as_bytes()) % partitions.max(1)
}

/// Redis Cluster's slots.
const SLOTS: u32 = 16_384;

/// The hash slot of a hash tag, as Redis Cluster computes it (CRC-16/XMODEM
/// modulo 16,384).
pub fn slot_of(tag: &str) -> u16 {
    let mut crc: u16 = 0;
    for &b in tag.as_bytes() {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    (u32::from(crc) % SLOTS) as u16
}

/// The hash slot of the keys under `base` (`latchkey:{reconcile:16:3:0}`):
/// its hash tag's.
pub(crate) fn slot_of_base(base: &str) -> u16 {
    slot_of(base.split_once('{').and_then(|(_, rest)| rest.split_once('}')).map_or(base, |(tag, _)| tag))
}

/// The hash tag of partition `i` of `partitions` (more than one):
/// `<queue>:<partitions>:<i>:<n>` with the smallest `n` from 0 whose slot
/// lies in the `i`-th of `partitions` equal ranges of the 16,384 slots. The
/// partitions' slots are thus spread evenly, and a cluster whose masters hold
/// equal ranges of slots (as `redis-cli --cluster create` makes them) gives
/// each master an equal share of partitions, within one. The tag names the
/// number of partitions, so two layouts of a queue never share a key (what
/// `repartition` relies on).
pub fn partition_tag(queue: &str, i: u32, partitions: u32) -> String {
    (0u32..)
        .map(|n| format!("{queue}:{partitions}:{i}:{n}"))
        .find(|tag| u32::from(slot_of(tag)) * partitions / SLOTS == i)
        .expect("every range of slots is reached")
}

/// Checks a number of partitions: 1 to [`MAX_PARTITIONS`].
pub fn validate_partitions(partitions: u32) -> Result<()> {
    if (1..=MAX_PARTITIONS).contains(&partitions) {
        Ok(())
    } else {
        Err(Error::Config(format!("partitions {partitions}: must be 1 to {MAX_PARTITIONS}")))
    }
}

impl QueueKeys {
    /// The keys of each of `queue`'s `partitions`: one partition is the queue
    /// itself (`{queue}`); several are tagged by [`partition_tag`]
    /// (`{queue:<partitions>:<i>:<n>}`).
    pub fn partitions(prefix: &str, queue: &str, partitions: u32) -> Result<Vec<Self>> {
        validate_partitions(partitions)?;
        let whole = Self::new(prefix, queue)?;
        if partitions == 1 {
            return Ok(vec![whole]);
        }
        Ok((0..partitions)
            .map(|i| Self { base: format!("{prefix}:{{{}}}", partition_tag(queue, i, partitions)).into() })
            .collect())
    }

    /// Keys for `queue` under `prefix` (for example `latchkey` and `apply`),
    /// as one whole: a queue of one partition, and the keys a partitioned
    /// queue keeps apart from its partitions (its layout record, its worker
    /// registry).
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
        Ok(Self { base: format!("{prefix}:{{{queue}}}").into() })
    }

    /// HASH: the queue's layout (`partitions`, and `moving_to` while
    /// `repartition` moves it), recorded by the first process that uses it
    /// and checked by every other.
    pub fn layout(&self) -> String {
        format!("{}:layout", self.base)
    }
    /// STRING on a partition being moved away from: `frozen <P>` while
    /// `repartition` moves its codes to the layout of P partitions (nothing
    /// is leased from it, desired states wait), then `moved <P>` (a
    /// forwarding address: desired states go to that layout).
    pub fn moving(&self) -> String {
        format!("{}:moving", self.base)
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
    fn partitions_are_the_crc32_of_the_id_as_zlib_computes_it() {
        // zlib.crc32(b"123456789") == 0xCBF43926, the CRC-32 check value.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(partition_of("123456789", 16), 0xCBF4_3926 % 16);
        // python3 -c 'import zlib; print(zlib.crc32(b"ac_1") % 16)'
        assert_eq!(partition_of("ac_1", 16), 2);
        assert_eq!(partition_of("anything", 1), 0);
    }

    #[test]
    fn partitioned_keys_carry_one_tag_per_partition() {
        let one = QueueKeys::partitions("latchkey", "reconcile", 1).unwrap();
        assert_eq!(one, vec![QueueKeys::new("latchkey", "reconcile").unwrap()]);
        let parts = QueueKeys::partitions("latchkey", "reconcile", 3).unwrap();
        let bases: Vec<&str> = parts.iter().map(QueueKeys::base).collect();
        assert_eq!(bases, ["latchkey:{reconcile:3:0:2}", "latchkey:{reconcile:3:1:0}", "latchkey:{reconcile:3:2:2}"]);
        for bad in [0, MAX_PARTITIONS + 1] {
            let err = QueueKeys::partitions("latchkey", "reconcile", bad).unwrap_err().to_string();
            assert!(err.contains("must be 1 to 1024"), "{err}");
        }
    }

    #[test]
    fn slots_are_redis_clusters_and_partitions_spread_evenly_over_them() {
        // The check value of CRC-16/XMODEM, and slots CLUSTER KEYSLOT gives.
        assert_eq!(slot_of("123456789"), 0x31C3);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("reconcile"), 15101);
        for partitions in [2, 3, 16, 64, 1024] {
            for i in 0..partitions {
                let slot = u32::from(slot_of(&partition_tag("reconcile", i, partitions)));
                assert_eq!(slot * partitions / 16_384, i, "partition {i} of {partitions}");
            }
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
