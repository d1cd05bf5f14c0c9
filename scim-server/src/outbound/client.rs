//! The SCIM client the delivery worker uses to push to one consumer.
//!
//! A `ScimClient` is built once per consumer from its `ConsumerEndpoint` (base URL, auth, TLS,
//! timeouts) and shared by all of that consumer's deliveries: it keeps the connection pool and,
//! for OAuth2 client credentials (RFC 6749 §4.4), the cached access token.
//!
//! Every call ends in a `ScimResponse` (any 2xx, with or without a body: consumers differ on
//! 200-with-body versus 204) or a `DeliveryError` that says what went wrong in terms the retry
//! logic needs: transport failure, timeout, TLS, an HTTP status with the consumer's SCIM error
//! (`scimType`, `detail`, `Retry-After`), an unusable answer, or failed authentication.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, ETAG, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER,
};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use thiserror::Error;
use tokio::sync::Mutex;

use super::duration;
use crate::error::ServerError;
use crate::wire::{PATCH_SCHEMA, SCIM_CONTENT_TYPE};

/// What `redacted()` puts in place of a secret.
pub const REDACTED: &str = "********";

const ACCEPT_SCIM: &str = "application/scim+json, application/json;q=0.9";
/// Reconcile reads pages of whole accounts; anything bigger than this is not a SCIM answer.
const MAX_RESPONSE_BYTES: usize = 32 << 20;
const MAX_TOKEN_RESPONSE_BYTES: usize = 1 << 20;
/// Error details end up in audit rows and the admin UI; a consumer's HTML error page does not
/// belong there whole.
const MAX_DETAIL_CHARS: usize = 500;

/// A credential inside stored settings. Serialized in full (the settings are stored with it);
/// `Debug` never shows it, and `ConsumerEndpoint::redacted` gives the form to display.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether this is the placeholder of a redacted view sent back unchanged.
    pub fn is_redacted(&self) -> bool {
        self.0 == REDACTED
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

/// How the hub talks to one consumer over HTTP. Stored as JSON with the consumer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerEndpoint {
    /// The SCIM base URL, e.g. `https://pacs.example.org/scim/v2`; paths such as `/Users` are
    /// appended to it.
    pub base_url: String,
    #[serde(default)]
    pub auth: ConsumerAuth,
    /// Whole request, connection to last byte of the answer.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Extra trusted CA certificates (PEM, one or more), in addition to the system's roots: for
    /// consumers with an in-house CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Skips certificate verification altogether. Test rigs only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_invalid_certs: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl ConsumerEndpoint {
    /// An endpoint with default timeouts and TLS settings.
    pub fn new(base_url: impl Into<String>, auth: ConsumerAuth) -> ConsumerEndpoint {
        ConsumerEndpoint {
            base_url: base_url.into(),
            auth,
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            ca_pem: None,
            accept_invalid_certs: false,
        }
    }

    /// A copy fit for display: every secret replaced by `REDACTED`.
    pub fn redacted(&self) -> ConsumerEndpoint {
        let mut copy = self.clone();
        match &mut copy.auth {
            ConsumerAuth::None => {}
            ConsumerAuth::Bearer { token } => *token = Secret::new(REDACTED),
            ConsumerAuth::OAuth2ClientCredentials { client_secret, .. } => {
                *client_secret = Secret::new(REDACTED)
            }
        }
        copy
    }

    /// Settings edited from a redacted view come back with `REDACTED` where the secret was
    /// left untouched: take the secret from the settings they replace.
    pub fn keep_secrets_from(&mut self, previous: &ConsumerEndpoint) {
        match (&mut self.auth, &previous.auth) {
            (ConsumerAuth::Bearer { token }, ConsumerAuth::Bearer { token: old })
                if token.is_redacted() =>
            {
                *token = old.clone()
            }
            (
                ConsumerAuth::OAuth2ClientCredentials { client_secret, .. },
                ConsumerAuth::OAuth2ClientCredentials {
                    client_secret: old, ..
                },
            ) if client_secret.is_redacted() => *client_secret = old.clone(),
            _ => {}
        }
    }

    /// Checks everything that can be checked without contacting the consumer; the message
    /// names the setting at fault.
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |m: String| ServerError::bad("invalidValue", m);
        http_url("base_url", &self.base_url).map_err(bad)?;
        if self.timeout.is_zero() {
            return Err(bad("timeout must be greater than zero".into()));
        }
        if self.connect_timeout.is_zero() {
            return Err(bad("connect_timeout must be greater than zero".into()));
        }
        if let Some(pem) = &self.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| bad(format!("ca_pem: {}", error_chain(&e))))?;
            if certs.is_empty() {
                return Err(bad("ca_pem holds no PEM certificate".into()));
            }
        }
        match &self.auth {
            ConsumerAuth::None => {}
            ConsumerAuth::Bearer { token } => {
                if token.expose().is_empty() {
                    return Err(bad("auth.token must not be empty".into()));
                }
                if token.is_redacted() {
                    return Err(bad("auth.token is the redaction placeholder".into()));
                }
                HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| bad("auth.token holds characters not allowed in HTTP".into()))?;
            }
            ConsumerAuth::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                ..
            } => {
                http_url("auth.token_url", token_url).map_err(bad)?;
                if client_id.is_empty() {
                    return Err(bad("auth.client_id must not be empty".into()));
                }
                if client_secret.is_redacted() {
                    return Err(bad("auth.client_secret is the redaction placeholder".into()));
                }
            }
        }
        Ok(())
    }
}

