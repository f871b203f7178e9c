//! The TFTP socket adapter: async-tftp drives the protocol (options, windows, retries); our
//! handler decides what a read request gets — `check` on the name, then the file resolved with
//! symlinks and required to stay inside the root and be a regular file. Writes are refused.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

use async_tftp::packet;
use async_tftp::server::{Handler, TftpServer, TftpServerBuilder};
use futures_lite::io::{BoxedReader, BufReader, Cursor, Sink};
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;

use super::{Wanted, check, generate, inside};
use crate::inventory::Timestamp;
use crate::store::Store;
use crate::store::events::{EventKind, EventLog, Source, Subject};

const READ_BUFFER: usize = 256 << 10;

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

/// The request handler: what a client may read.
#[derive(Debug)]
pub struct Files {
    /// Canonical root directory.
    root: PathBuf,
    http_port: Option<u16>,
    store: Store,
    events: EventLog,
}

impl Files {
    async fn open(&self, client: &SocketAddr, name: &str) -> Result<(BoxedReader, u64, String), packet::Error> {
        let wanted = check(name).map_err(|refusal| {
            tracing::info!(%client, name = %name.escape_debug(), %refusal, "TFTP: read refused");
            packet::Error::PermissionDenied
        })?;
        match wanted {
            Wanted::Generated(file) => {
                let body = generate(file, self.http_port);
                let len = body.len() as u64;
                Ok((Box::pin(Cursor::new(body)), len, name.to_string()))
            }
            Wanted::File(relative) => {
                let (file, len) = self.open_file(client, &relative).await?;
                // Each read of a tokio file is a trip to the blocking pool: read 256 KiB at a
                // time, not one TFTP block (512-1468 bytes) at a time.
                let reader = BufReader::with_capacity(READ_BUFFER, file.compat());
                Ok((Box::pin(reader), len, relative.display().to_string()))
            }
        }
    }

    async fn open_file(&self, client: &SocketAddr, relative: &Path) -> Result<(tokio::fs::File, u64), packet::Error> {
        let resolved = match tokio::fs::canonicalize(self.root.join(relative)).await {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(packet::Error::FileNotFound),
            Err(_) => return Err(packet::Error::PermissionDenied),
        };
        if !inside(&self.root, &resolved) {
            tracing::info!(%client, path = %relative.display(), "TFTP: read refused, resolves outside the root");
            return Err(packet::Error::PermissionDenied);
        }
        let file = tokio::fs::File::open(&resolved).await.map_err(|_| packet::Error::PermissionDenied)?;
        let meta = file.metadata().await.map_err(|_| packet::Error::PermissionDenied)?;
        if !meta.is_file() {
            return Err(packet::Error::FileNotFound);
        }
        Ok((file, meta.len()))
    }

    fn record(&self, client: &SocketAddr, path: String, bytes: u64) {
        let IpAddr::V4(ip) = client.ip().to_canonical() else { return };
        let inv = self.store.snapshot();
        let node = inv.node_by_ip(ip);
        let mac = node
            .map(|n| n.mac)
            .or_else(|| self.store.lease(ip).ok().flatten().filter(|l| l.is_active(Timestamp::now())).map(|l| l.mac));
        let subject = Subject { node: node.map(|n| n.name.clone()), mac };
        self.events.append(Source::Tftp, subject, EventKind::FileFetched { path, bytes });
    }
}

impl Handler for Files {
    type Reader = BoxedReader;
    type Writer = Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        let name = path.to_str().ok_or(packet::Error::PermissionDenied)?.to_string();
        let (reader, len, shown) = self.open(client, &name).await?;
        tracing::debug!(%client, path = %shown, bytes = len, "TFTP: read");
        self.record(client, shown, len);
        Ok((reader, Some(len)))
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        tracing::info!(%client, path = %path.display(), "TFTP: write refused (read-only server)");
        Err(packet::Error::PermissionDenied)
    }
}

/// A bound TFTP server.
pub struct Server {
    server: TftpServer<Files>,
    addr: SocketAddr,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl Server {
    pub async fn bind(
        addr: SocketAddr,
        root: &Path,
        http_port: Option<u16>,
        store: Store,
        events: EventLog,
    ) -> Result<Server, TftpError> {
        let root = std::fs::canonicalize(root).map_err(|source| TftpError::Root { path: root.to_owned(), source })?;
        if !root.is_dir() {
            return Err(TftpError::NotDir(root));
        }
        let socket = UdpSocket::bind(addr).map_err(|source| TftpError::Bind { addr, source })?;
        let addr = socket.local_addr().unwrap_or(addr);
        let files = Files { root, http_port, store, events };
        let server = TftpServerBuilder::with_handler(files)
            .std_socket(socket)
            .map_err(|e| TftpError::Setup(e.to_string()))?
            .build()
            .await
            .map_err(|e| TftpError::Setup(e.to_string()))?;
        Ok(Server { server, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run(self, shutdown: CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => {}
            result = self.server.serve() => if let Err(e) = result {
                tracing::error!(error = %e, "TFTP: the server stopped");
            },
        }
    }
}
