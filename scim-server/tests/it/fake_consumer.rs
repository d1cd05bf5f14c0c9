//! A SCIM consumer in memory, on 127.0.0.1:0, whose answers a test can switch at run time.
//!
//! It serves `/scim/v2/Users` and `/scim/v2/Groups` (POST, GET by id, GET with
//! `filter=attr eq "value"` and `startIndex`/`count`, PUT, PATCH, DELETE) behind a bearer
//! token, and an OAuth2 token endpoint (`/oauth/token`, client credentials) whose tokens it
//! also accepts. Every request is logged with its arrival time and the status it got. The
//! token is checked before any switched fault: a request with a bad token gets 401 whatever
//! the switches say.
//!
//! ```text
//! let fake = FakeConsumer::start().await;
//! let client = ScimClient::new(&fake.endpoint()).unwrap();
//! fake.fail_next(2, Fault::TooManyRequests(Some("1".into())));   // the next two get 429
//! fake.fail_always(Fault::ServerError);                            // until...
//! fake.reset();                                                    // ...healthy again
//! fake.set_patch_reply(PatchReply::NoContent);                     // PATCH answers 204
//! assert_eq!(fake.requests_matching("POST", "/Users").len(), 1);
//! fake.stop().await;
//! ```

// Shared test support: not every test module uses every switch.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use serde_json::{Map, Value, json};

use scim_server::outbound::{ClientAuthMethod, ConsumerAuth, ConsumerEndpoint, Secret};

const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const SCIM_BASE: &str = "/scim/v2";
pub const TOKEN_PATH: &str = "/oauth/token";

/// An answer the consumer gives instead of doing its job.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// 500 with a SCIM error body.
    ServerError,
    /// Any status, with a SCIM error body.
    Status(u16),
    /// 429, with this `Retry-After` value (seconds or an HTTP-date) if given.
    TooManyRequests(Option<String>),
    /// The request is carried out, but the answer only leaves after this long: past the
    /// client's timeout, the client sees a timeout for a write that did happen.
    Delay(Duration),
    /// POST answers 409 `uniqueness`, as for an account that already exists. Only POSTs.
    ConflictOnCreate,
    /// PUT and PATCH answer 404, as for an account deleted on the consumer's side. Only those.
    NotFoundOnUpdate,
}

impl Fault {
    fn applies_to(&self, method: &str) -> bool {
        match self {
            Fault::ConflictOnCreate => method == "POST",
            Fault::NotFoundOnUpdate => method == "PUT" || method == "PATCH",
            _ => true,
        }
    }
}

/// What PATCH answers when it succeeds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PatchReply {
    /// 200 with the resource.
    WithBody,
    /// 204 without a body.
    NoContent,
}

/// One request as the consumer received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// Without the SCIM base: `/Users/{id}`; the token endpoint logs as `/oauth/token`.
    pub path: String,
    pub query: HashMap<String, String>,
    /// JSON bodies parsed; the token endpoint's form as an object of its fields.
    pub body: Option<Value>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub at: Instant,
    /// The status answered (0 while the answer is pending).
    pub status: u16,
}

struct Armed {
    fault: Fault,
    /// `None`: until `reset`.
    remaining: Option<usize>,
}

struct Inner {
    users: Map<String, Value>,
    groups: Map<String, Value>,
    faults: Vec<Armed>,
    patch_reply: PatchReply,
    content_type: &'static str,
    log: Vec<Received>,
    ingested: u64,
    /// Issued access token → when it stops being accepted.
    tokens: HashMap<String, Instant>,
    token_ttl: u64,
    tokens_issued: u64,
    next_version: u64,
}

