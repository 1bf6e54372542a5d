//! `latchkey enqueue`, `latchkey outcome` and `latchkey history`: what a
//! producer or an operator runs to hand latchkey a desired state and to read
//! how it went.

use std::{cmp::Ordering, io::Read, process::ExitCode, time::Duration};

use anyhow::Context;
use latchkey_core::{DesiredStateInput, Outcome, OutcomeState};
use latchkey_store::{EnqueueError, QueueConfig, Reconciliations, Redis, RedisConfig, Waited};

#[derive(Debug, clap::Args)]
pub struct Conn {
    /// Redis URL; several comma-separated URLs mean a cluster.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    redis_url: String,
    /// Key prefix in Redis.
    #[arg(long, env = "LATCHKEY_PREFIX", default_value = "latchkey")]
    prefix: String,
    /// Partitions of the reconcile queue: every worker, serve and producer
    /// of one deployment must agree (each refuses to start against another
    /// number than Redis records). 16 spreads over up to 16 cluster masters.
    #[arg(long, env = "LATCHKEY_PARTITIONS", default_value_t = latchkey_store::DEFAULT_PARTITIONS)]
    partitions: u32,
}

impl Conn {
    async fn store(&self) -> anyhow::Result<Reconciliations> {
        let redis = Redis::connect(&RedisConfig::new(&self.redis_url)).await?;
        let config = QueueConfig { prefix: self.prefix.clone(), partitions: self.partitions, ..QueueConfig::default() };
        Ok(Reconciliations::open(redis, config).await?)
    }
}

/// A desired access code state, from flags or as JSON on stdin (`--json -`).
#[derive(Debug, clap::Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    conn: Conn,
    /// Read the whole desired state as JSON from this file (`-` for stdin).
    #[arg(long, conflicts_with_all = ["access_code_id", "code", "name", "code_type", "starts_at", "ends_at", "device_id", "absent"])]
    json: Option<String>,
    /// Seam's id of the access code.
    #[arg(long, required_unless_present = "json")]
    access_code_id: Option<String>,
    /// The PIN (4 to 9 digits).
    #[arg(long)]
    code: Option<String>,
    /// The name.
    #[arg(long)]
    name: Option<String>,
    /// `ongoing` or `time_bound`.
    #[arg(long = "type")]
    code_type: Option<String>,
    /// Start of validity, ISO 8601.
    #[arg(long)]
    starts_at: Option<String>,
    /// End of validity, ISO 8601.
    #[arg(long)]
    ends_at: Option<String>,
    /// The device.
    #[arg(long)]
    device_id: Option<String>,
    /// The code must not exist (a cancelled booking): latchkey deletes it.
    #[arg(long, conflicts_with_all = ["code", "name", "code_type", "starts_at", "ends_at"])]
    absent: bool,
}

