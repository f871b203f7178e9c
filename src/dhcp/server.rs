//! The DHCP socket adapter: one UDP socket per served interface (bound to the device, so
//! broadcasts leave where they should), one owner task for the lease table.
//!
//! The owner takes every datagram waiting, decides each, applies the lease changes in memory,
//! writes the ones that must survive (acks, releases, declines) to the lease journal in one synced
//! append, and only then sends the replies: a lease is on disk before its DHCPACK leaves, and a
//! slow disk makes batches larger instead of the server slower (group commit).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::decide::{Context, Decision, Destination, Ignore, Outcome, decide};
use super::leases::LeaseTable;
use super::message;
use crate::boot::BootSettings;
use crate::inventory::{Inventory, Lease, LeaseState, Name, Timestamp};
use crate::service::{Deps, RunError, Service};
use crate::store::events::{EventKind, EventLog, Source, Subject};
use crate::store::{Store, StoreError};
use crate::throttle::{Budget, Throttle};

/// Unanswered messages recorded as events: at most this many per interval, all told.
const IGNORED_INTERVAL: Duration = Duration::from_secs(60);
const IGNORED_PER_INTERVAL: u32 = 120;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// The PXE boot-server port, served on proxyDHCP networks.
pub const PXE_PORT: u16 = 4011;
const OFFER_HOLD: Duration = Duration::from_secs(60);
const DECLINE_HOLD: Duration = Duration::from_secs(600);
const MAX_HOPS: u8 = 16;
/// How long a probed pool address gets to answer before it is offered.
const PROBE_WAIT: Duration = Duration::from_millis(500);
/// Most datagrams decided per commit.
const BATCH: usize = 1024;
/// Shortest time from one lease sync to the next. A sync costs the same CPU whether it carries
/// one lease or a hundred, and under load the requests that arrive meanwhile join the next
/// batch, so this caps the syncs at 500 a second; a lone client waits at most this much longer.
const SYNC_GAP: Duration = Duration::from_millis(2);

/// Datagrams taken per `recvmmsg`.
const RECV_BATCH: usize = 32;
/// Largest datagram read: DHCP messages fit an Ethernet frame; a longer one arrives cut and
/// fails to parse.
const MAX_DATAGRAM: usize = 4096;

/// Requested receive buffer of a DHCP socket, in bytes.
const RECV_BUFFER: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("DHCP: interface {interface} has no IPv4 address to serve from")]
    NoAddress { interface: String },
    #[error("DHCP: cannot read the addresses of interface {interface}: {source}")]
    Interfaces { interface: String, source: std::io::Error },
    #[error("DHCP: cannot listen on {interface} port {port}: {source}")]
    Bind { interface: String, port: u16, source: std::io::Error },
}

/// One served interface. `S` is a plain socket until the server runs, then one registered with
/// the DHCP runtime.
#[derive(Debug)]
struct Port<S = Arc<UdpSocket>> {
    interface: String,
    network: Name,
    server_ip: Ipv4Addr,
    socket: S,
    /// This is the PXE boot-server port (4011) of a proxyDHCP network, not port 67.
    pxe: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    network: String,
    message: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetworkLabel {
    network: String,
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    messages: Family<MessageLabels, Counter>,
    /// Counter handles by (network, message), so counting allocates nothing after the first.
    counters: std::sync::Arc<std::sync::Mutex<HashMap<Name, HashMap<&'static str, Counter>>>>,
    pool_used: Family<NetworkLabel, Gauge>,
    pool_size: Family<NetworkLabel, Gauge>,
}

impl Metrics {
    /// The DHCP families, registered in `registry` (once for the process).
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Metrics {
        let metrics = Metrics::default();
        let sub = registry.sub_registry_with_prefix("dhcp");
        sub.register("messages", "DHCP messages by network and type, received and sent", metrics.messages.clone());
        sub.register("pool_used", "Active leases in each network's dynamic pool", metrics.pool_used.clone());
        sub.register("pool_size", "Addresses in each network's dynamic pool", metrics.pool_size.clone());
        metrics
    }
}

/// Commands for the lease owner from elsewhere (the admin API).
#[derive(Debug)]
enum Command {
    Release(Ipv4Addr, oneshot::Sender<Result<Lease, StoreError>>),
}

/// A handle to the running DHCP server's lease table.
#[derive(Clone, Debug)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
}

