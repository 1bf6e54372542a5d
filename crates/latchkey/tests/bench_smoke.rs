//! `latchkey bench --smoke`: the benchmark completes and prints every figure.
//! Figures are not asserted (timed tests would be noise on a shared machine):
//! the targets live in the README's results table, measured with `just bench`.

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
    for scenario in [
        "queue_noop",
        "reconcile",
        "reconcile_cpu",
        "reconcile_cost",
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
        "http_latency",
        "http_put_latency",
        "http_latency_added",
    ] {
        let line = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["scenario"] == scenario)
            .unwrap_or_else(|| panic!("no {scenario} figure in:\n{stdout}"));
        assert_eq!(line["system"], "latchkey");
    }
}
