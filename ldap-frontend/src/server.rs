//! Sockets: the LDAP and LDAPS listeners, StartTLS, BER framing with `LdapCodec`.
//!
//! Each reply is written with `feed` for every message and one `flush`, on sockets with
//! TCP_NODELAY: writing message by message lets Nagle's algorithm and delayed ACKs add
//! ~40 ms to every search. A connection that sends malformed BER gets a notice of
//! disconnection and is closed; the listener and other connections carry on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ldap3_proto::LdapCodec;
use ldap3_proto::proto::LdapResultCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use store::Store;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;

use crate::config::LdapConfig;
use crate::directory::{Directory, Observer, notice_of_disconnection};
use crate::error::LdapError;
use crate::session::Session;

/// Largest request accepted, in bytes: far above any real search or bind.
const MAX_BER_SIZE: usize = 1024 * 1024;

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
        let mut tasks = vec![tokio::spawn(accept_loop(
            listener,
            dir.clone(),
            tls.clone(),
            false,
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
            tasks.push(tokio::spawn(accept_loop(l, dir.clone(), tls.clone(), true)));
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
) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let dir = dir.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(sock, peer, dir, tls, implicit_tls).await {
                        tracing::debug!(%peer, error = %e, "LDAP connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "accepting an LDAP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(
    sock: TcpStream,
    peer: SocketAddr,
    dir: Arc<Directory>,
    tls: Option<TlsAcceptor>,
    implicit_tls: bool,
) -> Result<(), LdapError> {
    sock.set_nodelay(true)?;
    let idle = Duration::from_secs(dir.config().idle_timeout_seconds.max(1));
    let codec = || LdapCodec::new(Some(MAX_BER_SIZE), None);
    if implicit_tls {
        let acceptor = tls.ok_or_else(|| LdapError::Tls("LDAPS without a certificate".into()))?;
        let stream = acceptor
            .accept(sock)
            .await
            .map_err(|e| LdapError::Tls(format!("handshake with {peer}: {e}")))?;
        let mut session = Session::new(Some(peer), true);
        serve(Framed::new(stream, codec()), &dir, &mut session, idle).await?;
        return Ok(());
    }
    let mut session = Session::new(Some(peer), false);
    let Some(framed) = serve(Framed::new(sock, codec()), &dir, &mut session, idle).await? else {
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
    let stream = acceptor
        .accept(parts.io)
        .await
        .map_err(|e| LdapError::Tls(format!("StartTLS handshake with {peer}: {e}")))?;
    session.tls = true;
    session.start_tls = false;
    serve(Framed::new(stream, codec()), &dir, &mut session, idle).await?;
    Ok(())
}

/// Serves requests until the connection ends; returns the framed stream when the client
/// asked for StartTLS.
async fn serve<S>(
    mut framed: Framed<S, LdapCodec>,
    dir: &Directory,
    session: &mut Session,
    idle: Duration,
) -> Result<Option<Framed<S, LdapCodec>>, LdapError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let next = match tokio::time::timeout(idle, framed.next()).await {
            Ok(n) => n,
            Err(_) => {
                let notice = notice_of_disconnection(LdapResultCode::Unavailable, "idle timeout");
                let _ = framed.send(notice).await;
                return Ok(None);
            }
        };
        let msg = match next {
            None => return Ok(None),
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                tracing::debug!(peer = ?session.peer, error = %e, "malformed LDAP message; disconnecting");
                let notice = notice_of_disconnection(
                    LdapResultCode::ProtocolError,
                    "malformed or unsupported LDAP message",
                );
                let _ = framed.send(notice).await;
                return Ok(None);
            }
        };
        let replies = dir.handle(session, msg).await;
        for r in replies {
            framed.feed(r).await?;
        }
        framed.flush().await?;
        if session.closing {
            return Ok(None);
        }
        if session.start_tls {
            return Ok(Some(framed));
        }
    }
}
