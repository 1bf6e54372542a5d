//! The queue's Lua scripts, one per state change (plus `load.lua` and
//! `due.lua`, reads that must see several keys at one instant), each atomic.
//! Their sources live in `lua/`; all but `push.lua` (which producers in other
//! languages run as is) start with the shared prelude `lua/common.lua`, which
//! also holds what several scripts share: the burial (`bury`, which ends a
//! dead reconciliation's outcome record), the reading of a reconciliation's
//! records (`read_records`, for `load.lua` and `fetch.lua`), the terminal
//! outcome states and the event stream's cap. `lua/guard.lua` follows the
//! prelude in every script that touches the job lists.

use std::sync::LazyLock;

use redis::Script;

const COMMON: &str = include_str!("../lua/common.lua");
const GUARD: &str = include_str!("../lua/guard.lua");

/// A script that touches the queue's lists of job ids: the prelude, the
/// check of those lists' types (`guard.lua`), then the body.
fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{GUARD}\n{body}"))
}

/// A script that touches no list of job ids (the reads of records, the rate
/// limiter), or checks only the ones it touches (`record.lua`): the prelude
/// without the guard, up to four calls fewer on the paths every
/// reconciliation takes.
fn without_guard(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

pub(crate) struct Scripts {
    pub push: Script,
    pub fetch: Script,
    pub ack: Script,
    pub retry: Script,
    pub bury: Script,
    pub release: Script,
    pub heartbeat: Script,
    pub requeue_dead: Script,
    pub desire: Script,
    pub record: Script,
    pub load: Script,
    pub hold: Script,
    pub throttle: Script,
    pub backoff_device: Script,
    pub leave: Script,
    pub due: Script,
    pub nudge: Script,
    pub layout: Script,
}

/// The source of the push script, for producers that are not written in Rust.
pub const PUSH_LUA: &str = include_str!("../lua/push.lua");

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    push: Script::new(PUSH_LUA),
    fetch: with_prelude(include_str!("../lua/fetch.lua")),
    ack: with_prelude(include_str!("../lua/ack.lua")),
    retry: with_prelude(include_str!("../lua/retry.lua")),
    bury: with_prelude(include_str!("../lua/bury.lua")),
    release: with_prelude(include_str!("../lua/release.lua")),
    heartbeat: with_prelude(include_str!("../lua/heartbeat.lua")),
    requeue_dead: with_prelude(include_str!("../lua/requeue_dead.lua")),
    desire: with_prelude(include_str!("../lua/desire.lua")),
    record: without_guard(include_str!("../lua/record.lua")),
    load: without_guard(include_str!("../lua/load.lua")),
    hold: with_prelude(include_str!("../lua/hold.lua")),
    throttle: without_guard(include_str!("../lua/throttle.lua")),
    backoff_device: without_guard(include_str!("../lua/backoff_device.lua")),
    leave: with_prelude(include_str!("../lua/leave.lua")),
    due: with_prelude(include_str!("../lua/due.lua")),
    nudge: with_prelude(include_str!("../lua/nudge.lua")),
    layout: Script::new(include_str!("../lua/layout.lua")),
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::EVENTS_CAP;

    #[test]
    fn the_scripts_cap_records_at_max_record_bytes() {
        let line = format!("\nlocal MAX_RECORD = {}\n", crate::reconcile::MAX_RECORD_BYTES);
        assert!(COMMON.contains(&line), "common.lua must declare{line}");
    }

    #[test]
    fn the_scripts_cap_the_event_stream_at_events_cap() {
        let line = format!("\nlocal EVENTS_CAP = {EVENTS_CAP}\n");
        assert!(COMMON.contains(&line), "common.lua must declare{line}");
    }
}