fn http_url(name: &str, value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("{name}: {e} ({value:?})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{name}: must be an http or https URL ({value:?})"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{name}: has no host ({value:?})"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{name}: must not have a query or fragment ({value:?})"
        ));
    }
    Ok(url)
}

/// How the hub proves itself to a consumer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum ConsumerAuth {
    #[default]
    #[serde(rename = "none")]
    None,
    /// A static bearer token (RFC 6750).
    #[serde(rename = "bearer")]
    Bearer { token: Secret },
    /// Access tokens obtained with the client-credentials grant (RFC 6749 §4.4), cached until
    /// shortly before they expire, and renewed once when the consumer answers 401.
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: Secret,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        /// Sent as the `audience` parameter, which several identity providers require.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audience: Option<String>,
        #[serde(default)]
        client_auth: ClientAuthMethod,
    },
}

impl ConsumerAuth {
    pub fn bearer(token: impl Into<String>) -> ConsumerAuth {
        ConsumerAuth::Bearer {
            token: Secret::new(token),
        }
    }
}

/// Where the client credentials go in the token request (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic, which every authorization server must support.
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

/// A consumer's successful (2xx) answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ScimResponse {
    pub status: u16,
    /// `None` for 204 and for any other answer without a body.
    pub body: Option<Value>,
    pub location: Option<String>,
    pub etag: Option<String>,
    /// From sending the request to reading the last byte of the answer.
    pub latency: Duration,
}

impl ScimResponse {
    /// The consumer-side id of the resource: the body's `id`, or else the last segment of
    /// `Location` (consumers that answer a create with 201 and no body).
    pub fn id(&self) -> Option<String> {
        if let Some(id) = self
            .body
            .as_ref()
            .and_then(|b| b.get("id"))
            .and_then(Value::as_str)
        {
            return Some(id.to_owned());
        }
        let location = self.location.as_deref()?;
        let path = location.split(['?', '#']).next()?;
        let last = path.trim_end_matches('/').rsplit('/').next()?;
        (!last.is_empty()).then(|| last.to_owned())
    }
}

/// Why a delivery attempt failed. This is a delivery outcome (recorded, retried or
/// dead-lettered), not an error of the hub.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum DeliveryError {
    /// No answer: connection refused or reset, DNS failure, body cut short.
    #[error("network: {0}")]
    Network(String),
    #[error("timed out")]
    Timeout,
    /// The consumer answered with a non-2xx status.
    #[error("HTTP {status}{}: {detail}", scim_type.as_ref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Status {
        status: u16,
        scim_type: Option<String>,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The TLS handshake failed: untrusted or invalid certificate, protocol mismatch.
    #[error("TLS: {0}")]
    Tls(String),
    /// A 2xx answer the client cannot use (not JSON, too large, not a ListResponse).
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// No access token could be obtained: the token endpoint refused the credentials or gave
    /// an unusable answer.
    #[error("authentication: {0}")]
    Auth(String),
    /// A lookup meant to find one account found several.
    #[error("ambiguous: {0}")]
    Ambiguous(String),
    /// The request could not be formed (bad path or attribute name); a caller's mistake.
    #[error("request: {0}")]
    Request(String),
}

impl DeliveryError {
    /// Worth trying again later: the consumer may recover (no answer, timeout, 5xx, 429,
    /// 408). Other 4xx and local problems stay the same however often they are retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            DeliveryError::Network(_) | DeliveryError::Timeout => true,
            DeliveryError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            DeliveryError::Tls(_)
            | DeliveryError::InvalidResponse(_)
            | DeliveryError::Auth(_)
            | DeliveryError::Ambiguous(_)
            | DeliveryError::Request(_) => false,
        }
    }

    /// How long the consumer asked us to wait (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The consumer's HTTP status, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            DeliveryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn scim_type(&self) -> Option<&str> {
        match self {
            DeliveryError::Status { scim_type, .. } => scim_type.as_deref(),
            _ => None,
        }
    }

    /// A short stable name for audit rows and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DeliveryError::Network(_) => "network",
            DeliveryError::Timeout => "timeout",
            DeliveryError::Status { .. } => "status",
            DeliveryError::Tls(_) => "tls",
            DeliveryError::InvalidResponse(_) => "invalid_response",
            DeliveryError::Auth(_) => "auth",
            DeliveryError::Ambiguous(_) => "ambiguous",
            DeliveryError::Request(_) => "request",
        }
    }
}

