//! The event log: typed events from every subsystem, persisted with bounded retention and
//! broadcast live.
//!
//! `append` never blocks and never waits for the disk: it stamps the event, broadcasts it and
//! hands it to one writer thread that commits batches (group commit) and prunes by count and
//! age. When the writer falls behind by more than the queue holds, events are counted as
//! dropped rather than stalling a packet path.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};
use utoipa::ToSchema;

use super::StoreError;
use super::schema::EVENTS;
use crate::inventory::{Action, ConfigKind, Kind, MacAddr, Name, Timestamp};

/// The subsystem that reported an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Daemon,
    Api,
    Dhcp,
    Dns,
    Tftp,
    Http,
    Lb,
    Hypervisor,
    Cluster,
}

/// What happened. Serialised with a `type` tag in snake_case (`lease_acked`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A DHCPINFORM was answered (options only, no address).
    DhcpInformed,
    /// proxyDHCP: boot information sent (an `offer` on port 67, an `ack` on 4011), no address.
    DhcpProxied {
        message: String,
    },
    /// A DHCP message slipway did not answer, and why.
    DhcpIgnored {
        message: String,
        reason: String,
    },
    /// A machine spoke to slipway for the first time in a while.
    MachineSeen {
        #[schema(value_type = Option<String>)]
        ip: Option<Ipv4Addr>,
    },
    LeaseOffered {
        #[schema(value_type = String)]
        ip: Ipv4Addr,
    },
    LeaseAcked {
        #[schema(value_type = String)]
        ip: Ipv4Addr,
        lease_secs: u32,
    },
    LeaseNaked {
        #[schema(value_type = String)]
        ip: Ipv4Addr,
        reason: String,
    },
    LeaseDeclined {
        #[schema(value_type = String)]
        ip: Ipv4Addr,
    },
    LeaseReleased {
        #[schema(value_type = String)]
        ip: Ipv4Addr,
    },
    PoolExhausted {
        network: Name,
    },
    /// A pool address answered the probe before it was offered: something uses it without a
    /// lease. It stays out of use for a while.
    AddressInUse {
        #[schema(value_type = String)]
        ip: Ipv4Addr,
    },
    BootScriptServed {
        profile: Option<Name>,
    },
    FileFetched {
        path: String,
        bytes: u64,
    },
    ConfigFetched {
        config: ConfigKind,
    },
    /// A config was served without some of slipway's additions: the node's own config (an
    /// upload or a template) defines the same thing, and Ignition or cloud-init would refuse
    /// both (each entry names the addition and why).
    ConfigAdditionsLeftOut {
        config: ConfigKind,
        left_out: Vec<String>,
    },
    /// A config was not served (500): rendered, it would be invalid, or it could not be
    /// rendered. `problem` says where, never the config's values.
    ConfigRefused {
        config: ConfigKind,
        problem: String,
    },
    /// A k3s node was given its config: its turn came, it starts k3s now.
    K3sConfigServed,
    PhoneHome {
        #[schema(value_type = String)]
        ip: Ipv4Addr,
    },
    /// The operator asked for the node to be installed again on its next network boot.
    ReinstallRequested,
    /// An Ignition config was uploaded for a cluster role (`openshift-install` output).
    IgnitionUploaded {
        cluster: Name,
        role: String,
        version: String,
        bytes: u64,
    },
    /// An uploaded OKD Ignition config older than 24 hours was served: its certificates expire
    /// 24 hours after `openshift-install` made them, so the node may fail to join.
    IgnitionStale {
        cluster: Name,
        role: String,
        age_hours: u64,
    },
    /// The DNS zones were rebuilt from a new inventory snapshot.
    DnsZonesUpdated {
        serial: u32,
        zones: usize,
    },
    /// A client outside the recursion list asked for a name outside slipway's zones (at most
    /// one event per client per minute).
    DnsRefused {
        client: String,
        name: String,
    },
    /// A write through the admin API (its audit trail, kept apart: `kind=audit`): the method,
    /// the object it named (the path under `/api/v1/`), the answer's status and what it meant,
    /// the caller's address and which token it used (its name, never the token; `none` when it
    /// presented no valid token).
    Audit {
        method: String,
        object: String,
        status: u16,
        outcome: String,
        client: String,
        token: String,
    },
    /// An address presented wrong admin tokens too often: its requests are refused (429) for
    /// `seconds` without their token being looked at.
    ApiBackoff {
        client: String,
        seconds: u64,
    },
    /// An HTTP listener closed new connections from `client` at once: it had as many open as
    /// its limit allows, in all (`reason` `total`) or from that address (`per_address`). At most
    /// one event per listener, client and reason a minute.
    ConnectionRefused {
        listener: String,
        client: String,
        reason: String,
    },
    BackendUp {
        pool: Name,
        backend: String,
    },
    BackendDown {
        pool: Name,
        backend: String,
        reason: String,
    },
    VmCreated {
        vm: String,
        hypervisor: String,
    },
    VmDeleted {
        vm: String,
        hypervisor: String,
    },
    /// A node of a defined cluster moved to another provisioning phase (`error` when it failed).
    NodePhase {
        cluster: Name,
        from: String,
        phase: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A defined cluster's phase, the summary of its nodes', changed.
    ClusterPhase {
        cluster: Name,
        phase: String,
    },
    /// One of a defined cluster's health checks started or stopped passing.
    HealthCheck {
        cluster: Name,
        check: Name,
        ok: bool,
        message: String,
    },
    /// An OKD cluster's admin kubeconfig was uploaded (`user`: its client certificate's CN).
    KubeconfigUploaded {
        cluster: Name,
        user: String,
        expires: Timestamp,
    },
    /// An OKD cluster moved to another stage of its lifecycle (`error` when it failed).
    ClusterStage {
        cluster: Name,
        from: String,
        stage: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// One add-on set of a cluster was applied (`objects`), or failed (`error`: the object and
    /// the API's message, or what it waited for).
    Addon {
        cluster: Name,
        set: Name,
        state: String,
        objects: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// slipway approved a kubelet's CSR (`approver`: `slipway` by the guarded checks, or
    /// `operator` through `cluster csr approve`).
    CsrApproved {
        cluster: Name,
        csr: String,
        signer: String,
        why: String,
        approver: String,
    },
    /// A pending CSR slipway leaves alone, and why (once per CSR).
    CsrLeft {
        cluster: Name,
        csr: String,
        signer: String,
        why: String,
    },
    /// What slipway read over SSH from a node of a cluster whose stage failed (OKD's bootstrap
    /// node, a k3s server or agent) or that an operator asked about; or why it could not;
    /// `reason`: why it looked. The node's timeline shows it.
    #[serde(alias = "bootstrap_diagnostics")]
    NodeDiagnostics {
        cluster: Name,
        reason: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        commands: Vec<CommandOutput>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    InventoryChanged {
        object: Kind,
        name: Name,
        action: Action,
    },
    DaemonStarted {
        version: String,
    },
    DaemonStopping,
    /// The config file was read again (SIGHUP, `slipway reload`) and applied.
    ConfigReloaded {
        file: String,
        changed: Vec<String>,
    },
    /// A reloaded config file was refused whole; the running config stays.
    ConfigReloadRefused {
        file: String,
        problems: Vec<String>,
    },
    /// The shared store (etcd) cannot be reached or has no quorum: API writes answer 503 and
    /// DHCP allocates nothing; DNS, network boot and the load balancer serve the last inventory.
    StoreUnavailable {
        reason: String,
    },
    /// The shared store answers again.
    StoreAvailable,
    /// This instance leads (allocates DHCP leases, runs the lifecycle engine) from this term on.
    LeadershipGained {
        term: i64,
    },
    /// This instance no longer leads.
    LeadershipLost,
}

/// A command run on a node, what it printed (the last part, when `truncated`) and its exit
/// status (none when a signal ended it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommandOutput {
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    pub stdout: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl EventKind {
    /// Every `type` tag, in declaration order (what the `type` filter accepts).
    pub const TYPE_NAMES: &'static [&'static str] = &[
        "dhcp_informed",
        "dhcp_ignored",
        "dhcp_proxied",
        "machine_seen",
        "lease_offered",
        "lease_acked",
        "lease_naked",
        "lease_declined",
        "lease_released",
        "pool_exhausted",
        "address_in_use",
        "boot_script_served",
        "file_fetched",
        "config_fetched",
        "config_additions_left_out",
        "config_refused",
        "k3s_config_served",
        "phone_home",
        "reinstall_requested",
        "ignition_uploaded",
        "ignition_stale",
        "dns_zones_updated",
        "dns_refused",
        "connection_refused",
        "backend_up",
        "backend_down",
        "vm_created",
        "vm_deleted",
        "node_phase",
        "cluster_phase",
        "health_check",
        "kubeconfig_uploaded",
        "cluster_stage",
        "addon",
        "csr_approved",
        "csr_left",
        "node_diagnostics",
        "inventory_changed",
        "daemon_started",
        "daemon_stopping",
        "config_reloaded",
        "config_reload_refused",
        "audit",
        "api_backoff",
        "store_unavailable",
        "store_available",
        "leadership_gained",
        "leadership_lost",
    ];

    /// The `type` tag, as used by the `type` filter.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::DhcpInformed => "dhcp_informed",
            EventKind::DhcpIgnored { .. } => "dhcp_ignored",
            EventKind::DhcpProxied { .. } => "dhcp_proxied",
            EventKind::MachineSeen { .. } => "machine_seen",
            EventKind::LeaseOffered { .. } => "lease_offered",
            EventKind::LeaseAcked { .. } => "lease_acked",
            EventKind::LeaseNaked { .. } => "lease_naked",
            EventKind::LeaseDeclined { .. } => "lease_declined",
            EventKind::LeaseReleased { .. } => "lease_released",
            EventKind::PoolExhausted { .. } => "pool_exhausted",
            EventKind::AddressInUse { .. } => "address_in_use",
            EventKind::BootScriptServed { .. } => "boot_script_served",
            EventKind::FileFetched { .. } => "file_fetched",
            EventKind::ConfigFetched { .. } => "config_fetched",
            EventKind::ConfigAdditionsLeftOut { .. } => "config_additions_left_out",
            EventKind::ConfigRefused { .. } => "config_refused",
            EventKind::K3sConfigServed => "k3s_config_served",
            EventKind::PhoneHome { .. } => "phone_home",
            EventKind::ReinstallRequested => "reinstall_requested",
            EventKind::IgnitionUploaded { .. } => "ignition_uploaded",
            EventKind::IgnitionStale { .. } => "ignition_stale",
            EventKind::DnsZonesUpdated { .. } => "dns_zones_updated",
            EventKind::DnsRefused { .. } => "dns_refused",
            EventKind::ConnectionRefused { .. } => "connection_refused",
            EventKind::Audit { .. } => "audit",
            EventKind::ApiBackoff { .. } => "api_backoff",
            EventKind::BackendUp { .. } => "backend_up",
            EventKind::BackendDown { .. } => "backend_down",
            EventKind::VmCreated { .. } => "vm_created",
            EventKind::VmDeleted { .. } => "vm_deleted",
            EventKind::NodePhase { .. } => "node_phase",
            EventKind::ClusterPhase { .. } => "cluster_phase",
            EventKind::HealthCheck { .. } => "health_check",
            EventKind::KubeconfigUploaded { .. } => "kubeconfig_uploaded",
            EventKind::ClusterStage { .. } => "cluster_stage",
            EventKind::Addon { .. } => "addon",
            EventKind::CsrApproved { .. } => "csr_approved",
            EventKind::CsrLeft { .. } => "csr_left",
            EventKind::NodeDiagnostics { .. } => "node_diagnostics",
            EventKind::InventoryChanged { .. } => "inventory_changed",
            EventKind::DaemonStarted { .. } => "daemon_started",
            EventKind::DaemonStopping => "daemon_stopping",
            EventKind::ConfigReloaded { .. } => "config_reloaded",
            EventKind::ConfigReloadRefused { .. } => "config_reload_refused",
            EventKind::StoreUnavailable { .. } => "store_unavailable",
            EventKind::StoreAvailable => "store_available",
            EventKind::LeadershipGained { .. } => "leadership_gained",
            EventKind::LeadershipLost => "leadership_lost",
        }
    }
}