struct State {
    inner: Mutex<Inner>,
    token: String,
    client_id: String,
    client_secret: String,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct FakeConsumer {
    /// The SCIM base URL, `http://127.0.0.1:PORT/scim/v2`.
    pub base_url: String,
    pub token_url: String,
    /// The static bearer token it accepts.
    pub token: String,
    pub client_id: String,
    pub client_secret: String,
    state: Arc<State>,
    handle: ServerHandle,
}

impl FakeConsumer {
    pub async fn start() -> FakeConsumer {
        let state = Arc::new(State {
            inner: Mutex::new(Inner {
                users: Map::new(),
                groups: Map::new(),
                faults: Vec::new(),
                patch_reply: PatchReply::WithBody,
                content_type: "application/scim+json",
                log: Vec::new(),
                ingested: 0,
                tokens: HashMap::new(),
                token_ttl: 3600,
                tokens_issued: 0,
                next_version: 1,
            }),
            token: format!("fake-{}", uuid::Uuid::new_v4().simple()),
            client_id: "hub client".into(),
            client_secret: "s3cret&=+ :".into(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(16 << 20))
                .default_service(web::to(dispatch))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        FakeConsumer {
            base_url: format!("http://{addr}{SCIM_BASE}"),
            token_url: format!("http://{addr}{TOKEN_PATH}"),
            token: state.token.clone(),
            client_id: state.client_id.clone(),
            client_secret: state.client_secret.clone(),
            state,
            handle,
        }
    }

    /// Settings for the hub's client: the static bearer token, a short timeout.
    pub fn endpoint(&self) -> ConsumerEndpoint {
        let mut ep = ConsumerEndpoint::new(&self.base_url, ConsumerAuth::bearer(&self.token));
        ep.timeout = Duration::from_secs(2);
        ep.connect_timeout = Duration::from_secs(2);
        ep
    }

    /// Settings for the hub's client with OAuth2 client credentials against this consumer's
    /// token endpoint.
    pub fn oauth2_endpoint(&self, client_auth: ClientAuthMethod) -> ConsumerEndpoint {
        let mut ep = self.endpoint();
        ep.auth = ConsumerAuth::OAuth2ClientCredentials {
            token_url: self.token_url.clone(),
            client_id: self.client_id.clone(),
            client_secret: Secret::new(&self.client_secret),
            scope: Some("scim:write scim:read".into()),
            audience: Some("fake-consumer".into()),
            client_auth,
        };
        ep
    }

    /// The next `n` requests the fault applies to get it instead of their answer.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.state.lock().faults.push(Armed {
            fault,
            remaining: Some(n),
        });
    }

    /// Every request the fault applies to gets it, until `reset`.
    pub fn fail_always(&self, fault: Fault) {
        self.state.lock().faults.push(Armed {
            fault,
            remaining: None,
        });
    }

    /// Back to answering normally.
    pub fn reset(&self) {
        self.state.lock().faults.clear();
    }

    pub fn set_patch_reply(&self, reply: PatchReply) {
        self.state.lock().patch_reply = reply;
    }

    /// The Content-Type of its answers (`application/scim+json` unless set).
    pub fn set_content_type(&self, content_type: &'static str) {
        self.state.lock().content_type = content_type;
    }

    /// Lifetime (`expires_in`) of the access tokens issued from now on.
    pub fn set_token_ttl(&self, seconds: u64) {
        self.state.lock().token_ttl = seconds;
    }

    /// Every access token issued so far stops being accepted.
    pub fn revoke_tokens(&self) {
        self.state.lock().tokens.clear();
    }

    pub fn tokens_issued(&self) -> u64 {
        self.state.lock().tokens_issued
    }

    /// Every request received, in order of arrival.
    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().log.clone()
    }

    /// Requests with this method whose path starts with `path_prefix` (e.g. "/Users").
    pub fn requests_matching(&self, method: &str, path_prefix: &str) -> Vec<Received> {
        self.state
            .lock()
            .log
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    pub fn clear_requests(&self) {
        self.state.lock().log.clear();
    }

    /// Writes carried out (creates, replaces, patches, deletes that succeeded).
    pub fn ingested(&self) -> u64 {
        self.state.lock().ingested
    }

    /// The resources of "Users" or "Groups", in creation order.
    pub fn resources(&self, kind: &str) -> Vec<Value> {
        let inner = self.state.lock();
        let store = if kind == "Groups" {
            &inner.groups
        } else {
            &inner.users
        };
        store.values().cloned().collect()
    }

    pub fn resource(&self, kind: &str, id: &str) -> Option<Value> {
        let inner = self.state.lock();
        let store = if kind == "Groups" {
            &inner.groups
        } else {
            &inner.users
        };
        store.get(id).cloned()
    }

    /// Puts an account in place as if it had been there before (not logged, not counted).
    pub fn seed(&self, kind: &str, doc: Value) -> Value {
        let mut inner = self.state.lock();
        let base = self.base_url.clone();
        insert_new(&mut inner, kind, doc, &base)
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn insert_new(inner: &mut Inner, kind: &str, mut doc: Value, base: &str) -> Value {
    let id = uuid::Uuid::new_v4().to_string();
    doc["id"] = json!(id);
    stamp(inner, kind, &mut doc, base, None);
    store_mut(inner, kind).insert(id, doc.clone());
    doc
}

fn store_mut<'a>(inner: &'a mut Inner, kind: &str) -> &'a mut Map<String, Value> {
    if kind == "Groups" {
        &mut inner.groups
    } else {
        &mut inner.users
    }
}

