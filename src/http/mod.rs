//! The HTTP boot service (on the provisioning side, separate from the admin API): iPXE scripts,
//! images, iPXE binaries for UEFI HTTP boot, Ignition and cloud-init documents, phone-home. A
//! thin adapter: `boot` decides every answer; this module finds the machine by its TCP source
//! address, reads files and records events.

pub mod direct;
#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod head;
pub mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::listen::{self as serve, Listener};
use crate::service::{Deps, RunError, Service};
use crate::store::Store;
use crate::store::events::EventLog;

/// What the boot service serves from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Kernels, initrds and rootfs images (`/images/...`).
    pub images: PathBuf,
    /// iPXE binaries for UEFI HTTP boot (`/ipxe/...`): the TFTP root.
    pub ipxe: PathBuf,
    /// Operator templates: `cloud-init/[<role>.]user-data`, `ignition/[<role>|default].ign`.
    pub templates: Option<PathBuf>,
    /// SSH public keys put into every rendered config.
    pub ssh_keys: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("HTTP boot service: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A bound boot service.
#[derive(Debug)]
pub struct Server {
    listener: Listener,
    addr: SocketAddr,
    settings: Arc<Settings>,
    store: Store,
    events: EventLog,
    admission: Option<Arc<dyn crate::boot::k3s::Admission>>,
}

impl Server {
    /// `admission` says when a k3s node may fetch its config (none: `/k3s/config` answers 404).
    pub async fn bind(
        deps: &Deps<'_>,
        addr: SocketAddr,
        settings: Settings,
        limits: crate::listen::Limits,
        admission: Option<Arc<dyn crate::boot::k3s::Admission>>,
    ) -> Result<Server, HttpError> {
        let tcp = crate::sockets::tcp_listener(addr).map_err(|source| HttpError::Bind { addr, source })?;
        let addr = tcp.local_addr().unwrap_or(addr);
        let refused = deps.refusals.reporter("http boot", crate::store::events::Source::Http);
        Ok(Server {
            listener: Listener::plain("HTTP boot", tcp).limited(limits, refused),
            addr,
            settings: Arc::new(settings),
            store: deps.store.clone(),
            events: deps.events.clone(),
            admission,
        })
    }
}

impl Service for Server {
    const NAME: &'static str = "http boot";

    fn span(&self) -> tracing::Span {
        tracing::info_span!("http_boot")
    }

    fn listeners(&self) -> Vec<(String, SocketAddr)> {
        vec![("http boot".to_owned(), self.addr)]
    }

    async fn run(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let mut state = routes::BootState::new(self.store, self.events, self.settings);
        state.admission = self.admission;
        let direct = direct::Direct::new(state.clone());
        Ok(serve::run_with(self.listener, routes::router(state), direct, shutdown).await?)
    }
}