/// A SCIM client bound to one consumer. Cheap to clone; clones share connections and tokens.
#[derive(Clone)]
pub struct ScimClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

enum Auth {
    None,
    Bearer(String),
    OAuth2(Box<OAuth2>),
}

impl fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScimClient")
            .field("base_url", &self.inner.base)
            .finish_non_exhaustive()
    }
}

impl ScimClient {
    pub fn new(endpoint: &ConsumerEndpoint) -> Result<ScimClient, ServerError> {
        endpoint.validate()?;
        // reqwest is built without a crypto provider of its own and panics without a
        // process default; ring is the one provider of this workspace.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut builder = reqwest::Client::builder()
            .timeout(endpoint.timeout)
            .connect_timeout(endpoint.connect_timeout)
            // A redirected write is not a delivery: surface the 3xx instead of re-sending
            // (or, for 301/302, turning a POST into a GET).
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("scimhub/", env!("CARGO_PKG_VERSION")))
            .tls_danger_accept_invalid_certs(endpoint.accept_invalid_certs);
        if let Some(pem) = &endpoint.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| ServerError::Outbound(format!("ca_pem: {}", error_chain(&e))))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| ServerError::Outbound(error_chain(&e)))?;
        let auth = match &endpoint.auth {
            ConsumerAuth::None => Auth::None,
            ConsumerAuth::Bearer { token } => Auth::Bearer(token.expose().to_owned()),
            ConsumerAuth::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
                audience,
                client_auth,
            } => Auth::OAuth2(Box::new(OAuth2 {
                token_url: http_url("auth.token_url", token_url).map_err(ServerError::Outbound)?,
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                scope: scope.clone(),
                audience: audience.clone(),
                method: *client_auth,
                cache: Mutex::new(None),
            })),
        };
        Ok(ScimClient {
            inner: Arc::new(Inner {
                http,
                base: endpoint.base_url.trim_end_matches('/').to_owned(),
                auth,
            }),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The path of one resource: `endpoint` (e.g. `/Users`) and the consumer-side id as one
    /// percent-encoded segment, whatever characters the consumer put in its ids.
    pub fn resource_path(endpoint: &str, id: &str) -> String {
        format!(
            "{}/{}",
            endpoint.trim_end_matches('/'),
            percent_encode(id, false)
        )
    }

    /// POST `body` to `endpoint` (e.g. `/Users`).
    pub async fn create(
        &self,
        endpoint: &str,
        body: &Value,
    ) -> Result<ScimResponse, DeliveryError> {
        self.send(Method::POST, endpoint, &[], Some(body)).await
    }

    /// PUT `body` to `path` (e.g. `/Users/{id}`).
    pub async fn replace(&self, path: &str, body: &Value) -> Result<ScimResponse, DeliveryError> {
        self.send(Method::PUT, path, &[], Some(body)).await
    }

    /// PATCH `path` with a PatchOp message of `ops` (RFC 7644 §3.5.2).
    pub async fn patch(&self, path: &str, ops: &[Value]) -> Result<ScimResponse, DeliveryError> {
        let body = json!({ "schemas": [PATCH_SCHEMA], "Operations": ops });
        self.send(Method::PATCH, path, &[], Some(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<ScimResponse, DeliveryError> {
        self.send(Method::DELETE, path, &[], None).await
    }

    pub async fn get(&self, path: &str) -> Result<ScimResponse, DeliveryError> {
        self.send(Method::GET, path, &[], None).await
    }

    /// GET with query parameters (e.g. `attributes`, `filter`), encoded here.
    pub async fn get_with(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<ScimResponse, DeliveryError> {
        self.send(Method::GET, path, query, None).await
    }

    /// The one resource at `endpoint` whose `attr` equals `value`, by `filter=attr eq "value"`.
    /// Results whose `attr` visibly differs are dropped (some consumers ignore filters and
    /// list everything); more than one remaining match is `Ambiguous`, since linking to the
    /// wrong account would be worse than not linking.
    pub async fn find_by(
        &self,
        endpoint: &str,
        attr: &str,
        value: &str,
    ) -> Result<Option<Value>, DeliveryError> {
        let filter = eq_filter(attr, value)?;
        let resp = self
            .send(Method::GET, endpoint, &[("filter", &filter)], None)
            .await?;
        let (resources, _) = list_resources(resp.body)?;
        let mut found: Vec<Value> = resources
            .into_iter()
            .filter(|r| attr_matches(r, attr, value) != Some(false))
            .collect();
        match found.len() {
            0 | 1 => Ok(found.pop()),
            n => Err(DeliveryError::Ambiguous(format!(
                "{n} resources at {endpoint} match {filter}"
            ))),
        }
    }

    /// Every resource at `endpoint`, read in pages of `page_size` with index pagination
    /// (`startIndex`/`count`) until `totalResults` is reached.
    pub async fn list_all(
        &self,
        endpoint: &str,
        page_size: usize,
    ) -> Result<Vec<Value>, DeliveryError> {
        let page_size = page_size.max(1);
        let count = page_size.to_string();
        let mut all = Vec::new();
        let mut start = 1usize;
        let mut previous_first: Option<Value> = None;
        loop {
            let index = start.to_string();
            let resp = self
                .send(
                    Method::GET,
                    endpoint,
                    &[("startIndex", &index), ("count", &count)],
                    None,
                )
                .await?;
            let (page, total) = list_resources(resp.body)?;
            let n = page.len();
            if n == 0 {
                break;
            }
            // A consumer that ignores startIndex would otherwise be read forever.
            let first = page[0].get("id").cloned();
            if first.is_some() && first == previous_first {
                return Err(DeliveryError::InvalidResponse(format!(
                    "{endpoint} returned the same page for startIndex {start}: startIndex is ignored"
                )));
            }
            previous_first = first;
            all.extend(page);
            match total {
                Some(total) if all.len() as u64 >= total => break,
                None if n < page_size => break,
                _ => start += n,
            }
        }
        Ok(all)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<ScimResponse, DeliveryError> {
        let url = self.url(path)?;
        let payload = body.map(|b| b.to_string().into_bytes());
        let mut token = match &self.inner.auth {
            Auth::None => None,
            Auth::Bearer(t) => Some(t.clone()),
            Auth::OAuth2(o) => Some(o.token(&self.inner.http).await?),
        };
        let mut renewed = false;
        loop {
            let mut req = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .header(ACCEPT, ACCEPT_SCIM);
            if !query.is_empty() {
                req = req.query(query);
            }
            if let Some(p) = &payload {
                req = req.header(CONTENT_TYPE, SCIM_CONTENT_TYPE).body(p.clone());
            }
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let started = Instant::now();
            let resp = req.send().await.map_err(classify)?;
            if resp.status() == StatusCode::UNAUTHORIZED
                && !renewed
                && let Auth::OAuth2(o) = &self.inner.auth
            {
                // Tokens can be revoked or expire early (clock skew, key rotation).
                token = Some(o.renew(&self.inner.http, token.as_deref()).await?);
                renewed = true;
                continue;
            }
            return read_response(resp, started).await;
        }
    }

    fn url(&self, path: &str) -> Result<Url, DeliveryError> {
        if path.contains(['?', '#']) {
            return Err(DeliveryError::Request(format!(
                "path {path:?} must not carry a query or fragment"
            )));
        }
        let joined = if path.starts_with('/') {
            format!("{}{path}", self.inner.base)
        } else {
            format!("{}/{path}", self.inner.base)
        };
        Url::parse(&joined)
            .map_err(|e| DeliveryError::Request(format!("invalid path {path:?}: {e}")))
    }
}

/// `attr eq "value"` with `value` as a JSON string (RFC 7644 §3.4.2.2: compValue is JSON), so
/// quotes and backslashes in it cannot end the string early. `attr` must be an attribute path.
pub fn eq_filter(attr: &str, value: &str) -> Result<String, DeliveryError> {
    let valid = attr.starts_with(|c: char| c.is_ascii_alphabetic())
        && !attr.ends_with(['.', ':'])
        && attr
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '_' | '-' | '$'));
    if !valid {
        return Err(DeliveryError::Request(format!(
            "{attr:?} is not an attribute path"
        )));
    }
    Ok(format!("{attr} eq {}", Value::String(value.to_owned())))
}

/// `Some(false)` when the resource shows `attr` with values none of which is `value`
/// (compared case-insensitively, as most matching attributes are caseExact=false); `None`
/// when the resource does not show the attribute.
fn attr_matches(resource: &Value, attr: &str, value: &str) -> Option<bool> {
    let obj = resource.as_object()?;
    let (container, rest) = if attr.len() > 4 && attr[..4].eq_ignore_ascii_case("urn:") {
        let key = obj
            .keys()
            .filter(|k| {
                attr.len() > k.len()
                    && attr.is_char_boundary(k.len())
                    && attr[..k.len()].eq_ignore_ascii_case(k)
                    && attr.as_bytes()[k.len()] == b':'
            })
            .max_by_key(|k| k.len())?;
        (obj.get(key)?.as_object()?, &attr[key.len() + 1..])
    } else {
        (obj, attr)
    };
    let mut parts = rest.splitn(2, '.');
    let top = get_ci(container, parts.next()?)?;
    let sub = parts.next();
    let candidates: Vec<&Value> = match top {
        Value::Array(items) => items
            .iter()
            .filter_map(|i| match sub {
                Some(s) => i.as_object().and_then(|o| get_ci(o, s)),
                None => Some(i),
            })
            .collect(),
        other => match sub {
            Some(s) => other
                .as_object()
                .and_then(|o| get_ci(o, s))
                .into_iter()
                .collect(),
            None => vec![other],
        },
    };
    let strings: Vec<&str> = candidates.iter().filter_map(|v| v.as_str()).collect();
    if strings.is_empty() {
        return None;
    }
    Some(strings.iter().any(|s| s.eq_ignore_ascii_case(value)))
}

fn get_ci<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// The `Resources` and `totalResults` of a ListResponse.
fn list_resources(body: Option<Value>) -> Result<(Vec<Value>, Option<u64>), DeliveryError> {
    let Some(Value::Object(mut obj)) = body else {
        return Err(DeliveryError::InvalidResponse(
            "expected a ListResponse object".into(),
        ));
    };
    let total = obj.get("totalResults").and_then(Value::as_u64);
    let resources = match obj.remove("Resources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(DeliveryError::InvalidResponse(
                "ListResponse Resources is not an array".into(),
            ));
        }
    };
    Ok((resources, total))
}

async fn read_response(
    resp: reqwest::Response,
    started: Instant,
) -> Result<ScimResponse, DeliveryError> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = read_limited(resp, MAX_RESPONSE_BYTES).await?;
    let latency = started.elapsed();
    if !status.is_success() {
        return Err(status_error(status, &headers, &bytes, SystemTime::now()));
    }
    Ok(ScimResponse {
        status: status.as_u16(),
        body: success_body(&headers, &bytes)?,
        location: header_string(&headers, LOCATION.as_str()),
        etag: header_string(&headers, ETAG.as_str()),
        latency,
    })
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, DeliveryError> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if buf.len() + chunk.len() > limit {
            return Err(DeliveryError::InvalidResponse(format!(
                "answer larger than {limit} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    Some(ct.split(';').next()?.trim().to_ascii_lowercase())
}

fn success_body(headers: &HeaderMap, bytes: &[u8]) -> Result<Option<Value>, DeliveryError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if let Some(mt) = media_type(headers)
        && mt != "application/json"
        && !mt.ends_with("+json")
    {
        return Err(DeliveryError::InvalidResponse(format!(
            "expected a JSON body, got {mt}"
        )));
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| DeliveryError::InvalidResponse(format!("body is not JSON: {e}")))
}

fn status_error(
    status: StatusCode,
    headers: &HeaderMap,
    bytes: &[u8],
    now: SystemTime,
) -> DeliveryError {
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now));
    let reason = || {
        status
            .canonical_reason()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("status {}", status.as_u16()))
    };
    let (scim_type, detail) = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(o)) => {
            let text = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
            let detail = text("detail")
                .or_else(|| text("error_description"))
                .or_else(|| text("error"))
                .or_else(|| text("message"))
                .unwrap_or_else(reason);
            (text("scimType"), detail)
        }
        _ => {
            let text = String::from_utf8_lossy(bytes);
            let html = media_type(headers).is_some_and(|m| m.contains("html"));
            if html || text.trim().is_empty() {
                (None, reason())
            } else {
                (None, text.trim().to_owned())
            }
        }
    };
    DeliveryError::Status {
        status: status.as_u16(),
        scim_type,
        detail: truncate(detail),
        retry_after,
    }
}