fn stamp(inner: &mut Inner, kind: &str, doc: &mut Value, base: &str, created: Option<Value>) {
    let now = chrono::Utc::now().to_rfc3339();
    let version = inner.next_version;
    inner.next_version += 1;
    let id = doc["id"].as_str().unwrap_or_default().to_owned();
    let (resource_type, schema) = if kind == "Groups" {
        ("Group", GROUP_SCHEMA)
    } else {
        ("User", USER_SCHEMA)
    };
    if doc.get("schemas").is_none() {
        doc["schemas"] = json!([schema]);
    }
    doc["meta"] = json!({
        "resourceType": resource_type,
        "created": created.unwrap_or_else(|| json!(now)),
        "lastModified": now,
        "location": format!("{base}/{kind}/{id}"),
        "version": format!("W/\"{version}\""),
    });
}

fn error(status: u16, scim_type: Option<&str>, detail: &str) -> HttpResponse {
    let mut body =
        json!({"schemas": [ERROR_SCHEMA], "status": status.to_string(), "detail": detail});
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .insert_header(("Content-Type", "application/scim+json"))
        .body(body.to_string())
}

fn resource_reply(status: u16, doc: &Value, content_type: &str) -> HttpResponse {
    let mut r = HttpResponse::build(StatusCode::from_u16(status).unwrap());
    r.insert_header(("Content-Type", content_type));
    if let Some(v) = doc["meta"]["version"].as_str() {
        r.insert_header(("ETag", v.to_owned()));
    }
    if status == 201
        && let Some(l) = doc["meta"]["location"].as_str()
    {
        r.insert_header(("Location", l.to_owned()));
    }
    r.body(doc.to_string())
}

fn parse_query(raw: &str) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(raw)
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

async fn dispatch(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<State>>,
) -> HttpResponse {
    let method = req.method().as_str().to_owned();
    let full_path = req.path().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let authorization = header("authorization");
    let content_type = header("content-type");
    let query = parse_query(req.query_string());
    let is_token = full_path == TOKEN_PATH;
    let parsed_body = if body.is_empty() {
        None
    } else if is_token {
        Some(Value::Object(
            parse_query(&String::from_utf8_lossy(&body))
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ))
    } else {
        serde_json::from_slice::<Value>(&body).ok()
    };
    let path = full_path
        .strip_prefix(SCIM_BASE)
        .unwrap_or(&full_path)
        .to_owned();
    let entry = {
        let mut inner = state.lock();
        inner.log.push(Received {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: parsed_body.clone(),
            authorization: authorization.clone(),
            content_type: content_type.clone(),
            at: Instant::now(),
            status: 0,
        });
        inner.log.len() - 1
    };
    let (resp, delay) = if is_token {
        (
            token_endpoint(&state, &method, authorization.as_deref(), parsed_body),
            None,
        )
    } else {
        scim(
            &state,
            &req,
            &method,
            &path,
            &query,
            authorization.as_deref(),
            &body,
        )
    };
    if let Some(r) = state.lock().log.get_mut(entry) {
        r.status = resp.status().as_u16();
    }
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    resp
}