impl Handle {
    /// Releases the lease on `ip` through the lease owner, so the server and the store agree.
    pub async fn release(&self, ip: Ipv4Addr) -> Result<Lease, StoreError> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Release(ip, tx)).await.is_err() {
            return Err(StoreError::NoLease(ip));
        }
        rx.await.unwrap_or(Err(StoreError::NoLease(ip)))
    }
}

/// Bound sockets, ready to serve.
#[derive(Debug)]
pub struct Server {
    ports: Vec<Port<std::net::UdpSocket>>,
    metrics: Metrics,
    commands: mpsc::Receiver<Command>,
    handle: Handle,
    store: Store,
    events: EventLog,
    inventory: watch::Receiver<Arc<Inventory>>,
    boot: BootSettings,
}

/// The first IPv4 address of `interface` (also DNS's default listen address).
pub fn interface_address(interface: &str) -> Result<Ipv4Addr, DhcpError> {
    let all =
        if_addrs::get_if_addrs().map_err(|source| DhcpError::Interfaces { interface: interface.into(), source })?;
    all.iter()
        .filter(|i| i.name == interface)
        .find_map(|i| match i.ip() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
        .ok_or_else(|| DhcpError::NoAddress { interface: interface.into() })
}

fn bind_device(interface: &str, port: u16) -> Result<std::net::UdpSocket, DhcpError> {
    let err = |source| DhcpError::Bind { interface: interface.into(), port, source };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_broadcast(true).map_err(err)?;
    // A boot storm arrives faster than one lease commit: room for a few thousand requests
    // (the kernel caps this at net.core.rmem_max; a smaller buffer is not an error).
    let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    socket.bind_device(Some(interface.as_bytes())).map_err(err)?;
    socket.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into()).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    Ok(socket.into())
}

impl Port<std::net::UdpSocket> {
    /// Registers the socket with the runtime this is called on.
    fn register(self) -> std::io::Result<Port> {
        let Port { interface, network, server_ip, socket, pxe } = self;
        Ok(Port { interface, network, server_ip, socket: Arc::new(UdpSocket::from_std(socket)?), pxe })
    }
}

