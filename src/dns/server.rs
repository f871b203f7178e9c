//! The DNS server: binds UDP and TCP, runs the UDP loops (`udp`) and the TCP side on
//! hickory-server, both deciding through one `Responder`, and rebuilds the zones whenever the
//! inventory changes (new serial; new zones appear without a restart).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

use hickory_proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Settings;
use super::forward::Forwarder;
use super::respond::{Metrics, Plan, Responder, Sections, response_edns};
use super::zones::{ZoneSet, build, next_serial};
use crate::inventory::Inventory;
use crate::store::events::{EventKind, EventLog, Source, Subject};

/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);

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
}

impl Server {
    /// Binds UDP and TCP on every listen address and builds the first zone set.
    pub async fn bind(
        listen: &[SocketAddr],
        upstream: &[SocketAddr],
        settings: Settings,
        inventory: &Inventory,
        registry: &mut Registry,
    ) -> Result<Server, DnsError> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for &addr in listen {
            let bind_err = |source| DnsError::Bind { addr, proto: "UDP", source };
            let socket = std::net::UdpSocket::bind(addr).map_err(bind_err)?;
            socket.set_nonblocking(true).map_err(bind_err)?;
            udp.push(socket);
            tcp.push(TcpListener::bind(addr).await.map_err(|source| DnsError::Bind { addr, proto: "TCP", source })?);
        }
        let metrics = Metrics::default();
        metrics.register(registry);
        let serial = next_serial(0, unix_now());
        let (zones, _) = watch::channel(Arc::new(build(inventory, &settings, serial)));
        Ok(Server { udp, tcp, settings, forwarder: Forwarder::new(upstream.to_vec()), metrics, zones })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        let udp = self.udp.iter().filter_map(|s| s.local_addr().ok()).map(|a| ("dns udp".to_owned(), a));
        let tcp = self.tcp.iter().filter_map(|s| s.local_addr().ok()).map(|a| ("dns tcp".to_owned(), a));
        udp.chain(tcp).collect()
    }

    /// The zones being served; follows every rebuild.
    pub fn zones(&self) -> watch::Receiver<Arc<ZoneSet>> {
        self.zones.subscribe()
    }

    /// Serves until `shutdown`, rebuilding the zones on every inventory change.
    pub async fn run(
        self,
        events: EventLog,
        mut inventory: watch::Receiver<Arc<Inventory>>,
        shutdown: CancellationToken,
    ) {
        let responder = Arc::new(Responder::new(
            self.zones.subscribe(),
            self.settings.allow_recursion.clone(),
            !self.forwarder.is_empty(),
            self.metrics,
            Some(events.clone()),
        ));
        let forwarder = Arc::new(self.forwarder);
        let mut udp = tokio::task::JoinSet::new();
        for socket in self.udp {
            // Each UDP socket gets a thread with a runtime of its own: no hand-offs between worker
            // threads on the hot path (forwarded queries run on that runtime too).
            let (responder, forwarder, shutdown) = (responder.clone(), forwarder.clone(), shutdown.clone());
            udp.spawn(
                async move {
                    let served = crate::runtime::dedicated("DNS UDP", move || async move {
                        match UdpSocket::from_std(socket) {
                            Ok(socket) => super::udp::serve(Arc::new(socket), responder, forwarder, shutdown).await,
                            Err(e) => tracing::error!(error = %e, "cannot register the UDP socket"),
                        }
                    });
                    if let Err(e) = served.await {
                        tracing::error!(error = %e, "a UDP socket is not served");
                    }
                }
                .in_current_span(),
            );
        }
        let mut server = hickory_server::Server::new(Handler { responder, forwarder });
        for listener in self.tcp {
            server.register_listener(listener, TCP_IDLE, 64 * 1024);
        }
        inventory.mark_unchanged();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = inventory.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let snapshot = inventory.borrow_and_update().clone();
                    let serial = next_serial(self.zones.borrow().serial, unix_now());
                    let zones = build(&snapshot, &self.settings, serial);
                    let count = zones.zones().len();
                    self.zones.send_replace(Arc::new(zones));
                    tracing::info!(serial, zones = count, "DNS zones rebuilt");
                    events.append(Source::Dns, Subject::default(), EventKind::DnsZonesUpdated { serial, zones: count });
                }
            }
        }
        if let Err(e) = server.shutdown_gracefully().await {
            tracing::debug!(error = %e, "DNS listeners stopped with an error");
        }
        while udp.join_next().await.is_some() {}
    }
}

/// The TCP side, on hickory-server (framing, idle timeout, connection handling); the same
/// `Responder` decides.
struct Handler {
    responder: Arc<Responder>,
    forwarder: Arc<Forwarder>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let edns = response_edns(request);
        let builder = || {
            let mut b = MessageResponseBuilder::from_message_request(request);
            if let Some(e) = &edns {
                b.edns(e);
            }
            b
        };
        match self.responder.plan(request, request.src()) {
            Plan::Reply { meta, answer } => {
                let s = answer.as_ref().map(Sections::from).unwrap_or_default();
                let msg = builder().build(meta, s.answers, s.authority, [], s.additionals);
                send(&mut response, msg, meta).await
            }
            Plan::Forward { mut meta, query, dnssec_ok } => {
                let qtype = query.query_type();
                let reply = self.forwarder.resolve(&query, dnssec_ok).await;
                self.responder.metrics.forwarded(reply.is_ok());
                match reply {
                    Ok(reply) => {
                        meta.response_code = reply.metadata.response_code;
                        self.responder.metrics.count(qtype, meta.response_code);
                        let msg = builder().build(meta, &reply.answers, &reply.authorities, [], &reply.additionals);
                        send(&mut response, msg, meta).await
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, name = %query.name(), "forwarding failed");
                        meta.response_code = ResponseCode::ServFail;
                        self.responder.metrics.count(qtype, meta.response_code);
                        send(&mut response, builder().build_no_records(meta), meta).await
                    }
                }
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
    >,
    meta: Metadata,
) -> ResponseInfo {
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "cannot send a DNS answer");
            Header { metadata: meta, counts: HeaderCounts::default() }.into()
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}
