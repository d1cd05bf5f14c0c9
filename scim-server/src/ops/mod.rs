//! Operating the hub: `/healthz` (the process answers), `/readyz` (the database answers and
//! its schema is current), Prometheus `/metrics`, the middleware that records every HTTP
//! request in the metrics, and the audit retention task.
//!
//! These routes live at the root, outside `server.base_path`, so that load balancers and
//! scrapers need no knowledge of the SCIM API's location.

pub mod metrics;
pub mod retention;

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::api::AppState;
use crate::error::ServerError;
pub use metrics::Metrics;

/// How long `/readyz` waits for the database before answering 503.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Registers `/healthz`, `/readyz` and `/metrics`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").route(web::get().to(healthz)))
        .service(web::resource("/readyz").route(web::get().to(readyz)))
        .service(web::resource("/metrics").route(web::get().to(metrics_handler)));
}

fn json_body(status: actix_web::http::StatusCode, body: serde_json::Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body.to_string())
}

async fn healthz() -> HttpResponse {
    json_body(actix_web::http::StatusCode::OK, json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = &state.store;
    let outcome = tokio::time::timeout(READY_TIMEOUT, store.readiness()).await;
    let reason = match outcome {
        Ok(Ok(())) => {
            return json_body(
                actix_web::http::StatusCode::OK,
                json!({
                    "status": "ready",
                    "database": store.backend_name(),
                    "schemaVersion": store::latest_version(),
                }),
            );
        }
        Ok(Err(store::StoreError::Config(m))) => m,
        Ok(Err(e)) => {
            // The cause goes to the log; this endpoint needs no authentication.
            tracing::warn!(error = %e, "readiness: the database did not answer");
            "the database did not answer".to_string()
        }
        Err(_) => {
            tracing::warn!("readiness: the database did not answer within {READY_TIMEOUT:?}");
            format!(
                "the database did not answer within {} s",
                READY_TIMEOUT.as_secs()
            )
        }
    };
    json_body(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        json!({"status": "unavailable", "reason": reason}),
    )
}

async fn metrics_handler(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ServerError> {
    if state.config.ops.metrics_requires_auth {
        let p = state.principal(&req).await?;
        state.require(p.has("admin"), &p, &req, "admin").await?;
    }
    let text = state.metrics.scrape(&state.store).await;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, metrics::CONTENT_TYPE))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(text))
}

/// The route a request matched, as a pattern (`/scim/v2/Users/{id}`), so that metrics
/// have one series per endpoint rather than per resource.
pub fn route_label(req: &HttpRequest) -> String {
    let Some(pattern) = req.match_pattern() else {
        return "unmatched".into();
    };
    match req.match_info().get("endpoint") {
        // The resource endpoints share one pattern; naming them keeps Users and Groups
        // apart without letting unknown names add series.
        Some(e @ ("Users" | "Groups")) if pattern.contains("{endpoint}") => {
            pattern.replace("{endpoint}", e)
        }
        _ => pattern,
    }
}

fn method_label(m: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: counts every request and its latency by method, route pattern and status.
pub async fn record_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let Some(metrics) = metrics else {
        return next.call(req).await;
    };
    let method = method_label(req.method());
    let started = Instant::now();
    let in_flight = metrics.in_flight();
    in_flight.add(1.0);
    let res = next.call(req).await;
    in_flight.add(-1.0);
    let (route, status) = match &res {
        Ok(r) => (route_label(r.request()), r.status().as_u16()),
        Err(e) => (
            "unmatched".to_string(),
            e.as_response_error().status_code().as_u16(),
        ),
    };
    metrics.observe_http(method, &route, status, started.elapsed());
    res
}
