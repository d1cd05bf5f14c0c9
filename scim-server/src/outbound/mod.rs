//! Outbound SCIM: the hub as a SCIM client of the systems it provisions.
//!
//! - `client` — one consumer's endpoint settings (`ConsumerEndpoint`, stored as JSON with the
//!   consumer), the HTTP client that speaks SCIM to it (`ScimClient`), and the classification of
//!   every outcome (`ScimResponse` or `DeliveryError`).
//! - `retry` — when to try a failed delivery again (`RetryPolicy`).
//! - `duration` — the string form of durations in stored settings ("30s", "1500ms", "1h").

pub mod admin;
pub mod client;
pub mod duration;
pub mod reconcile;
pub mod retry;
pub mod worker;

pub use client::{
    ClientAuthMethod, ConsumerAuth, ConsumerEndpoint, DeliveryError, ScimClient, ScimResponse,
    Secret,
};
pub use retry::RetryPolicy;
