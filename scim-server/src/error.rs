//! The crate's one error type, and its mapping to SCIM error responses (RFC 7644 §3.12):
//! every 4xx carries `schemas`, `status` (a string), `scimType` where one applies, and a
//! `detail` a person can act on; a 5xx carries no internal text.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use store::StoreError;
use thiserror::Error;

use crate::wire::{SCIM_CONTENT_TYPE, error_body};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 400 with a SCIM error type.
    #[error("{detail}")]
    BadRequest {
        scim_type: &'static str,
        detail: String,
    },
    /// 401; `error` is the RFC 6750 error code, if the request carried a token.
    #[error("{detail}")]
    Unauthorized { detail: String, invalid_token: bool },
    #[error("{0}")]
    Forbidden(String),
    /// 403 for a bearer token that lacks `scope` (space-separated, any of them would do);
    /// answered with RFC 6750 §3.1 `insufficient_scope`.
    #[error("{detail}")]
    InsufficientScope { detail: String, scope: String },
    /// 408: the client did not send its request (body) in time.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Internal(String),
    /// An outbound SCIM client could not be set up (e.g. the TLS stack refused its settings).
    #[error("outbound: {0}")]
    Outbound(String),
}

impl ServerError {
    pub fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        ServerError::BadRequest {
            scim_type,
            detail: detail.into(),
        }
    }

    /// Status, SCIM error type and detail for the response.
    pub fn parts(&self) -> (StatusCode, Option<&'static str>, String) {
        match self {
            ServerError::Store(e) => match e {
                StoreError::NotFound { .. } => (StatusCode::NOT_FOUND, None, e.to_string()),
                StoreError::Uniqueness(m) => (StatusCode::CONFLICT, Some("uniqueness"), m.clone()),
                StoreError::InvalidValue(m) => {
                    (StatusCode::BAD_REQUEST, Some("invalidValue"), m.clone())
                }
                StoreError::InvalidSyntax(m) => {
                    (StatusCode::BAD_REQUEST, Some("invalidSyntax"), m.clone())
                }
                StoreError::InvalidFilter(m) => (
                    StatusCode::BAD_REQUEST,
                    Some("invalidFilter"),
                    scim_limit_names(m),
                ),
                StoreError::InvalidPath(m) => {
                    (StatusCode::BAD_REQUEST, Some("invalidPath"), m.clone())
                }
                StoreError::NoTarget(m) => (StatusCode::BAD_REQUEST, Some("noTarget"), m.clone()),
                StoreError::Mutability(m) => {
                    (StatusCode::BAD_REQUEST, Some("mutability"), m.clone())
                }
                StoreError::TooMany(m) => (StatusCode::BAD_REQUEST, Some("tooMany"), m.clone()),
                StoreError::InvalidCursor(m) => {
                    (StatusCode::BAD_REQUEST, Some("invalidCursor"), m.clone())
                }
                StoreError::InvalidCount(m) => {
                    (StatusCode::BAD_REQUEST, Some("invalidCount"), m.clone())
                }
                StoreError::PreconditionFailed { .. } => {
                    (StatusCode::PRECONDITION_FAILED, None, e.to_string())
                }
                StoreError::Conflict(id) => (
                    StatusCode::CONFLICT,
                    None,
                    format!("resource {id} was modified concurrently; retry the request"),
                ),
                StoreError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, None, m.clone()),
                StoreError::Config(_) | StoreError::Database(_) | StoreError::Corrupt(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    None,
                    "internal server error".into(),
                ),
            },
            ServerError::BadRequest { scim_type, detail } => {
                (StatusCode::BAD_REQUEST, Some(*scim_type), detail.clone())
            }
            ServerError::Unauthorized { detail, .. } => {
                (StatusCode::UNAUTHORIZED, None, detail.clone())
            }
            ServerError::Forbidden(m) => (StatusCode::FORBIDDEN, None, m.clone()),
            ServerError::InsufficientScope { detail, .. } => {
                (StatusCode::FORBIDDEN, None, detail.clone())
            }
            ServerError::RequestTimeout(m) => (StatusCode::REQUEST_TIMEOUT, None, m.clone()),
            ServerError::NotFound(m) => (StatusCode::NOT_FOUND, None, m.clone()),
            ServerError::MethodNotAllowed(m) => (StatusCode::METHOD_NOT_ALLOWED, None, m.clone()),
            ServerError::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, None, m.clone()),
            ServerError::NotImplemented(m) => (StatusCode::NOT_IMPLEMENTED, None, m.clone()),
            ServerError::Config(_)
            | ServerError::Io(_)
            | ServerError::Internal(_)
            | ServerError::Outbound(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "internal server error".into(),
            ),
        }
    }
}

impl ResponseError for ServerError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, scim_type, detail) = self.parts();
        if status.is_server_error() {
            // The cause goes to the log, never to the client.
            tracing::error!(error = %self, source = ?std::error::Error::source(self), "request failed");
        }
        let mut resp = HttpResponse::build(status);
        resp.insert_header(("Content-Type", SCIM_CONTENT_TYPE));
        if let Some(challenge) = self.challenge() {
            resp.insert_header(("WWW-Authenticate", challenge));
        }
        if matches!(self, ServerError::RequestTimeout(_)) {
            // The rest of the body may still be on its way: nothing more is read from it.
            resp.force_close();
        }
        resp.body(error_body(status.as_u16(), scim_type, &detail).to_string())
    }
}

impl ServerError {
    /// The RFC 6750 §3 `WWW-Authenticate` challenge of a 401 or of a 403 for a scope.
    pub fn challenge(&self) -> Option<String> {
        match self {
            ServerError::Unauthorized {
                invalid_token: false,
                ..
            } => Some("Bearer realm=\"scimhub\"".into()),
            ServerError::Unauthorized {
                detail,
                invalid_token: true,
            } => Some(format!(
                "Bearer realm=\"scimhub\", error=\"invalid_token\", error_description=\"{}\"",
                quotable(detail)
            )),
            ServerError::InsufficientScope { detail, scope } => Some(format!(
                "Bearer realm=\"scimhub\", error=\"insufficient_scope\", error_description=\"{}\", scope=\"{}\"",
                quotable(detail),
                quotable(scope)
            )),
            _ => None,
        }
    }
}

/// Text fit for a quoted auth-param of RFC 6750 (%x20-21 / %x23-5B / %x5D-7E).
fn quotable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

/// The store names filter limits by their keys within a section (`max_filter_terms`); on
/// the SCIM face they are the `scim.` keys.
pub(crate) fn scim_limit_names(message: &str) -> String {
    message.replace("the limit max_filter_", "the limit scim.max_filter_")
}