/// Which machine an event concerns, when it concerns one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    pub node: Option<Name>,
    pub mac: Option<MacAddr>,
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Increases by one per event; use it to resume (`after`).
    pub seq: u64,
    pub time: Timestamp,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    pub details: EventKind,
}

/// How much history to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub max_count: u64,
    pub max_age: Duration,
    /// The audit trail's own: it is kept far longer than boot history.
    pub audit_max_count: u64,
    pub audit_max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_count: 100_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
            audit_max_count: 100_000,
            audit_max_age: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

impl Retention {
    fn of(&self, log: Log) -> (u64, Duration) {
        match log {
            Log::Events => (self.max_count, self.max_age),
            Log::Audit => (self.audit_max_count, self.audit_max_age),
        }
    }
}

/// The two logs: events (boot, services, lifecycle) and the audit trail of API writes, each in
/// its own table under its own retention; one sequence numbers both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Log {
    #[default]
    Events,
    Audit,
}

impl Log {
    pub const BOTH: [Log; 2] = [Log::Events, Log::Audit];

    pub fn of(kind: &EventKind) -> Log {
        match kind {
            EventKind::Audit { .. } => Log::Audit,
            _ => Log::Events,
        }
    }

    fn table(self) -> redb::TableDefinition<'static, u64, (u64, &'static [u8])> {
        match self {
            Log::Events => EVENTS,
            Log::Audit => super::schema::AUDIT,
        }
    }
}