fn token_endpoint(
    state: &State,
    method: &str,
    authorization: Option<&str>,
    form: Option<Value>,
) -> HttpResponse {
    let oauth_error = |status: StatusCode, code: &str| {
        HttpResponse::build(status)
            .insert_header(("Content-Type", "application/json"))
            .body(
                json!({"error": code, "error_description": format!("fake consumer: {code}")})
                    .to_string(),
            )
    };
    if method != "POST" {
        return oauth_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request");
    }
    let form = form.unwrap_or_else(|| json!({}));
    let field = |k: &str| form.get(k).and_then(Value::as_str).map(str::to_owned);
    if field("grant_type").as_deref() != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let credentials = match authorization.and_then(|a| a.strip_prefix("Basic ")) {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|pair| {
                let (id, secret) = pair.split_once(':')?;
                // RFC 6749 §2.3.1: form-encoded before base64.
                let decode = |s: &str| parse_query(&format!("x={s}")).remove("x");
                Some((decode(id)?, decode(secret)?))
            }),
        None => field("client_id").zip(field("client_secret")),
    };
    match credentials {
        Some((id, secret)) if id == state.client_id && secret == state.client_secret => {}
        _ => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client"),
    }
    let mut inner = state.lock();
    inner.tokens_issued += 1;
    let token = format!(
        "at-{}-{}",
        inner.tokens_issued,
        uuid::Uuid::new_v4().simple()
    );
    let ttl = inner.token_ttl;
    inner
        .tokens
        .insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
    HttpResponse::Ok()
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Cache-Control", "no-store"))
        .body(json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl}).to_string())
}

fn authorized(state: &State, inner: &Inner, authorization: Option<&str>) -> bool {
    let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
        return false;
    };
    token == state.token
        || inner
            .tokens
            .get(token)
            .is_some_and(|until| Instant::now() < *until)
}

fn scim(
    state: &State,
    req: &HttpRequest,
    method: &str,
    path: &str,
    query: &HashMap<String, String>,
    authorization: Option<&str>,
    body: &[u8],
) -> (HttpResponse, Option<Duration>) {
    let mut inner = state.lock();
    if !authorized(state, &inner, authorization) {
        let mut r = error(401, None, "missing or invalid bearer token");
        r.headers_mut().insert(
            actix_web::http::header::WWW_AUTHENTICATE,
            actix_web::http::header::HeaderValue::from_static("Bearer realm=\"fake\""),
        );
        return (r, None);
    }
    let mut delay = None;
    if let Some(i) = inner.faults.iter().position(|a| a.fault.applies_to(method)) {
        let fault = inner.faults[i].fault.clone();
        if let Some(n) = &mut inner.faults[i].remaining {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.faults.remove(i);
            }
        }
        match fault {
            Fault::ServerError => return (error(500, None, "fake consumer: internal error"), None),
            Fault::Status(s) => return (error(s, None, "fake consumer: switched status"), None),
            Fault::TooManyRequests(retry_after) => {
                let mut r = error(429, None, "fake consumer: slow down");
                if let Some(v) = retry_after {
                    r.headers_mut().insert(
                        actix_web::http::header::RETRY_AFTER,
                        actix_web::http::header::HeaderValue::from_str(&v).unwrap(),
                    );
                }
                return (r, None);
            }
            Fault::ConflictOnCreate => {
                return (
                    error(409, Some("uniqueness"), "fake consumer: account exists"),
                    None,
                );
            }
            Fault::NotFoundOnUpdate => {
                return (error(404, None, "fake consumer: no such resource"), None);
            }
            Fault::Delay(d) => delay = Some(d),
        }
    }
    let base = format!(
        "{}://{}{SCIM_BASE}",
        req.connection_info().scheme(),
        req.connection_info().host()
    );
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let kind = segments.next().unwrap_or_default().to_owned();
    let id = segments.next().map(str::to_owned);
    if kind != "Users" && kind != "Groups" {
        return (error(404, None, &format!("no endpoint {path}")), delay);
    }
    let content_type = inner.content_type;
    let parse = || match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Some(v),
        _ => None,
    };
    let not_an_object = || error(400, Some("invalidSyntax"), "body is not a JSON object");
    let resp = match (method, id) {
        ("POST", None) => match parse() {
            None => not_an_object(),
            Some(doc) => create(&mut inner, &kind, doc, &base, content_type),
        },
        ("GET", None) => list(&inner, &kind, query, content_type),
        ("GET", Some(id)) => match store_mut(&mut inner, &kind).get(&id) {
            Some(doc) => resource_reply(200, doc, content_type),
            None => error(404, None, &format!("{kind}/{id} not found")),
        },
        ("PUT", Some(id)) => match parse() {
            None => not_an_object(),
            Some(doc) => replace(&mut inner, &kind, &id, doc, &base, content_type),
        },
        ("PATCH", Some(id)) => match parse() {
            None => not_an_object(),
            Some(ops) => patch(&mut inner, &kind, &id, &ops, &base, content_type),
        },
        ("DELETE", Some(id)) => {
            if store_mut(&mut inner, &kind).shift_remove(&id).is_some() {
                inner.ingested += 1;
                HttpResponse::NoContent().finish()
            } else {
                error(404, None, &format!("{kind}/{id} not found"))
            }
        }
        _ => error(405, None, "method not allowed here"),
    };
    (resp, delay)
}