impl Server {
    /// Binds port 67 on each interface; each must carry an IPv4 address and serve a network.
    /// `networks`: the config's (a reload binds before its inventory is committed).
    /// `addresses`: what DHCP names as its own address on a network (server identifier, next
    /// server, boot URLs) instead of the interface's first: in a pair or trio, the floating
    /// address keepalived moves to the leader.
    /// `metrics`: registered once for the process (`Metrics::register`), kept across rebinds.
    pub fn bind(
        deps: &Deps<'_>,
        metrics: Metrics,
        interfaces: &[String],
        addresses: &[Ipv4Addr],
        networks: &std::collections::BTreeMap<Name, crate::inventory::Network>,
        boot: BootSettings,
    ) -> Result<Server, DhcpError> {
        let inventory = deps.store.subscribe();
        let mut ports = Vec::new();
        for interface in interfaces {
            let Some(net) = networks.values().find(|n| &n.interface == interface) else { continue };
            let server_ip = match addresses.iter().find(|a| net.cidr.contains(*a)) {
                Some(floating) => *floating,
                None => interface_address(interface)?,
            };
            let socket = bind_device(interface, SERVER_PORT)?;
            ports.push(Port { interface: interface.clone(), network: net.name.clone(), server_ip, socket, pxe: false });
            if net.proxy {
                let socket = bind_device(interface, PXE_PORT)?;
                ports.push(Port {
                    interface: interface.clone(),
                    network: net.name.clone(),
                    server_ip,
                    socket,
                    pxe: true,
                });
            }
        }
        let (tx, commands) = mpsc::channel(64);
        Ok(Server {
            ports,
            metrics,
            commands,
            handle: Handle { commands: tx },
            store: deps.store.clone(),
            events: deps.events.clone(),
            inventory,
            boot,
        })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    async fn serve(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let leases = LeaseTable::new(self.store.leases()?);
        let ports = self.ports.into_iter().map(Port::register).collect::<Result<Vec<_>, _>>();
        let ports = Arc::new(ports.map_err(RunError::Register)?);
        // A receiver whose socket breaks stops the owner too.
        let stop = shutdown.child_token();
        let (tx, rx) = mpsc::channel::<Datagram>(BATCH * 4);
        let mut receivers = tokio::task::JoinSet::new();
        for index in 0..ports.len() {
            receivers.spawn(receive(ports.clone(), index, tx.clone(), stop.clone()).in_current_span());
        }
        drop(tx);
        let owner = Owner {
            ports,
            store: self.store,
            events: self.events,
            inventory: self.inventory,
            boot: self.boot,
            leases,
            metrics: self.metrics,
            pool_checked: None,
            probes: mpsc::channel(BATCH),
            probe_failed_logged: false,
            last_sync: None,
            exhausted: Throttle::new(IGNORED_INTERVAL, 1024),
            ignored: Budget::new(IGNORED_INTERVAL, IGNORED_PER_INTERVAL),
            term: None,
        };
        let owner = owner.run(rx, self.commands, stop.clone());
        tokio::pin!(owner);
        let mut outcome = Ok(());
        loop {
            tokio::select! {
                () = &mut owner => break,
                Some(Ok(Err(e))) = receivers.join_next() => {
                    stop.cancel();
                    outcome = Err(e);
                }
            }
        }
        // Every socket is closed when this returns: a reload may bind its port again.
        stop.cancel();
        while receivers.join_next().await.is_some() {}
        outcome
    }
}

impl Service for Server {
    const NAME: &'static str = "dhcp";

    fn span(&self) -> tracing::Span {
        tracing::info_span!("dhcp")
    }

    /// The interfaces and addresses served, for readiness and logs.
    fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.ports
            .iter()
            .map(|p| {
                let port = if p.pxe { PXE_PORT } else { SERVER_PORT };
                (format!("dhcp {}", p.interface), SocketAddr::from(SocketAddrV4::new(p.server_ip, port)))
            })
            .collect()
    }

    /// Serves until `shutdown`, on a thread with a runtime of its own (as DNS's UDP sockets):
    /// receiving, deciding and sending then hand work from task to task on one thread instead
    /// of waking other runtime threads per datagram; lease commits still run on a blocking
    /// thread so the next batch is decided while one is synced.
    async fn run(self, shutdown: CancellationToken) -> Result<(), RunError> {
        crate::runtime::dedicated("DHCP", move || self.serve(shutdown)).await?
    }
}

