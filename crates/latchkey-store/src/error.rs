//! The one error type of `latchkey-store`, classified once: a Redis failure is
//! worth retrying (the connection manager reconnects underneath), everything
//! else is a caller mistake or a bug and is not.

/// Anything that can go wrong talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis could not be reached or answered with an error.
    #[error("redis command failed")]
    Redis(#[source] redis::RedisError),
    /// The first connection to Redis failed (the URL is shown without its password).
    #[error("cannot connect to redis at {url}")]
    Connect {
        /// Where, password redacted.
        url: String,
        /// Why.
        #[source]
        source: redis::RedisError,
    },
    /// A caller-supplied job id breaks a rule of the wire format.
    #[error("invalid job id {id:?}: {rule}")]
    InvalidJobId {
        /// The id as given.
        id: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A queue name breaks a rule of the key layout.
    #[error("invalid queue name {name:?}: {rule}")]
    InvalidQueueName {
        /// The name as given.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The job's arguments could not be serialised to JSON.
    #[error("could not encode job payload as JSON")]
    Encode(#[source] serde_json::Error),
    /// The Redis URL could not be used.
    #[error("invalid redis configuration: {0}")]
    Config(String),
    /// Redis records another number of partitions for the queue than this
    /// process is configured with; starting would lose sight of jobs.
    #[error(
        "queue {queue}: Redis records {recorded} partition(s) but this process is configured for {configured}; \
         start it with {recorded}, or move the queue with `latchkey repartition --to {configured}`"
    )]
    Layout {
        /// The queue.
        queue: String,
        /// What Redis records.
        recorded: u32,
        /// What this process was given.
        configured: u32,
    },
    /// A script answered something this version of latchkey does not understand.
    #[error("unexpected reply from {script}: {detail}")]
    Protocol {
        /// Which script or command.
        script: &'static str,
        /// What was wrong with the reply.
        detail: String,
    },
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether trying again later can succeed: true for Redis being unreachable,
    /// slow, restarting, failing over or out of memory; false for bad input.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Redis(e) | Error::Connect { source: e, .. } => {
                e.is_timeout() || !matches!(e.retry_method(), redis::RetryMethod::NoRetry)
            }
            _ => false,
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Redis(e)
    }
}

/// Formats an error with its whole chain of causes, `outer: inner: root`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}
