//! `latchkey demo`: the whole pipeline in one process. A redis-server of its
//! own (or `REDIS_URL`), the Seam simulator, a worker, and a scenario: an
//! ongoing code, a time-bound code starting in a few seconds, both
//! conversions, a device that fails, and a burst of updates for one code.
//! Webhooks are on: `latchkey serve` receives the simulator's signed events,
//! which pull verifications forward; polls are the backstop.
//! Shows progress, ends with a table of outcomes, stops cleanly on Ctrl-C.

use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use latchkey_core::{DesiredStateInput, Outcome, OutcomeState};
use latchkey_fake_seam::{AttemptResult, DeviceBehaviour, FakeSeam, SeedCode, SimConfig, WebhookTarget};
use latchkey_store::{DEFAULT_PARTITIONS, QueueConfig, Reconciliations, Redis, RedisConfig};
use latchkey_worker::{RedisArgs, ServeArgs, WorkerArgs, run_serve, run_worker};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use this Redis instead of starting one (the demo's keys get their own prefix).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
}

const KEY: &str = "seam_demo_key";
const WEBHOOK_SECRET: &str = "whsec_ZGVtby13ZWJob29rLXNlY3JldC1vZi1sYXRjaGtleQ==";

struct Case {
    label: &'static str,
    what: &'static str,
    access_code_id: String,
    generation: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let local = crate::local_redis::resolve(args.redis_url)?;
    let serve_addr = std::net::SocketAddr::from(([127, 0, 0, 1], latchkey_devenv::free_tcp_port()));
    let seam = FakeSeam::spawn(SimConfig {
        api_key: KEY.into(),
        device_delay: Duration::from_millis(400),
        webhook: Some(WebhookTarget {
            url: format!("http://{serve_addr}/webhooks/seam"),
            secret: WEBHOOK_SECRET.into(),
        }),
        ..SimConfig::default()
    })
    .await?;
    println!(
        "Redis: {}{}",
        latchkey_store::redact_url(&local.url),
        if local.owned.is_some() { " (started for this demo)" } else { "" }
    );
    println!("Seam simulator: {} (its events go to latchkey serve at http://{serve_addr}/webhooks/seam)", seam.url());
    let prefix = format!("latchkey-demo-{}", std::process::id());
    let store = Reconciliations::open(
        Redis::connect(&RedisConfig::new(&local.url)).await?,
        QueueConfig { prefix: prefix.clone(), partitions: DEFAULT_PARTITIONS, ..QueueConfig::default() },
    )
    .await?;

