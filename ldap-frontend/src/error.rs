//! The crate's one error type and its mapping to RFC 4511 result codes. Internal failures
//! (database, corrupt data) are answered with a generic message; their cause goes to the log.

use ldap3_proto::LdapResultCode;
use store::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LdapError {
    /// A request the directory answers with a specific result code.
    #[error("{message}")]
    Result {
        code: LdapResultCode,
        message: String,
        /// The deepest existing entry above a missing one (RFC 4511 §4.1.9).
        matched: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl LdapError {
    pub fn new(code: LdapResultCode, message: impl Into<String>) -> Self {
        LdapError::Result {
            code,
            message: message.into(),
            matched: String::new(),
        }
    }

    pub fn no_such_object(message: impl Into<String>, matched: impl Into<String>) -> Self {
        LdapError::Result {
            code: LdapResultCode::NoSuchObject,
            message: message.into(),
            matched: matched.into(),
        }
    }

    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(LdapResultCode::ProtocolError, message)
    }

    pub fn unwilling(message: impl Into<String>) -> Self {
        Self::new(LdapResultCode::UnwillingToPerform, message)
    }

    /// The result code, matched DN and diagnostic message this error is answered with.
    pub fn to_result(&self) -> (LdapResultCode, String, String) {
        match self {
            LdapError::Result {
                code,
                message,
                matched,
            } => (code.clone(), matched.clone(), message.clone()),
            LdapError::Store(e) => match e {
                StoreError::NotFound { .. } => {
                    (LdapResultCode::NoSuchObject, String::new(), e.to_string())
                }
                StoreError::InvalidCursor(m) => {
                    (LdapResultCode::UnwillingToPerform, String::new(), m.clone())
                }
                StoreError::InvalidFilter(m)
                | StoreError::InvalidValue(m)
                | StoreError::InvalidSyntax(m)
                | StoreError::InvalidPath(m) => {
                    (LdapResultCode::UnwillingToPerform, String::new(), m.clone())
                }
                StoreError::TooMany(m) => {
                    (LdapResultCode::AdminLimitExceeded, String::new(), m.clone())
                }
                StoreError::Unauthorized(m) => {
                    (LdapResultCode::InvalidCredentials, String::new(), m.clone())
                }
                _ => {
                    tracing::error!(error = %e, "LDAP request failed in the store");
                    (
                        LdapResultCode::Other,
                        String::new(),
                        "internal error; the cause is in the server log".into(),
                    )
                }
            },
            LdapError::Config(_) | LdapError::Tls(_) | LdapError::Io(_) => {
                tracing::error!(error = %self, "LDAP request failed");
                (
                    LdapResultCode::Other,
                    String::new(),
                    "internal error; the cause is in the server log".into(),
                )
            }
        }
    }
}

pub type Result<T, E = LdapError> = std::result::Result<T, E>;
