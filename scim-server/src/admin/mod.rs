//! The admin JSON API under `/admin/api/v1`: bearer tokens (or JWTs) with the `admin`
//! scope; errors as JSON error bodies through [`ServerError`].
//!
//! - `GET /admin/api/v1/audit`: audit rows, newest first, filtered and paged by `before`;
//!   with `format=csv` or `format=jsonl` every matching row, oldest first, streamed.
//! - `GET /admin/api/v1/audit/verify`: the hash-chain check of `scimhub audit verify`.
//!
//! Further admin areas register their routes in [`configure`]'s scope. The scope must be
//! registered before any broader `/admin` scope (a web UI), which would otherwise match
//! first.

pub mod audit;
pub mod ui;

use actix_web::{HttpRequest, HttpResponse, web};

use crate::api::AppState;
use crate::api::auth::Principal;
use crate::error::ServerError;

/// The path of the admin JSON API.
pub const API_PATH: &str = "/admin/api/v1";

/// Registers the admin JSON API.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope(API_PATH)
            .configure(audit::routes)
            .configure(crate::outbound::admin::routes)
            .default_service(web::to(not_found)),
    )
    .configure(ui::configure);
}

/// Authenticates the request and requires the `admin` scope (refusals are audited).
pub async fn require_admin(state: &AppState, req: &HttpRequest) -> Result<Principal, ServerError> {
    let p = state.principal(req).await?;
    state.require(p.has("admin"), &p, req, "admin").await?;
    Ok(p)
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ServerError> {
    Err(ServerError::NotFound(format!(
        "{} {} is not an endpoint of the admin API",
        req.method(),
        req.path()
    )))
}
