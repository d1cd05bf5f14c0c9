//! Sockets: the LDAP and LDAPS listeners, StartTLS, BER framing (`framing`).
//!
//! Each reply is written with `feed` for every message and one `flush`, on sockets with
//! TCP_NODELAY: writing message by message lets Nagle's algorithm and delayed ACKs add
//! ~40 ms to every search. A connection that sends malformed BER, or a message larger than
//! `max_message_bytes`, gets a notice of disconnection and is closed; the listener and
//! other connections carry on.
//!
//! Slow or idle clients cannot hold the listener: at most `max_connections` are open at
//! once (further ones get a notice of disconnection, busy, and are closed), and every
//! read, handshake and write of a connection has a deadline (`request_timeout_seconds`,
//! `idle_timeout_seconds` between requests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ldap3_proto::LdapMsg;
use ldap3_proto::proto::LdapResultCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use store::Store;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;

use crate::config::LdapConfig;
use crate::directory::{Directory, Observer, notice_of_disconnection};
use crate::error::LdapError;
use crate::framing::{FrameError, LimitedCodec};
use crate::session::Session;

/// Builds the TLS acceptor from the configured PEM files, with the ring provider.
pub fn tls_acceptor(cfg: &LdapConfig) -> Result<Option<TlsAcceptor>, LdapError> {
    if !cfg.tls_configured() {
        return Ok(None);
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.tls_cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| LdapError::Tls(format!("ldap.tls_cert_file {}: {e}", cfg.tls_cert_file)))?;
    if certs.is_empty() {
        return Err(LdapError::Tls(format!(
            "ldap.tls_cert_file {} holds no certificate",
            cfg.tls_cert_file
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.tls_key_file)
        .map_err(|e| LdapError::Tls(format!("ldap.tls_key_file {}: {e}", cfg.tls_key_file)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            LdapError::Tls(format!(
                "certificate and key do not form a usable pair: {e}"
            ))
        })?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// The running listeners.
pub struct LdapServer {
    pub addr: SocketAddr,
    pub ldaps_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl LdapServer {
    /// Binds the configured addresses and starts accepting connections.
    pub async fn start(store: Store, cfg: LdapConfig) -> Result<LdapServer, LdapError> {
        Self::start_observed(store, cfg, None).await
    }

    /// As `start`, reporting every completed request to `observer` (metrics).
    pub async fn start_observed(
        store: Store,
        cfg: LdapConfig,
        observer: Option<Observer>,
    ) -> Result<LdapServer, LdapError> {
        let tls = tls_acceptor(&cfg)?;
        let cfg = Arc::new(cfg);
        let mut dir = Directory::new(store, cfg.clone(), tls.is_some())?;
        if let Some(o) = observer {
            dir = dir.with_observer(o);
        }
        let dir = Arc::new(dir);
        let listener = TcpListener::bind(&cfg.addr).await.map_err(|e| {
            LdapError::Config(format!("binding the LDAP listener to {}: {e}", cfg.addr))
        })?;
        let addr = listener.local_addr()?;
        let slots = Arc::new(Semaphore::new(cfg.max_connections));
        let mut tasks = vec![tokio::spawn(accept_loop(
            listener,
            dir.clone(),
            tls.clone(),
            false,
            slots.clone(),
        ))];
        let mut ldaps_addr = None;
        if !cfg.ldaps_addr.is_empty() {
            let l = TcpListener::bind(&cfg.ldaps_addr).await.map_err(|e| {
                LdapError::Config(format!(
                    "binding the LDAPS listener to {}: {e}",
                    cfg.ldaps_addr
                ))
            })?;
            ldaps_addr = Some(l.local_addr()?);
            tasks.push(tokio::spawn(accept_loop(
                l,
                dir.clone(),
                tls.clone(),
                true,
                slots.clone(),
            )));
        }
        tracing::info!(%addr, ?ldaps_addr, base_dn = %dir.dit().base_dn(), "LDAP directory listening");
        Ok(LdapServer {
            addr,
            ldaps_addr,
            tasks,
        })
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for LdapServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: TcpListener,
    dir: Arc<Directory>,
    tls: Option<TlsAcceptor>,
    implicit_tls: bool,
    slots: Arc<Semaphore>,
) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let dir = dir.clone();
                let tls = tls.clone();
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        tokio::spawn(async move {
                            if let Err(e) =
                                connection(sock, peer, dir, tls, implicit_tls, slot).await
                            {
                                tracing::debug!(%peer, error = %e, "LDAP connection ended");
                            }
                        });
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "LDAP connection refused: ldap.max_connections reached");
                        if !implicit_tls {
                            tokio::spawn(refuse(sock, dir));
                        }
                    }
                }
            }
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "accepting an LDAP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Tells a client over the connection limit why it is closed (RFC 4511 §4.4.1). LDAPS
/// connections are closed without a word: a notice would need a TLS handshake first.
async fn refuse(sock: TcpStream, dir: Arc<Directory>) {
    let cfg = dir.config();
    let mut framed = Framed::new(sock, LimitedCodec::new(cfg.max_message_bytes));
    let notice = notice_of_disconnection(
        LdapResultCode::Busy,
        &format!(
            "too many connections (ldap.max_connections = {}); try again later",
            cfg.max_connections
        ),
    );
    let _ = tokio::time::timeout(request_timeout(cfg), framed.send(notice)).await;
}

fn request_timeout(cfg: &LdapConfig) -> Duration {
    Duration::from_secs(cfg.request_timeout_seconds.max(1))
}

async fn connection(
    sock: TcpStream,
    peer: SocketAddr,
    dir: Arc<Directory>,
    tls: Option<TlsAcceptor>,
    implicit_tls: bool,
    _slot: OwnedSemaphorePermit,
) -> Result<(), LdapError> {
    sock.set_nodelay(true)?;
    let limits = Limits::of(dir.config());
    let codec = || LimitedCodec::new(dir.config().max_message_bytes);
    let handshake =
        |what: &'static str, e: String| LdapError::Tls(format!("{what} with {peer}: {e}"));
    if implicit_tls {
        let acceptor = tls.ok_or_else(|| LdapError::Tls("LDAPS without a certificate".into()))?;
        let stream = tokio::time::timeout(limits.request, acceptor.accept(sock))
            .await
            .map_err(|_| handshake("handshake", "timed out".into()))?
            .map_err(|e| handshake("handshake", e.to_string()))?;
        let mut session = Session::new(Some(peer), true);
        serve(Framed::new(stream, codec()), &dir, &mut session, limits).await?;
        return Ok(());
    }
    let mut session = Session::new(Some(peer), false);
    let Some(framed) = serve(Framed::new(sock, codec()), &dir, &mut session, limits).await? else {
        return Ok(());
    };
    // StartTLS: the client sends its ClientHello right after our response, so no LDAP bytes
    // may be buffered at this point.
    let parts = framed.into_parts();
    if !parts.read_buf.is_empty() {
        return Err(LdapError::Tls(
            "data after the StartTLS request, before the TLS handshake".into(),
        ));
    }
    let acceptor = tls.ok_or_else(|| LdapError::Tls("StartTLS without a certificate".into()))?;
    let stream = tokio::time::timeout(limits.request, acceptor.accept(parts.io))
        .await
        .map_err(|_| handshake("StartTLS handshake", "timed out".into()))?
        .map_err(|e| handshake("StartTLS handshake", e.to_string()))?;
    session.tls = true;
    session.start_tls = false;
    serve(Framed::new(stream, codec()), &dir, &mut session, limits).await?;
    Ok(())
}

/// The deadlines of one connection.
#[derive(Clone, Copy)]
struct Limits {
    /// Between requests.
    idle: Duration,
    /// For the first request after connecting, for one request from its first byte, and
    /// for each write.
    request: Duration,
}

impl Limits {
    fn of(cfg: &LdapConfig) -> Self {
        Limits {
            idle: Duration::from_secs(cfg.idle_timeout_seconds.max(1)),
            request: request_timeout(cfg),
        }
    }

    /// How often a waiting connection looks whether a request has started arriving.
    fn poll_step(&self) -> Duration {
        (self.request / 4).max(Duration::from_millis(100))
    }
}

/// What ended a wait for the next request.
enum Wait {
    Message(LdapMsg),
    Closed,
    Broken(FrameError),
    /// No request within the idle timeout.
    Idle,
    /// The first request, or a request that started arriving, was not complete in time.
    Slow,
}

/// Waits for the next complete request under the connection's deadlines. Reading is
/// resumed after each wake-up without losing buffered bytes (`Framed` keeps them).
async fn next_request<S>(
    framed: &mut Framed<S, LimitedCodec>,
    limits: Limits,
    since: Instant,
    first: bool,
) -> Wait
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A new connection has to start with a request, like a started one has to end.
    let slow_start = first && limits.request < limits.idle;
    let wait_limit = if slow_start {
        limits.request
    } else {
        limits.idle
    };
    let mut partial_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut deadline = since + wait_limit;
        if let Some(t) = partial_since {
            deadline = deadline.min(t + limits.request);
        }
        if now >= deadline {
            return if slow_start || partial_since.is_some() {
                Wait::Slow
            } else {
                Wait::Idle
            };
        }
        match tokio::time::timeout_at(deadline.min(now + limits.poll_step()), framed.next()).await {
            Ok(None) => return Wait::Closed,
            Ok(Some(Ok(msg))) => return Wait::Message(msg),
            Ok(Some(Err(e))) => return Wait::Broken(e),
            Err(_) => {
                if partial_since.is_none() && !framed.read_buffer().is_empty() {
                    partial_since = Some(now);
                }
            }
        }
    }
}

