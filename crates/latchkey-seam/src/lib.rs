//! `latchkey-seam`: the Seam API client latchkey uses to change and read
//! access codes. Only this crate knows Seam's JSON; it hands out
//! `latchkey-core` types and one [`Error`] whose [`Error::class`] says whether
//! to retry, wait, or give up.

mod client;
mod config;
mod error;
mod request;
mod wire;

pub use client::{SeamClient, USER_AGENT_VALUE, UpdateOutcome};
pub use config::{ApiKey, DEFAULT_ENDPOINT, SeamConfig, api_key_from_env};
pub use error::{ApiError, Error, ErrorClass, Result, classify, parse_retry_after};
pub use request::UpdateAccessCode;
