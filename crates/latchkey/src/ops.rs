//! Operator commands: what the on-call engineer runs against a live Redis
//! after an incident. Tables for people, `--json` for scripts.

use std::time::Duration;

use clap::Subcommand;
use latchkey_store::{Queue, QueueConfig, RECONCILE_QUEUE, Reconciliations, Redis, RedisConfig};

/// Where the queues are.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Redis URL (comma-separated seed URLs for a cluster).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    redis_url: String,
    /// Key prefix.
    #[arg(long, env = "LATCHKEY_PREFIX", default_value = "latchkey")]
    prefix: String,
    /// Partitions of the queue, for a queue whose number Redis does not
    /// record; otherwise the recorded number is followed.
    #[arg(long, env = "LATCHKEY_PARTITIONS", default_value_t = latchkey_store::DEFAULT_PARTITIONS)]
    partitions: u32,
}

impl Target {
    async fn queue(&self, name: &str) -> anyhow::Result<Queue> {
        let redis = Redis::connect(&RedisConfig::new(&self.redis_url)).await?;
        // (the deployment's number, as Redis records it; the flag only for a
        // queue that records none)
        let partitions = Queue::recorded_partitions(&redis, name, &self.prefix).await?.unwrap_or(self.partitions);
        let config = QueueConfig { prefix: self.prefix.clone(), partitions, ..QueueConfig::default() };
        Ok(Queue::open(redis, name, config).await?)
    }
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Depth by state, age of the oldest waiting job, counters and live workers.
    Stats {
        #[command(flatten)]
        target: Target,
        /// The queue.
        #[arg(long, default_value = RECONCILE_QUEUE)]
        queue: String,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// Lists dead letters, oldest first, with the reason each one died.
    List {
        #[command(flatten)]
        target: Target,
        /// The queue.
        #[arg(long, default_value = RECONCILE_QUEUE)]
        queue: String,
        /// Most to list.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per dead letter.
        #[arg(long)]
        json: bool,
    },
    /// Re-queues dead letters with a fresh attempt budget.
    Retry {
        #[command(flatten)]
        target: Target,
        /// The queue.
        #[arg(long, default_value = RECONCILE_QUEUE)]
        queue: String,
        /// Job ids to re-queue.
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Re-queue every dead letter (up to 100,000).
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Print the re-queued ids as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn queue(cmd: QueueCommand) -> anyhow::Result<()> {
    let QueueCommand::Stats { target, queue, json } = cmd;
    let q = target.queue(&queue).await?;
    let depth = q.depth().await?;
    let oldest = q.oldest_ready_age().await?;
    let counters = q.counters().await?;
    let workers = q.workers_alive(Duration::from_secs(30)).await?;
    let (recorded, moving_to) = q.recorded_layout().await?;
    let partitions = recorded.unwrap_or(q.config().partitions);
    if json {
        let oldest_ms = oldest.map(|d| d.as_millis() as u64);
        let v = serde_json::json!({"queue": queue, "partitions": partitions, "moving_to": moving_to, "depth": depth, "oldest_ready_age_ms": oldest_ms, "counters": counters, "workers_alive": workers});
        println!("{v}");
        return Ok(());
    }
    println!("queue {queue}");
    match moving_to {
        Some(to) => println!("  partitions {partitions:>10}   moving to {to}: a `latchkey repartition` is under way"),
        None => println!("  partitions {partitions:>10}"),
    }
    println!(
        "  ready      {:>10}   oldest waiting {}",
        depth.ready,
        oldest.map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64()))
    );
    println!("  scheduled  {:>10}", depth.scheduled);
    println!("  leased     {:>10}", depth.leased);
    println!("  dead       {:>10}", depth.dead);
    let mut names: Vec<_> = counters.iter().collect();
    names.sort();
    println!("  counters   {}", names.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "));
    println!("  workers alive (heartbeat within 30 s): {}", workers.len());
    for w in workers {
        println!("    {w}");
    }
    Ok(())
}

pub async fn dead(cmd: DeadCommand) -> anyhow::Result<()> {
    match cmd {
        DeadCommand::List { target, queue, limit, json } => {
            let letters = target.queue(&queue).await?.dead_letters(limit).await?;
            if json {
                for d in &letters {
                    println!("{}", serde_json::to_string(d)?);
                }
            } else if letters.is_empty() {
                println!("no dead letters in queue {queue}");
            } else {
                println!("{:<40} {:<24} {:>8}  REASON", "JOB", "DIED", "ATTEMPTS");
                for d in letters {
                    let died = chrono::DateTime::from_timestamp_millis(d.dead_at_ms as i64)
                        .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
                    println!("{:<40} {:<24} {:>8}  {}", d.id, died, d.attempts, d.error);
                }
            }
        }
        DeadCommand::Retry { target, queue, ids, all, json } => {
            let q = target.queue(&queue).await?;
            let done = if all { q.requeue_all_dead(100_000).await? } else { q.requeue_dead(&ids).await? };
            if json {
                println!("{}", serde_json::json!({ "requeued": done }));
            } else {
                println!("re-queued {} job(s)", done.len());
                for id in &done {
                    println!("  {id}");
                }
                for id in ids.iter().filter(|i| !done.contains(i)) {
                    println!("  {id}: not a dead letter, left alone");
                }
            }
        }
    }
    Ok(())
}

/// `latchkey healthcheck`: asks a worker's ops listener, for exec probes and
/// Docker's HEALTHCHECK in an image without curl or a shell.
#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// Ask `/readyz` instead of `/livez`.
    #[arg(long)]
    ready: bool,
    /// The whole URL to ask (overrides `--ready` and the address).
    #[arg(long)]
    url: Option<String>,
    /// The worker's listener address; its port is asked on 127.0.0.1.
    #[arg(long, env = "LATCHKEY_HTTP_ADDR", default_value = "0.0.0.0:9090")]
    http_addr: String,
    /// How long to wait for the answer, seconds.
    #[arg(long, default_value_t = 3)]
    timeout_secs: u64,
}

/// Exit 0 when the listener answers 2xx; 1 with the reason otherwise.
pub async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<std::process::ExitCode> {
    let url = match args.url {
        Some(url) => url,
        None => {
            let port = args.http_addr.rsplit(':').next().unwrap_or("9090");
            format!("http://127.0.0.1:{port}/{}", if args.ready { "readyz" } else { "livez" })
        }
    };
    let client = reqwest::Client::builder().timeout(Duration::from_secs(args.timeout_secs)).build()?;
    match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => Ok(std::process::ExitCode::SUCCESS),
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            eprintln!("{url}: HTTP {status}: {}", body.trim());
            Ok(std::process::ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("{url}: {}", latchkey_store::error_chain(&e));
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

/// Moves the reconcile queue to another number of partitions.
#[derive(Debug, clap::Args)]
pub struct RepartitionArgs {
    /// Redis URL (comma-separated seed URLs for a cluster).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    redis_url: String,
    /// Key prefix.
    #[arg(long, env = "LATCHKEY_PREFIX", default_value = "latchkey")]
    prefix: String,
    /// The number of partitions to move to (1 is the single-tag layout).
    #[arg(long)]
    to: u32,
}

/// `latchkey repartition --to N`: moves the deployment while it runs (see
/// the README's "Partitions"); safe to run again after it stopped half way.
pub async fn repartition(args: RepartitionArgs) -> anyhow::Result<()> {
    let redis = Redis::connect(&RedisConfig::new(&args.redis_url)).await?;
    let store =
        Reconciliations::open_recorded(redis, QueueConfig { prefix: args.prefix, ..QueueConfig::default() }).await?;
    let moved = store.repartition(args.to, |line| eprintln!("{line}")).await?;
    println!(
        "reconcile queue: {} -> {} partitions; {} codes moved from {} partitions in this run",
        moved.from, moved.to, moved.codes, moved.partitions
    );
    Ok(())
}
