//! The DNS socket adapter: UDP and TCP listeners on hickory-server, a request handler that asks
//! `answer` and sends what it decided, and the task that rebuilds the zones whenever the
//! inventory changes (new serial; new zones appear without a restart).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::answer::{Answer, Question, Recursion, answer};
use super::forward::Forwarder;
use super::zones::{ZoneSet, build, next_serial};
use super::{EDNS_PAYLOAD, Settings};
use crate::inventory::Inventory;
use crate::store::events::{EventKind, EventLog, Source, Subject};

/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// One refused-query event per client per this interval (metrics count them all).
const REFUSED_EVENT_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS: cannot listen on {addr} ({proto}): {source}")]
    Bind { addr: SocketAddr, proto: &'static str, source: std::io::Error },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    qtype: &'static str,
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Default)]
struct Metrics {
    queries: Family<QueryLabels, Counter>,
    forwarded: Family<ResultLabel, Counter>,
    refused: Counter,
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "slipway_dns_queries",
            "DNS queries answered, by query type and response code",
            self.queries.clone(),
        );
        registry.register("slipway_dns_forwarded", "DNS queries forwarded upstream, by result", self.forwarded.clone());
        registry.register(
            "slipway_dns_refused",
            "DNS queries refused (outside our zones, recursion not allowed)",
            self.refused.clone(),
        );
    }
}

/// Bound listeners, ready to serve.
#[derive(Debug)]
pub struct Server {
    udp: Vec<UdpSocket>,
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
            udp.push(UdpSocket::bind(addr).await.map_err(|source| DnsError::Bind { addr, proto: "UDP", source })?);
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
        let handler = Handler {
            zones: self.zones.subscribe(),
            recursion: self.settings.allow_recursion.clone(),
            can_forward: !self.forwarder.is_empty(),
            forwarder: self.forwarder,
            metrics: self.metrics,
            events: events.clone(),
            refused_seen: Mutex::new(HashMap::new()),
        };
        let mut server = hickory_server::Server::new(handler);
        for socket in self.udp {
            server.register_socket(socket);
        }
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
    }
}

struct Handler {
    zones: watch::Receiver<Arc<ZoneSet>>,
    recursion: super::Acl,
    can_forward: bool,
    forwarder: Forwarder,
    metrics: Metrics,
    events: EventLog,
    /// When each client last produced a refused-query event.
    refused_seen: Mutex<HashMap<IpAddr, Instant>>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        let edns = request.edns.as_ref().map(response_edns);
        let builder = || {
            let mut b = MessageResponseBuilder::from_message_request(request);
            if let Some(e) = &edns {
                b.edns(e);
            }
            b
        };
        let query = match request.request_info() {
            Ok(info) if request.metadata.op_code == OpCode::Query => info.query,
            Ok(_) => {
                meta.response_code = ResponseCode::NotImp;
                return send(&mut response, builder().build_no_records(meta), meta).await;
            }
            Err(_) => {
                // No question, or more than one: RFC 9619 says exactly one.
                meta.response_code = ResponseCode::FormErr;
                return send(&mut response, builder().build_no_records(meta), meta).await;
            }
        };
        let zones = self.zones.borrow().clone();
        let recursion = Recursion {
            allowed: self.recursion.allows(request.src().ip()),
            desired: request.metadata.recursion_desired,
        };
        meta.recursion_available = recursion.allowed && self.can_forward;
        let question = Question { name: query.name(), qtype: query.query_type(), qclass: query.query_class() };
        let qtype: &'static str = query.query_type().into();
        let decided = if recursion.allowed && !self.can_forward {
            // Nowhere to forward to: names outside our zones are refused rather than timed out.
            match answer(&zones, &question, recursion) {
                Answer::Forward => Answer::Refused,
                other => other,
            }
        } else {
            answer(&zones, &question, recursion)
        };
        match decided {
            Answer::Zone(z) => {
                meta.authoritative = true;
                meta.response_code = z.rcode;
                self.count(qtype, z.rcode);
                let msg = builder().build(meta, z.answers.iter(), z.authority.iter(), [], z.additionals.iter());
                send(&mut response, msg, meta).await
            }
            Answer::Refused => {
                meta.response_code = ResponseCode::Refused;
                self.count(qtype, ResponseCode::Refused);
                self.metrics.refused.inc();
                self.note_refused(request.src().ip(), &query.name().to_string());
                send(&mut response, builder().build_no_records(meta), meta).await
            }
            Answer::Forward => {
                let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
                match self.forwarder.resolve(query.original(), dnssec_ok).await {
                    Ok(reply) => {
                        self.metrics.forwarded.get_or_create(&ResultLabel { result: "answered" }).inc();
                        meta.response_code = reply.metadata.response_code;
                        self.count(qtype, meta.response_code);
                        let msg = builder().build(
                            meta,
                            reply.answers.iter(),
                            reply.authorities.iter(),
                            [],
                            reply.additionals.iter(),
                        );
                        send(&mut response, msg, meta).await
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, name = %query.name(), "forwarding failed");
                        self.metrics.forwarded.get_or_create(&ResultLabel { result: "failed" }).inc();
                        meta.response_code = ResponseCode::ServFail;
                        self.count(qtype, ResponseCode::ServFail);
                        send(&mut response, builder().build_no_records(meta), meta).await
                    }
                }
            }
        }
    }
}

impl Handler {
    fn count(&self, qtype: &'static str, rcode: ResponseCode) {
        self.metrics.queries.get_or_create(&QueryLabels { qtype, rcode: rcode.to_str() }).inc();
    }

    /// A refused query becomes an event at most once a minute per client, so a scan or a
    /// misconfigured host cannot flood the event log.
    fn note_refused(&self, client: IpAddr, name: &str) {
        let now = Instant::now();
        let Ok(mut seen) = self.refused_seen.lock() else { return };
        if seen.get(&client).is_some_and(|last| now.duration_since(*last) < REFUSED_EVENT_EVERY) {
            return;
        }
        if seen.len() >= 4096 {
            seen.retain(|_, last| now.duration_since(*last) < REFUSED_EVENT_EVERY);
        }
        seen.insert(client, now);
        drop(seen);
        self.events.append(
            Source::Dns,
            Subject::default(),
            EventKind::DnsRefused { client: client.to_string(), name: name.to_owned() },
        );
    }
}

/// EDNS in the answer: the client's buffer size, capped at 1232 (UDP answers are truncated to it).
fn response_edns(request: &Edns) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(request.max_payload().min(EDNS_PAYLOAD));
    edns
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
