//! Health checks: a TCP connect, or HTTPS `GET <path>` expecting 200 (the Kubernetes API's
//! `/readyz`). HTTPS checks do not verify the backend's certificate unless the pool names a CA
//! (the API's serving certificate is signed by the cluster's own CA, which slipway does not
//! have before the install); either way only the status line is read.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::inventory::{CheckKind, HealthCheck};

/// A check, ready to run against any backend of its pool.
#[derive(Clone)]
pub enum Probe {
    Tcp { timeout: Duration },
    Https { timeout: Duration, path: String, tls: TlsConnector },
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Tcp { timeout } => write!(f, "tcp check ({timeout:?})"),
            Probe::Https { timeout, path, .. } => write!(f, "https GET {path} ({timeout:?})"),
        }
    }
}

/// Why a backend failed its check (the `reason` of a `backend_down` event), or why a check
/// could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("check CA: {0}")]
    Setup(String),
    #[error("connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("send: {0}")]
    Send(String),
    #[error("receive: {0}")]
    Receive(String),
    #[error("GET {path} answered {line:?}")]
    Status { path: String, line: String },
}

impl Probe {
    /// Builds the check; fails only when the CA file cannot be read.
    pub fn new(check: &HealthCheck) -> Result<Probe, CheckError> {
        Ok(match check.kind {
            CheckKind::Tcp => Probe::Tcp { timeout: check.timeout },
            CheckKind::Https => Probe::Https {
                timeout: check.timeout,
                path: check.path.clone(),
                tls: TlsConnector::from(Arc::new(tls_config(check.ca_file.as_deref())?)),
            },
        })
    }

    /// Runs the check once; `Err` says why the backend is not healthy.
    pub async fn run(&self, backend: SocketAddr) -> Result<(), CheckError> {
        match self {
            Probe::Tcp { timeout } => connect(backend, *timeout).await.map(drop),
            Probe::Https { timeout, path, tls } => tokio::time::timeout(*timeout, https(backend, path, tls))
                .await
                .map_err(|_| CheckError::Timeout(*timeout))?,
        }
    }
}

async fn connect(backend: SocketAddr, timeout: Duration) -> Result<TcpStream, CheckError> {
    match tokio::time::timeout(timeout, TcpStream::connect(backend)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(CheckError::Connect(e.to_string())),
        Err(_) => Err(CheckError::Connect(format!("no answer within {timeout:?}"))),
    }
}

async fn https(backend: SocketAddr, path: &str, tls: &TlsConnector) -> Result<(), CheckError> {
    let stream = TcpStream::connect(backend).await.map_err(|e| CheckError::Connect(e.to_string()))?;
    let name = ServerName::IpAddress(backend.ip().into());
    let mut stream = tls.connect(name, stream).await.map_err(|e| CheckError::Tls(e.to_string()))?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: slipway\r\nConnection: close\r\n\r\n", backend.ip());
    stream.write_all(request.as_bytes()).await.map_err(|e| CheckError::Send(e.to_string()))?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let read = stream.read(&mut head[n..]).await.map_err(|e| CheckError::Receive(e.to_string()))?;
        if read == 0 {
            break;
        }
        n += read;
    }
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if line.starts_with("HTTP/1.") && status == "200" {
        Ok(())
    } else {
        Err(CheckError::Status { path: path.to_string(), line: line.lines().next().unwrap_or("").to_string() })
    }
}

fn tls_config(ca_file: Option<&Path>) -> Result<ClientConfig, CheckError> {
    let trust = match ca_file {
        Some(path) => crate::tls::ServerTrust::CaFile(path.to_owned()),
        None => crate::tls::ServerTrust::AnyCertificate,
    };
    crate::tls::client_config(&trust, "file").map_err(|e| CheckError::Setup(e.to_string()))
}
