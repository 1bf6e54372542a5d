//! One Redis handle per process: a self-healing multiplexed connection (single
//! node or cluster) for commands, and a second one for the subscriptions whose
//! RESP3 push messages carry queue wake-ups. They are apart because Redis
//! holds a subscribed client to its (small) pub/sub output buffer limit: a
//! large reply on a shared connection would get it closed, commands and all.
//!
//! The connection reconnects on its own with exponential backoff; its response
//! timeout is long enough to ride out a multi-second stall (`CLIENT PAUSE`,
//! a failover) instead of failing the worker. Wake-up messages are routed to the
//! queues that subscribed; a lost connection wakes every queue so it fetches
//! again once Redis is back, which is how no wake-up is ever lost for good.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{
    Cmd, ProtocolVersion, PushInfo, PushKind, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};
use tokio::sync::mpsc;

use crate::{
    error::{Error, Result},
    wake::Wake,
};

/// How to reach Redis.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[user:pass@]host:port[/db]` (or `rediss://` for TLS). Several
    /// URLs separated by commas mean a Redis Cluster with these seed nodes.
    pub url: String,
    /// How long one command may take before it fails (and is retried). Longer
    /// than any stall the worker should survive.
    pub response_timeout: Duration,
    /// How long a connection attempt may take.
    pub connection_timeout: Duration,
    /// For `rediss://`: a CA certificate (PEM) to trust instead of the
    /// system's roots, e.g. a private CA's.
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl RedisConfig {
    /// Defaults for a URL: 10 s response timeout, 5 s connect timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            response_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(5),
            tls_ca_pem: None,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("response_timeout", &self.response_timeout)
            .field("connection_timeout", &self.connection_timeout)
            .field("tls_ca_pem", &self.tls_ca_pem.as_ref().map(|_| "[given]"))
            .finish()
    }
}

fn certificates(ca_pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates { client_tls: None, root_cert: Some(ca_pem.to_vec()) }
}

