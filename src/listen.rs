//! The HTTP listener the admin API and the HTTP boot service share: serves a router on a TCP
//! listener, with optional TLS, until shutdown. Neutral: imports no service. Every request carries a `Connection` extension: the TCP peer and the local
//! address it reached, the only identity the boot service trusts.
//!
//! One task per connection; HTTP/1.1 with a header-read timeout (slow clients, and idle
//! keep-alive connections, cannot hold a connection without sending a whole request head in
//! time); request bodies time out too; bounds on open connections in all and from one address,
//! past which a new connection is closed at once (and reported, so the service can count it and
//! record an event) rather than left waiting in the kernel's queue; TLS handshakes time out. On shutdown the listener closes at once and open connections get a grace period.
//! A `Front` may answer requests on a plain connection before hyper takes it over (the boot
//! service's direct path); the admin API uses none.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::Instrument;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::sockets::Broken;

/// A certificate chain and its private key, PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown begins.
pub const GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("admin API: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("admin API: TLS {what} {path}: {message}")]
    Tls { what: &'static str, path: String, message: String },
}

/// The TCP connection a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// How many connections a listener keeps open at once: in all, and from one client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_address: usize,
}

impl Default for Limits {
    /// Far more than booting machines or operators open; slow or idle clients from many
    /// addresses cannot fill it before the header timeout closes theirs.
    fn default() -> Self {
        Limits { total: 10_000, per_address: 64 }
    }
}

/// Why a new connection was closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The listener had `Limits::total` connections open.
    Total,
    /// Its address had `Limits::per_address` open.
    PerAddress,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "total",
            Refusal::PerAddress => "per_address",
        }
    }
}

/// Told of each connection closed at once (the service counts it and records an event).
pub type OnRefused = Arc<dyn Fn(IpAddr, Refusal) + Send + Sync>;

/// Open connections per client address; a slot gives its count back when dropped.
#[derive(Debug, Default)]
struct PerAddress(std::sync::Mutex<HashMap<IpAddr, usize>>);

struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn take(table: &Arc<PerAddress>, ip: IpAddr, limit: usize) -> Option<AddressSlot> {
        let mut open = table.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot { table: table.clone(), ip })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Answers requests on a plain connection before hyper sees it.
pub trait Front: Clone + Send + Sync + 'static {
    /// Serves requests until one it leaves to hyper; returns the connection with the bytes read
    /// and not answered (hyper parses them first), or `None` when the connection is finished.
    fn serve(
        &self,
        stream: TcpStream,
        conn: Connection,
        stop: CancellationToken,
    ) -> impl Future<Output = Option<(TcpStream, Vec<u8>)>> + Send;
}

/// No front: hyper serves every connection from its first byte.
#[derive(Clone, Copy, Debug)]
pub struct HyperOnly;

impl Front for HyperOnly {
    async fn serve(&self, stream: TcpStream, _: Connection, _: CancellationToken) -> Option<(TcpStream, Vec<u8>)> {
        Some((stream, Vec::new()))
    }
}

/// A TCP stream whose first bytes were already read: they are read again before the stream's.
struct Replay {
    read: Vec<u8>,
    at: usize,
    stream: TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.at < this.read.len() {
            let n = buf.remaining().min(this.read.len() - this.at);
            buf.put_slice(&this.read[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A bound listener, ready to serve.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    /// Names the service in log lines.
    name: &'static str,
    limits: Limits,
    on_refused: Option<OnRefused>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("tcp", &self.tcp).field("tls", &self.tls.is_some()).finish()
    }
}

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A plain-HTTP listener for another service (`name` appears in its log lines).
    pub fn plain(name: &'static str, tcp: TcpListener) -> Listener {
        Listener { tcp, tls: None, name, limits: Limits::default(), on_refused: None }
    }

    /// This listener with `limits`; `on_refused` hears of each connection closed at once.
    pub fn limited(self, limits: Limits, on_refused: OnRefused) -> Listener {
        Listener { limits, on_refused: Some(on_refused), ..self }
    }
}

/// Binds the admin address and loads the TLS files, if any. Errors name the address or file.
pub async fn bind(addr: SocketAddr, tls: Option<&TlsFiles>) -> Result<Listener, ServeError> {
    let tls = tls.map(tls_acceptor).transpose()?;
    let tcp = crate::sockets::tcp_listener(addr).map_err(|source| ServeError::Bind { addr, source })?;
    Ok(Listener { tcp, tls, name: "admin API", limits: Limits::default(), on_refused: None })
}

/// The TLS files loaded as `bind` loads them (what `slipway check` uses to see they work).
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ServeError> {
    let err = |what, path: &Path, message: String| ServeError::Tls { what, path: path.display().to_string(), message };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|iter| iter.collect())
        .map_err(|e| err("certificate", &files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(err("certificate", &files.cert, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| err("key", &files.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("config", &files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err("key", &files.key, e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `router` on `listener` until `shutdown`, then drains open connections for `GRACE`.
/// Ends early only when the listener itself breaks.
pub async fn run(listener: Listener, router: Router, shutdown: CancellationToken) -> Result<(), Broken> {
    run_with(listener, router, HyperOnly, shutdown).await
}

/// `run`, with `front` answering first on plain connections.
pub async fn run_with(
    listener: Listener,
    router: Router,
    front: impl Front,
    shutdown: CancellationToken,
) -> Result<(), Broken> {
    let mut outcome = Ok(());
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(listener.limits.total));
    let per_address = Arc::new(PerAddress::default());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = crate::sockets::accept(&listener.tcp, listener.name) => match r {
                Ok(conn) => conn,
                Err(broken) => {
                    outcome = Err(broken);
                    break;
                }
            },
        };
        // Over a limit: closed at once, so the client knows, and the accept queue keeps moving.
        let taken = match slots.clone().try_acquire_owned() {
            Err(_) => Err(Refusal::Total),
            Ok(total) => PerAddress::take(&per_address, peer.ip(), listener.limits.per_address)
                .map(|address| (total, address))
                .ok_or(Refusal::PerAddress),
        };
        let permit = match taken {
            Ok(permit) => permit,
            Err(reason) => {
                tracing::debug!(%peer, reason = reason.as_str(), "connection refused: over the limit");
                if let Some(on_refused) = &listener.on_refused {
                    on_refused(peer.ip(), reason);
                }
                drop(stream);
                continue;
            }
        };
        let conn = Connection { peer, local: stream.local_addr().unwrap_or(peer) };
        let router = router.clone();
        let service = TowerToHyperService::new(tower::util::MapRequest::new(
            router,
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(conn);
                req
            },
        ));
        let http = http.clone();
        let watcher = graceful.watcher();
        let tls = listener.tls.clone();
        let (front, stop) = (front.clone(), shutdown.clone());
        tokio::spawn(
            async move {
                let _permit = permit;
                let result = match tls {
                    None => {
                        let Some((stream, read)) = front.serve(stream, conn, stop).await else { return };
                        let io = TokioIo::new(Replay { read, at: 0, stream });
                        watcher.watch(http.serve_connection(io, service)).await
                    }
                    Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            watcher.watch(http.serve_connection(TokioIo::new(tls_stream), service)).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    },
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
            .instrument(tracing::info_span!("connection", %peer)),
        );
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(GRACE) => tracing::warn!("connections still open after the grace period; closing them"),
    }
    outcome
}
