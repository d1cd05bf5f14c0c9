//! SCIM 2.0 over HTTP: the inbound API (`api`), the wire formats (`wire`), configuration,
//! and the `scimhub` binary's wiring (`server`).

pub mod admin;
pub mod api;
pub mod batch;
pub mod config;
pub mod edge;
pub mod error;
pub mod ops;
pub mod outbound;
pub mod server;
pub mod wire;

pub use config::Config;
pub use error::ServerError;
