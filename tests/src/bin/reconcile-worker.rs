//! The reconciliation worker as its own process, for the fault tests: the same
//! `run_worker` and signal handling as `latchkey worker`, configured from the
//! same environment variables, logging to stderr.

use clap::Parser;
use latchkey_worker::{WorkerArgs, run_worker, shutdown_signal};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: WorkerArgs,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let cli = Cli::parse();
    if let Err(e) = run_worker(cli.args, shutdown_signal()).await {
        eprintln!("worker failed: {}", latchkey_store::error_chain(&e));
        std::process::exit(1);
    }
}
