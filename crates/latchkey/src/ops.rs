//! Operator commands: what the on-call engineer runs against a live Redis.

use std::time::Duration;

use clap::Subcommand;
use latchkey_store::{Queue, QueueConfig, Redis, RedisConfig};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Depth by state, counters and live workers of each queue.
    Stats {
        /// Redis URL (comma-separated seed URLs for a cluster).
        #[arg(
            long,
            env = "REDIS_URL",
            default_value = "redis://127.0.0.1:6379",
            hide_env_values = true
        )]
        redis_url: String,
        /// Queues to show.
        #[arg(long = "queue", default_values = ["apply", "verify"])]
        queues: Vec<String>,
        /// Key prefix.
        #[arg(long, default_value = "latchkey")]
        prefix: String,
        /// One JSON object per queue instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn queue(cmd: QueueCommand) -> anyhow::Result<()> {
    let QueueCommand::Stats {
        redis_url,
        queues,
        prefix,
        json,
    } = cmd;
    let redis = Redis::connect(&RedisConfig::new(redis_url)).await?;
    if !json {
        println!(
            "{:<12} {:>8} {:>10} {:>8} {:>8} {:>10} {:>10} {:>8}",
            "QUEUE", "READY", "SCHEDULED", "LEASED", "DEAD", "PUSHED", "COMPLETED", "WORKERS"
        );
    }
    for name in queues {
        let q = Queue::new(
            redis.clone(),
            &name,
            QueueConfig {
                prefix: prefix.clone(),
                ..QueueConfig::default()
            },
        )?;
        let depth = q.depth().await?;
        let counters = q.counters().await?;
        let workers = q.workers_alive(Duration::from_secs(30)).await?;
        let count = |k: &str| counters.get(k).copied().unwrap_or(0);
        if json {
            println!(
                "{}",
                serde_json::json!({"queue": name, "depth": depth, "counters": counters, "workers_alive": workers})
            );
        } else {
            println!(
                "{:<12} {:>8} {:>10} {:>8} {:>8} {:>10} {:>10} {:>8}",
                name,
                depth.ready,
                depth.scheduled,
                depth.leased,
                depth.dead,
                count("pushed"),
                count("completed"),
                workers.len()
            );
        }
    }
    Ok(())
}
