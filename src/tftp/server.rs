//! The TFTP socket adapter: requests arrive on the listening socket; each read runs as its own
//! task on its own socket ([`super::transfer`]). What a read gets is decided here: `check` on the
//! name, then the file resolved with symlinks and required to stay inside the root and be a
//! regular file. Writes are refused; junk is dropped; at most `MAX_TRANSFERS` run at once.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::Instrument;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::packet::{self, ErrorCode, Packet};
use super::transfer::{self, Source};
use super::{Wanted, check, generate, inside};
use crate::inventory::Timestamp;
use crate::service::{Deps, RunError, Service};
use crate::store::Store;
use crate::store::events::{EventKind, EventLog, Source as EventSource, Subject};

/// Transfers at once; a request beyond this is told the server is busy.
pub const MAX_TRANSFERS: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("TFTP: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("TFTP: root {path}: {source}")]
    Root { path: PathBuf, source: std::io::Error },
    #[error("TFTP: root {0} is not a directory")]
    NotDir(PathBuf),
    #[error("TFTP: {0}")]
    Setup(String),
}

/// What a client may read.
#[derive(Debug)]
pub struct Files {
    /// Canonical root directory.
    root: PathBuf,
    http_port: Option<u16>,
    store: Store,
    events: EventLog,
}

