//! `latchkey-seam`: the Seam API client latchkey uses to change and read
//! access codes. Only this crate knows Seam's JSON; it hands out
//! `latchkey-core` types and one [`Error`] whose [`Error::class`] says whether
//! to retry, wait, or give up.
//!
//! Answers are not trusted: bodies are capped at [`MAX_BODY_BYTES`],
//! `Retry-After` at [`MAX_RETRY_AFTER`], redirects are never followed, an
//! answer about another access code than the one asked for is an error, and
//! no error message, log line or `Debug` output shows a PIN.

mod client;
mod config;
mod error;
mod redact;
mod request;
mod wire;

pub use client::{MAX_BODY_BYTES, SeamClient, SeamEvent, USER_AGENT_VALUE, UpdateOutcome};
pub use config::{ApiKey, DEFAULT_ENDPOINT, SeamConfig, api_key_from_env};
pub use error::{ApiError, Error, ErrorClass, MAX_RETRY_AFTER, Result, classify, parse_retry_after};
pub use request::UpdateAccessCode;