/// Serves requests until the connection ends; returns the framed stream when the client
/// asked for StartTLS.
async fn serve<S>(
    mut framed: Framed<S, LimitedCodec>,
    dir: &Directory,
    session: &mut Session,
    limits: Limits,
) -> Result<Option<Framed<S, LimitedCodec>>, LdapError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timed_out = |_| LdapError::Io(std::io::ErrorKind::TimedOut.into());
    let mut since = Instant::now();
    let mut first = true;
    let (code, message) = loop {
        let msg = match next_request(&mut framed, limits, since, first).await {
            Wait::Message(msg) => msg,
            Wait::Closed => return Ok(None),
            Wait::Broken(FrameError::Io(e)) => return Err(e.into()),
            Wait::Broken(e) => {
                tracing::debug!(peer = ?session.peer, error = %e, "unreadable LDAP message; disconnecting");
                break (LdapResultCode::ProtocolError, e.to_string());
            }
            Wait::Idle => break (LdapResultCode::Unavailable, "idle timeout".to_string()),
            Wait::Slow => {
                break (
                    LdapResultCode::Unavailable,
                    format!(
                        "no complete request within {} s (ldap.request_timeout_seconds)",
                        limits.request.as_secs()
                    ),
                );
            }
        };
        let replies = dir.handle(session, msg).await;
        for r in replies {
            tokio::time::timeout(limits.request, framed.feed(r))
                .await
                .map_err(timed_out)??;
        }
        tokio::time::timeout(limits.request, framed.flush())
            .await
            .map_err(timed_out)??;
        if session.closing {
            return Ok(None);
        }
        if session.start_tls {
            return Ok(Some(framed));
        }
        since = Instant::now();
        first = false;
    };
    let notice = notice_of_disconnection(code, &message);
    let _ = tokio::time::timeout(limits.request, framed.send(notice)).await;
    Ok(None)
}
