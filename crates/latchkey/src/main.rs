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
    /// Runs the public listener: Seam's webhooks (`POST /webhooks/seam`) pull
    /// reconciliations forward; the producers' HTTP API (`/v1`) and the
    /// console (`/console`).
    Serve(latchkey_worker::ServeArgs),
    /// Prints the HTTP API's OpenAPI 3.1 document (as `serve` answers at
    /// `GET /v1/openapi.json`).
    Openapi,
    /// Records a desired access code state; prints its generation.
    Enqueue(producer::EnqueueArgs),
    /// Prints an access code's outcome record, optionally waiting for it to finish.
    Outcome(producer::OutcomeArgs),
    /// Prints an access code's last state changes (why did the PIN not work on Tuesday?).
    History(producer::HistoryArgs),
    /// Runs the Seam simulator (for trying latchkey and for tests).
    FakeSeam(latchkey_fake_seam::Args),
    /// Lists and re-queues dead letters.
    Dead {
        #[command(subcommand)]
        command: ops::DeadCommand,
    },
    /// Asks a running worker's /livez (or /readyz); exit status 0 when healthy.
    Healthcheck(ops::HealthcheckArgs),
    /// Moves the reconcile queue to another number of partitions while
    /// workers run; run it again to resume after a stop.
    Repartition(ops::RepartitionArgs),
    /// Inspects queues.
    Queue {
        #[command(subcommand)]
        command: ops::QueueCommand,
    },
}

/// Logs to stderr (text, or JSON lines for collectors), filtered by RUST_LOG
/// (default `warn`); and, when OTEL_EXPORTER_OTLP_ENDPOINT is set, spans at
/// info and above to that OTLP/HTTP collector. Returns the tracer provider to
/// flush on exit.
fn init_logs(json: bool) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json { fmt.json().boxed() } else { fmt.boxed() };
    let (provider, otel_error) = match otlp_provider() {
        Ok(p) => (p, None),
        Err(e) => (None, Some(e)),
    };
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer().with_tracer(p.tracer("latchkey")).with_filter(EnvFilter::new(
            "info,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,reqwest=off,hyper=off,h2=off",
        ))
    });
    tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).init();
    if let Some(e) = otel_error {
        tracing::error!(error = %e, "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter cannot be built; no traces");
    }
    provider
}

/// An OTLP/HTTP (protobuf) trace exporter when OTEL_EXPORTER_OTLP_ENDPOINT or
/// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (the exporter reads the OTEL_*
/// variables itself); nothing otherwise.
fn otlp_provider() -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    let set = |v: &str| std::env::var(v).is_ok_and(|s| !s.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("latchkey");
    }
    Ok(Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let traces = init_logs(cli.log_json);
    let result = run(cli.command).await;
    if let Some(provider) = traces
        && let Err(e) = provider.shutdown()
    {
        eprintln!("could not flush traces: {e}");
    }
    result
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Demo(args) => demo::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Queue { command } => ops::queue(command).await.map(|()| ExitCode::SUCCESS),
        Command::Repartition(args) => ops::repartition(args).await.map(|()| ExitCode::SUCCESS),
        Command::Dead { command } => ops::dead(command).await.map(|()| ExitCode::SUCCESS),
        Command::FakeSeam(args) => {
            latchkey_fake_seam::run(args).await.map_err(|e| anyhow::anyhow!(e))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(args) => {
            latchkey_worker::run_worker(args, latchkey_worker::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            latchkey_worker::run_serve(args, latchkey_worker::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => {
            println!("{}", latchkey_worker::api::openapi_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck(args) => ops::healthcheck(args).await,
        Command::Enqueue(args) => producer::enqueue(args).await,
        Command::Outcome(args) => producer::outcome(args).await,
        Command::History(args) => producer::history(args).await,
    }
}
