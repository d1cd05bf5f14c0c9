//! Per-connection state: who is bound, whether TLS is on, and the paged searches in
//! progress (RFC 2696 cookies are opaque random tokens naming server-side positions, so a
//! client can neither forge a position nor read one).

use std::collections::HashMap;
use std::net::SocketAddr;

use rand::RngCore;

/// The identity a connection acts as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Principal {
    #[default]
    Anonymous,
    User {
        dn: String,
        id: String,
    },
    Service {
        dn: String,
        name: String,
    },
}

impl Principal {
    pub fn dn(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::User { dn, .. } | Principal::Service { dn, .. } => Some(dn),
        }
    }
}

/// Where a paged search stopped: the phase of the search plan, and the last row id read
/// (resources) or the entry offset (entries held in memory) inside it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Position {
    pub phase: usize,
    pub after_rid: Option<i64>,
    pub offset: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct PagedSearch {
    /// The request the cookie belongs to (RFC 2696 §3: the rest of the request must not
    /// change between pages).
    pub fingerprint: String,
    pub position: Position,
    /// Insertion order, to drop the oldest when a client leaves too many open.
    pub serial: u64,
}

/// Paged searches a connection may leave open at once.
const MAX_OPEN_PAGED: usize = 32;

#[derive(Debug, Default)]
pub struct Session {
    pub peer: Option<SocketAddr>,
    pub principal: Principal,
    pub tls: bool,
    /// Set by the handler after answering StartTLS; the connection upgrades next.
    pub start_tls: bool,
    /// Set on unbind or a protocol violation: the connection closes after replying.
    pub closing: bool,
    paged: HashMap<Vec<u8>, PagedSearch>,
    serial: u64,
}

impl Session {
    pub fn new(peer: Option<SocketAddr>, tls: bool) -> Self {
        Session {
            peer,
            tls,
            ..Default::default()
        }
    }

    pub fn peer_ip(&self) -> Option<String> {
        self.peer.map(|p| p.ip().to_string())
    }

    pub(crate) fn take_paged(&mut self, cookie: &[u8]) -> Option<PagedSearch> {
        self.paged.remove(cookie)
    }

    /// Stores a position and returns the cookie that names it.
    pub(crate) fn save_paged(&mut self, fingerprint: String, position: Position) -> Vec<u8> {
        if self.paged.len() >= MAX_OPEN_PAGED
            && let Some(oldest) = self
                .paged
                .iter()
                .min_by_key(|(_, p)| p.serial)
                .map(|(k, _)| k.clone())
        {
            self.paged.remove(&oldest);
        }
        let mut cookie = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut cookie);
        self.serial += 1;
        self.paged.insert(
            cookie.clone(),
            PagedSearch {
                fingerprint,
                position,
                serial: self.serial,
            },
        );
        cookie
    }

    pub fn open_paged_searches(&self) -> usize {
        self.paged.len()
    }
}