/// Which events a query or a follow wants. Every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Which log (events unless asked for the audit trail).
    pub log: Log,
    pub node: Option<Name>,
    pub mac: Option<MacAddr>,
    pub source: Option<Source>,
    /// `EventKind::type_name` values; empty matches every type.
    pub types: Vec<String>,
    pub since: Option<Timestamp>,
    /// Only events with a larger sequence number.
    pub after: Option<u64>,
}

impl Filter {
    pub fn matches(&self, e: &Event) -> bool {
        self.log == Log::of(&e.details)
            && self.node.as_ref().is_none_or(|n| e.node.as_ref() == Some(n))
            && self.mac.is_none_or(|m| e.mac == Some(m))
            && self.source.is_none_or(|s| e.source == s)
            && (self.types.is_empty() || self.types.iter().any(|t| t == e.details.type_name()))
            && self.since.is_none_or(|t| e.time >= t)
            && self.after.is_none_or(|a| e.seq > a)
    }
}

enum Message {
    Event(Arc<Event>),
    Flush(oneshot::Sender<()>),
    /// New limits (a config reload); the next batch is pruned by them.
    Retention(Retention),
    Stop,
}

/// Most events a batch commits at once.
const BATCH: usize = 4096;
/// Events the writer queue holds before `append` starts dropping.
const QUEUE: usize = 65_536;

