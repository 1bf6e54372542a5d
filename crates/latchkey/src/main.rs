//! The `latchkey` command: the daemon and the tools around it.

mod bench;
mod demo;
mod local_redis;
mod ops;

use clap::{Parser, Subcommand};

/// latchkey: makes smart locks match the access codes you want, durably.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Print logs as JSON lines (for log collectors).
    #[arg(long, env = "LATCHKEY_LOG_JSON", global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a scenario end to end on a Redis of its own and prints the outcomes.
    Demo(demo::Args),
    /// Measures throughput and prints a table and JSON lines.
    Bench(bench::Args),
    /// Inspects queues.
    Queue {
        #[command(subcommand)]
        command: ops::QueueCommand,
    },
}

fn init_logs(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.log_json);
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Queue { command } => ops::queue(command).await,
    }
}
