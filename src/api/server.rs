//! The admin API as a service: its listener (plain or TLS) and the state its routes share.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use super::{ApiState, router};
use crate::listen::{Limits, Listener, OnRefused, ServeError, TlsFiles};
use crate::service::{RunError, Service};

/// The bound admin API.
pub struct Server {
    listener: Listener,
    addr: SocketAddr,
    state: ApiState,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `listen` (with TLS when `tls` is set). Plain HTTP beyond loopback is allowed, with a
    /// warning: the token then crosses the network in the clear.
    pub async fn bind(
        listen: SocketAddr,
        tls: Option<&TlsFiles>,
        limits: Limits,
        refused: OnRefused,
        state: ApiState,
    ) -> Result<Server, ServeError> {
        let listener = crate::listen::bind(listen, tls).await?.limited(limits, refused);
        let addr = listener.local_addr().unwrap_or(listen);
        if !listener.is_tls() && !addr.ip().is_loopback() {
            tracing::warn!(admin_addr = %addr, "the admin API listens beyond loopback without TLS; set admin.tls_cert and admin.tls_key");
        }
        Ok(Server { listener, addr, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Service for Server {
    const NAME: &'static str = "admin";

    fn span(&self) -> tracing::Span {
        tracing::info_span!("admin")
    }

    fn listeners(&self) -> Vec<(String, SocketAddr)> {
        vec![("admin".to_owned(), self.addr)]
    }

    async fn run(self, shutdown: CancellationToken) -> Result<(), RunError> {
        Ok(crate::listen::run(self.listener, router(self.state), shutdown).await?)
    }
}