/// Handle to the event log; cheap to clone.
#[derive(Clone, Debug)]
pub struct EventLog {
    inner: Arc<LogInner>,
}

#[derive(Debug)]
struct LogInner {
    store: super::Store,
    next_seq: AtomicU64,
    queue: SyncSender<Message>,
    live: broadcast::Sender<Arc<Event>>,
    dropped: AtomicU64,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl EventLog {
    /// Starts the log over the store's database; the writer thread runs until `close`.
    pub fn open(store: &super::Store, retention: Retention) -> Result<EventLog, StoreError> {
        let (last, count) = store.with_db(|db| {
            let txn = db.begin_read()?;
            let (mut last, mut count) = (0, [0u64; 2]);
            for (i, log) in Log::BOTH.into_iter().enumerate() {
                let table = txn.open_table(log.table())?;
                for row in table.iter()? {
                    count[i] += lines(row?.1.value().1).count() as u64;
                }
                if let Some((key, value)) = table.last()? {
                    last = last.max(last_seq(key.value(), value.value().1));
                }
            }
            Ok((last, count))
        })?;
        let (queue, rx) = mpsc::sync_channel(QUEUE);
        let (live, _) = broadcast::channel(4096);
        let writer_store = store.clone();
        let writer = std::thread::Builder::new()
            .name("slipway-events".into())
            .spawn(move || write_loop(&writer_store, &rx, retention, count))
            .map_err(|e| StoreError::Db(redb::StorageError::Io(e).into()))?;
        Ok(EventLog {
            inner: Arc::new(LogInner {
                store: store.clone(),
                next_seq: AtomicU64::new(last + 1),
                queue,
                live,
                dropped: AtomicU64::new(0),
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// Records an event now. Never blocks.
    pub fn append(&self, source: Source, subject: Subject, details: EventKind) -> Arc<Event> {
        self.append_at(Timestamp::now(), source, subject, details)
    }

    /// Records an event with a given time (for tests and imports).
    pub fn append_at(&self, time: Timestamp, source: Source, subject: Subject, details: EventKind) -> Arc<Event> {
        let event = Event {
            seq: self.inner.next_seq.fetch_add(1, Ordering::Relaxed),
            time,
            source,
            node: subject.node,
            mac: subject.mac,
            details,
        };
        let event = Arc::new(event);
        // No live subscribers is normal.
        let _ = self.inner.live.send(event.clone());
        match self.inner.queue.try_send(Message::Event(event.clone())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        event
    }

    /// Events that could not be persisted because the writer was behind or closed.
    /// One `inventory_changed` event per object a committed change changed (from `source`),
    /// with the node's name and MAC for a node.
    pub fn inventory_changed(
        &self,
        source: Source,
        inv: &crate::inventory::Inventory,
        outcomes: &[crate::inventory::Outcome],
    ) {
        for o in outcomes.iter().filter(|o| o.action != Action::Unchanged) {
            let node = (o.kind == Kind::Node).then(|| o.name.clone());
            let mac = node.as_ref().and_then(|n| inv.nodes.get(n)).map(|n| n.mac);
            let details = EventKind::InventoryChanged { object: o.kind, name: o.name.clone(), action: o.action };
            self.append(source, Subject { node, mac }, details);
            tracing::info!(kind = %o.kind, name = %o.name, action = ?o.action, version = inv.version, "inventory changed");
        }
    }

    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Live events appended from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.live.subscribe()
    }

    /// Waits until every event appended before this call is on disk.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.queue.send(Message::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Keeps events under `retention` from now on (events beyond it go with the next write).
    pub fn set_retention(&self, retention: Retention) {
        // Never blocks: with the queue full (the disk stalled), the limits wait for the next reload.
        if self.inner.queue.try_send(Message::Retention(retention)).is_err() {
            tracing::warn!("event log: the writer is behind; the new retention is not taken");
        }
    }

    /// Flushes and stops the writer thread. Later appends are counted as dropped.
    pub fn close(&self) {
        let handle = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = self.inner.queue.send(Message::Stop);
            let _ = handle.join();
        }
    }

    /// Stored events matching `filter`: the last `limit` of them in order, or, with
    /// `filter.after`, the first `limit` after that sequence number.
    pub fn query(&self, filter: &Filter, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.inner.store.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(filter.log.table())?;
            let mut out = Vec::new();
            // A node's events are found without decoding everyone else's: its name (a DNS label,
            // never escaped) appears verbatim in each of its lines.
            let needle = filter.node.as_ref().map(|n| format!("\"node\":\"{n}\""));
            let decode_line = |key: u64, json: &[u8]| -> Result<Option<Event>, StoreError> {
                if let Some(needle) = &needle
                    && !json.windows(needle.len()).any(|w| w == needle.as_bytes())
                {
                    return Ok(None);
                }
                let event: Event = super::decode("events", key, json)?;
                Ok(filter.matches(&event).then_some(event))
            };
            if let Some(after) = filter.after {
                // The row holding the next event starts at or before it.
                let next = after.saturating_add(1);
                let from = table.range(..=next)?.next_back().transpose()?.map_or(next, |(key, _)| key.value());
                'rows: for row in table.range(from..)? {
                    let (key, value) = row?;
                    for line in lines(value.value().1) {
                        if out.len() >= limit {
                            break 'rows;
                        }
                        out.extend(decode_line(key.value(), line)?);
                    }
                }
            } else {
                let since = filter.since.map(Timestamp::unix_millis);
                'rows: for row in table.iter()?.rev() {
                    let (key, value) = row?;
                    // A row's newest event is older than `since`: so are the rows before it.
                    if since.is_some_and(|since| value.value().0 < since) {
                        break;
                    }
                    for line in lines(value.value().1).rev() {
                        if out.len() >= limit {
                            break 'rows;
                        }
                        out.extend(decode_line(key.value(), line)?);
                    }
                }
                out.reverse();
            }
            Ok(out)
        })
    }
}

/// The events of one row, as JSON lines (a version-3 row is one event without a newline).
fn lines(bytes: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    bytes.split(|b| *b == b'\n').filter(|line| !line.is_empty())
}

/// The last sequence number in the row at `key`. A row whose lines do not decode (only a bug
/// could write one) must not stop the daemon: the numbers then go on after as many events as the
/// row holds, above every row's key, so no row is overwritten.
fn last_seq(key: u64, row: &[u8]) -> u64 {
    let mut after = 0;
    for line in lines(row).rev() {
        match seq_of(key, line) {
            Ok(seq) => return seq + after,
            Err(e) => {
                tracing::warn!(error = %e, "event log: an event does not decode; numbering goes on past it");
                after += 1;
            }
        }
    }
    key + after.saturating_sub(1)
}

/// The sequence number of one stored event, read without decoding the rest of it.
fn seq_of(key: u64, line: &[u8]) -> Result<u64, StoreError> {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    super::decode::<Seq>("events", key, line).map(|s| s.seq)
}

/// How long the writer waits after an event for more to join its batch.
const GATHER: Duration = Duration::from_millis(20);
/// Longest time between synced event batches while events keep coming.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// How often an idle writer wakes to drop events older than `max_age`.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// `count`: the events stored when the writer starts.
fn write_loop(store: &super::Store, rx: &Receiver<Message>, mut retention: Retention, mut count: [u64; 2]) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    let mut last_sync = Instant::now();
    loop {
        let first = match rx.recv_timeout(PRUNE_EVERY) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut stop = false;
        // An idle wake-up or new limits: prune now, synced.
        let durable = matches!(first, None | Some(Message::Retention(_)));
        if matches!(first, Some(Message::Event(_))) {
            // Let a batch gather: one transaction per `GATHER` instead of a wake-up and a
            // transaction per event when events trickle in one by one under load.
            std::thread::sleep(GATHER);
        }
        let mut next = first;
        while let Some(message) = next {
            match message {
                Message::Event(e) => batch.push(e),
                Message::Flush(tx) => flushes.push(tx),
                Message::Retention(r) => retention = r,
                Message::Stop => stop = true,
            }
            next = if batch.len() < BATCH { rx.try_recv().ok() } else { None };
        }
        // A flush, a stop or an idle prune waits for the disk, and otherwise a batch is synced
        // at most every `SYNC_EVERY`, carrying the unsynced ones before it: events are history,
        // not state, so a crash may lose the newest second.
        let sync = durable || stop || !flushes.is_empty() || last_sync.elapsed() >= SYNC_EVERY;
        let now = Timestamp::now();
        match store.with_db(|db| commit_batch(db, &batch, retention, now, sync, count)) {
            Ok(stored) => {
                count = stored;
                if sync {
                    last_sync = Instant::now();
                }
            }
            Err(e) => tracing::error!(error = %e, lost = batch.len(), "event log: cannot write events"),
        }
        batch.clear();
        for tx in flushes.drain(..) {
            let _ = tx.send(());
        }
        if stop {
            break;
        }
    }
}

