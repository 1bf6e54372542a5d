//! Worker identities: unique per process, so a restarted worker never waits on
//! (or is confused with) a dead one, and a rolling deploy never reuses one.

use rand::Rng;

/// `<pod>-<pid>-<random>`: the pod name from `POD_NAME` (Kubernetes downward
/// API) or `HOSTNAME`, else `latchkey`; the process id; 32 random bits.
pub fn worker_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "latchkey".to_string());
    let random: u32 = rand::rng().random();
    format!("{host}-{}-{random:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    #[test]
    fn identities_differ_within_one_process() {
        assert_ne!(super::worker_identity(), super::worker_identity());
    }
}
