//! `latchkey serve`: the stateless process for everything that must be
//! reachable from outside the cluster: Seam's webhooks
//! (`POST /webhooks/seam`, see [`crate::webhook`]) and the producers' API
//! (`/v1`, see [`crate::api`]). It needs only Redis, runs
//! as many replicas as wanted, and has its own ops listener (`/livez`,
//! `/readyz`, `/metrics`) on the worker's convention.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use latchkey_store::{QueueConfig, Reconciliations, Redis, RedisConfig, redact_url};

use crate::{
    daemon::{Error, RedisArgs},
    listener::{self, Limits},
    observe,
    webhook::{self, Hooks, MAX_DELIVERY_BYTES, WebhookSecret},
};

/// `latchkey serve` configuration. Every flag has an environment variable.
#[derive(Clone, clap::Args)]
pub struct ServeArgs {
    /// Where the public listener (webhooks) binds.
    #[arg(long, env = "LATCHKEY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Where the ops listener (/livez, /readyz, /metrics) binds, or `off`.
    #[arg(long, env = "LATCHKEY_HTTP_ADDR", default_value = "0.0.0.0:9090")]
    pub http_addr: String,
    /// Where Redis is (the workers').
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Key prefix in Redis (the workers').
    #[arg(long, env = "LATCHKEY_PREFIX", default_value = "latchkey")]
    pub prefix: String,
    /// Partitions of the reconcile queue: every worker, serve and producer
    /// of one deployment must agree (each refuses to start against another
    /// number than Redis records). 16 spreads over up to 16 cluster masters.
    #[arg(long, env = "LATCHKEY_PARTITIONS", default_value_t = latchkey_store::DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// Seam's webhook signing secret, `whsec_...` (prefer the file).
    #[arg(long, env = "SEAM_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// A file holding the webhook secret (a mounted secret); wins over
    /// SEAM_WEBHOOK_SECRET.
    #[arg(long, env = "SEAM_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// The producers' API (`/v1`): a file of `NAME ROLE TOKEN` lines (role
    /// `read` or `write`), re-read when it changes. Unset: no API.
    #[arg(long, env = "LATCHKEY_API_TOKENS_FILE")]
    pub api_tokens_file: Option<PathBuf>,
}

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("listen", &self.listen)
            .field("http_addr", &self.http_addr)
            .field("redis", &self.redis)
            .field("prefix", &self.prefix)
            .field("partitions", &self.partitions)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "[redacted]"))
            .field("webhook_secret_file", &self.webhook_secret_file)
            .field("api_tokens_file", &self.api_tokens_file)
            .finish()
    }
}

fn addr(var: &str, value: &str) -> Result<SocketAddr, Error> {
    value.parse().map_err(|_| {
        Error::Config(format!("{var} {value:?}: must be host:port with an IP address (e.g. 0.0.0.0:8080)"))
    })
}

impl ServeArgs {
    /// The webhook secret, if webhooks are configured.
    fn secret(&self) -> Result<Option<WebhookSecret>, Error> {
        let text = match (&self.webhook_secret_file, &self.webhook_secret) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                Error::Config(format!("SEAM_WEBHOOK_SECRET_FILE {}: cannot be read: {e}", path.display()))
            })?,
            (None, Some(s)) => s.clone(),
            (None, None) => return Ok(None),
        };
        WebhookSecret::parse(&text).map(Some).map_err(Error::Config)
    }

    fn redis_config(&self) -> Result<RedisConfig, Error> {
        // Svix waits 15 s for an answer; fail well before and let it retry.
        self.redis.config(Duration::from_secs(3))
    }
}