type Refused = (ErrorCode, &'static str);

impl Files {
    async fn open(&self, client: &SocketAddr, name: &str) -> Result<(Source, String), Refused> {
        let wanted = check(name).map_err(|refusal| {
            tracing::info!(%client, name = %name.escape_debug(), %refusal, "read refused");
            (ErrorCode::AccessViolation, "access violation")
        })?;
        match wanted {
            Wanted::Generated(file) => Ok((Source::Bytes(generate(file, self.http_port)), name.to_string())),
            Wanted::File(relative) => {
                let source = self.open_file(client, &relative).await?;
                Ok((source, relative.display().to_string()))
            }
        }
    }

    async fn open_file(&self, client: &SocketAddr, relative: &Path) -> Result<Source, Refused> {
        const DENIED: Refused = (ErrorCode::AccessViolation, "access violation");
        const MISSING: Refused = (ErrorCode::FileNotFound, "file not found");
        let resolved = match tokio::fs::canonicalize(self.root.join(relative)).await {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(MISSING),
            Err(_) => return Err(DENIED),
        };
        if !inside(&self.root, &resolved) {
            tracing::info!(%client, path = %relative.display(), "read refused, resolves outside the root");
            return Err(DENIED);
        }
        let file = tokio::fs::File::open(&resolved).await.map_err(|_| DENIED)?;
        let meta = file.metadata().await.map_err(|_| DENIED)?;
        if !meta.is_file() {
            return Err(MISSING);
        }
        Ok(Source::File { file: Arc::new(file.into_std().await), len: meta.len() })
    }

    fn record(&self, client: &SocketAddr, path: String, bytes: u64) {
        let IpAddr::V4(ip) = client.ip().to_canonical() else { return };
        let inv = self.store.snapshot();
        let node = inv.node_by_ip(ip);
        let mac = node
            .map(|n| n.mac)
            .or_else(|| self.store.lease(ip).ok().flatten().filter(|l| l.is_active(Timestamp::now())).map(|l| l.mac));
        let subject = Subject { node: node.map(|n| n.name.clone()), mac };
        self.events.append(EventSource::Tftp, subject, EventKind::FileFetched { path, bytes });
    }

    /// Serves one read request from a socket of its own.
    async fn read(&self, local: IpAddr, client: SocketAddr, request: Vec<u8>, slots: &Semaphore) {
        let Ok(Packet::Read(req)) = packet::parse(&request) else { return };
        let socket = match UdpSocket::bind((local, 0)).await {
            Ok(s) => s,
            Err(e) => return tracing::warn!(%client, error = %e, "cannot open a transfer socket"),
        };
        if let Err(e) = socket.connect(client).await {
            return tracing::debug!(%client, error = %e, "cannot reach the client");
        }
        let Ok(name) = std::str::from_utf8(req.filename) else {
            tracing::info!(%client, "read refused, the name is not UTF-8");
            let _ = socket.send(&packet::error(ErrorCode::AccessViolation, "access violation")).await;
            return;
        };
        // netascii is served as octet, as iPXE, firmware and most servers do for boot files.
        let (source, shown) = match self.open(&client, name).await {
            Ok(found) => found,
            Err((code, message)) => {
                let _ = socket.send(&packet::error(code, message)).await;
                return;
            }
        };
        let len = source.len();
        // The path MTU of the connected socket (the route's, or one learned from ICMP).
        let mtu = nix::sys::socket::getsockopt(&socket, nix::sys::socket::sockopt::IpMtu).ok();
        let max_blksize =
            mtu.and_then(|m| usize::try_from(m).ok()).map_or(packet::MAX_BLKSIZE, packet::blksize_for_mtu);
        let (negotiated, oack) = packet::negotiate(&req.options, len, max_blksize);
        tracing::debug!(%client, path = %shown, bytes = len, ?negotiated, "read");
        self.record(&client, shown.clone(), len);
        // Other transfers running (see `transfer`): this one holds a slot itself.
        let crowded = || slots.available_permits() + 1 < MAX_TRANSFERS;
        match transfer::send(&socket, source, negotiated, negotiated.oack.then_some(oack), crowded).await {
            Ok(bytes) => tracing::debug!(%client, path = %shown, bytes, "sent"),
            Err(e) => tracing::info!(%client, path = %shown, error = %e, "transfer ended early"),
        }
    }
}

/// A bound TFTP server.
#[derive(Debug)]
pub struct Server {
    socket: UdpSocket,
    addr: SocketAddr,
    files: Arc<Files>,
}

impl Server {
    pub async fn bind(
        deps: &Deps<'_>,
        addr: SocketAddr,
        root: &Path,
        http_port: Option<u16>,
    ) -> Result<Server, TftpError> {
        let (store, events) = (deps.store.clone(), deps.events.clone());
        let root = std::fs::canonicalize(root).map_err(|source| TftpError::Root { path: root.to_owned(), source })?;
        if !root.is_dir() {
            return Err(TftpError::NotDir(root));
        }
        let socket = UdpSocket::bind(addr).await.map_err(|source| TftpError::Bind { addr, source })?;
        let addr = socket.local_addr().unwrap_or(addr);
        Ok(Server { socket, addr, files: Arc::new(Files { root, http_port, store, events }) })
    }
}

impl Service for Server {
    const NAME: &'static str = "tftp";

    fn span(&self) -> tracing::Span {
        tracing::info_span!("tftp")
    }

    fn listeners(&self) -> Vec<(String, SocketAddr)> {
        vec![("tftp".to_owned(), self.addr)]
    }

    async fn run(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let slots = Arc::new(Semaphore::new(MAX_TRANSFERS));
        let mut buf = vec![0u8; 2048];
        loop {
            let (len, client) = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok(r) => r,
                    Err(e) => {
                        let e = crate::sockets::received("TFTP", self.socket.local_addr(), e)?;
                        tracing::debug!(error = %e, "receive failed");
                        continue;
                    }
                },
            };
            match packet::parse(&buf[..len]) {
                Ok(Packet::Read(_)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        let busy = packet::error(ErrorCode::NotDefined, "server busy, try again");
                        let _ = self.socket.send_to(&busy, client).await;
                        continue;
                    };
                    let (files, request, local) = (self.files.clone(), buf[..len].to_vec(), self.addr.ip());
                    let (stop, slots) = (shutdown.clone(), slots.clone());
                    tokio::spawn(
                        async move {
                            tokio::select! {
                                () = stop.cancelled() => {}
                                () = files.read(local, client, request, &slots) => {}
                            }
                            drop(slot);
                        }
                        .instrument(tracing::info_span!("transfer", %client)),
                    );
                }
                Ok(Packet::Write { filename }) => {
                    let name = String::from_utf8_lossy(filename);
                    tracing::info!(%client, path = %name.escape_debug(), "write refused (read-only server)");
                    let refusal = packet::error(ErrorCode::AccessViolation, "read-only server");
                    let _ = self.socket.send_to(&refusal, client).await;
                }
                Ok(other) => tracing::debug!(%client, ?other, "ignored a packet on the request port"),
                Err(e) => tracing::debug!(%client, error = %e, "malformed request dropped"),
            }
        }
    }
}
