//! Where Seam is and how to authenticate, from the environment the way Seam's
//! own SDKs read it (`SEAM_ENDPOINT`, `SEAM_API_KEY`), plus `SEAM_API_KEY_FILE`
//! for keys mounted from a Kubernetes secret.

use std::{fmt, time::Duration};

use crate::error::{Error, Result};

/// Seam's production endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://connect.getseam.com";

/// A Seam API key. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key; surrounding whitespace (a trailing newline in a file) is dropped.
    pub fn new(key: impl AsRef<str>) -> Self {
        Self(key.as_ref().trim().to_string())
    }

    /// The key itself, for the `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How the client reaches Seam.
#[derive(Debug, Clone)]
pub struct SeamConfig {
    /// Base URL, without a trailing slash.
    pub endpoint: String,
    /// The workspace API key.
    pub api_key: ApiKey,
    /// Longest wait for a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Longest wait for a whole request, response body included.
    pub request_timeout: Duration,
}

impl SeamConfig {
    /// A config for `endpoint` and `api_key` with default timeouts (5 s connect, 30 s request).
    pub fn new(endpoint: impl Into<String>, api_key: ApiKey) -> Self {
        Self {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            api_key,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// From `SEAM_ENDPOINT` (default [`DEFAULT_ENDPOINT`]) and `SEAM_API_KEY`,
    /// or the file named by `SEAM_API_KEY_FILE`.
    pub fn from_env() -> Result<Self> {
        let endpoint = std::env::var("SEAM_ENDPOINT").unwrap_or_else(|_| DEFAULT_ENDPOINT.to_string());
        Ok(Self::new(endpoint, api_key_from_env()?))
    }
}

/// The API key from `SEAM_API_KEY`, or read from the file `SEAM_API_KEY_FILE` names.
pub fn api_key_from_env() -> Result<ApiKey> {
    if let Ok(path) = std::env::var("SEAM_API_KEY_FILE") {
        let key = std::fs::read_to_string(&path)
            .map_err(|e| Error::Config(format!("SEAM_API_KEY_FILE {path:?} cannot be read: {e}")))?;
        if key.trim().is_empty() {
            return Err(Error::Config(format!("SEAM_API_KEY_FILE {path:?} is empty")));
        }
        return Ok(ApiKey::new(key));
    }
    match std::env::var("SEAM_API_KEY") {
        Ok(key) if !key.trim().is_empty() => Ok(ApiKey::new(key)),
        _ => Err(Error::Config("set SEAM_API_KEY, or SEAM_API_KEY_FILE to a file holding the key".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_shows_in_debug_or_display() {
        let cfg = SeamConfig::new("http://x/", ApiKey::new("seam_live_SECRET\n"));
        let shown = format!("{cfg:?} {}", cfg.api_key);
        assert!(!shown.contains("SECRET"), "{shown}");
        assert_eq!(cfg.api_key.expose(), "seam_live_SECRET");
        assert_eq!(cfg.endpoint, "http://x");
    }
}