/// Serves until `shutdown` completes, then stops accepting and lets
/// deliveries in flight finish.
pub async fn run_serve(args: ServeArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let secret = args.secret()?;
    let api_tokens = match &args.api_tokens_file {
        Some(path) => Some((path.clone(), crate::api::read_tokens(path).map_err(Error::Config)?)),
        None => None,
    };
    if secret.is_none() && api_tokens.is_none() {
        return Err(Error::Config(
            "nothing to serve: set SEAM_WEBHOOK_SECRET_FILE (webhooks, the secret Seam shows for the endpoint) and/or LATCHKEY_API_TOKENS_FILE (the producers' API)"
                .into(),
        ));
    }
    let listen = addr("LATCHKEY_LISTEN", &args.listen)?;
    let ops_addr = crate::daemon::ops_addr(&args.http_addr)?;
    let redis_config = args.redis_config()?;
    let redis = Redis::connect(&redis_config).await?;
    let store = Reconciliations::open(
        redis.clone(),
        QueueConfig { prefix: args.prefix.clone(), partitions: args.partitions, ..QueueConfig::default() },
    )
    .await?;
    observe::install();
    let mut public = Router::new();
    let mut offered = Vec::new();
    if let Some(secret) = secret {
        public = public.merge(
            Router::new()
                .route("/webhooks/seam", post(webhook::seam))
                .layer(DefaultBodyLimit::max(MAX_DELIVERY_BYTES))
                .with_state(Hooks { store: store.clone(), secret }),
        );
        offered.push("POST /webhooks/seam");
    }
    let token_watch = api_tokens.map(|(path, tokens)| {
        let tokens = std::sync::Arc::new(std::sync::RwLock::new(tokens));
        let api = crate::api::Api { store, tokens: tokens.clone() };
        public = std::mem::take(&mut public).merge(crate::api::router(api.clone())).merge(crate::console::router(api));
        offered.push("/v1");
        offered.push("/console");
        tokio::spawn(crate::api::watch_tokens(path, tokens))
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Listen { addr: listen.to_string(), source })?;
    tracing::info!(addr = %listener.local_addr().map_err(|source| Error::Listen { addr: listen.to_string(), source })?, redis = %redact_url(&redis_config.url), serves = %offered.join(", "), "serve listening");
    let (stop_ops, ops_stopped) = tokio::sync::oneshot::channel::<()>();
    let ops_task = match ops_addr {
        Some(a) => {
            let ops = tokio::net::TcpListener::bind(a)
                .await
                .map_err(|source| Error::Listen { addr: a.to_string(), source })?;
            let app = Router::new()
                .route("/livez", get(|| async { "ok\n" }))
                .route("/readyz", get(readyz))
                .route("/metrics", get(|| async { observe::render() }))
                .with_state(redis);
            Some(tokio::spawn(listener::serve(ops, app, Limits::default(), async move {
                let _ = ops_stopped.await;
            })))
        }
        None => None,
    };
    // A long-poll (`GET /v1/access-codes/{id}?wait=`) holds its request up to
    // MAX_WAIT: the handler's time and the idle time must outlast it.
    let limits = Limits {
        max_connections: 1024,
        request_timeout: crate::api::MAX_WAIT + Duration::from_secs(10),
        idle_timeout: crate::api::MAX_WAIT + Duration::from_secs(30),
        ..Limits::default()
    };
    listener::serve(listener, public, limits, shutdown).await;
    let _ = stop_ops.send(());
    if let Some(t) = ops_task {
        let _ = t.await;
    }
    if let Some(t) = token_watch {
        t.abort();
    }
    tracing::info!("serve stopped");
    Ok(())
}

/// Ready when Redis answers within [`observe::PROBE_TIMEOUT`]: a delivery
/// can then be recorded.
async fn readyz(State(redis): State<Redis>) -> impl IntoResponse {
    let ping = async { redis::cmd("PING").query_async::<String>(&mut redis.conn()).await };
    match tokio::time::timeout(observe::PROBE_TIMEOUT, ping).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n".to_string()),
        Ok(Err(e)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: redis: {}\n", latchkey_store::error_chain(&e)))
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: redis did not answer within {} s\n", observe::PROBE_TIMEOUT.as_secs()),
        ),
    }
}
