//! Black-box conformance for SCIM servers: cases are data files (`cases/scim/*.json`) of
//! HTTP steps with expected outcomes; the runner executes them against any base URL. The
//! same runner backs the project's integration tests and the `conformance run` command.
//! `load` holds the load generator behind `conformance load`; `ldap_load` its LDAP searches
//! and the LDIF of the seeded users.

pub mod ldap_load;
pub mod load;
pub mod runner;

pub use runner::{Case, Outcome, Target, load_cases, run_case};

/// The directory of the cases shipped with this crate.
pub fn default_cases_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cases")
}

/// Installs the process-wide TLS crypto provider (ring) once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
