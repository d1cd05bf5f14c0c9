//! The admin web UI at `/admin`: server-rendered HTML, no scripts, the stylesheet embedded
//! in the binary.
//!
//! - Login with a token that holds the `admin` scope (`scimhub token create --scope admin`);
//!   the session is kept server-side ([`session`]) and named by the `scimhub_session` cookie
//!   (HttpOnly, SameSite=Strict, Path=/admin, Secure over TLS). A session ends at logout,
//!   after `[admin] session_minutes`, or as soon as its token is revoked.
//! - Every state-changing request is a POST carrying the session's CSRF token, compared in
//!   constant time; the login form carries its own token, paired with a short-lived cookie.
//!   GET never changes anything.
//! - Pages send a Content-Security-Policy without any script source, so that markup which
//!   slipped through escaping could still not run.
//! - Every action calls the functions the JSON admin API calls (`outbound::admin`, the store),
//!   with the session's principal as the actor, layer `admin`.
//!
//! Routes: `/admin` (dashboard), `/admin/login`, `/admin/logout`, `/admin/users[/{id}]`,
//! `/admin/groups[/{id}]`, `/admin/push`, `/admin/consumers[/{name}[/{action}]]`,
//! `/admin/deliveries`, `/admin/audit[/export]`, `/admin/assets/style.css`.

mod audit;
mod consumers;
mod dashboard;
mod deliveries;
pub mod html;
mod people;
pub mod session;

use std::future::{Ready, ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::{Next, from_fn};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde_json::json;
use store::{Actor, AuditEntry};

use crate::api::AppState;
use crate::api::auth::source_of;
use crate::error::ServerError;
use html::{error_box, html_escape, layout};
pub use session::{Flash, Session, Sessions};
use session::{
    LOGIN_COOKIE, LOGIN_COOKIE_SECONDS, SESSION_COOKIE, constant_time_eq, cookie, is_secure,
    random_token, set_cookie,
};

type State = web::Data<AppState>;

const STYLE: &str = include_str!("style.css");
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Registers the UI. Must come after the admin API's scope, which it would otherwise shadow.
/// One resource per path, so that a method the path does not serve is answered 405 with
/// `Allow` (actix's resource default), not passed on to `not_found`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .wrap(from_fn(gate))
            .service(web::resource("").get(dashboard::page))
            .service(web::resource("/").get(dashboard::page))
            .service(web::resource("/assets/style.css").get(style))
            .service(web::resource("/login").get(login_form).post(login))
            .service(web::resource("/logout").post(logout))
            .service(web::resource("/users").get(people::users))
            .service(web::resource("/users/{id}").get(people::user))
            .service(web::resource("/groups").get(people::groups))
            .service(web::resource("/groups/{id}").get(people::group))
            .service(web::resource("/push").post(people::push))
            .service(
                web::resource("/consumers")
                    .get(consumers::list)
                    .post(consumers::create),
            )
            .service(
                web::resource("/consumers/{name}")
                    .get(consumers::show)
                    .post(consumers::update),
            )
            .service(web::resource("/consumers/{name}/{action}").post(consumers::action))
            .service(web::resource("/deliveries").get(deliveries::page))
            .service(web::resource("/deliveries/retry").post(deliveries::retry))
            .service(web::resource("/audit").get(audit::page))
            .service(web::resource("/audit/export").get(audit::export))
            .default_service(web::to(not_found)),
    );
}

/// Paths served without a session.
fn is_public(path: &str) -> bool {
    path == "/admin/login" || path.starts_with("/admin/assets/")
}

/// Admits requests with a live session (its token still active), and sends the others to
/// the login page.
async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if is_public(req.path()) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let state = req
        .app_data::<State>()
        .cloned()
        .ok_or_else(|| ServerError::Internal("the admin UI has no state".into()))?;
    if let Some(s) = current_session(&state, req.request()).await? {
        req.extensions_mut().insert(s);
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let target = match (req.method().as_str(), req.query_string()) {
        ("GET", "") => req.path().to_string(),
        ("GET", q) => format!("{}?{q}", req.path()),
        _ => "/admin".to_string(),
    };
    let to = format!("/admin/login?{}", html::query_string(&[("next", &target)]));
    Ok(req.into_response(see_other(&to)))
}