fn truncate(s: String) -> String {
    match s.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s,
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, as the wait from `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// IMF-fixdate, and the obsolete RFC 850 and asctime forms recipients must still accept.
fn parse_http_date(v: &str) -> Option<SystemTime> {
    use chrono::{DateTime, NaiveDateTime, Utc};
    if let Ok(dt) = DateTime::parse_from_rfc2822(v) {
        return Some(dt.with_timezone(&Utc).into());
    }
    for format in ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(v, format) {
            return Some(naive.and_utc().into());
        }
    }
    None
}

fn classify(e: reqwest::Error) -> DeliveryError {
    if let Some(tls) = tls_cause(&e) {
        return DeliveryError::Tls(tls);
    }
    if e.is_timeout() {
        return DeliveryError::Timeout;
    }
    if e.is_builder() {
        return DeliveryError::Request(error_chain(&e));
    }
    DeliveryError::Network(error_chain(&e))
}

/// The rustls error behind a failure, if any. hyper-rustls wraps it in `io::Error`s (nested),
/// and `io::Error::source()` skips the error it wraps, so the walk goes through `get_ref`.
fn tls_cause(e: &(dyn StdError + 'static)) -> Option<String> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        current = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => err.source(),
        };
    }
    None
}

/// An error and its causes on one line, without repeating a cause its parent already quotes.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut current = e.source();
    while let Some(err) = current {
        let msg = err.to_string();
        if !msg.is_empty() && !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        current = err.source();
    }
    out
}

/// application/x-www-form-urlencoded (or, with `form == false`, a path segment): every byte
/// but unreserved characters percent-encoded.
fn percent_encode(s: &str, form: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' if form => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k, true), percent_encode(v, true)))
        .collect::<Vec<_>>()
        .join("&")
}

struct OAuth2 {
    token_url: Url,
    client_id: String,
    client_secret: Secret,
    scope: Option<String>,
    audience: Option<String>,
    method: ClientAuthMethod,
    /// Held across a fetch, so concurrent deliveries wait for one token request instead of
    /// each making their own.
    cache: Mutex<Option<AccessToken>>,
}

struct AccessToken {
    value: String,
    /// `None` when the token endpoint gave no `expires_in`: used until a 401.
    renew_at: Option<Instant>,
}

impl AccessToken {
    fn usable(&self) -> bool {
        self.renew_at.is_none_or(|at| Instant::now() < at)
    }
}

impl OAuth2 {
    async fn token(&self, http: &reqwest::Client) -> Result<String, DeliveryError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.as_ref().filter(|t| t.usable()) {
            return Ok(t.value.clone());
        }
        let fresh = self.fetch(http).await?;
        let value = fresh.value.clone();
        *cache = Some(fresh);
        Ok(value)
    }

    /// A new token after the consumer refused `rejected`, unless another request has renewed
    /// it meanwhile.
    async fn renew(
        &self,
        http: &reqwest::Client,
        rejected: Option<&str>,
    ) -> Result<String, DeliveryError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache
            .as_ref()
            .filter(|t| Some(t.value.as_str()) != rejected && t.usable())
        {
            return Ok(t.value.clone());
        }
        *cache = None;
        let fresh = self.fetch(http).await?;
        let value = fresh.value.clone();
        *cache = Some(fresh);
        Ok(value)
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<AccessToken, DeliveryError> {
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        if let Some(audience) = &self.audience {
            form.push(("audience", audience));
        }
        if self.method == ClientAuthMethod::Body {
            form.push(("client_id", &self.client_id));
            form.push(("client_secret", self.client_secret.expose()));
        }
        let mut req = http
            .post(self.token_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(form_body(&form));
        if self.method == ClientAuthMethod::Basic {
            // RFC 6749 §2.3.1: both parts are form-encoded before base64.
            let pair = format!(
                "{}:{}",
                percent_encode(&self.client_id, true),
                percent_encode(self.client_secret.expose(), true)
            );
            let mut value = HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
            .map_err(|e| DeliveryError::Request(e.to_string()))?;
            value.set_sensitive(true);
            req = req.header(AUTHORIZATION, value);
        }
        let requested = Instant::now();
        let resp = req.send().await.map_err(|e| match classify(e) {
            DeliveryError::Network(m) => DeliveryError::Network(format!("token endpoint: {m}")),
            DeliveryError::Tls(m) => DeliveryError::Tls(format!("token endpoint: {m}")),
            other => other,
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = read_limited(resp, MAX_TOKEN_RESPONSE_BYTES).await?;
        if !status.is_success() {
            return Err(
                match status_error(status, &headers, &bytes, SystemTime::now()) {
                    DeliveryError::Status {
                        status,
                        scim_type,
                        detail,
                        retry_after,
                    } if status >= 500 || status == 429 || status == 408 => DeliveryError::Status {
                        status,
                        scim_type,
                        detail: format!("token endpoint: {detail}"),
                        retry_after,
                    },
                    other => {
                        DeliveryError::Auth(format!("token endpoint refused the client: {other}"))
                    }
                },
            );
        }
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| DeliveryError::Auth(format!("token response is not JSON: {e}")))?;
        let value = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| DeliveryError::Auth("token response has no access_token".into()))?;
        if HeaderValue::from_str(value).is_err() {
            return Err(DeliveryError::Auth(
                "access_token holds characters not allowed in HTTP".into(),
            ));
        }
        if let Some(kind) = body.get("token_type").and_then(Value::as_str)
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(DeliveryError::Auth(format!(
                "token_type {kind:?} is not supported (bearer only)"
            )));
        }
        // Some servers send expires_in as a string.
        let lifetime = match body.get("expires_in") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(1e9)));
        Ok(AccessToken {
            value: value.to_owned(),
            renew_at: lifetime.map(|l| requested + l - renewal_margin(l)),
        })
    }
}

/// How long before expiry a token is renewed: a tenth of its lifetime, at most a minute, so
/// a token never expires between being picked and reaching the consumer.
fn renewal_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_json_round_trip_and_redaction() {
        let json = json!({
            "base_url": "https://pacs.example.org/scim/v2",
            "auth": {
                "type": "oauth2_client_credentials",
                "token_url": "https://idp.example.org/token",
                "client_id": "hub",
                "client_secret": "s3cret",
                "scope": "scim.write"
            },
            "timeout": "20s"
        });
        let ep: ConsumerEndpoint = serde_json::from_value(json).unwrap();
        assert_eq!(ep.timeout, Duration::from_secs(20));
        assert_eq!(ep.connect_timeout, Duration::from_secs(10));
        ep.validate().unwrap();
        let stored = serde_json::to_value(&ep).unwrap();
        assert_eq!(stored["auth"]["client_secret"], "s3cret");
        assert_eq!(stored["auth"]["client_auth"], "basic");
        assert_eq!(stored["timeout"], "20s");
        assert!(stored.get("accept_invalid_certs").is_none());
        assert_eq!(
            serde_json::from_value::<ConsumerEndpoint>(stored).unwrap(),
            ep
        );

        let shown = serde_json::to_value(ep.redacted()).unwrap();
        assert_eq!(shown["auth"]["client_secret"], REDACTED);
        assert!(!format!("{ep:?}").contains("s3cret"));

        let mut edited = ep.redacted();
        edited.timeout = Duration::from_secs(5);
        assert!(edited.validate().is_err());
        edited.keep_secrets_from(&ep);
        edited.validate().unwrap();
        assert_eq!(
            serde_json::to_value(&edited).unwrap()["auth"]["client_secret"],
            "s3cret"
        );

        let bearer: ConsumerEndpoint = serde_json::from_value(json!({
            "base_url": "http://127.0.0.1:9/scim",
            "auth": {"type": "bearer", "token": "t0k"}
        }))
        .unwrap();
        assert_eq!(bearer.auth, ConsumerAuth::bearer("t0k"));
        assert_eq!(
            serde_json::to_value(bearer.redacted()).unwrap()["auth"]["token"],
            REDACTED
        );
        let none: ConsumerEndpoint =
            serde_json::from_value(json!({"base_url": "http://h/scim"})).unwrap();
        assert_eq!(none.auth, ConsumerAuth::None);
        assert!(
            serde_json::from_value::<ConsumerEndpoint>(
                json!({"base_url": "http://h", "auth": {"type": "bearer", "token": "t", "x": 1}})
            )
            .is_err()
        );
    }

    #[test]
    fn validation_names_the_setting() {
        let check = |ep: ConsumerEndpoint| match ep.validate() {
            Err(ServerError::BadRequest { detail, .. }) => detail,
            other => panic!("expected a 400, got {other:?}"),
        };
        let ok = ConsumerEndpoint::new("https://h.example/scim/v2", ConsumerAuth::bearer("t"));
        ok.validate().unwrap();
        let mut ep = ok.clone();
        ep.base_url = "ftp://h/scim".into();
        assert!(check(ep).contains("base_url"));
        let mut ep = ok.clone();
        ep.base_url = "https://h/scim?x=1".into();
        assert!(check(ep).contains("base_url"));
        let mut ep = ok.clone();
        ep.timeout = Duration::ZERO;
        assert!(check(ep).contains("timeout"));
        let mut ep = ok.clone();
        ep.ca_pem = Some("not a certificate".into());
        assert!(check(ep).contains("ca_pem"));
        let mut ep = ok.clone();
        ep.auth = ConsumerAuth::bearer("bad\ntoken");
        assert!(check(ep).contains("auth.token"));
        let mut ep = ok;
        ep.auth = ConsumerAuth::OAuth2ClientCredentials {
            token_url: "not a url".into(),
            client_id: "c".into(),
            client_secret: "s".into(),
            scope: None,
            audience: None,
            client_auth: ClientAuthMethod::Body,
        };
        assert!(check(ep).contains("auth.token_url"));
    }

    #[test]
    fn filters_quote_and_escape_values() {
        assert_eq!(
            eq_filter("userName", "bjensen").unwrap(),
            r#"userName eq "bjensen""#
        );
        assert_eq!(
            eq_filter("externalId", r#"a"b\c"#).unwrap(),
            r#"externalId eq "a\"b\\c""#
        );
        assert_eq!(
            eq_filter(
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
                "7"
            )
            .unwrap(),
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "7""#
        );
        for bad in [
            "",
            "userName or true",
            "userName\"",
            "emails[type",
            "1abc",
            "name.",
        ] {
            assert!(
                matches!(eq_filter(bad, "x"), Err(DeliveryError::Request(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn attribute_checks_on_lookup_results() {
        let r = json!({
            "userName": "BJensen",
            "emails": [{"value": "a@x"}, {"value": "b@x"}],
            "name": {"familyName": "Jensen"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "7"}
        });
        assert_eq!(attr_matches(&r, "userName", "bjensen"), Some(true));
        assert_eq!(attr_matches(&r, "username", "other"), Some(false));
        assert_eq!(attr_matches(&r, "emails.value", "b@x"), Some(true));
        assert_eq!(attr_matches(&r, "name.familyName", "jensen"), Some(true));
        assert_eq!(attr_matches(&r, "externalId", "x"), None);
        assert_eq!(
            attr_matches(
                &r,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
                "7"
            ),
            Some(true)
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37 UTC
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:51:37 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:52:37 1994", now),
            Some(Duration::from_secs(180))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn status_errors_read_scim_error_bodies() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        let body = br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"409","scimType":"uniqueness","detail":"userName taken"}"#;
        let e = status_error(StatusCode::CONFLICT, &headers, body, SystemTime::now());
        assert_eq!(
            e,
            DeliveryError::Status {
                status: 409,
                scim_type: Some("uniqueness".into()),
                detail: "userName taken".into(),
                retry_after: Some(Duration::from_secs(3)),
            }
        );
        assert!(!e.is_retryable());
        assert_eq!(e.to_string(), "HTTP 409 (uniqueness): userName taken");

        let mut html = HeaderMap::new();
        html.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let e = status_error(
            StatusCode::BAD_GATEWAY,
            &html,
            b"<html>proxy</html>",
            SystemTime::now(),
        );
        assert_eq!(e.to_string(), "HTTP 502: Bad Gateway");
        assert!(e.is_retryable());

        let long = "x".repeat(5000);
        let e = status_error(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            long.as_bytes(),
            SystemTime::now(),
        );
        assert!(e.to_string().len() < 600);
    }

    #[test]
    fn success_bodies() {
        let mut json_ct = HeaderMap::new();
        json_ct.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(success_body(&json_ct, b"").unwrap(), None);
        assert_eq!(
            success_body(&json_ct, br#"{"id":"1"}"#).unwrap(),
            Some(json!({"id": "1"}))
        );
        assert_eq!(
            success_body(&HeaderMap::new(), br#"{"id":"1"}"#).unwrap(),
            Some(json!({"id": "1"}))
        );
        let mut html = HeaderMap::new();
        html.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(matches!(
            success_body(&html, b"<html/>"),
            Err(DeliveryError::InvalidResponse(_))
        ));
        assert!(matches!(
            success_body(&json_ct, b"{not json"),
            Err(DeliveryError::InvalidResponse(_))
        ));
    }

    #[test]
    fn ids_from_body_or_location() {
        let mut r = ScimResponse {
            status: 201,
            body: None,
            location: Some("https://c.example/scim/v2/Users/abc-1".into()),
            etag: None,
            latency: Duration::ZERO,
        };
        assert_eq!(r.id().as_deref(), Some("abc-1"));
        r.body = Some(json!({"id": "from-body"}));
        assert_eq!(r.id().as_deref(), Some("from-body"));
        r.body = None;
        r.location = None;
        assert_eq!(r.id(), None);
    }

    #[test]
    fn encodings() {
        assert_eq!(
            ScimClient::resource_path("/Users/", "a b/c?d"),
            "/Users/a%20b%2Fc%3Fd"
        );
        assert_eq!(
            form_body(&[("grant_type", "client_credentials"), ("scope", "a b&c=d")]),
            "grant_type=client_credentials&scope=a+b%26c%3Dd"
        );
        assert_eq!(
            renewal_margin(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            renewal_margin(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn retryability() {
        let status = |s: u16| DeliveryError::Status {
            status: s,
            scim_type: None,
            detail: String::new(),
            retry_after: None,
        };
        for s in [500, 502, 503, 504, 429, 408] {
            assert!(status(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 412, 301] {
            assert!(!status(s).is_retryable(), "{s}");
        }
        assert!(DeliveryError::Network("reset".into()).is_retryable());
        assert!(DeliveryError::Timeout.is_retryable());
        assert!(!DeliveryError::Tls("bad cert".into()).is_retryable());
        assert!(!DeliveryError::Auth("invalid_client".into()).is_retryable());
        assert_eq!(status(503).status(), Some(503));
        assert_eq!(DeliveryError::Timeout.status(), None);
    }
}
