//! The one shape every service has. A service is bound first (its own `bind`, from `Deps` and
//! its settings: every socket open, every file checked) and then run until the shutdown
//! signal. `run` returns `Ok` only when asked to stop; anything else is a `RunError` that names
//! what broke, and `app` then stops the daemon with a failure (systemd restarts it).
//!
//! Which socket errors end a service is decided once, in `crate::sockets`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::listen::{OnRefused, Refusal};
use crate::sockets::Broken;
use crate::store::events::{EventKind, EventLog, Source, Subject};
use crate::store::{Store, StoreError};
use crate::throttle::Throttle;

/// What every service may be bound from.
#[derive(Debug)]
pub struct Deps<'a> {
    pub store: &'a Store,
    pub events: &'a EventLog,
    /// Where an HTTP listener reports connections it closed over a limit.
    pub refusals: &'a Refusals,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    listener: &'static str,
    reason: &'static str,
}

/// Connections the HTTP listeners (admin API, boot service) closed at once because a limit was
/// reached: counted in `slipway_connections_refused_total{listener, reason}`, and recorded as
/// a `connection_refused` event at most once a minute per listener, address and reason, so a
/// flood cannot push real history out of the event log.
#[derive(Clone, Debug)]
pub struct Refusals {
    counter: Family<RefusedLabels, Counter>,
    events: EventLog,
    throttle: Arc<Throttle<(&'static str, IpAddr, Refusal)>>,
}

impl Refusals {
    /// Registers the counter family (once for every listener).
    pub fn register(events: &EventLog, registry: &mut Registry) -> Refusals {
        let counter = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections an HTTP listener closed at once: over its limit in all or from one address",
            counter.clone(),
        );
        Refusals { counter, events: events.clone(), throttle: Arc::new(Throttle::new(Duration::from_secs(60), 4096)) }
    }

    /// What `listener` calls for each connection it closes over a limit.
    pub fn reporter(&self, listener: &'static str, source: Source) -> OnRefused {
        let this = self.clone();
        Arc::new(move |client: IpAddr, reason: Refusal| {
            this.counter.get_or_create(&RefusedLabels { listener, reason: reason.as_str() }).inc();
            if this.throttle.due((listener, client, reason)) {
                tracing::warn!(listener, %client, reason = reason.as_str(), "connections refused: over the limit");
                let details = EventKind::ConnectionRefused {
                    listener: listener.to_owned(),
                    client: client.to_string(),
                    reason: reason.as_str().to_owned(),
                };
                this.events.append(source, Subject::default(), details);
            }
        })
    }
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
