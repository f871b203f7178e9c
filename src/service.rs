//! The one shape every service has. A service is bound first (its own `bind`, from `Deps` and
//! its settings: every socket open, every file checked) and then run until the shutdown
//! signal. `run` returns `Ok` only when asked to stop; anything else is a `RunError` that names
//! what broke, and `app` then stops the daemon with a failure (systemd restarts it).
//!
//! Which socket errors end a service is decided once, in `crate::sockets`.

use std::future::Future;
use std::net::SocketAddr;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::sockets::Broken;
use crate::store::events::EventLog;
use crate::store::{Store, StoreError};

/// What every service may be bound from.
#[derive(Debug)]
pub struct Deps<'a> {
    pub store: &'a Store,
    pub events: &'a EventLog,
    /// Where the service registers its metric families.
    pub registry: &'a mut Registry,
}

/// A bound service.
pub trait Service: Send + Sized + 'static {
    /// Its name in logs and in the daemon's exit message.
    const NAME: &'static str;

    /// The span its log lines carry (named after the service).
    fn span(&self) -> tracing::Span;

    /// What it listens on, for readiness and the start-up log: (what, address).
    fn listeners(&self) -> Vec<(String, SocketAddr)>;

    /// Serves until `shutdown`.
    fn run(self, shutdown: CancellationToken) -> impl Future<Output = Result<(), RunError>> + Send;
}

/// Why a service stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Socket(#[from] Broken),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} on {interface} no longer works: {source}")]
    Interface { what: &'static str, interface: String, source: std::io::Error },
    #[error("cannot register a socket with the runtime: {0}")]
    Register(std::io::Error),
}
