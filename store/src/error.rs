//! The store's one error type. Each variant names the SCIM error it becomes at the edge
//! (RFC 7644 §3.12); the LDAP front maps the same variants to result codes.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// 409 uniqueness
    #[error("{0}")]
    Uniqueness(String),
    /// 400 invalidValue
    #[error("{0}")]
    InvalidValue(String),
    /// 400 invalidSyntax
    #[error("{0}")]
    InvalidSyntax(String),
    /// 400 invalidFilter
    #[error("{0}")]
    InvalidFilter(String),
    /// 400 invalidPath
    #[error("{0}")]
    InvalidPath(String),
    /// 400 noTarget
    #[error("{0}")]
    NoTarget(String),
    /// 400 mutability
    #[error("{0}")]
    Mutability(String),
    /// 400 tooMany
    #[error("{0}")]
    TooMany(String),
    /// 400 invalidCursor (RFC 9865)
    #[error("{0}")]
    InvalidCursor(String),
    /// 400 invalidCount (RFC 9865): a cursor page asked with another count than the first.
    #[error("{0}")]
    InvalidCount(String),
    /// 412: the client's If-Match version is not the current one.
    #[error("resource {id} is at version {current}, not the version given in If-Match")]
    PreconditionFailed { id: String, current: String },
    /// A write raced another write of the same resource and lost; callers retry.
    #[error("concurrent modification of {0}")]
    Conflict(String),
    /// 401: credentials that do not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// Invalid configuration (schema files, limits).
    #[error("configuration: {0}")]
    Config(String),
    /// Any failure of the database itself; converted from the driver's error in `sql/`.
    #[error("database: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn not_found(kind: crate::ResourceKind, id: impl Into<String>) -> Self {
        StoreError::NotFound {
            kind: kind.as_str(),
            id: id.into(),
        }
    }

    /// True for failures of the server rather than of the request.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            StoreError::Database(_) | StoreError::Corrupt(_) | StoreError::Config(_)
        )
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