struct Datagram {
    port: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// Receives on one port until `shutdown`; ends early only when the socket itself breaks.
async fn receive(
    ports: Arc<Vec<Port>>,
    index: usize,
    tx: mpsc::Sender<Datagram>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let socket = ports[index].socket.clone();
    let mut bufs = vec![[0u8; MAX_DATAGRAM]; RECV_BATCH];
    let mut received = Vec::with_capacity(RECV_BATCH);
    loop {
        received.clear();
        let got = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = crate::udp::recv_batch(&socket, &mut bufs, &mut received) => r,
        };
        if let Err(e) = got {
            let e = crate::sockets::received("DHCP", socket.local_addr(), e)?;
            tracing::warn!(error = %e, interface = %ports[index].interface, "receive failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        for (i, &(n, from)) in received.iter().enumerate() {
            let datagram = Datagram { port: index, from, bytes: bufs[i][..n].to_vec() };
            if tx.try_send(datagram).is_err() {
                tracing::debug!(%from, "queue full, datagram dropped");
            }
        }
    }
}

/// The one task that owns the lease table.
struct Owner {
    ports: Arc<Vec<Port>>,
    store: Store,
    events: EventLog,
    inventory: watch::Receiver<Arc<Inventory>>,
    boot: BootSettings,
    leases: LeaseTable,
    metrics: Metrics,
    pool_checked: Option<Instant>,
    probes: (mpsc::Sender<Probed>, mpsc::Receiver<Probed>),
    probe_failed_logged: bool,
    /// When the latest lease sync started (or will start, after its wait).
    last_sync: Option<Instant>,
    /// Pool exhaustion is logged and recorded once a minute per network, and messages left
    /// unanswered are recorded up to a budget: a flood from random MACs is counted, not
    /// written out message by message.
    exhausted: Throttle<Name>,
    ignored: Budget,
    /// The leadership term the lease table was read in (`Store::term`); `None` until the
    /// first message, and while another instance leads.
    term: Option<i64>,
}

/// A pool offer held back until its address has been probed.
struct Probed {
    out: Outgoing,
    lease: Lease,
    mac: crate::inventory::MacAddr,
    node: Option<Name>,
    /// `Ok(true)`: the address answered; `Err`: the probe could not run.
    answered: std::io::Result<bool>,
}

/// A decided batch: leases to commit, then replies to send.
struct Decided {
    durable: Vec<Lease>,
    outgoing: Vec<Outgoing>,
}

/// A batch whose leases are being committed.
struct InFlight {
    commit: tokio::task::JoinHandle<Result<(), StoreError>>,
    outgoing: Vec<Outgoing>,
}

async fn wait_commit(commit: &mut tokio::task::JoinHandle<Result<(), StoreError>>) -> Result<(), StoreError> {
    commit
        .await
        .unwrap_or_else(|e| Err(StoreError::Db(redb::StorageError::Io(std::io::Error::other(e.to_string())).into())))
}

/// The commit in flight, for `select!` (only polled when there is one).
async fn wait(in_flight: &mut Option<InFlight>) -> Result<(), StoreError> {
    match in_flight {
        Some(f) => wait_commit(&mut f.commit).await,
        None => std::future::pending().await,
    }
}

/// A decided reply waiting for its leases to be committed.
struct Outgoing {
    port: usize,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl Owner {
    /// Receives, decides and commits in a pipeline: while one batch's leases are being synced
    /// to disk, the next batch is decided; a batch's replies leave once its own commit (and so
    /// every earlier one: commits run one after another) is on disk.
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Datagram>,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut in_flight: Option<InFlight> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(command) = commands.recv() => {
                    self.settle(in_flight.take()).await;
                    self.command(command).await;
                }
                Some(probed) = self.probes.1.recv() => {
                    self.settle(in_flight.take()).await;
                    self.probed(probed).await;
                }
                done = wait(&mut in_flight), if in_flight.is_some() => {
                    if let Some(f) = in_flight.take() {
                        self.sent_after(f.outgoing, done).await;
                    }
                }
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    if !self.leading().await {
                        tracing::debug!(messages = n, "not leading: another instance allocates");
                        batch.clear();
                        continue;
                    }
                    let decided = tracing::info_span!("batch", messages = n).in_scope(|| self.serve(&batch));
                    batch.clear();
                    if !self.settle(in_flight.take()).await {
                        // The earlier commit failed and the table was reloaded from disk: this
                        // batch was decided on leases that never reached it.
                        continue;
                    }
                    in_flight = self.start(decided).await;
                }
            }
        }
        self.settle(in_flight).await;
    }

    /// Whether this instance allocates now (on etcd only the leader does). A new term first
    /// reads the lease table again, once this instance's copy holds everything written
    /// before the term began (the previous leader's last leases).
    async fn leading(&mut self) -> bool {
        let Some(term) = self.store.term() else {
            if self.term.take().is_some() {
                tracing::warn!("no longer leading: DHCP stops allocating here");
            }
            return false;
        };
        if self.term == Some(term) {
            return true;
        }
        if !self.store.caught_up(term).await {
            tracing::warn!(term, "leading, but the store has not caught up with the term's start; not allocating yet");
            return false;
        }
        match self.store.leases() {
            Ok(stored) => self.leases = LeaseTable::new(stored),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the leases; not allocating yet");
                return false;
            }
        }
        if term != 0 {
            tracing::info!(term, "leading: DHCP allocates here");
        }
        self.term = Some(term);
        true
    }

    /// Starts committing a decided batch; a batch with nothing durable is sent at once.
    async fn start(&mut self, decided: Decided) -> Option<InFlight> {
        if decided.durable.is_empty() {
            self.send(decided.outgoing).await;
            return None;
        }
        let (store, leases) = (self.store.clone(), decided.durable);
        let now = Instant::now();
        let wait = self.last_sync.map_or(Duration::ZERO, |t| (t + SYNC_GAP).saturating_duration_since(now));
        self.last_sync = Some(now + wait);
        let commit = tokio::task::spawn_blocking(move || {
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            store.put_leases(leases)
        });
        Some(InFlight { commit, outgoing: decided.outgoing })
    }

    /// Waits for a commit in flight and sends its replies; `false` when it failed.
    async fn settle(&mut self, in_flight: Option<InFlight>) -> bool {
        let Some(mut f) = in_flight else { return true };
        let done = wait_commit(&mut f.commit).await;
        self.sent_after(f.outgoing, done).await
    }

    /// Sends replies whose leases are on disk; when the commit failed, nothing that depended on
    /// it leaves and the table goes back to the disk's. `false` when it failed.
    async fn sent_after(&mut self, outgoing: Vec<Outgoing>, done: Result<(), StoreError>) -> bool {
        match done {
            Ok(()) => {
                self.send(outgoing).await;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, dropped = outgoing.len(), "cannot persist leases; replies dropped");
                if let Ok(stored) = self.store.leases() {
                    self.leases = LeaseTable::new(stored);
                }
                false
            }
        }
    }

    /// Sends replies in one `sendmmsg` per port (a batch's replies usually all leave by one).
    async fn send(&self, outgoing: Vec<Outgoing>) {
        for (index, port) in self.ports.iter().enumerate() {
            let replies: Vec<(&[u8], SocketAddr)> =
                outgoing.iter().filter(|o| o.port == index).map(|o| (o.bytes.as_slice(), o.to)).collect();
            if !replies.is_empty() {
                crate::udp::send_all(&port.socket, &replies, "DHCP").await;
            }
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Release(ip, reply) => {
                let now = Timestamp::now();
                let result = match self.leases.get(ip).cloned() {
                    Some(mut lease) => {
                        lease.state = LeaseState::Released;
                        lease.expires = now;
                        lease.updated = now;
                        self.commit(vec![lease.clone()]).await.map(|()| lease)
                    }
                    None => Err(StoreError::NoLease(ip)),
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Decides a batch: lease changes applied in memory, the durable ones and the replies
    /// returned for commit and sending.
    fn serve(&mut self, batch: &[Datagram]) -> Decided {
        let inv = self.inventory.borrow().clone();
        let now = Timestamp::now();
        let mut durable = Vec::new();
        let mut outgoing = Vec::new();
        for datagram in batch.iter() {
            let port = &self.ports[datagram.port];
            let req = match message::parse(&datagram.bytes) {
                Ok(parsed) => parsed,
                Err(e) => {
                    tracing::debug!(from = %datagram.from, interface = %port.interface, error = %e, "dropped a malformed datagram");
                    continue;
                }
            };
            let ctx = Context {
                now,
                server_ip: port.server_ip,
                network: Some(&port.network),
                boot: &self.boot,
                offer_hold: OFFER_HOLD,
                decline_hold: DECLINE_HOLD,
                max_hops: MAX_HOPS,
                pxe_port: port.pxe,
            };
            let decision = decide(&inv, &self.leases, &req, &ctx);
            let span = tracing::debug_span!("dhcp", xid = format_args!("{:#010x}", req.xid), mac = %req.mac, message = req.kind.as_str());
            span.in_scope(|| tracing::debug!(outcome = ?decision.outcome, "decided"));
            // A pool offer on a probing network waits for the probe (unless the client had it);
            // it is recorded as offered only when the probe lets it leave.
            let probe = match (&decision.outcome, &decision.lease, &decision.node) {
                (Outcome::Offered(ip), Some(lease), None)
                    if inv.networks.get(&lease.network).is_some_and(|n| n.probe)
                        && self.leases.get(*ip).is_none_or(|l| l.mac != req.mac) =>
                {
                    Some(lease.clone())
                }
                _ => None,
            };
            self.record(&req, &decision, port, probe.is_some());
            if let Some(lease) = decision.lease {
                if lease.state != LeaseState::Offered {
                    durable.push(lease.clone());
                }
                self.leases.put(lease);
            }
            if let Some(reply) = decision.reply
                && let Some(bytes) = message::encode(&reply.message)
            {
                let to = match reply.to {
                    Destination::Relay(ip) => SocketAddr::from((ip, SERVER_PORT)),
                    Destination::Unicast(ip) => SocketAddr::from((ip, CLIENT_PORT)),
                    Destination::Broadcast => SocketAddr::from((Ipv4Addr::BROADCAST, CLIENT_PORT)),
                    Destination::Source => datagram.from,
                };
                let out = Outgoing { port: datagram.port, to, bytes };
                match probe {
                    Some(lease) => self.start_probe(out, lease, req.mac, decision.node.clone()),
                    None => outgoing.push(out),
                }
            }
        }
        self.update_pool_gauges(&inv, now);
        Decided { durable, outgoing }
    }

    async fn commit(&self, leases: Vec<Lease>) -> Result<(), StoreError> {
        let store = self.store.clone();
        wait_commit(&mut tokio::task::spawn_blocking(move || store.put_leases(leases))).await
    }

    /// Counts the message and records its outcome as an event; a `held` offer (waiting for its
    /// probe) is counted and recorded by `probed` if it leaves.
    fn record(&self, req: &message::Request, decision: &Decision, port: &Port, held: bool) {
        let network = decision.network.as_ref().unwrap_or(&port.network);
        let count = |message: &'static str| self.count(network, message);
        count(req.kind.as_str());
        // One event per message: the outcome names what was asked (an offer answers a discover,
        // an ack or nak a request, ...); ignored messages say which message they were.
        let subject = Subject { node: decision.node.clone(), mac: Some(req.mac) };
        let event = |details| {
            self.events.append(Source::Dhcp, subject.clone(), details);
        };
        match &decision.outcome {
            Outcome::Offered(_) if held => {}
            Outcome::Offered(ip) => {
                count("offer");
                event(EventKind::LeaseOffered { ip: *ip });
            }
            Outcome::Acked(ip) => {
                count("ack");
                let lease_secs = decision.lease.as_ref().map_or(0, |l| {
                    u32::try_from(l.expires.0.duration_since(l.updated.0).unwrap_or_default().as_secs())
                        .unwrap_or(u32::MAX)
                });
                event(EventKind::LeaseAcked { ip: *ip, lease_secs });
            }
            Outcome::Naked(ip, why) => {
                count("nak");
                event(EventKind::LeaseNaked { ip: *ip, reason: (*why).into() });
            }
            Outcome::Informed => {
                count("ack");
                event(EventKind::DhcpInformed);
            }
            Outcome::Proxied(message) => {
                count(message);
                event(EventKind::DhcpProxied { message: (*message).into() });
            }
            Outcome::Released(ip) => event(EventKind::LeaseReleased { ip: *ip }),
            Outcome::Declined(ip) => {
                tracing::warn!(%ip, mac = %req.mac, "a client declined its address (in use by another machine?)");
                event(EventKind::LeaseDeclined { ip: *ip });
            }
            Outcome::Ignored(Ignore::PoolExhausted(network)) => {
                count("ignored");
                if self.exhausted.due(network.clone()) {
                    tracing::warn!(%network, mac = %req.mac, "the dynamic pool is exhausted (logged once a minute)");
                    event(EventKind::PoolExhausted { network: network.clone() });
                }
            }
            Outcome::Ignored(why) => {
                count("ignored");
                if self.ignored.allow() {
                    event(EventKind::DhcpIgnored { message: req.kind.as_str().into(), reason: why.to_string() });
                }
            }
        }
    }

    /// Counts one message of kind `message` on `network`.
    fn count(&self, network: &Name, message: &'static str) {
        let mut cache = self.metrics.counters.lock().unwrap_or_else(|p| p.into_inner());
        if !cache.contains_key(network) {
            cache.insert(network.clone(), HashMap::new());
        }
        let Some(counters) = cache.get_mut(network) else { return };
        let counter = counters.entry(message).or_insert_with(|| {
            self.metrics
                .messages
                .get_or_create(&MessageLabels { network: network.to_string(), message: message.into() })
                .clone()
        });
        counter.inc();
    }

    fn start_probe(&self, out: Outgoing, lease: Lease, mac: crate::inventory::MacAddr, node: Option<Name>) {
        let done = self.probes.0.clone();
        tokio::spawn(
            async move {
                let answered = super::probe::answers(lease.ip, PROBE_WAIT).await;
                let _ = done.send(Probed { out, lease, mac, node, answered }).await;
            }
            .in_current_span(),
        );
    }

    /// A probe finished: an address that answered is kept out of use (like a DECLINE) and its
    /// offer is dropped, so the client's next DISCOVER gets another; otherwise the offer leaves.
    async fn probed(&mut self, p: Probed) {
        match p.answered {
            Ok(true) => {
                let now = Timestamp::now();
                // The address belongs to whatever answered, not to the client that asked: the
                // quarantine has no owner (as Kea keeps a declined lease).
                let quarantine = Lease {
                    state: LeaseState::Declined,
                    expires: Timestamp(now.0 + DECLINE_HOLD),
                    updated: now,
                    mac: crate::inventory::MacAddr([0; 6]),
                    hostname: None,
                    client_id: None,
                    ..p.lease.clone()
                };
                tracing::warn!(ip = %p.lease.ip, "a pool address answers ping but has no lease; not offering it");
                self.events.append(Source::Dhcp, Subject::default(), EventKind::AddressInUse { ip: p.lease.ip });
                if let Err(e) = self.commit(vec![quarantine.clone()]).await {
                    tracing::error!(error = %e, "cannot persist a quarantined address");
                }
                self.leases.put(quarantine);
                return;
            }
            Ok(false) => {}
            Err(e) => {
                if !self.probe_failed_logged {
                    tracing::warn!(error = %e, "cannot probe pool addresses (needs CAP_NET_RAW); offering without");
                    self.probe_failed_logged = true;
                }
            }
        }
        // The offer stands only if nothing replaced its lease while the probe ran.
        if !self.leases.get(p.lease.ip).is_some_and(|l| *l == p.lease) {
            return;
        }
        match self.ports[p.out.port].socket.send_to(&p.out.bytes, p.out.to).await {
            Ok(_) => {
                self.count(&p.lease.network, "offer");
                self.events.append(
                    Source::Dhcp,
                    Subject { node: p.node, mac: Some(p.mac) },
                    EventKind::LeaseOffered { ip: p.lease.ip },
                );
            }
            Err(e) => tracing::debug!(to = %p.out.to, error = %e, "send failed"),
        }
    }

    /// Pool usage, at most once a second (it walks the lease table).
    fn update_pool_gauges(&mut self, inv: &Inventory, now: Timestamp) {
        if self.pool_checked.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        self.pool_checked = Some(Instant::now());
        let mut seen = HashMap::new();
        for net in inv.networks.values() {
            if let Some(pool) = net.pool {
                seen.insert(net.name.to_string(), (self.leases.active_in(&pool, now), pool.len()));
            }
        }
        for (network, (used, size)) in seen {
            let label = NetworkLabel { network };
            self.metrics.pool_used.get_or_create(&label).set(i64::try_from(used).unwrap_or(i64::MAX));
            self.metrics.pool_size.get_or_create(&label).set(i64::try_from(size).unwrap_or(i64::MAX));
        }
    }
}