    let (stop_serve, serve_stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(run_serve(
        ServeArgs {
            listen: serve_addr.to_string(),
            http_addr: "off".into(),
            redis: RedisArgs::url(local.url.clone()),
            prefix: prefix.clone(),
            partitions: DEFAULT_PARTITIONS,
            webhook_secret: Some(WEBHOOK_SECRET.into()),
            webhook_secret_file: None,
            api_tokens_file: None,
        },
        async move {
            let _ = serve_stopped.await;
        },
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker_args = WorkerArgs {
        redis: RedisArgs::url(local.url.clone()),
        http_addr: "off".into(),
        seam_endpoint: seam.url(),
        seam_api_key: Some(KEY.into()),
        seam_api_key_file: None,
        concurrency: 32,
        prefix,
        partitions: DEFAULT_PARTITIONS,
        verify_timeout_secs: 20,
        // Webhooks bring the news; polls are the backstop.
        poll_base_ms: 2000,
        poll_cap_ms: 10_000,
        max_attempts: 5,
        max_reapplies: 2,
        min_update_interval_ms: 1000,
        attempt_patience_ms: 2000,
        device_limit: 10,
        device_window_secs: 60,
        key_rate: 0,
        key_burst: 20,
        verify_spread_ms: 0,
        lease_secs: 30,
        removal_grace_secs: 900,
        resync_secs: 6 * 3600,
        max_drift_repairs: 3,
        retention_secs: 7 * 24 * 3600,
        device_delete_limit: 20,
        drain_secs: 5,
        events_catch_up_secs: 10,
    };
    let worker = tokio::spawn(run_worker(worker_args, async move {
        let _ = stop_rx.await;
    }));

    let normal = || DeviceBehaviour::Normal { delay: Duration::from_millis(400) };
    let start = (Utc::now() + chrono::Duration::seconds(5)).trunc_subsecs(0);
    let end = start + chrono::Duration::days(3);
    let mut cases = Vec::new();
    let mut add = async |label,
                         what,
                         seed: SeedCode,
                         behaviour: DeviceBehaviour,
                         wants: Vec<serde_json::Value>|
           -> anyhow::Result<String> {
        let device = seam.add_device(normal());
        let id = seam.add_access_code(&device, seed);
        seam.set_device(&device, behaviour);
        let mut generation = 0;
        for w in wants {
            let mut w = w;
            w["access_code_id"] = json!(id);
            generation = store.enqueue(serde_json::from_value::<DesiredStateInput>(w)?).await?;
        }
        cases.push(Case { label, what, access_code_id: id, generation });
        Ok(device)
    };
    let seed =
        |code: &str| SeedCode { code: Some(code.into()), name: Some("Previous guest".into()), ..SeedCode::default() };
    add("ongoing", "new PIN and name", seed("1111"), normal(), vec![json!({"code": "4821", "name": "Guest Smith"})])
        .await?;
    add(
        "time-bound",
        "time-bound code, starts in 5 s",
        seed("2222"),
        normal(),
        vec![json!({"code": "5902", "starts_at": start.to_rfc3339(), "ends_at": end.to_rfc3339()})],
    )
    .await?;
    add(
        "to time-bound",
        "ongoing -> time-bound (dates)",
        seed("3333"),
        normal(),
        vec![json!({"starts_at": (Utc::now() - chrono::Duration::minutes(1)).trunc_subsecs(0).to_rfc3339(), "ends_at": end.to_rfc3339()})],
    )
    .await?;
    let past = Utc::now() - chrono::Duration::hours(2);
    add(
        "to ongoing",
        "time-bound -> ongoing (type)",
        SeedCode { starts_at: Some(past), ends_at: Some(past + chrono::Duration::days(2)), ..seed("4444") },
        normal(),
        vec![json!({"type": "ongoing"})],
    )
    .await?;
    add(
        "failing lock",
        "device fails to set codes",
        seed("5555"),
        DeviceBehaviour::fails(Duration::from_millis(400)),
        vec![json!({"code": "6061"})],
    )
    .await?;
    // Seam accepts the update, then reports that the lock has no room: found
    // right after the update, days before the guest arrives.
    let no_room = DeviceBehaviour::Fails {
        delay: Duration::from_millis(400),
        error_code: "no_space_for_access_code_on_device".into(),
        attempt: AttemptResult::Success,
    };
    let in_three_days = start + chrono::Duration::days(3);
    add(
        "full lock",
        "check-in in 3 days, lock full",
        seed("8888"),
        no_room,
        vec![json!({"code": "8120", "starts_at": in_three_days.to_rfc3339(), "ends_at": (in_three_days + chrono::Duration::days(2)).to_rfc3339()})],
    )
    .await?;
    // The lock drops off the network for 3 s: waited for, not a failure.
    let away =
        add("lock away", "lock offline for 3 s", seed("9999"), DeviceBehaviour::Offline, vec![json!({"code": "9314"})])
            .await?;
    let sim = (*seam).clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        sim.set_device(&away, DeviceBehaviour::Normal { delay: Duration::from_millis(400) });
    });
    // A booking cancelled: its code must be gone from the lock.
    add("cancelled", "booking cancelled", seed("1212"), normal(), vec![json!({"absent": true})]).await?;
    // A stay that ends 8 s from now: watched to its end, confirmed removed.
    let checkout = (Utc::now() + chrono::Duration::seconds(8)).trunc_subsecs(0);
    add(
        "checked out",
        "stay ends in 8 s",
        seed("1313"),
        normal(),
        vec![json!({"code": "3030", "starts_at": (Utc::now() - chrono::Duration::hours(1)).trunc_subsecs(0).to_rfc3339(), "ends_at": checkout.to_rfc3339()})],
    )
    .await?;
    let burst: Vec<_> = (0..10).map(|i| json!({"code": format!("70{i:02}")})).collect();
    add("burst", "10 updates in a row", seed("6666"), normal(), burst).await?;
    println!("enqueued {} desired states; watching outcomes (Ctrl-C stops)\n", cases.len() + 9);

    let started = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let outcomes = loop {
        let mut outcomes = Vec::new();
        for c in &cases {
            outcomes.push(store.outcome(&c.access_code_id).await?);
        }
        let states: Vec<&str> = outcomes.iter().map(|o| o.as_ref().map_or("-", |o| o.state.as_str())).collect();
        println!("  {:>5.1} s  {}", started.elapsed().as_secs_f64(), states.join(" | "));
        // Done when every case has ended, and no stay ends during the demo.
        let horizon = Utc::now() + chrono::Duration::seconds(30);
        let ended = |o: &Outcome| o.state.is_terminal() && o.stay_ends_at().is_none_or(|e| e > horizon);
        if outcomes.iter().all(|o| o.as_ref().is_some_and(ended)) {
            break outcomes;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(1000)) => {}
            _ = &mut ctrl_c => { println!("interrupted"); break outcomes; }
        }
    };
    let _ = stop_tx.send(());
    let _ = worker.await;
    let _ = stop_serve.send(());
    let _ = serve.await;

    println!(
        "\n{:<14} {:<32} {:>4} {:<10} {:>7} {:>6} {:>9}  DETAIL",
        "CASE", "WHAT", "GEN", "OUTCOME", "CHANGES", "POLLS", "TOOK"
    );
    for (c, o) in cases.iter().zip(outcomes) {
        let Some(o) = o else { continue };
        // Update and delete calls: the changes latchkey asked of the lock.
        let changes = seam
            .requests()
            .iter()
            .filter(|r| matches!(r.path.as_str(), "/access_codes/update" | "/access_codes/delete"))
            .filter(|r| r.access_code_id.as_deref() == Some(&c.access_code_id))
            .count();
        println!(
            "{:<14} {:<32} {:>4} {:<10} {:>7} {:>6} {:>9}  {}",
            c.label,
            c.what,
            c.generation,
            o.state.as_str(),
            changes,
            o.polls,
            took(&o),
            detail(&o)
        );
    }
    seam.shutdown().await;
    Ok(())
}

fn took(o: &Outcome) -> String {
    o.finished_at.map_or("-".into(), |f| format!("{:.1} s", (f - o.enqueued_at).num_milliseconds() as f64 / 1000.0))
}

fn detail(o: &Outcome) -> String {
    if let Some(e) = &o.error {
        return format!("{}: {}", e.kind, e.message);
    }
    if let Some(at) = o.deleted_at {
        let when = at.format("%H:%M:%S");
        return match o.state {
            OutcomeState::Expired => format!("stay over: removed from the lock at {when}"),
            _ => format!("gone from the lock at {when}"),
        };
    }
    match &o.last_seen {
        Some(c) => format!(
            "on the lock: PIN {} ({}{})",
            c.code.as_deref().unwrap_or("-"),
            c.code_type.as_str(),
            c.starts_at.map(|s| format!(" from {}", s.format("%H:%M:%S"))).unwrap_or_default()
        ),
        None => String::new(),
    }
}