/// The request's session, if it is live and its token is still active.
async fn current_session(
    state: &AppState,
    req: &HttpRequest,
) -> Result<Option<Session>, ServerError> {
    let Some(id) = cookie(req, SESSION_COOKIE) else {
        return Ok(None);
    };
    let Some(s) = state.admin_sessions.get(&id) else {
        return Ok(None);
    };
    let active = state
        .store
        .list_tokens()
        .await?
        .into_iter()
        .any(|t| t.id == s.token_id && t.revoked_at.is_none());
    if !active {
        state.admin_sessions.remove(&s.key);
        return Ok(None);
    }
    Ok(Some(s))
}

impl FromRequest for Session {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Session>()
                .cloned()
                .ok_or_else(|| ServerError::Internal("admin page without a session".into()).into()),
        )
    }
}

impl Session {
    /// Who acts, for the audit trail.
    pub fn actor(&self, req: &HttpRequest) -> Actor {
        Actor::new(self.principal.clone(), source_of(req), "admin")
    }
}

fn security_headers(b: &mut actix_web::HttpResponseBuilder) {
    b.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
}

/// An HTML response with the UI's security headers.
fn html_response(status: StatusCode, body: String) -> HttpResponse {
    let mut b = HttpResponse::build(status);
    security_headers(&mut b);
    b.insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .body(body)
}

fn see_other(to: &str) -> HttpResponse {
    let mut b = HttpResponse::SeeOther();
    security_headers(&mut b);
    b.insert_header((header::LOCATION, to.to_string())).finish()
}

/// A page of the signed-in UI, showing the session's pending message.
fn render(
    state: &AppState,
    s: &Session,
    status: StatusCode,
    title: &str,
    nav: &str,
    body: &str,
) -> HttpResponse {
    let flash = state.admin_sessions.take_flash(&s.key);
    html_response(status, layout(Some(s), title, nav, flash.as_ref(), body))
}

/// The page for an error; 5xx causes go to the log only.
fn error_page(state: &AppState, s: &Session, e: &ServerError) -> HttpResponse {
    let (status, scim_type, detail) = e.parts();
    if status.is_server_error() {
        tracing::error!(error = %e, "admin UI request failed");
    }
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Refused",
        s if s.is_client_error() => "That did not work",
        _ => "Something went wrong",
    };
    let detail = match scim_type {
        Some(t) => format!("{detail} ({t})"),
        None => detail,
    };
    render(
        state,
        s,
        status,
        title,
        "",
        &format!(
            "{}<p>{}</p>",
            error_box(&detail),
            html::link("/admin", "Back to the dashboard")
        ),
    )
}

/// A page, or the error page for what went wrong while making it.
fn respond(state: &AppState, s: &Session, r: Result<HttpResponse, ServerError>) -> HttpResponse {
    r.unwrap_or_else(|e| error_page(state, s, &e))
}

/// Also reached without a session, for paths served without one (`/admin/assets/…`).
async fn not_found(state: State, s: Option<Session>, req: HttpRequest) -> HttpResponse {
    let e = ServerError::NotFound(format!("{} is not a page of the admin UI", req.path()));
    match s {
        Some(s) => error_page(&state, &s, &e),
        None => client_error_page(StatusCode::NOT_FOUND, &e.parts().2),
    }
}

/// The page for a client's mistake outside a session (no navigation, no session data).
pub fn client_error_page(status: StatusCode, detail: &str) -> HttpResponse {
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::METHOD_NOT_ALLOWED => "Not allowed",
        _ => "That did not work",
    };
    html_response(
        status,
        layout(
            None,
            title,
            "",
            None,
            &format!(
                "{}<p>{}</p>",
                error_box(detail),
                html::link("/admin", "Back to the dashboard")
            ),
        ),
    )
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/css; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(STYLE)
}

/// A posted form (`application/x-www-form-urlencoded`), read with the body size limit.
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field, trimmed, `None` when absent or blank.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    pub fn checked(&self, name: &str) -> bool {
        self.value(name).is_some()
    }
}

