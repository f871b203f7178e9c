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

impl Probe {
    /// Builds the check; fails only when the CA file cannot be read.
    pub fn new(check: &HealthCheck) -> Result<Probe, String> {
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
    pub async fn run(&self, backend: SocketAddr) -> Result<(), String> {
        match self {
            Probe::Tcp { timeout } => connect(backend, *timeout).await.map(drop),
            Probe::Https { timeout, path, tls } => tokio::time::timeout(*timeout, https(backend, path, tls))
                .await
                .map_err(|_| format!("no answer within {timeout:?}"))?,
        }
    }
}

async fn connect(backend: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(backend)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err(format!("connect: no answer within {timeout:?}")),
    }
}

async fn https(backend: SocketAddr, path: &str, tls: &TlsConnector) -> Result<(), String> {
    let stream = TcpStream::connect(backend).await.map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::IpAddress(backend.ip().into());
    let mut stream = tls.connect(name, stream).await.map_err(|e| format!("TLS: {e}"))?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: slipway\r\nConnection: close\r\n\r\n", backend.ip());
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let read = stream.read(&mut head[n..]).await.map_err(|e| format!("receive: {e}"))?;
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
        Err(format!("GET {path} answered {:?}", line.lines().next().unwrap_or("")))
    }
}

fn tls_config(ca_file: Option<&Path>) -> Result<ClientConfig, String> {
    let trust = match ca_file {
        Some(path) => crate::tls::ServerTrust::CaFile(path.to_owned()),
        None => crate::tls::ServerTrust::AnyCertificate,
    };
    crate::tls::client_config(&trust, "check CA")
}