fn user_name_taken(inner: &Inner, name: &str, except: Option<&str>) -> bool {
    inner.users.iter().any(|(id, u)| {
        Some(id.as_str()) != except
            && u["userName"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
    })
}

fn create(inner: &mut Inner, kind: &str, mut doc: Value, base: &str, ct: &str) -> HttpResponse {
    if kind == "Users" {
        let Some(name) = doc["userName"].as_str().map(str::to_owned) else {
            return error(400, Some("invalidValue"), "userName is required");
        };
        if user_name_taken(inner, &name, None) {
            return error(409, Some("uniqueness"), &format!("userName {name} exists"));
        }
    } else if doc["displayName"].as_str().is_none() {
        return error(400, Some("invalidValue"), "displayName is required");
    }
    if let Some(o) = doc.as_object_mut() {
        o.remove("meta");
    }
    let doc = insert_new(inner, kind, doc, base);
    inner.ingested += 1;
    resource_reply(201, &doc, ct)
}

fn replace(
    inner: &mut Inner,
    kind: &str,
    id: &str,
    mut doc: Value,
    base: &str,
    ct: &str,
) -> HttpResponse {
    let Some(old) = store_mut(inner, kind).get(id).cloned() else {
        return error(404, None, &format!("{kind}/{id} not found"));
    };
    if kind == "Users" {
        match doc["userName"].as_str() {
            None => return error(400, Some("invalidValue"), "userName is required"),
            Some(n) if user_name_taken(inner, n, Some(id)) => {
                return error(409, Some("uniqueness"), &format!("userName {n} exists"));
            }
            Some(_) => {}
        }
    }
    doc["id"] = json!(id);
    stamp(
        inner,
        kind,
        &mut doc,
        base,
        Some(old["meta"]["created"].clone()),
    );
    store_mut(inner, kind).insert(id.to_owned(), doc.clone());
    inner.ingested += 1;
    resource_reply(200, &doc, ct)
}

fn patch(
    inner: &mut Inner,
    kind: &str,
    id: &str,
    msg: &Value,
    base: &str,
    ct: &str,
) -> HttpResponse {
    let Some(mut doc) = store_mut(inner, kind).get(id).cloned() else {
        return error(404, None, &format!("{kind}/{id} not found"));
    };
    let Some(ops) = msg["Operations"].as_array() else {
        return error(400, Some("invalidSyntax"), "PatchOp without Operations");
    };
    for op in ops {
        if let Err((scim_type, detail)) = apply_op(&mut doc, op) {
            return error(400, Some(scim_type), &detail);
        }
    }
    if kind == "Users"
        && let Some(n) = doc["userName"].as_str()
        && user_name_taken(inner, n, Some(id))
    {
        return error(409, Some("uniqueness"), &format!("userName {n} exists"));
    }
    let created = doc["meta"]["created"].clone();
    stamp(inner, kind, &mut doc, base, Some(created));
    store_mut(inner, kind).insert(id.to_owned(), doc.clone());
    inner.ingested += 1;
    match inner.patch_reply {
        PatchReply::WithBody => resource_reply(200, &doc, ct),
        PatchReply::NoContent => HttpResponse::NoContent().finish(),
    }
}

fn list(inner: &Inner, kind: &str, query: &HashMap<String, String>, ct: &str) -> HttpResponse {
    let store = if kind == "Groups" {
        &inner.groups
    } else {
        &inner.users
    };
    let filter = match query.get("filter").map(|f| parse_eq_filter(f)) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(detail)) => return error(400, Some("invalidFilter"), &detail),
    };
    let matching: Vec<&Value> = store
        .values()
        .filter(|r| match &filter {
            None => true,
            Some((attr, value)) => {
                let case_exact = attr == "externalId" || attr == "id";
                r[attr.as_str()].as_str().is_some_and(|v| {
                    if case_exact {
                        v == value
                    } else {
                        v.eq_ignore_ascii_case(value)
                    }
                })
            }
        })
        .collect();
    let start = query
        .get("startIndex")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let count = query
        .get("count")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(100);
    let page: Vec<Value> = matching
        .iter()
        .skip(start - 1)
        .take(count)
        .map(|v| (*v).clone())
        .collect();
    let body = json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": matching.len(),
        "startIndex": start,
        "itemsPerPage": page.len(),
        "Resources": page,
    });
    HttpResponse::Ok()
        .insert_header(("Content-Type", ct))
        .body(body.to_string())
}