async fn read_form(mut payload: web::Payload, limit: usize) -> Result<Form, ServerError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(crate::api::body_error)?;
        if body.len() + chunk.len() > limit {
            return Err(ServerError::PayloadTooLarge(format!(
                "the form exceeds the limit of {limit} bytes (server.max_body_bytes)"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ServerError::bad("invalidSyntax", "the form is not UTF-8"))?;
    let pairs = web::Query::<Vec<(String, String)>>::from_query(text)
        .map_err(|e| ServerError::bad("invalidSyntax", format!("malformed form: {e}")))?
        .into_inner();
    if pairs
        .iter()
        .any(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err(ServerError::bad(
            "invalidValue",
            "the form contains a NUL character",
        ));
    }
    Ok(Form(pairs))
}

/// The posted form, if it carries the session's CSRF token; otherwise the 403 page (the
/// refusal is audited).
async fn checked_form(
    state: &AppState,
    s: &Session,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Form, HttpResponse> {
    let form = read_form(payload, state.config.server.max_body_bytes)
        .await
        .map_err(|e| error_page(state, s, &e))?;
    let sent = form.get("csrf").unwrap_or("");
    if constant_time_eq(sent.as_bytes(), s.csrf.as_bytes()) {
        return Ok(form);
    }
    audit(
        state,
        req,
        &s.principal,
        "admin.csrf",
        "denied",
        json!({"path": req.path(), "reason": if sent.is_empty() { "no CSRF token" } else { "wrong CSRF token" }}),
    )
    .await;
    Err(error_page(
        state,
        s,
        &ServerError::Forbidden(
            "the form did not carry this session's CSRF token: reload the page and try again"
                .into(),
        ),
    ))
}

/// After an action: the message for the next page, and a redirect to it.
fn done(state: &AppState, s: &Session, r: Result<String, ServerError>, to: &str) -> HttpResponse {
    let flash = match r {
        Ok(text) => Flash { ok: true, text },
        Err(e) => {
            let (status, _, detail) = e.parts();
            if status.is_server_error() {
                tracing::error!(error = %e, "admin UI action failed");
            }
            Flash {
                ok: false,
                text: detail,
            }
        }
    };
    state.admin_sessions.set_flash(&s.key, flash);
    see_other(to)
}

/// A redirect target from a form or query: only paths of the UI.
fn local_target(t: Option<&str>, default: &str) -> String {
    match t {
        Some(t)
            if (t == "/admin" || t.starts_with("/admin/") || t.starts_with("/admin?"))
                && !t.contains("//")
                && !t.contains('\\')
                && !t.chars().any(char::is_control) =>
        {
            t.to_string()
        }
        _ => default.to_string(),
    }
}

async fn audit(
    state: &AppState,
    req: &HttpRequest,
    actor: &str,
    action: &str,
    outcome: &str,
    detail: serde_json::Value,
) {
    let e = AuditEntry {
        actor: actor.to_string(),
        source: source_of(req),
        layer: "admin".into(),
        action: action.into(),
        resource_type: None,
        resource_id: None,
        consumer: None,
        outcome: outcome.into(),
        detail,
    };
    if let Err(err) = state.store.append_audit(&e).await {
        tracing::error!(error = %err, "could not audit an admin UI event");
    }
}

fn login_page(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    next: &str,
    error: Option<&str>,
) -> HttpResponse {
    let token = random_token();
    let secure = is_secure(req, &state.config.server.public_url);
    let body = format!(
        "<section class=\"login\">{}<form method=\"post\" action=\"/admin/login\">\
         <input type=\"hidden\" name=\"login_csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label>Admin token<input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" required autofocus \
         placeholder=\"scimhub_…\"></label>\
         <button type=\"submit\" id=\"login\">Log in</button></form>\
         <p class=\"muted\">A token with the admin scope: <code>scimhub token create --name me --scope admin</code>.</p></section>",
        error.map(error_box).unwrap_or_default(),
        html_escape(&token),
        html_escape(next),
    );
    let mut b = HttpResponse::build(status);
    security_headers(&mut b);
    b.insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((
            header::SET_COOKIE,
            set_cookie(LOGIN_COOKIE, &token, LOGIN_COOKIE_SECONDS, secure),
        ))
        .body(layout(None, "Log in", "", None, &body))
}

#[derive(serde::Deserialize)]
struct NextParam {
    next: Option<String>,
}

async fn login_form(state: State, req: HttpRequest) -> HttpResponse {
    let next = web::Query::<NextParam>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().next);
    let next = local_target(next.as_deref(), "/admin");
    match current_session(&state, &req).await {
        Ok(Some(_)) => see_other(&next),
        _ => login_page(&state, &req, StatusCode::OK, &next, None),
    }
}

async fn login(state: State, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let form = match read_form(payload, state.config.server.max_body_bytes).await {
        Ok(f) => f,
        Err(e) => {
            return login_page(&state, &req, e.parts().0, "/admin", Some(&e.parts().2));
        }
    };
    let next = local_target(form.value("next"), "/admin");
    let expected = cookie(&req, LOGIN_COOKIE).unwrap_or_default();
    let sent = form.get("login_csrf").unwrap_or("");
    if expected.is_empty() || !constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
        audit(
            &state,
            &req,
            "anonymous",
            "admin.login",
            "denied",
            json!({"reason": "the login form's CSRF token did not match"}),
        )
        .await;
        return login_page(
            &state,
            &req,
            StatusCode::FORBIDDEN,
            &next,
            Some("The login form expired or was not sent from this site. Try again."),
        );
    }
    let secret = form.value("token").unwrap_or("");
    let found = if secret.starts_with("scimhub_") {
        match state.store.find_token(secret).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "login: token lookup failed");
                return login_page(
                    &state,
                    &req,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &next,
                    Some("internal server error"),
                );
            }
        }
    } else {
        None
    };
    let (token, reason) = match found {
        Some(t) if t.scopes.iter().any(|s| s == "admin") => (t, None),
        Some(t) => {
            let actor = format!("token:{}", t.name);
            (t, Some((actor, "the token lacks the admin scope")))
        }
        None => {
            audit(
                &state,
                &req,
                "anonymous",
                "admin.login",
                "failure",
                json!({"reason": "unknown or revoked token"}),
            )
            .await;
            return login_page(
                &state,
                &req,
                StatusCode::UNAUTHORIZED,
                &next,
                Some("That token is unknown, revoked, or lacks the admin scope."),
            );
        }
    };
    if let Some((actor, reason)) = reason {
        audit(
            &state,
            &req,
            &actor,
            "admin.login",
            "failure",
            json!({"reason": reason}),
        )
        .await;
        return login_page(
            &state,
            &req,
            StatusCode::UNAUTHORIZED,
            &next,
            Some("That token is unknown, revoked, or lacks the admin scope."),
        );
    }
    let principal = format!("token:{}", token.name);
    let id = state.admin_sessions.create(&principal, &token.id);
    audit(
        &state,
        &req,
        &principal,
        "admin.login",
        "success",
        json!({"sessionMinutes": state.admin_sessions.ttl().as_secs() / 60}),
    )
    .await;
    let secure = is_secure(&req, &state.config.server.public_url);
    let mut resp = see_other(&next);
    let headers = resp.headers_mut();
    for c in [
        set_cookie(
            SESSION_COOKIE,
            &id,
            state.admin_sessions.ttl().as_secs(),
            secure,
        ),
        set_cookie(LOGIN_COOKIE, "", 0, secure),
    ] {
        if let Ok(v) = header::HeaderValue::from_str(&c) {
            headers.append(header::SET_COOKIE, v);
        }
    }
    resp
}

async fn logout(state: State, s: Session, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    if let Err(resp) = checked_form(&state, &s, &req, payload).await {
        return resp;
    }
    state.admin_sessions.remove(&s.key);
    audit(
        &state,
        &req,
        &s.principal,
        "admin.logout",
        "success",
        json!({}),
    )
    .await;
    let secure = is_secure(&req, &state.config.server.public_url);
    let mut resp = see_other("/admin/login");
    if let Ok(v) = header::HeaderValue::from_str(&set_cookie(SESSION_COOKIE, "", 0, secure)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets_stay_in_the_ui() {
        assert_eq!(
            local_target(Some("/admin/users?q=x"), "/admin"),
            "/admin/users?q=x"
        );
        assert_eq!(local_target(Some("/admin"), "/d"), "/admin");
        for bad in [
            "https://evil.example/admin",
            "//evil.example/admin",
            "/admin//evil",
            "/administrator",
            "/admin\\..",
            "/scim/v2/Users",
        ] {
            assert_eq!(local_target(Some(bad), "/admin"), "/admin", "{bad}");
        }
        assert_eq!(local_target(None, "/admin/x"), "/admin/x");
    }
}