/// Events per row: a row insert per event was most of the writer's time at 20,000 DHCP
/// exchanges a second, while pruning by count rewrites the oldest row on every batch once the
/// log is full, so a row stays small.
const ROW_EVENTS: usize = 64;

/// Writes `batch` in rows of `ROW_EVENTS` into each event's log and drops what each log's
/// retention no longer allows, in one transaction; `count` is the events each log (`Log::BOTH`
/// order) stored before, and the result those stored after. A call with nothing to write or
/// drop does not touch the disk.
fn commit_batch(
    db: &Database,
    batch: &[Arc<Event>],
    retention: Retention,
    now: Timestamp,
    sync: bool,
    count: [u64; 2],
) -> Result<[u64; 2], StoreError> {
    let mut txn = db.begin_write()?;
    if !sync {
        txn.set_durability(redb::Durability::None)
            .map_err(|e| StoreError::Db(redb::Error::Io(std::io::Error::other(e.to_string()))))?;
    }
    let mut changed = false;
    let mut kept = count;
    for (i, log) in Log::BOTH.into_iter().enumerate() {
        let events: Vec<Arc<Event>> = batch.iter().filter(|e| Log::of(&e.details) == log).cloned().collect();
        let mut table = txn.open_table(log.table())?;
        let (stored, wrote) = store_rows(&mut table, &events, retention.of(log), now, kept[i])?;
        kept[i] = stored;
        changed |= wrote;
    }
    if changed {
        txn.commit()?;
        Ok(kept)
    } else {
        txn.abort()?;
        Ok(count)
    }
}