/// A URL with any password replaced by `[redacted]`, safe to log: in the
/// user info (`redis://user:pw@host`) and in the query (`redis+unix:///sock?pass=pw`).
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| match one.split_once('?') {
            Some((head, query)) => format!("{}?{}", redact_userinfo(head), redact_query(query)),
            None => redact_userinfo(one),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if ["pass", "password"].iter().any(|s| k.eq_ignore_ascii_case(s)) => format!("{k}=[redacted]"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn redact_userinfo(one: &str) -> String {
    match (one.find("://"), one.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &one[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let shown = if userinfo.contains(':') { format!("{user}:[redacted]") } else { "[redacted]".to_string() };
            format!("{}{}{}", &one[..s + 3], shown, &one[at..])
        }
        _ => one.to_string(),
    }
}

/// The connection, single-node or cluster. Cheap to clone; clones share one
/// multiplexed socket per node.
#[derive(Clone)]
pub enum RedisConn {
    /// One Redis server (or a proxy in front of one).
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RedisConn::Single(_) => "RedisConn::Single",
            RedisConn::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

/// Requests this process has sent to Redis, each a round trip: a command, a
/// script call or a whole pipeline (`latchkey_redis_round_trips_total`; the
/// benchmark divides it by reconciliations).
static ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);

/// Round trips to Redis since this process started (see [`ROUND_TRIPS`]).
pub fn round_trips() -> u64 {
    ROUND_TRIPS.load(Ordering::Relaxed)
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        ROUND_TRIPS.fetch_add(1, Ordering::Relaxed);
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        ROUND_TRIPS.fetch_add(1, Ordering::Relaxed);
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Per channel: the wake-ups it feeds, each with the partition it is about.
type Subscribers = Arc<Mutex<Channels>>;
type Channels = HashMap<String, Vec<(Weak<Wake>, usize)>>;

/// The process's Redis handle: connection plus wake-up routing.
#[derive(Clone)]
pub struct Redis {
    conn: RedisConn,
    /// Carries only subscriptions (see the module's docs).
    pubsub: RedisConn,
    subscribers: Subscribers,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.conn {
            RedisConn::Single(_) => "single",
            RedisConn::Cluster(_) => "cluster",
        };
        f.debug_struct("Redis").field("kind", &kind).finish()
    }
}

impl Redis {
    /// Connects (RESP3, for push messages) and starts routing wake-ups.
    /// Needs a tokio runtime.
    pub async fn connect(config: &RedisConfig) -> Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel::<PushInfo>();
        let urls: Vec<&str> = config.url.split(',').map(str::trim).collect();
        let (conn, pubsub) = if urls.len() == 1 {
            let info = redis::IntoConnectionInfo::into_connection_info(urls[0])
                .map_err(|e| Error::Config(format!("{} ({e})", redact_url(urls[0]))))?;
            let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
            let info = info.set_redis_settings(settings);
            let client = match &config.tls_ca_pem {
                Some(ca) => redis::Client::build_with_tls(info, certificates(ca))?,
                None => redis::Client::open(info)?,
            };
            // One plain attempt first, so a wrong URL or a Redis that is down
            // fails now with a clear error instead of retrying forever; once
            // connected, the manager reconnects without limit.
            let probe = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connection_timeout))
                .set_response_timeout(Some(config.response_timeout));
            let mut first = client
                .get_multiplexed_async_connection_with_config(&probe)
                .await
                .map_err(|e| Error::Connect { url: redact_url(urls[0]), source: e })?;
            let _: () = redis::cmd("PING").query_async(&mut first).await?;
            drop(first);
            let mgr_config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(config.response_timeout))
                .set_connection_timeout(Some(config.connection_timeout))
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(2))
                .set_number_of_retries(usize::MAX);
            let commands = client.get_connection_manager_with_config(mgr_config.clone()).await?;
            let subscriptions = client
                .get_connection_manager_with_config(mgr_config.set_automatic_resubscription().set_push_sender(tx))
                .await?;
            (RedisConn::Single(commands), RedisConn::Single(subscriptions))
        } else {
            let mut builder = ClusterClientBuilder::new(urls.iter().copied());
            if let Some(ca) = &config.tls_ca_pem {
                builder = builder.certs(certificates(ca));
            }
            let client = builder
                .use_protocol(ProtocolVersion::RESP3)
                .response_timeout(config.response_timeout)
                .connection_timeout(config.connection_timeout)
                .push_sender(tx)
                .build()?;
            let connect = || async {
                client
                    .get_async_connection()
                    .await
                    .map_err(|e| Error::Connect { url: redact_url(&config.url), source: e })
            };
            (RedisConn::Cluster(connect().await?), RedisConn::Cluster(connect().await?))
        };
        let subscribers: Subscribers = Arc::default();
        tokio::spawn(route_pushes(rx, Arc::downgrade(&subscribers)));
        Ok(Self { conn, pubsub, subscribers })
    }

    /// A clone of the connection, to run commands on.
    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// `used_memory` from `INFO memory`: the bytes Redis has allocated (on a
    /// cluster, of the node that answers).
    pub async fn used_memory(&self) -> Result<u64> {
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut self.conn()).await?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| Error::Protocol { script: "INFO memory", detail: "no used_memory line".into() })
    }

    /// Every key that starts with `base` + `:`, where `base` carries a hash
    /// tag: the keys of one slot, listed by SCAN on the node that holds it
    /// (on a cluster, the master of that slot). For moving a partition that
    /// nothing else writes (`repartition`); keys may repeat.
    pub(crate) async fn keys_under(&self, base: &str) -> Result<Vec<Vec<u8>>> {
        let slot = crate::keys::slot_of_base(base);
        let mut pattern = String::with_capacity(base.len() + 2);
        for c in base.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":*");
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
            let reply: Value = match self.conn.clone() {
                RedisConn::Single(mut c) => cmd.query_async(&mut c).await?,
                RedisConn::Cluster(mut c) => {
                    use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                    let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                    c.route_command(cmd, RoutingInfo::SingleNode(route)).await?
                }
            };
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::FromRedisValue::from_redis_value(reply)
                .map_err(|e| Error::Protocol { script: "SCAN", detail: e.to_string() })?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Routes wake-up messages of `channel` to `wake`'s `partition` for as
    /// long as `wake` lives.
    pub(crate) async fn subscribe(&self, channel: &str, wake: &Arc<Wake>, partition: usize) -> Result<()> {
        let first = {
            let mut subs = self.subscribers.lock().expect("subscribers lock");
            let list = subs.entry(channel.to_string()).or_default();
            list.retain(|(w, _)| w.strong_count() > 0);
            list.push((Arc::downgrade(wake), partition));
            list.len() == 1
        };
        if first {
            match self.pubsub.clone() {
                RedisConn::Single(mut c) => c.subscribe(channel).await?,
                RedisConn::Cluster(mut c) => c.subscribe(channel).await?,
            }
        }
        Ok(())
    }
}

async fn route_pushes(mut rx: mpsc::UnboundedReceiver<PushInfo>, subscribers: Weak<Mutex<Channels>>) {
    while let Some(push) = rx.recv().await {
        let Some(subscribers) = subscribers.upgrade() else {
            return;
        };
        let subs = subscribers.lock().expect("subscribers lock");
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(msg))) =
                    (push.data.first(), push.data.get(1))
                else {
                    continue;
                };
                let channel = String::from_utf8_lossy(channel);
                let due = std::str::from_utf8(msg).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                for (wake, partition) in subs.get(channel.as_ref()).into_iter().flatten() {
                    if let Some(wake) = wake.upgrade() {
                        wake.due(*partition, due);
                    }
                }
            }
            PushKind::Disconnection => {
                tracing::warn!("redis connection lost; reconnecting, workers will fetch again when it is back");
                for wake in subs.values().flatten().filter_map(|(w, _)| w.upgrade()) {
                    wake.all_due();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted_wherever_a_url_carries_them() {
        for (url, shown) in [
            ("redis://:s3cret@host:6379/0", "redis://:[redacted]@host:6379/0"),
            ("redis://app:s3cret@host:6379", "redis://app:[redacted]@host:6379"),
            ("redis+unix:///run/redis.sock?db=1&pass=s3cret", "redis+unix:///run/redis.sock?db=1&pass=[redacted]"),
            ("unix:///run/redis.sock?PASSWORD=s3cret", "unix:///run/redis.sock?PASSWORD=[redacted]"),
            ("rediss://u:a@b@h1:1,rediss://u:c@h2:2", "rediss://u:[redacted]@h1:1,rediss://u:[redacted]@h2:2"),
            ("redis://host:6379", "redis://host:6379"),
        ] {
            let out = redact_url(url);
            assert_eq!(out, shown);
            assert!(!out.contains("s3cret"), "{out}");
        }
    }
}
