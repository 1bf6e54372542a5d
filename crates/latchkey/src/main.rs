//! The `latchkey` command: the daemon and the tools around it.

mod bench;
mod demo;
mod local_redis;
mod ops;
mod producer;

use std::process::ExitCode;

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
    /// Runs the reconciliation worker (the daemon).
    Worker(latchkey_worker::WorkerArgs),
    /// Records a desired access code state; prints its generation.
    Enqueue(producer::EnqueueArgs),
    /// Prints an access code's outcome record, optionally waiting for it to finish.
    Outcome(producer::OutcomeArgs),
    /// Runs the Seam simulator (for trying latchkey and for tests).
    FakeSeam(latchkey_fake_seam::Args),
    /// Lists and re-queues dead letters.
    Dead {
        #[command(subcommand)]
        command: ops::DeadCommand,
    },
    /// Asks a running worker's /livez (or /readyz); exit status 0 when healthy.
    Healthcheck(ops::HealthcheckArgs),
    /// Inspects queues.
    Queue {
        #[command(subcommand)]
        command: ops::QueueCommand,
    },
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_logs(cli.log_json);
    match cli.command {
        Command::Demo(args) => demo::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Queue { command } => ops::queue(command).await.map(|()| ExitCode::SUCCESS),
        Command::Dead { command } => ops::dead(command).await.map(|()| ExitCode::SUCCESS),
        Command::FakeSeam(args) => {
            latchkey_fake_seam::run(args).await.map_err(|e| anyhow::anyhow!(e))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(args) => {
            latchkey_worker::run_worker(args, latchkey_worker::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck(args) => ops::healthcheck(args).await,
        Command::Enqueue(args) => producer::enqueue(args).await,
        Command::Outcome(args) => producer::outcome(args).await,
    }
}
