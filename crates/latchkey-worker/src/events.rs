//! Catching up from Seam's `/events/list`: the webhooks' backstop. Every
//! `--events-catch-up-secs`, one worker of the deployment (a lease in Redis)
//! lists the access-code events since the last catch-up and pulls their codes'
//! jobs forward, exactly as a webhook delivery would. Events are
//! de-duplicated on their `event_id` with the webhooks (`nudge.lua`), so an
//! event delivered both ways runs its job once; events missed while
//! `latchkey serve` was down are caught up within one interval.

use std::time::Duration;

use chrono::Utc;
use latchkey_seam::SeamClient;
use latchkey_store::{CodeEvent, Limits, Nudged, Reconciliations, error_chain};

/// What an event from Seam sets off, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger<'a> {
    /// An access code event: that code's job runs now (for a settings
    /// change, unless latchkey's own update is in flight: [`CodeEvent`]).
    Code(&'a str, CodeEvent),
    /// A device came back or went away: the jobs of its codes whose
    /// reconciliation is under way run now (codes that succeeded are left
    /// to their watch).
    Device(&'a str),
}

impl<'a> Trigger<'a> {
    /// From an event's type and ids.
    pub(crate) fn of(event_type: &str, access_code_id: Option<&'a str>, device_id: Option<&'a str>) -> Option<Self> {
        match event_type {
            "access_code.changed" => access_code_id.map(|id| Trigger::Code(id, CodeEvent::Changed)),
            t if t.starts_with("access_code.") => access_code_id.map(|id| Trigger::Code(id, CodeEvent::Lock)),
            "device.connected" | "device.disconnected" => device_id.map(Trigger::Device),
            _ => None,
        }
    }

    /// Pulls the jobs forward, once per `delivery`: `None` when it was seen
    /// before, else how many waiting jobs now run.
    pub(crate) async fn pull(
        self,
        store: &Reconciliations,
        delivery: Option<&str>,
    ) -> Result<Option<usize>, latchkey_store::Error> {
        match self {
            Trigger::Code(code, event) => Ok(store
                .nudge(delivery, event, &[code])
                .await?
                .map(|r| r.iter().filter(|n| **n == Nudged::Pulled).count())),
            Trigger::Device(device) => store.nudge_device(delivery, device).await,
        }
    }
}

/// The events that pull jobs forward: Seam's `access_code.*` list, and a
/// device coming back or going away.
pub const ACCESS_CODE_EVENTS: &[&str] = &[
    "access_code.created",
    "access_code.changed",
    "access_code.scheduled_on_device",
    "access_code.set_on_device",
    "access_code.removed_from_device",
    "access_code.delay_in_setting_on_device",
    "access_code.failed_to_set_on_device",
    "access_code.deleted",
    "access_code.delay_in_removing_from_device",
    "access_code.failed_to_remove_from_device",
    "access_code.modified_external_to_seam",
    "access_code.deleted_external_to_seam",
    "access_code.backup_access_code_pulled",
    "device.connected",
    "device.disconnected",
];

/// How far back a catch-up ever looks: Svix stops retrying after about a day,
/// and a cursor older than that (a deployment off for a week) would replay
/// events nobody needs; the polls have verified those codes since.
const MAX_LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// Events asked for per catch-up; a full page is followed at the next round.
const PAGE: u32 = 500;

/// Runs catch-up rounds every `every` until the task is aborted.
pub(crate) async fn catch_up_loop(
    store: Reconciliations,
    seam: SeamClient,
    limits: Limits,
    every: Duration,
    identity: String,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match round(&store, &seam, &limits, every, &identity).await {
            Ok(0) => {}
            Ok(pulled) => tracing::info!(pulled, "caught up from Seam's events: jobs pulled forward"),
            Err(e) => tracing::warn!(error = %e, "catching up from Seam's events failed; trying again next round"),
        }
    }
}

/// One round: the number of waiting jobs it pulled forward.
async fn round(
    store: &Reconciliations,
    seam: &SeamClient,
    limits: &Limits,
    every: Duration,
    identity: &str,
) -> Result<usize, String> {
    let store_err = |e: latchkey_store::Error| error_chain(&e);
    // One worker per interval (a little under it, so the next tick finds it free).
    if !store.catch_up_turn(identity, every.mul_f64(0.9)).await.map_err(store_err)? {
        return Ok(0);
    }
    // Paced by the key budget, as a background read (half the burst).
    if limits.key_rate > 0 {
        let background = Limits { key_burst: (limits.key_burst / 2).max(1), ..*limits };
        if store.admit(None, &background).await.map_err(store_err)?.is_some() {
            return Ok(0);
        }
    }
    let now = Utc::now();
    let floor = now - chrono::Duration::from_std(MAX_LOOKBACK).unwrap_or_default();
    let first = now - chrono::Duration::from_std(every).unwrap_or_default();
    let since = store.catch_up_cursor().await.map_err(store_err)?.unwrap_or(first).clamp(floor, now);
    let events = seam.list_events(since, ACCESS_CODE_EVENTS, PAGE).await.map_err(|e| error_chain(&e))?;
    let mut reached = since;
    let mut pulled = 0;
    for event in &events {
        // Never ahead of this clock: a time from outside is not trusted.
        if let Some(at) = event.at {
            reached = reached.max(at.min(now));
        }
        let Some(trigger) = Trigger::of(&event.event_type, event.access_code_id.as_deref(), event.device_id.as_deref())
        else {
            continue;
        };
        let delivery = (latchkey_core::id_rule_broken(&event.event_id).is_none()).then_some(event.event_id.as_str());
        pulled += trigger.pull(store, delivery).await.map_err(store_err)?.unwrap_or(0);
    }
    // `since` is inclusive: events at `reached` are listed again next round
    // and de-duplicated on their id, so none at the boundary is lost.
    store.set_catch_up_cursor(reached).await.map_err(store_err)?;
    Ok(pulled)
}
