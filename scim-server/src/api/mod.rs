//! The inbound SCIM API: routing, shared state, request plumbing. Handlers turn wire
//! requests into store calls; all errors leave through [`ServerError`].

pub mod auth;
mod bulk;
mod discovery;
mod resources;

pub(crate) use resources::find_page;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde_json::Value;
use store::model::{Projection, StoredResource, render};
use store::{Actor, Load, ResourceKind, Store};

use crate::config::Config;
use crate::error::ServerError;
use crate::wire::SCIM_CONTENT_TYPE;
use auth::{JwtVerifier, Principal};

/// What every handler shares.
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub jwt: Option<JwtVerifier>,
    /// The process's metrics (`ops::metrics`); shared with the non-HTTP layers.
    pub metrics: Arc<crate::ops::Metrics>,
    /// Login sessions of the admin web UI.
    pub admin_sessions: crate::admin::ui::Sessions,
}

impl AppState {
    pub fn new(store: Store, config: Arc<Config>) -> Result<Self, ServerError> {
        let jwt = JwtVerifier::from_config(&config.auth.jwt)?;
        let session_ttl = std::time::Duration::from_secs(config.admin.session_minutes * 60);
        Ok(AppState {
            store,
            config,
            jwt,
            metrics: Arc::new(crate::ops::Metrics::new()),
            admin_sessions: crate::admin::ui::Sessions::new(session_ttl),
        })
    }

    /// The base URL of the SCIM API as the client sees it.
    pub fn base_url(&self, req: &HttpRequest) -> String {
        if !self.config.server.public_url.is_empty() {
            return self
                .config
                .server
                .public_url
                .trim_end_matches('/')
                .to_string();
        }
        let ci = req.connection_info();
        format!(
            "{}://{}{}",
            ci.scheme(),
            ci.host(),
            self.config.server.base_path
        )
    }

    pub async fn principal(&self, req: &HttpRequest) -> Result<Principal, ServerError> {
        auth::authenticate(&self.store, self.jwt.as_ref(), req).await
    }

    pub fn actor(&self, p: &Principal, req: &HttpRequest) -> Actor {
        Actor::new(p.name.clone(), auth::source_of(req), "scim")
    }

    /// Fails with 403 (and audits it) unless `ok`.
    pub async fn require(
        &self,
        ok: bool,
        p: &Principal,
        req: &HttpRequest,
        needed: &str,
    ) -> Result<(), ServerError> {
        if ok {
            return Ok(());
        }
        let reason = format!("the token lacks the {needed} scope");
        auth::audit_denied(&self.store, req, &p.name, "auth.forbidden", &reason).await;
        Err(ServerError::InsufficientScope {
            detail: reason,
            scope: needed.split(" or ").collect::<Vec<_>>().join(" "),
        })
    }
}