/// `attr eq "value"` on userName, externalId, displayName or id; nothing else.
fn parse_eq_filter(filter: &str) -> Result<(String, String), String> {
    let lower = filter.to_ascii_lowercase();
    let at = lower
        .find(" eq ")
        .ok_or_else(|| format!("unsupported filter {filter:?}"))?;
    let attr = filter[..at].trim();
    let attr = ["userName", "externalId", "displayName", "id"]
        .into_iter()
        .find(|a| a.eq_ignore_ascii_case(attr))
        .ok_or_else(|| format!("unsupported filter attribute {attr:?}"))?;
    let value: String = serde_json::from_str(filter[at + 4..].trim())
        .map_err(|e| format!("bad comparison value in {filter:?}: {e}"))?;
    Ok((attr.to_owned(), value))
}

/// A PATCH path: `[urn:…:]attr[.sub]` or `attr[sub eq "v"][.sub]`.
struct PatchPath {
    urn: Option<String>,
    attr: String,
    filter: Option<(String, String)>,
    sub: Option<String>,
}

fn parse_patch_path(path: &str) -> Result<PatchPath, String> {
    let (head, bracket) = match path.find('[') {
        Some(i) => (&path[..i], Some(&path[i + 1..])),
        None => (path, None),
    };
    let (urn, rest) = if head.to_ascii_lowercase().starts_with("urn:") {
        let i = head
            .rfind(':')
            .ok_or_else(|| format!("bad path {path:?}"))?;
        (Some(head[..i].to_owned()), &head[i + 1..])
    } else {
        (None, head)
    };
    let (attr, mut sub) = match rest.split_once('.') {
        Some((a, s)) => (a.to_owned(), Some(s.to_owned())),
        None => (rest.to_owned(), None),
    };
    let mut filter = None;
    if let Some(b) = bracket {
        let close = b.find(']').ok_or_else(|| format!("bad path {path:?}"))?;
        let (attr_name, value) = parse_value_filter(&b[..close])?;
        filter = Some((attr_name, value));
        if let Some(s) = b[close + 1..].strip_prefix('.') {
            sub = Some(s.to_owned());
        }
    }
    if attr.is_empty() {
        return Err(format!("bad path {path:?}"));
    }
    Ok(PatchPath {
        urn,
        attr,
        filter,
        sub,
    })
}

fn parse_value_filter(f: &str) -> Result<(String, String), String> {
    let lower = f.to_ascii_lowercase();
    let at = lower
        .find(" eq ")
        .ok_or_else(|| format!("unsupported value filter {f:?}"))?;
    let value: String = serde_json::from_str(f[at + 4..].trim())
        .map_err(|e| format!("bad value filter {f:?}: {e}"))?;
    Ok((f[..at].trim().to_owned(), value))
}