/// `store_rows` of one log: writes `batch` and prunes to `(max_count, max_age)`; the events
/// stored after, and whether the table changed.
fn store_rows(
    table: &mut redb::Table<'_, u64, (u64, &'static [u8])>,
    batch: &[Arc<Event>],
    (max_count, max_age): (u64, Duration),
    now: Timestamp,
    count: u64,
) -> Result<(u64, bool), StoreError> {
    let mut changed = false;
    let mut kept = count;
    {
        let mut json = Vec::with_capacity(ROW_EVENTS * 256);
        for row in batch.chunks(ROW_EVENTS) {
            json.clear();
            for e in row {
                // Plain data with string keys: serialising into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut json, &**e);
                json.push(b'\n');
            }
            let newest = row.iter().map(|e| e.time.unix_millis()).max().unwrap_or(0);
            table.insert(row[0].seq, (newest, json.as_slice()))?;
            kept += row.len() as u64;
            changed = true;
        }
        let max_age = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now.unix_millis().saturating_sub(max_age);
        // From the oldest row: a row goes when its newest event is over the age or all of it is
        // over the count; a row only partly over the count loses its oldest lines.
        loop {
            let Some((key, newest)) = table.first()?.map(|(k, v)| (k.value(), v.value().0)) else { break };
            let excess = kept.saturating_sub(max_count);
            if newest >= cutoff && excess == 0 {
                break;
            }
            let bytes = table.remove(key)?.map(|v| v.value().1.to_vec()).unwrap_or_default();
            changed = true;
            let n = lines(&bytes).count() as u64;
            let rest = lines(&bytes).skip(usize::try_from(excess).unwrap_or(usize::MAX));
            let mut rest = rest.peekable();
            let cut = match rest.peek() {
                Some(line) if newest >= cutoff => seq_of(key, line).ok(),
                _ => None,
            };
            let Some(new_key) = cut else {
                // All of it goes (or its kept part cannot be read: it goes too).
                kept = kept.saturating_sub(n);
                continue;
            };
            let mut json = Vec::with_capacity(bytes.len());
            for line in rest {
                json.extend_from_slice(line);
                json.push(b'\n');
            }
            table.insert(new_key, (newest, json.as_slice()))?;
            kept -= excess;
            break;
        }
    }
    Ok((kept, changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_of_type_names_is_every_variant_of_the_schema() {
        // The schema utoipa derives from the enum lists each variant's `type` tag.
        let schema = serde_json::to_value(<EventKind as utoipa::PartialSchema>::schema()).expect("schema");
        let mut tags: Vec<String> = schema["oneOf"]
            .as_array()
            .expect("oneOf")
            .iter()
            .filter_map(|v| v["properties"]["type"]["enum"][0].as_str().map(String::from))
            .collect();
        tags.sort();
        let mut names: Vec<String> = EventKind::TYPE_NAMES.iter().map(|n| n.to_string()).collect();
        names.sort();
        assert_eq!(tags, names);
        assert_eq!(EventKind::DaemonStopping.type_name(), "daemon_stopping");
    }

    fn event(seq: u64, time: Timestamp) -> Arc<Event> {
        Arc::new(Event { seq, time, source: Source::Daemon, node: None, mac: None, details: EventKind::DaemonStopping })
    }

    /// A store with nothing in it, in a directory that lives as long as the first value.
    fn empty_store() -> (tempfile::TempDir, crate::store::Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(dir.path(), crate::inventory::Inventory::default()).expect("open");
        (dir, store)
    }

    /// The stored events' sequence numbers, and the rows they are in.
    fn stored(db: &Database) -> (Vec<u64>, usize) {
        let txn = db.begin_read().expect("read");
        let table = txn.open_table(EVENTS).expect("table");
        let mut seqs = Vec::new();
        let mut rows = 0;
        for row in table.iter().expect("iter") {
            let (key, value) = row.expect("row");
            rows += 1;
            for line in lines(value.value().1) {
                seqs.push(seq_of(key.value(), line).expect("seq"));
            }
            assert_eq!(
                seqs.iter().rev().nth(lines(value.value().1).count() - 1),
                Some(&key.value()),
                "keyed by its first"
            );
        }
        (seqs, rows)
    }

    #[test]
    fn batches_are_written_in_rows_and_pruning_by_count_cuts_the_oldest_row_at_the_right_event() {
        let (_dir, store) = empty_store();
        let db = store.current().expect("open");
        let retention = Retention { max_count: 3, max_age: Duration::from_secs(3600), ..Retention::default() };
        let t0 = Timestamp::from_unix_millis(1_800_000_000_000);
        // 3 and 4 were dropped before they reached the writer.
        let count =
            commit_batch(&db, &[1, 2, 5, 6, 7, 8].map(|s| event(s, t0)), retention, t0, true, [0, 0]).expect("write");
        assert_eq!((count, stored(&db)), ([3, 0], (vec![6, 7, 8], 1)), "a gap in the numbers does not matter");
        let count = commit_batch(&db, &[event(9, t0)], retention, t0, true, count).expect("write");
        assert_eq!((count, stored(&db)), ([3, 0], (vec![7, 8, 9], 2)));
        let count = commit_batch(&db, &[10, 11].map(|s| event(s, t0)), retention, t0, true, count).expect("write");
        assert_eq!((count, stored(&db)), ([3, 0], (vec![9, 10, 11], 2)), "a row wholly over the count goes");
        let retention = Retention { max_count: 100, ..retention };
        let big: Vec<Arc<Event>> = (12..162).map(|s| event(s, t0)).collect();
        let count = commit_batch(&db, &big, retention, t0, true, count).expect("write");
        let (seqs, rows) = stored(&db);
        assert_eq!((count, seqs), ([100, 0], (62..162).collect::<Vec<u64>>()));
        assert_eq!(rows, 3, "150 events went in rows of 64, 64 and 22; the first lost its oldest 50");
    }

    #[test]
    fn the_log_reads_version_3_rows_and_new_rows_alike_and_resumes_its_numbers() {
        let (_dir, store) = empty_store();
        let t0 = Timestamp::from_unix_millis(1_800_000_000_000);
        {
            let db = store.current().expect("open");
            let txn = db.begin_write().expect("write");
            {
                let mut table = txn.open_table(EVENTS).expect("table");
                for seq in [1, 2] {
                    let json = serde_json::to_vec(&*event(seq, t0)).expect("json");
                    table.insert(seq, (t0.unix_millis(), json.as_slice())).expect("insert");
                }
            }
            txn.commit().expect("commit");
            commit_batch(&db, &[3, 4, 5].map(|s| event(s, t0)), Retention::default(), t0, true, [2, 0]).expect("batch");
        }
        let log = EventLog::open(&store, Retention::default()).expect("log");
        let all = |filter: &Filter, limit| -> Vec<u64> {
            log.query(filter, limit).expect("query").iter().map(|e| e.seq).collect()
        };
        assert_eq!(all(&Filter::default(), 100), [1, 2, 3, 4, 5]);
        assert_eq!(all(&Filter::default(), 2), [4, 5], "the last ones");
        assert_eq!(all(&Filter { after: Some(3), ..Filter::default() }, 100), [4, 5], "from inside a row");
        assert_eq!(all(&Filter { after: Some(1), ..Filter::default() }, 2), [2, 3]);
        assert_eq!(all(&Filter { after: Some(5), ..Filter::default() }, 100), Vec::<u64>::new());
        let next = log.append_at(t0, Source::Daemon, Subject::default(), EventKind::DaemonStopping);
        assert_eq!(next.seq, 6, "numbering continues after the last line of the last row");
        log.close();
    }

    #[test]
    fn numbering_goes_on_past_a_stored_event_that_does_not_decode() {
        assert_eq!(last_seq(10, b"{\"seq\":10}\n{\"seq\":14}\n"), 14);
        assert_eq!(last_seq(10, b"{\"seq\":10}\n{\"seq\":14}\nnot json\n"), 15, "one past the last good one");
        assert_eq!(last_seq(10, b"garbage\nmore\n"), 11, "the row's key plus its other lines");
        assert_eq!(last_seq(10, b""), 10);
    }

    #[test]
    fn an_idle_prune_drops_expired_events_without_new_ones() {
        let (_dir, store) = empty_store();
        let db = store.current().expect("open");
        let retention = Retention { max_count: 100, max_age: Duration::from_secs(3600), ..Retention::default() };
        let t0 = Timestamp::from_unix_millis(1_800_000_000_000);
        let later = |ms: u64| Timestamp::from_unix_millis(1_800_000_000_000 + ms);
        let count = commit_batch(&db, &[event(1, t0)], retention, t0, true, [0, 0]).expect("write");
        let count = commit_batch(&db, &[event(2, later(2_000))], retention, later(2_000), true, count).expect("write");
        let count = commit_batch(&db, &[], retention, later(1_000), true, count).expect("idle");
        assert_eq!((count, stored(&db).0), ([2, 0], vec![1, 2]), "not yet expired");
        let count = commit_batch(&db, &[], retention, later(3_601_000), true, count).expect("idle");
        assert_eq!((count, stored(&db).0), ([1, 0], vec![2]), "the older row expired while idle");
        let count = commit_batch(&db, &[], retention, later(3_603_000), true, count).expect("idle");
        assert_eq!((count, stored(&db).0), ([0, 0], vec![]));
    }
}