/// Reads a JSON body with the configured size limit.
pub async fn read_json(mut payload: web::Payload, limit: usize) -> Result<Value, ServerError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(body_error)?;
        if body.len() + chunk.len() > limit {
            return Err(ServerError::PayloadTooLarge(format!(
                "the request body exceeds the limit of {limit} bytes (server.max_body_bytes)"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    if body.is_empty() {
        return Err(ServerError::bad(
            "invalidSyntax",
            "the request needs a JSON body",
        ));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        ServerError::bad("invalidSyntax", format!("the body is not valid JSON: {e}"))
    })?;
    if contains_nul(&v) {
        return Err(ServerError::bad(
            "invalidValue",
            "strings in the body contain a NUL character (\\u0000)",
        ));
    }
    Ok(v)
}

/// A failure to read a request body: too slow (`edge::guard`'s deadline) or broken.
pub fn body_error(e: actix_web::error::PayloadError) -> ServerError {
    match e {
        actix_web::error::PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            ServerError::RequestTimeout(io.to_string())
        }
        e => ServerError::bad(
            "invalidSyntax",
            format!("could not read the request body: {e}"),
        ),
    }
}

/// NUL cannot be stored in PostgreSQL text and has no place in identity data.
fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(contains_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// Which computed attributes a projection needs.
pub fn load_for(reg: &store::SchemaRegistry, kind: ResourceKind, p: &Projection) -> Load {
    let returned = |name: &str| {
        reg.core(kind)
            .attribute(name)
            .map(|a| a.returned)
            .unwrap_or_default()
    };
    Load {
        members: kind == ResourceKind::Group && p.includes(None, "members", returned("members")),
        groups: kind == ResourceKind::User && p.includes(None, "groups", returned("groups")),
    }
}

/// The JSON of one resource as a response carries it.
pub fn resource_json(
    state: &AppState,
    base_url: &str,
    r: &StoredResource,
    projection: &Projection,
) -> Value {
    let reg = state.store.registry();
    projection.apply(reg, r.kind, render(reg, r, base_url))
}

/// A response carrying one resource, with its ETag.
pub fn resource_response(
    status: actix_web::http::StatusCode,
    state: &AppState,
    base_url: &str,
    r: &StoredResource,
    projection: &Projection,
) -> HttpResponse {
    let body = resource_json(state, base_url, r, projection);
    let mut resp = HttpResponse::build(status);
    resp.insert_header((header::CONTENT_TYPE, SCIM_CONTENT_TYPE))
        .insert_header((header::ETAG, r.etag()));
    if status == actix_web::http::StatusCode::CREATED {
        resp.insert_header((
            header::LOCATION,
            format!("{base_url}{}/{}", r.kind.endpoint(), r.id),
        ));
    }
    resp.body(body.to_string())
}

pub fn json_response(status: actix_web::http::StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, SCIM_CONTENT_TYPE))
        .body(body.to_string())
}

/// A resource id from a URL path; ids never contain NUL.
pub fn path_id(kind: ResourceKind, id: &str) -> Result<(), ServerError> {
    if id.contains('\0') {
        return Err(ServerError::Store(store::StoreError::not_found(
            kind,
            id.replace('\0', "\\0"),
        )));
    }
    Ok(())
}

fn kind_of(endpoint: &str) -> Result<ResourceKind, ServerError> {
    match endpoint {
        "Users" => Ok(ResourceKind::User),
        "Groups" => Ok(ResourceKind::Group),
        other => Err(ServerError::NotFound(format!(
            "no resource endpoint /{other}"
        ))),
    }
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ServerError> {
    Err(ServerError::NotFound(format!(
        "{} is not an endpoint of this SCIM service",
        req.path()
    )))
}

/// Registers the SCIM routes under the configured base path. One resource per path: a
/// method a path does not serve gets actix's 405 with `Allow`, to which `edge::guard` gives
/// a SCIM error body (discovery endpoints are read-only this way).
pub fn configure(cfg: &mut web::ServiceConfig, base_path: &str) {
    cfg.service(
        web::scope(base_path)
            .service(
                web::resource("/ServiceProviderConfig").get(discovery::service_provider_config),
            )
            .service(web::resource("/ResourceTypes").get(discovery::resource_types))
            .service(web::resource("/ResourceTypes/{id}").get(discovery::resource_type))
            .service(web::resource("/Schemas").get(discovery::schemas))
            .service(web::resource("/Schemas/{id}").get(discovery::schema))
            .service(web::resource("/Bulk").post(bulk::bulk))
            .service(web::resource("/.search").post(resources::root_search))
            .service(
                web::resource("/Me")
                    .get(resources::me_get)
                    .put(resources::me_put)
                    .patch(resources::me_patch)
                    .delete(resources::me_delete),
            )
            .service(
                web::resource("/{endpoint}")
                    .get(resources::list)
                    .post(resources::create),
            )
            .service(web::resource("/{endpoint}/.search").post(resources::search))
            .service(
                web::resource("/{endpoint}/{id}")
                    .get(resources::get)
                    .put(resources::replace)
                    .patch(resources::patch)
                    .delete(resources::delete),
            )
            .service(web::resource("").get(resources::root_list))
            .service(web::resource("/").get(resources::root_list))
            .default_service(web::to(not_found)),
    )
    .default_service(web::to(not_found));
}
