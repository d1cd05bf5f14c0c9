//! The canonical identity store: schemas and resources (`model`), the one filter AST
//! (`filter`), PATCH semantics (`patch`) and persistence on SQLite or PostgreSQL (`sql`):
//! resources, the searchable-value index, memberships, the change feed and the audit trail,
//! written together in one transaction per change.
//!
//! Nothing here knows HTTP or LDAP; both fronts call [`Store`].

pub mod credentials;
pub mod engine;
pub mod error;
pub mod filter;
pub mod model;
pub mod patch;
mod sql;
pub mod test_db;

pub use error::{Result, StoreError};
pub use model::{ResourceKind, SchemaRegistry};
pub use sql::{
    Actor, ApiToken, Attempt, AuditAnchor, AuditEntry, AuditFilter, AuditKeys, AuditRecord,
    ChainHead, ChainKey, ChainReport, Change, Claim, Consumer, ConsumerState, ConsumerStats,
    FailOutcome, LdapAccount, LinkUpdate, Load, MemberDelta, MemberSync, Page, Paging, PoolStats,
    PruneReport, Query, QueueEntry, REKEY_ACTION, RekeyReport, ScheduledActionRow, SortOrder,
    Store, StoreOptions, etag_matches, latest_version,
};
