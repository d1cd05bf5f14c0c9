//! Login sessions of the admin web UI, their cookies, and CSRF tokens.
//!
//! Sessions live server-side, in the memory of the hub instance, keyed by the SHA-256 of a
//! random 256-bit id that only the browser holds (in the `scimhub_session` cookie). Chosen
//! over a signed cookie because nothing has to be configured, shared or rotated (no signing
//! key), the cookie carries no data, and logging out or revoking the token ends a session at
//! once rather than when a signature expires. The price: sessions do not survive a restart,
//! and several instances behind a load balancer need session affinity for `/admin`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const SESSION_COOKIE: &str = "scimhub_session";
/// Holds the login form's CSRF token until the form is posted (there is no session yet).
pub const LOGIN_COOKIE: &str = "scimhub_login";
pub const LOGIN_COOKIE_SECONDS: u64 = 1800;
/// The cookies are only sent to the UI (and the admin API, which ignores them).
const COOKIE_PATH: &str = "/admin";

/// A message shown once, on the next page the session renders.
#[derive(Debug, Clone, PartialEq)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

#[derive(Debug, Clone)]
struct Entry {
    principal: String,
    token_id: String,
    csrf: String,
    expires: Instant,
    flash: Option<Flash>,
}

/// A live session, as a request sees it.
#[derive(Debug, Clone)]
pub struct Session {
    pub key: [u8; 32],
    /// `token:NAME`, as the audit trail names API principals.
    pub principal: String,
    pub token_id: String,
    pub csrf: String,
}

pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<[u8; 32], Entry>>,
}

/// 256 random bits from the operating system, hex-encoded.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn key_of(cookie_value: &str) -> [u8; 32] {
    Sha256::digest(cookie_value.as_bytes()).into()
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session; returns the cookie value.
    pub fn create(&self, principal: &str, token_id: &str) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, e| e.expires > now);
        map.insert(
            key_of(&id),
            Entry {
                principal: principal.to_string(),
                token_id: token_id.to_string(),
                csrf: random_token(),
                expires: now + self.ttl,
                flash: None,
            },
        );
        id
    }

    /// The live session a cookie value names.
    pub fn get(&self, cookie_value: &str) -> Option<Session> {
        let key = key_of(cookie_value);
        let mut map = self.lock();
        let e = map.get(&key)?;
        if e.expires <= Instant::now() {
            map.remove(&key);
            return None;
        }
        Some(Session {
            key,
            principal: e.principal.clone(),
            token_id: e.token_id.clone(),
            csrf: e.csrf.clone(),
        })
    }

    pub fn remove(&self, key: &[u8; 32]) {
        self.lock().remove(key);
    }

    pub fn set_flash(&self, key: &[u8; 32], flash: Flash) {
        if let Some(e) = self.lock().get_mut(key) {
            e.flash = Some(flash);
        }
    }

    pub fn take_flash(&self, key: &[u8; 32]) -> Option<Flash> {
        self.lock().get_mut(key).and_then(|e| e.flash.take())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A cookie of the request.
pub fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// Whether the browser reached the hub over TLS (directly, through a proxy that says so, or
/// as the configured public URL promises).
pub fn is_secure(req: &HttpRequest, public_url: &str) -> bool {
    req.app_config().secure()
        || req.connection_info().scheme() == "https"
        || public_url.starts_with("https://")
}

/// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_flash_once() {
        let s = Sessions::new(Duration::from_secs(60));
        let id = s.create("token:a", "t1");
        assert_eq!(id.len(), 64);
        let got = s.get(&id).unwrap();
        assert_eq!(got.principal, "token:a");
        assert_eq!(got.csrf.len(), 64);
        assert!(s.get(&random_token()).is_none());
        s.set_flash(
            &got.key,
            Flash {
                ok: true,
                text: "x".into(),
            },
        );
        assert!(s.take_flash(&got.key).is_some());
        assert!(s.take_flash(&got.key).is_none());
        s.remove(&got.key);
        assert!(s.get(&id).is_none());

        let short = Sessions::new(Duration::from_millis(0));
        let id = short.create("token:a", "t1");
        assert!(short.get(&id).is_none(), "expired");
        assert!(short.is_empty());
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
