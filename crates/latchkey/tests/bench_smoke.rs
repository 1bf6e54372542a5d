//! `latchkey bench --smoke`: the benchmark completes and prints every figure.
//! Timed figures are not asserted (they would be noise on a shared machine):
//! the targets live in the README's results table, measured with `just bench`.
//! Counted ones are: the Redis round trips of a reconciliation.

use std::process::Command;

#[test]
fn the_smoke_benchmark_completes_and_prints_every_figure() {
    let out = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["bench", "--smoke"])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let figures: Vec<serde_json::Value> =
        stdout.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).collect();
    for scenario in [
        "queue_noop",
        "reconcile",
        "reconcile_cpu",
        "reconcile_cost",
        "reconcile_redis_time",
        "reconcile_floor",
        "latency",
        "starts_at_lateness",
        "time_bound_code_memory",
        "waiting_memory",
        "latency_with_waiting",
        "worker_rss",
        "lived_memory",
        "webhooks_reads",
        "webhooks_latency",
        "http_put",
        "http_batch",
        "http_latency",
        "http_taken_in",
        "http_put_latency",
        "http_latency_added",
        "cluster_reconcile",
        "cluster_latency",
    ] {
        let line = figures
            .iter()
            .find(|v| v["scenario"] == scenario)
            .unwrap_or_else(|| panic!("no {scenario} figure in:\n{stdout}"));
        assert_eq!(line["system"], "latchkey");
    }
    // A run starts from the records its fetch handed over with the job, so an
    // ongoing reconciliation (two runs) reads them in no round trip of its
    // own: about 4.7 here with the small run's share of fetches, 6.7 without.
    let cost = figures.iter().find(|v| v["scenario"] == "reconcile_cost").unwrap();
    let trips = cost["redis_round_trips"].as_f64().unwrap();
    assert!(trips < 5.5, "a reconciliation took {trips} Redis round trips: do runs read their records again?");
    // Redis's own account of its time: the commands the scripts call are
    // part of the scripts' time, and neither is nothing.
    let time = figures.iter().find(|v| v["scenario"] == "reconcile_redis_time").unwrap();
    let (scripts, commands) = (time["scripts_us"].as_f64().unwrap(), time["commands_us"].as_f64().unwrap());
    assert!(commands > 0.0 && scripts > commands, "Redis's time per reconciliation was read wrong: {time}");
    // Scenario 9 splits each route's latency where the desired state was
    // taken in: that comes first, and the control (the Redis route against
    // itself) was measured.
    for route in ["redis", "http"] {
        let of = |scenario: &str| {
            figures.iter().find(|v| v["scenario"] == scenario && v["route"] == route).unwrap()["p50_ms"]
                .as_i64()
                .unwrap()
        };
        let (taken_in, succeeded) = (of("http_taken_in"), of("http_latency"));
        assert!((0..=succeeded).contains(&taken_in), "{route}: taken in at {taken_in} ms, succeeded at {succeeded} ms");
    }
    let added = figures.iter().find(|v| v["scenario"] == "http_latency_added").unwrap();
    assert!(added["p99_redis_b_minus_a_ms"].is_i64(), "no control in {added}");
}
