//! The DNS server: binds UDP and TCP, runs the UDP loops (`udp`) and the TCP side (`tcp`), both
//! deciding through one `Responder`, and rebuilds the zones whenever the inventory changes (new
//! serial; new zones appear without a restart).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::Instrument;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Settings;
use super::forward::Forwarder;
use super::respond::{Metrics, Responder};
use super::zones::{ZoneSet, build, next_serial};
use crate::inventory::Inventory;
use crate::service::{Deps, RunError, Service};
use crate::store::events::{EventKind, EventLog, Source, Subject};

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS: cannot listen on {addr} ({proto}): {source}")]
    Bind { addr: SocketAddr, proto: &'static str, source: std::io::Error },
}

/// Bound listeners, ready to serve.
#[derive(Debug)]
pub struct Server {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<TcpListener>,
    settings: Settings,
    forwarder: Forwarder,
    metrics: Metrics,
    zones: watch::Sender<Arc<ZoneSet>>,
    events: EventLog,
    inventory: watch::Receiver<Arc<Inventory>>,
}

impl Server {
    /// Binds UDP and TCP on every listen address and builds the first zone set.
    /// `metrics`: registered once for the process (`Metrics::register`), kept across rebinds.
    pub async fn bind(
        deps: &Deps<'_>,
        metrics: Metrics,
        listen: &[SocketAddr],
        upstream: &[SocketAddr],
        settings: Settings,
    ) -> Result<Server, DnsError> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for &addr in listen {
            let bind_err = |source| DnsError::Bind { addr, proto: "UDP", source };
            let socket = std::net::UdpSocket::bind(addr).map_err(bind_err)?;
            socket.set_nonblocking(true).map_err(bind_err)?;
            udp.push(socket);
            tcp.push(crate::sockets::tcp_listener(addr).map_err(|source| DnsError::Bind {
                addr,
                proto: "TCP",
                source,
            })?);
        }
        let serial = next_serial(0, unix_now());
        // The snapshot built from is marked seen: any later one (a reload's, committed after
        // this bind) is followed.
        let mut inventory = deps.store.subscribe();
        let first = inventory.borrow_and_update().clone();
        let (zones, _) = watch::channel(Arc::new(build(&first, &settings, serial)));
        Ok(Server {
            udp,
            tcp,
            settings,
            forwarder: Forwarder::new(upstream.to_vec()),
            metrics,
            zones,
            events: deps.events.clone(),
            inventory,
        })
    }

    /// The zones being served; follows every rebuild.
    pub fn zones(&self) -> watch::Receiver<Arc<ZoneSet>> {
        self.zones.subscribe()
    }

    /// Rebuilds the zones on every inventory change until `shutdown`.
    async fn follow(
        zones: watch::Sender<Arc<ZoneSet>>,
        settings: Settings,
        mut inventory: watch::Receiver<Arc<Inventory>>,
        events: EventLog,
        shutdown: CancellationToken,
    ) -> Result<(), RunError> {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                changed = inventory.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let snapshot = inventory.borrow_and_update().clone();
                    let serial = next_serial(zones.borrow().serial, unix_now());
                    let built = build(&snapshot, &settings, serial);
                    let count = built.zones().len();
                    zones.send_replace(Arc::new(built));
                    tracing::info!(serial, zones = count, "DNS zones rebuilt");
                    events.append(Source::Dns, Subject::default(), EventKind::DnsZonesUpdated { serial, zones: count });
                }
            }
        }
    }
}

impl Service for Server {
    const NAME: &'static str = "dns";

    fn span(&self) -> tracing::Span {
        tracing::info_span!("dns")
    }

    fn listeners(&self) -> Vec<(String, SocketAddr)> {
        let udp = self.udp.iter().filter_map(|s| s.local_addr().ok()).map(|a| ("dns udp".to_owned(), a));
        let tcp = self.tcp.iter().filter_map(|s| s.local_addr().ok()).map(|a| ("dns tcp".to_owned(), a));
        udp.chain(tcp).collect()
    }

    /// Serves every socket and follows the inventory until `shutdown`; the first socket that
    /// breaks stops the whole service (and the others with it).
    async fn run(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let responder = Arc::new(Responder::new(
            self.zones.subscribe(),
            self.settings.allow_recursion.clone(),
            !self.forwarder.is_empty(),
            self.metrics,
            Some(self.events.clone()),
        ));
        let forwarder = Arc::new(self.forwarder);
        // Stopping the parts stops the rest when one ends with an error.
        let stop = shutdown.child_token();
        let mut parts = tokio::task::JoinSet::new();
        for socket in self.udp {
            // Each UDP socket gets a thread with a runtime of its own: no hand-offs between worker
            // threads on the hot path (forwarded queries run on that runtime too).
            let (responder, forwarder, stop) = (responder.clone(), forwarder.clone(), stop.clone());
            let served = crate::runtime::dedicated("DNS UDP", move || async move {
                let socket = UdpSocket::from_std(socket).map_err(RunError::Register)?;
                super::udp::serve(Arc::new(socket), responder, forwarder, stop).await
            });
            parts.spawn(async move { served.await? }.in_current_span());
        }
        for listener in self.tcp {
            parts.spawn(
                super::tcp::serve(listener, responder.clone(), forwarder.clone(), stop.clone()).in_current_span(),
            );
        }
        parts.spawn(
            Self::follow(self.zones, self.settings, self.inventory, self.events, stop.clone()).in_current_span(),
        );
        let mut outcome = Ok(());
        while let Some(ended) = parts.join_next().await {
            let result = ended.unwrap_or_else(|e| {
                Err(RunError::Runtime(crate::runtime::RuntimeError::Thread { name: "DNS", message: e.to_string() }))
            });
            if let Err(e) = result {
                stop.cancel();
                if outcome.is_ok() {
                    outcome = Err(e);
                }
            }
        }
        outcome
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}