pub async fn enqueue(args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let input: DesiredStateInput = match &args.json {
        Some(path) => {
            let mut text = String::new();
            if path == "-" {
                std::io::stdin().read_to_string(&mut text)?;
            } else {
                text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            }
            match serde_json::from_str(&text) {
                Ok(input) => input,
                Err(e) => {
                    eprintln!("refused: the desired state is not JSON of the documented shape: {e}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        None => DesiredStateInput {
            access_code_id: args.access_code_id.clone().unwrap_or_default(),
            code: args.code.clone(),
            name: args.name.clone(),
            code_type: args.code_type.clone(),
            starts_at: args.starts_at.clone(),
            ends_at: args.ends_at.clone(),
            device_id: args.device_id.clone(),
            absent: args.absent.then_some(true),
            options: Default::default(),
        },
    };
    let store = args.conn.store().await?;
    match store.enqueue(input).await {
        Ok(generation) => {
            println!("{generation}");
            Ok(ExitCode::SUCCESS)
        }
        Err(EnqueueError::Invalid(e)) => {
            eprintln!("refused: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, clap::Args)]
pub struct OutcomeArgs {
    #[command(flatten)]
    conn: Conn,
    /// The access code.
    access_code_id: String,
    /// Wait up to this many seconds for the generation to finish (default:
    /// look once).
    #[arg(long)]
    wait: Option<u64>,
    /// The generation to report on (default: the newest).
    #[arg(long)]
    generation: Option<u64>,
    /// Print the record as JSON.
    #[arg(long)]
    json: bool,
}

/// `latchkey outcome`: the generation asked for succeeded (and, for a
/// time-bound code, may since have expired at its end of stay).
const SUCCEEDED: u8 = 0;
/// It ended otherwise: failed, rejected, timed out, or superseded by a newer one.
const ENDED_OTHERWISE: u8 = 1;
/// It has not finished (yet), or is not even recorded yet.
const NOT_FINISHED: u8 = 3;
/// No desired state was ever recorded for the access code.
const UNKNOWN: u8 = 4;
/// The record could not be read (Redis failed): nothing is known about the
/// generation. Not 1, which `main` would make of an error, and which means
/// the generation ended.
const NO_ANSWER: u8 = 5;

/// Prints the access code's outcome record and exits with how the generation
/// asked for (`--generation`, default the newest) went: 0 succeeded, 1 ended
/// otherwise (failed, rejected, timed out, superseded), 3 not finished (yet),
/// 4 no such access code, 5 the record could not be read. Never with how
/// another generation went.
pub async fn outcome(args: OutcomeArgs) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::from(report(&args).await.unwrap_or_else(|e| {
        eprintln!("could not read the outcome of access code {}: {e:#}", args.access_code_id);
        NO_ANSWER
    })))
}

async fn report(args: &OutcomeArgs) -> anyhow::Result<u8> {
    let id = &args.access_code_id;
    let store = args.conn.store().await?;
    let Some(current) = store.outcome(id).await? else {
        eprintln!("no desired state recorded for access code {id}");
        return Ok(UNKNOWN);
    };
    let generation = args.generation.unwrap_or(current.generation);
    // Without --wait this is a single look, judged by the same rule.
    let timeout = Duration::from_secs(args.wait.unwrap_or(0));
    let record = match store.wait_for_outcome(id, generation, timeout).await? {
        Waited::Finished(o) | Waited::TimedOut(Some(o)) => o,
        Waited::Superseded(newer) => {
            eprintln!("generation {generation} was superseded by generation {}", newer.generation);
            Outcome { generation, ..newer }.moved(OutcomeState::Superseded, chrono::Utc::now())
        }
        Waited::TimedOut(None) => {
            eprintln!("the outcome record of access code {id} was deleted");
            return Ok(UNKNOWN);
        }
    };
    if record.generation < generation {
        eprintln!("generation {generation} is not recorded; the record is about generation {}", record.generation);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        print_outcome(&record);
    }
    Ok(exit_code(generation, &record))
}

/// How `generation` went, judged from the record shown: a record about an
/// older generation says nothing about it (it has not even been recorded), one
/// about a newer generation means it was superseded.
fn exit_code(generation: u64, record: &Outcome) -> u8 {
    match record.generation.cmp(&generation) {
        Ordering::Less => NOT_FINISHED,
        Ordering::Greater => ENDED_OTHERWISE,
        Ordering::Equal => match record.state {
            OutcomeState::Succeeded | OutcomeState::Expired => SUCCEEDED,
            s if s.is_terminal() => ENDED_OTHERWISE,
            _ => NOT_FINISHED,
        },
    }
}

pub fn print_outcome(o: &Outcome) {
    println!("access code   {}", o.access_code_id);
    println!("generation    {}", o.generation);
    println!("state         {}", o.state.as_str());
    println!("enqueued      {}", o.enqueued_at.to_rfc3339());
    if let Some(f) = o.finished_at {
        println!("finished      {} ({} ms after enqueue)", f.to_rfc3339(), (f - o.enqueued_at).num_milliseconds());
    }
    println!("update calls  {}   polls {}   re-applies {}", o.attempts, o.polls, o.reapplies);
    if let Some(seen) = &o.last_seen {
        println!("last seen     {}, code {}", seen.summary(), seen.code.as_deref().unwrap_or("-"));
    }
    if let Some(at) = o.deleted_at {
        println!("deleted       {}", at.to_rfc3339());
    }
    if let Some(e) = &o.error {
        println!("error         {}: {}", e.kind, e.message);
    }
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    conn: Conn,
    /// The access code.
    access_code_id: String,
    /// Print the entries as JSON lines (newest first).
    #[arg(long)]
    json: bool,
}

/// `latchkey history`: an access code's last state changes, oldest first (so
/// it reads as a story), or as JSON lines, newest first. Exit 4 when there is
/// none (never recorded, or forgotten after its retention).
pub async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let store = args.conn.store().await?;
    let entries = store.history(&args.access_code_id).await?;
    if entries.is_empty() {
        eprintln!("no history for access code {}", args.access_code_id);
        return Ok(ExitCode::from(UNKNOWN));
    }
    if args.json {
        for e in &entries {
            println!("{}", serde_json::to_string(e)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:>4}  {:<11} DETAIL", "AT", "GEN", "STATE");
    for e in entries.iter().rev() {
        let detail = [e.error.as_deref(), e.seen.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" | ");
        println!(
            "{:<24} {:>4}  {:<11} {detail}",
            e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            e.generation,
            e.state.as_str()
        );
    }
    Ok(ExitCode::SUCCESS)
}
