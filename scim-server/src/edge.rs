//! What every HTTP request passes on its way in and out, whichever face it is for (SCIM,
//! the admin API, the admin UI, operations):
//!
//! - A path or query string holding NUL (`%00`) is refused before routing: no resource,
//!   consumer or parameter value can contain NUL (the store never holds it, PostgreSQL
//!   cannot take it as text). A path gets 404, a query string 400.
//! - The request body must arrive within `server.client_body_timeout_seconds` of the
//!   request head: a client trickling a body cannot hold a connection (the head has its own
//!   deadline, `server.client_request_timeout_seconds`, kept by actix).
//! - Answers that actix makes itself for a routing miss carry no body: 405 (with `Allow`,
//!   from the resource that exists under another method) and 404. They get the face's
//!   error body here: a SCIM error for the APIs, a page for the admin UI.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError, web};
use futures_util::StreamExt;

use crate::api::AppState;
use crate::error::ServerError;

/// The face a path belongs to, for the shape of its error bodies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Face {
    /// The admin web UI: HTML.
    Ui,
    /// SCIM, the admin JSON API, operations: SCIM error JSON.
    Api,
}

fn face_of(path: &str) -> Face {
    let ui = (path == "/admin" || path.starts_with("/admin/"))
        && !path.starts_with(crate::admin::API_PATH);
    if ui { Face::Ui } else { Face::Api }
}

fn has_nul(raw: &str) -> bool {
    raw.contains('\0')
        || raw
            .as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
}

fn error_response(face: Face, e: &ServerError) -> HttpResponse {
    match face {
        Face::Api => e.error_response(),
        Face::Ui => {
            let (status, _, detail) = e.parts();
            crate::admin::ui::client_error_page(status, &detail)
        }
    }
}

/// The request's body, ending in a timeout error once `deadline` has passed.
fn with_deadline(payload: Payload, deadline: tokio::time::Instant, limit: Duration) -> Payload {
    let stream = futures_util::stream::unfold(Some(payload), move |state| async move {
        let mut payload = state?;
        match tokio::time::timeout_at(deadline, payload.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(payload))),
            Ok(None) => None,
            Err(_) => Some((
                Err(PayloadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the request body did not arrive within {} s (server.client_body_timeout_seconds)",
                        limit.as_secs()
                    ),
                ))),
                None,
            )),
        }
    });
    Payload::Stream {
        payload: Box::pin(stream),
    }
}

/// The middleware (see the module documentation).
pub async fn guard(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let face = face_of(req.path());
    if has_nul(req.path()) {
        let e = ServerError::NotFound("no path of this server contains a NUL character".into());
        return Ok(req.into_response(error_response(face, &e)));
    }
    if has_nul(req.query_string()) {
        let e = ServerError::bad(
            "invalidValue",
            "the query string contains a NUL character (%00); no parameter value may hold one",
        );
        return Ok(req.into_response(error_response(face, &e)));
    }
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        let limit = Duration::from_secs(state.config.server.client_body_timeout_seconds.max(1));
        let (_, payload) = req.parts_mut();
        if !matches!(payload, Payload::None) {
            let inner = std::mem::replace(payload, Payload::None);
            *payload = with_deadline(inner, tokio::time::Instant::now() + limit, limit);
        }
    }
    let (method, path) = (req.method().clone(), req.path().to_string());
    let res = next.call(req).await?;
    let status = res.status();
    let bodiless = matches!(
        res.response().body().size(),
        actix_web::body::BodySize::None | actix_web::body::BodySize::Sized(0)
    );
    if !(status.is_client_error() && bodiless) {
        return Ok(res.map_into_boxed_body());
    }
    let allow = res.headers().get(header::ALLOW).cloned();
    let e = match status {
        StatusCode::METHOD_NOT_ALLOWED => ServerError::MethodNotAllowed(match &allow {
            Some(a) => format!(
                "{method} is not allowed on {path}; it allows {}",
                a.to_str().unwrap_or("other methods")
            ),
            None => format!("{method} is not allowed on {path}"),
        }),
        StatusCode::NOT_FOUND => ServerError::NotFound(format!("{path} is not found")),
        other => ServerError::bad(
            "invalidValue",
            other
                .canonical_reason()
                .unwrap_or("bad request")
                .to_string(),
        ),
    };
    let mut resp = error_response(face, &e);
    if status != resp.status() {
        *resp.status_mut() = status;
    }
    if let Some(a) = allow {
        resp.headers_mut().insert(header::ALLOW, a);
    }
    let (req, _) = res.into_parts();
    Ok(ServiceResponse::new(req, resp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_found_raw_and_percent_encoded() {
        assert!(has_nul("/consumers/%00"));
        assert!(has_nul("actor=a%00b"));
        assert!(has_nul("a\0"));
        assert!(!has_nul("actor=%0a%20&x=100"));
        assert!(!has_nul("/Users/abc"));
    }

    #[test]
    fn faces_by_path() {
        assert!(face_of("/admin") == Face::Ui);
        assert!(face_of("/admin/assets/x") == Face::Ui);
        assert!(face_of("/admin/api/v1/audit") == Face::Api);
        assert!(face_of("/scim/v2/Users") == Face::Api);
        assert!(face_of("/administrator") == Face::Api);
    }
}
