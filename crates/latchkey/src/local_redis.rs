//! Where the demo and the benchmark get their Redis: `REDIS_URL` when given,
//! else a redis-server of their own on a free port (never the one that may be
//! running on 6379, which is left alone).

use anyhow::{Context, bail};
use latchkey_devenv::{RedisServer, have_redis_server};

/// A Redis to use, and the server process if we started it (dropped: stopped).
pub struct LocalRedis {
    pub url: String,
    pub owned: Option<RedisServer>,
}

pub fn resolve(url: Option<String>) -> anyhow::Result<LocalRedis> {
    if let Some(url) = url {
        return Ok(LocalRedis { url, owned: None });
    }
    if !have_redis_server() {
        bail!(
            "no Redis: set REDIS_URL, or install redis-server (Debian: apt-get install -y redis-server) so latchkey can start its own"
        );
    }
    let server = RedisServer::try_start_with(&[]).context("starting redis-server")?;
    Ok(LocalRedis { url: server.url(), owned: Some(server) })
}