fn get_key(obj: &Map<String, Value>, name: &str) -> Option<String> {
    obj.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

fn same_item(a: &Value, b: &Value) -> bool {
    match (a.get("value"), b.get("value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// `add` appends to a multi-valued attribute (skipping values it holds already); both `add`
/// and `replace` merge into a complex one and set anything else.
fn merge_into(container: &mut Map<String, Value>, key: String, v: Value, add: bool) {
    match (container.get_mut(&key), v) {
        (Some(Value::Array(existing)), v) if add => {
            let items = match v {
                Value::Array(items) => items,
                one => vec![one],
            };
            for item in items {
                if !existing.iter().any(|e| same_item(e, &item)) {
                    existing.push(item);
                }
            }
        }
        (Some(Value::Object(existing)), Value::Object(new)) => existing.extend(new),
        (_, v) => {
            container.insert(key, v);
        }
    }
}

fn apply_op(doc: &mut Value, op: &Value) -> Result<(), (&'static str, String)> {
    let kind = op["op"]
        .as_str()
        .map(str::to_ascii_lowercase)
        .ok_or(("invalidSyntax", "operation without op".to_owned()))?;
    let value = op.get("value").cloned();
    let Some(path) = op["path"].as_str() else {
        let Some(Value::Object(fields)) = value else {
            return Err(("invalidValue", "no path needs an object value".into()));
        };
        if kind == "remove" {
            return Err(("noTarget", "remove needs a path".into()));
        }
        for (k, v) in fields {
            merge_into(doc.as_object_mut().unwrap(), k, v, kind == "add");
        }
        return Ok(());
    };
    let p = parse_patch_path(path).map_err(|e| ("invalidPath", e))?;
    let root = doc.as_object_mut().unwrap();
    let container = match &p.urn {
        Some(urn) if !urn.starts_with("urn:ietf:params:scim:schemas:core:") => {
            let key = get_key(root, urn).unwrap_or_else(|| urn.clone());
            root.entry(key).or_insert_with(|| json!({}));
            let key = get_key(root, urn).unwrap();
            root.get_mut(&key)
                .and_then(Value::as_object_mut)
                .ok_or(("invalidPath", format!("{urn} is not an object")))?
        }
        _ => root,
    };
    let key = get_key(container, &p.attr).unwrap_or_else(|| p.attr.clone());
    match (&kind[..], &p.filter, &p.sub) {
        ("add" | "replace", None, None) => {
            let v = value.ok_or(("invalidValue", "add/replace needs a value".into()))?;
            merge_into(container, key, v, kind == "add");
        }
        ("add" | "replace", None, Some(sub)) => {
            let v = value.ok_or(("invalidValue", "add/replace needs a value".into()))?;
            let target = container.entry(key).or_insert_with(|| json!({}));
            match target {
                Value::Object(o) => {
                    o.insert(sub.clone(), v);
                }
                Value::Array(items) => {
                    for item in items.iter_mut().filter_map(Value::as_object_mut) {
                        item.insert(sub.clone(), v.clone());
                    }
                }
                _ => return Err(("invalidPath", format!("{path} has no sub-attributes"))),
            }
        }
        ("remove", None, None) => {
            let is_list = matches!(container.get(&key), Some(Value::Array(_)));
            match (container.get_mut(&key), value) {
                (Some(Value::Array(existing)), Some(v)) if is_list => {
                    let gone = match v {
                        Value::Array(items) => items,
                        one => vec![one],
                    };
                    existing.retain(|e| !gone.iter().any(|g| same_item(e, g)));
                }
                _ => {
                    container.remove(&key);
                }
            }
        }
        ("remove", None, Some(sub)) => match container.get_mut(&key) {
            Some(Value::Object(o)) => {
                o.remove(sub);
            }
            Some(Value::Array(items)) => {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    item.remove(sub);
                }
            }
            _ => {}
        },
        (_, Some((fattr, fvalue)), sub) => {
            let Some(Value::Array(items)) = container.get_mut(&key) else {
                return Err(("noTarget", format!("{path} matches nothing")));
            };
            let matches = |item: &Value| {
                item.as_object()
                    .and_then(|o| get_key(o, fattr).and_then(|k| o.get(&k)))
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.eq_ignore_ascii_case(fvalue))
            };
            if !items.iter().any(matches) {
                return Err(("noTarget", format!("{path} matches nothing")));
            }
            match (&kind[..], sub) {
                ("remove", None) => items.retain(|i| !matches(i)),
                ("remove", Some(sub)) => {
                    for item in items.iter_mut().filter(|i| matches(i)) {
                        if let Some(o) = item.as_object_mut() {
                            o.remove(sub);
                        }
                    }
                }
                (_, Some(sub)) => {
                    let v = value.ok_or(("invalidValue", "add/replace needs a value".into()))?;
                    for item in items.iter_mut().filter(|i| matches(i)) {
                        if let Some(o) = item.as_object_mut() {
                            o.insert(sub.clone(), v.clone());
                        }
                    }
                }
                (_, None) => {
                    let Some(Value::Object(new)) = value else {
                        return Err(("invalidValue", "a filtered replace needs an object".into()));
                    };
                    for item in items.iter_mut().filter(|i| matches(i)) {
                        if let Some(o) = item.as_object_mut() {
                            o.extend(new.clone());
                        }
                    }
                }
            }
        }
        (other, _, _) => return Err(("invalidSyntax", format!("unknown op {other:?}"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patched(doc: Value, ops: Value) -> Value {
        let mut doc = doc;
        for op in ops.as_array().unwrap() {
            apply_op(&mut doc, op).unwrap_or_else(|e| panic!("{op}: {e:?}"));
        }
        doc
    }

    #[test]
    fn patch_paths_and_values() {
        let enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        let doc = json!({
            "userName": "u",
            "title": "Nurse",
            "name": {"givenName": "A", "familyName": "B"},
            "emails": [{"value": "w@x", "type": "work"}],
        });
        let out = patched(
            doc,
            json!([
                {"op": "add", "path": "emails", "value": [{"value": "h@x", "type": "home"}, {"value": "w@x", "type": "work"}]},
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w2@x"},
                {"op": "replace", "path": "name.familyName", "value": "C"},
                {"op": "add", "path": format!("{enterprise}:employeeNumber"), "value": "7"},
                {"op": "remove", "path": "title"},
                {"op": "replace", "value": {"displayName": "D", "name": {"givenName": "E"}}},
            ]),
        );
        assert_eq!(
            out["emails"],
            json!([{"value": "w2@x", "type": "work"}, {"value": "h@x", "type": "home"}])
        );
        assert_eq!(out["name"], json!({"givenName": "E", "familyName": "C"}));
        assert_eq!(out[enterprise]["employeeNumber"], "7");
        assert_eq!(out["displayName"], "D");
        assert!(out.get("title").is_none());
    }

    #[test]
    fn member_deltas() {
        let doc = json!({"displayName": "G", "members": [{"value": "a"}, {"value": "b"}]});
        let out = patched(
            doc,
            json!([
                {"op": "add", "path": "members", "value": [{"value": "c"}, {"value": "a"}]},
                {"op": "remove", "path": "members[value eq \"b\"]"},
                {"op": "remove", "path": "members", "value": [{"value": "a"}]},
            ]),
        );
        assert_eq!(out["members"], json!([{"value": "c"}]));
        let mut doc = out;
        let missing = json!({"op": "remove", "path": "members[value eq \"zz\"]"});
        assert_eq!(apply_op(&mut doc, &missing).unwrap_err().0, "noTarget");
        let all = patched(doc, json!([{"op": "remove", "path": "members"}]));
        assert!(all.get("members").is_none());
    }

    #[test]
    fn list_filters() {
        assert_eq!(
            parse_eq_filter(r#"username EQ "a\"b""#).unwrap(),
            ("userName".to_owned(), "a\"b".to_owned())
        );
        assert!(parse_eq_filter(r#"title eq "x""#).is_err());
        assert!(parse_eq_filter("userName pr").is_err());
    }
}
