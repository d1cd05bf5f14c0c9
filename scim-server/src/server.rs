//! Starting the hub: opening the store from configuration and serving HTTP, with a request
//! id on every request's log lines and graceful shutdown.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpServer, web};
use store::{SchemaRegistry, Store, StoreOptions};
use tracing::Instrument;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::error::ServerError;

/// The schema registry with the configured extension schemas loaded.
pub fn registry(cfg: &Config) -> Result<SchemaRegistry, ServerError> {
    let mut reg = SchemaRegistry::builtin();
    for (name, urn) in [
        ("enterprise", store::model::ENTERPRISE_USER_SCHEMA),
        ("pacs", store::model::PACS_CARDHOLDER_SCHEMA),
    ] {
        if !cfg.scim.builtin_extensions.iter().any(|e| e == name) {
            reg.remove_extension(urn);
        }
    }
    for path in &cfg.scim.extension_schemas {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ServerError::Config(format!("scim.extension_schemas: cannot read {path}: {e}"))
        })?;
        reg.add_extension_json(&text)
            .map_err(|e| ServerError::Config(format!("{path}: {e}")))?;
    }
    Ok(reg)
}

/// Creates the directory of a SQLite database file if needed.
fn prepare_sqlite_dir(url: &str) -> Result<(), ServerError> {
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = rest.split('?').next().unwrap_or("");
        if !path.is_empty()
            && path != ":memory:"
            && let Some(dir) = std::path::Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)?;
        }
    }
    Ok(())
}

/// Opens the store the configuration names, applying migrations.
pub async fn open_store(cfg: &Config) -> Result<Store, ServerError> {
    prepare_sqlite_dir(&cfg.database.url)?;
    let opts = StoreOptions {
        max_group_depth: cfg.scim.max_group_depth,
        max_connections: cfg.database.max_connections,
        sqlite_sync_full: cfg.database.sqlite_sync_full,
        ignore_unknown_members: cfg.scim.unknown_members == "ignore",
        audit_keys: cfg.audit.chain_keys()?,
        filter_limits: cfg.scim.filter_limits(),
    };
    Ok(Store::connect(&cfg.database.url, registry(cfg)?, opts).await?)
}

async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get("X-Request-Id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.path());
    let started = std::time::Instant::now();
    async move {
        let mut res = next.call(req).await?;
        let status = res.status().as_u16();
        tracing::info!(
            status,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "served"
        );
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&id) {
            res.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("x-request-id"),
                v,
            );
        }
        Ok(res)
    }
    .instrument(span)
    .await
}

/// Builds the HTTP server on a bound listener; the caller awaits it.
pub fn http_server(state: Arc<AppState>, listener: TcpListener) -> Result<Server, ServerError> {
    let cfg = state.config.server.clone();
    let base_path = cfg.base_path.clone();
    let data = web::Data::from(state);
    let server = HttpServer::new(move || {
        let base_path = base_path.clone();
        App::new()
            .app_data(data.clone())
            // Operations: request metrics, and /healthz, /readyz, /metrics and the admin
            // API at the root, registered before the SCIM scope so that a base_path of "/"
            // cannot shadow them.
            .wrap(from_fn(crate::ops::record_metrics))
            .configure(crate::ops::configure)
            .configure(crate::admin::configure)
            // NUL in paths and queries, body deadlines, bodies for actix's own 404 and 405.
            .wrap(from_fn(crate::edge::guard))
            // The request id wraps everything, metrics included.
            .wrap(from_fn(request_id))
            .configure(move |c| api::configure(c, &base_path))
    })
    .shutdown_timeout(30)
    .workers(cfg.effective_workers())
    .max_connections(cfg.connections_per_worker())
    .client_request_timeout(Duration::from_secs(cfg.client_request_timeout_seconds))
    .keep_alive(Duration::from_secs(cfg.keep_alive_seconds))
    .listen(listener)?;
    Ok(server.run())
}
