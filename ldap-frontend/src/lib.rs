//! A read-only LDAPv3 presentation of the identity store, for white-pages applications,
//! address books, badge printers and other consumers that only speak LDAP. It reads the
//! same database the SCIM API writes, so a SCIM change is visible to the next search.
//!
//! - `dit` — the tree (DN ↔ resource), the attribute mapping table, entries, subschema.
//! - `filter` — LDAP filters → the store's filter AST (compiled to SQL by the store).
//! - `session` — bind state and paged-results cookies of one connection.
//! - `directory` — protocol handling, `LdapMsg` in → `Vec<LdapMsg>` out, without sockets.
//! - `server` — listeners, StartTLS/LDAPS (rustls), connection limits and deadlines;
//!   `framing` — BER framing with the message size checked at the header.
//!
//! **Invariant:** nothing here writes identities; add, modify, delete and modDN are refused
//! with unwillingToPerform. **API boundary:** [`LdapServer::start`] for the binary,
//! [`Directory::handle`] for tests; depends on `store`, never on the SCIM server.

mod batch;
pub mod config;
pub mod directory;
pub mod dit;
pub mod error;
pub mod filter;
mod framing;
pub mod server;
pub mod session;
mod throttle;

pub use config::{AttributeMappingConfig, InactiveUsers, LdapConfig};
pub use directory::Directory;
pub use error::LdapError;
pub use server::LdapServer;
pub use session::{Principal, Session};
