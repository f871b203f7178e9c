//! The inventory's object types and the snapshot that holds them.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::types::{DomainName, MacAddr, Name};

/// Where an object was declared. Objects from the config file are changed by editing the file;
/// the API refuses to change or delete them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    Config,
    #[default]
    Api,
}

/// Objects that can come from either the config file or the API.
pub trait HasOrigin {
    fn origin(&self) -> Origin;
    fn origin_mut(&mut self) -> &mut Origin;
}

macro_rules! has_origin {
    ($($ty:ty),*) => {$(
        impl HasOrigin for $ty {
            fn origin(&self) -> Origin {
                self.origin
            }
            fn origin_mut(&mut self) -> &mut Origin {
                &mut self.origin
            }
        }
    )*};
}
has_origin!(Cluster, Node, Profile);

/// The kinds of object the inventory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Network,
    Cluster,
    Node,
    Profile,
    Pool,
    Frontend,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Network => "network",
            Kind::Cluster => "cluster",
            Kind::Node => "node",
            Kind::Profile => "profile",
            Kind::Pool => "pool",
            Kind::Frontend => "frontend",
        }
    }

    /// The config file's table for this kind (`[[nodes]]`, `[[lb.pools]]`, ...).
    pub fn config_table(self) -> &'static str {
        match self {
            Kind::Network => "networks",
            Kind::Cluster => "clusters",
            Kind::Node => "nodes",
            Kind::Profile => "profiles",
            Kind::Pool => "lb.pools",
            Kind::Frontend => "lb.frontends",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive range of IPv4 addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddrRange {
    #[schema(value_type = String, example = "10.1.107.100")]
    pub start: Ipv4Addr,
    #[schema(value_type = String, example = "10.1.107.199")]
    pub end: Ipv4Addr,
}

impl AddrRange {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }

    pub fn overlaps(&self, other: &AddrRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.end)).saturating_sub(u64::from(u32::from(self.start))) + 1
    }

    pub fn is_empty(&self) -> bool {
        self.end < self.start
    }
}

impl std::fmt::Display for AddrRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// A provisioning network slipway serves. Declared in the config file only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub name: Name,
    /// The host interface facing this network (DHCP listens here).
    pub interface: String,
    #[schema(value_type = String, example = "10.1.107.0/24")]
    pub cidr: Ipv4Net,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub dns_servers: Vec<Ipv4Addr>,
    #[serde(default)]
    pub domain: Option<DomainName>,
    /// Where reserved node addresses live; when set, every node address must be inside it.
    #[serde(default)]
    pub static_range: Option<AddrRange>,
    /// Dynamic pool for unknown machines; absent means unknown machines get no address.
    #[serde(default)]
    pub pool: Option<AddrRange>,
    #[serde(with = "duration_text", default = "default_lease_time")]
    #[schema(value_type = String, example = "1h")]
    pub lease_time: Duration,
    /// NAK requests for addresses a client may not have (default true). A non-authoritative
    /// server stays silent instead, leaving the answer to another server.
    #[serde(default = "yes")]
    pub authoritative: bool,
    /// proxyDHCP: another DHCP server owns addressing here; slipway answers network-booting
    /// clients with boot information only (ports 67 and 4011), never with an address.
    #[serde(default)]
    pub proxy: bool,
    /// Ping a pool address before offering it; one that answers is kept out of use for a while
    /// and the client is offered another on its next DISCOVER.
    #[serde(default)]
    pub probe: bool,
    /// DHCP option 26.
    #[serde(default)]
    pub mtu: Option<u16>,
    /// DHCP option 42.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub ntp_servers: Vec<Ipv4Addr>,
    /// DHCP option 119.
    #[serde(default)]
    pub search_domains: Vec<DomainName>,
    /// DHCP option 121 (classless static routes).
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// A classless static route handed out with DHCP option 121.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[schema(value_type = String, example = "192.0.2.0/24")]
    pub to: Ipv4Net,
    #[schema(value_type = String, example = "10.1.107.1")]
    pub via: Ipv4Addr,
}

fn yes() -> bool {
    true
}

fn default_lease_time() -> Duration {
    Duration::from_secs(3600)
}

/// The Kubernetes distribution a cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterKind {
    Okd,
    K3s,
}

/// A Kubernetes cluster built on one provisioning network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: Name,
    pub kind: ClusterKind,
    /// The cluster's zone is `<name>.<base_domain>`.
    pub base_domain: DomainName,
    /// The provisioning network its nodes sit on.
    pub network: Name,
    /// `api.<zone>`: the public-side load-balancer address.
    #[schema(value_type = String, example = "192.0.2.10")]
    pub api_address: Ipv4Addr,
    /// `api-int.<zone>`: the provisioning-side load-balancer address.
    #[schema(value_type = String, example = "10.1.107.1")]
    pub api_int_address: Ipv4Addr,
    /// `*.apps.<zone>`: the ingress load-balancer address.
    #[schema(value_type = String, example = "192.0.2.10")]
    pub ingress_address: Ipv4Addr,
    /// Set by slipway (`config` or `api`); ignored on input.
    #[serde(default)]
    pub origin: Origin,
}

impl Cluster {
    /// The cluster's DNS zone, `<name>.<base_domain>`.
    pub fn zone(&self) -> String {
        format!("{}.{}", self.name, self.base_domain)
    }
}

/// What a node does in its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Bootstrap,
    ControlPlane,
    Worker,
    Infra,
}

impl Role {
    /// The name used in files and templates (`control-plane`), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Bootstrap => "bootstrap",
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
            Role::Infra => "infra",
        }
    }
}

/// A machine slipway knows by MAC address: it gets a reserved address, a hostname and a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: Name,
    #[serde(default)]
    pub cluster: Option<Name>,
    #[serde(default)]
    pub role: Option<Role>,
    pub mac: MacAddr,
    #[schema(value_type = String, example = "10.1.107.20")]
    pub ipv4: Ipv4Addr,
    /// DHCP option 12 and the DNS A/PTR name; defaults to the node's name.
    #[serde(default)]
    pub hostname: Option<Name>,
    /// Boot profile; when absent, boot selection picks one by cluster, role and selectors.
    #[serde(default)]
    pub profile: Option<Name>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Kubernetes taints the node registers with (k3s `--node-taint`): `key[=value]:Effect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<String>,
    /// DHCP options for this node that replace its network's.
    #[serde(default, skip_serializing_if = "NodeDhcp::is_empty")]
    pub dhcp: NodeDhcp,
    /// Set by slipway (`config` or `api`); ignored on input.
    #[serde(default)]
    pub origin: Origin,
    /// Set by slipway while the cluster engine removes the node: load balancers send it nothing
    /// new; its reservation and names stay until its VM is gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retiring: bool,
}

/// Per-node DHCP options; each one set replaces the network's value for this node only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeDhcp {
    /// DHCP option 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub dns_servers: Option<Vec<Ipv4Addr>>,
    /// DHCP option 26.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// DHCP option 42.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub ntp_servers: Option<Vec<Ipv4Addr>>,
    /// DHCP option 119.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_domains: Option<Vec<DomainName>>,
    /// DHCP option 121.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
}

impl NodeDhcp {
    pub fn is_empty(&self) -> bool {
        *self == NodeDhcp::default()
    }
}

impl Node {
    pub fn hostname(&self) -> &Name {
        self.hostname.as_ref().unwrap_or(&self.name)
    }
}

/// The configuration document a profile hands to the booted system.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigKind {
    Ignition,
    CloudInit,
    #[default]
    None,
}

/// How a machine boots: kernel, initrds, kernel arguments and the config document it fetches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: Name,
    /// Path under the images directory, or an http(s) URL.
    pub kernel: String,
    #[serde(default)]
    pub initrds: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub config: ConfigKind,
    /// The system installs itself to disk: once the node phones home, its boot script boots the
    /// local disk instead (no reinstall loop) until a reinstall is requested.
    #[serde(default)]
    pub installs: bool,
    /// Which machines get this profile when their node names none: the most specific matching
    /// profile wins. `match = {}` matches every machine (the default profile, also for
    /// machines slipway does not know). Absent: only nodes that name this profile get it.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// Set by slipway (`config` or `api`); ignored on input.
    #[serde(default)]
    pub origin: Origin,
}

/// What a machine must have for a profile's `match`. Every field set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// iPXE's `${buildarch}`: `x86_64`, `i386`, `arm64`, `arm32`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Node labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    /// How specific the selector is: a MAC outranks everything else, then each criterion counts.
    pub fn specificity(&self) -> usize {
        usize::from(self.mac.is_some()) * 100
            + usize::from(self.cluster.is_some())
            + usize::from(self.role.is_some())
            + usize::from(self.arch.is_some())
            + self.labels.len()
    }
}

/// How a pool picks a backend for a new connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    #[default]
    RoundRobin,
    LeastConnections,
    SourceHash,
}

/// Which nodes of a cluster a derived pool contains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Members {
    /// Bootstrap and control-plane nodes (API 6443, machine-config 22623).
    ControlPlane,
    /// Nodes that run the ingress router: workers, or control-plane nodes when there are none.
    Routers,
}

/// Where a pool's backends come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Backends {
    Static {
        #[schema(value_type = Vec<String>)]
        addresses: Vec<SocketAddr>,
    },
    Cluster {
        cluster: Name,
        members: Members,
        port: u16,
    },
}

/// A load-balancer backend pool. Declared in the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Pool {
    pub name: Name,
    pub algorithm: Algorithm,
    pub backends: Backends,
    #[serde(default)]
    pub check: HealthCheck,
}

/// How a pool's backends are checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// A TCP connection opens.
    #[default]
    Tcp,
    /// `GET <path>` over TLS answers 200 (the Kubernetes API's `/readyz`); the certificate is
    /// not verified unless a CA is given.
    Https,
}

/// A pool's health check. The defaults follow the OKD documentation for the API: every 5 s,
/// down after 3 failures, up after 2 successes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default)]
    pub kind: CheckKind,
    #[serde(default = "default_check_path")]
    pub path: String,
    #[serde(with = "duration_text", default = "default_check_interval")]
    #[schema(value_type = String, example = "5s")]
    pub interval: Duration,
    #[serde(with = "duration_text", default = "default_check_timeout")]
    #[schema(value_type = String, example = "2s")]
    pub timeout: Duration,
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// PEM CA bundle to verify HTTPS checks against; absent: not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            kind: CheckKind::Tcp,
            path: default_check_path(),
            interval: default_check_interval(),
            timeout: default_check_timeout(),
            rise: default_rise(),
            fall: default_fall(),
            ca_file: None,
        }
    }
}

fn default_check_path() -> String {
    "/readyz".into()
}
fn default_check_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

/// A load-balancer listener that forwards to a pool. Declared in the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Frontend {
    pub name: Name,
    #[schema(value_type = String, example = "192.0.2.10:6443")]
    pub listen: SocketAddr,
    pub pool: Name,
    /// Connections open at once; beyond it new connections are refused (closed at once).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    10_000
}

/// One consistent picture of everything slipway serves. Immutable once published.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inventory {
    /// Increases by one with every committed change.
    pub version: u64,
    pub networks: BTreeMap<Name, Network>,
    pub clusters: BTreeMap<Name, Cluster>,
    pub nodes: BTreeMap<Name, Node>,
    pub profiles: BTreeMap<Name, Profile>,
    pub pools: BTreeMap<Name, Pool>,
    pub frontends: BTreeMap<Name, Frontend>,
    /// Copies of the nodes, by MAC and by address, shared by both indexes: DHCP looks a node
    /// up per packet, and a name lookup in `nodes` compares names down a tree.
    by_mac: HashMap<MacAddr, Arc<Node>>,
    by_ip: HashMap<Ipv4Addr, Arc<Node>>,
}

impl Inventory {
    /// Rebuilds the lookup indexes; called whenever the object maps change (the indexes hold
    /// copies of the nodes: a node changed in `nodes` is not seen by `node_by_mac` until then).
    pub(crate) fn reindex(&mut self) {
        let shared: Vec<Arc<Node>> = self.nodes.values().map(|n| Arc::new(n.clone())).collect();
        self.by_mac = shared.iter().map(|n| (n.mac, n.clone())).collect();
        self.by_ip = shared.into_iter().map(|n| (n.ipv4, n)).collect();
    }

    pub fn node_by_mac(&self, mac: MacAddr) -> Option<&Node> {
        self.by_mac.get(&mac).map(|n| &**n)
    }

    pub fn node_by_ip(&self, ip: Ipv4Addr) -> Option<&Node> {
        self.by_ip.get(&ip).map(|n| &**n)
    }

    /// The network a node sits on: its cluster's, else the one whose CIDR holds its address.
    pub fn network_of(&self, node: &Node) -> Option<&Network> {
        match node.cluster.as_ref().and_then(|c| self.clusters.get(c)) {
            Some(cluster) => self.networks.get(&cluster.network),
            None => self.network_containing(node.ipv4),
        }
    }

    pub fn network_containing(&self, ip: Ipv4Addr) -> Option<&Network> {
        self.networks.values().find(|n| n.cidr.contains(&ip))
    }

    /// The node's fully qualified name: `<hostname>.<cluster zone>`, or `<hostname>.<network domain>`.
    pub fn fqdn(&self, node: &Node) -> Option<String> {
        let domain = match node.cluster.as_ref().and_then(|c| self.clusters.get(c)) {
            Some(cluster) => cluster.zone(),
            None => self.network_of(node)?.domain.as_ref()?.to_string(),
        };
        Some(format!("{}.{domain}", node.hostname()))
    }
}

/// Serde for durations as operator text (`90s`, `1h`).
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::super::types::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::super::types::parse_duration(&text).map_err(serde::de::Error::custom)
    }

    /// The same for an optional duration (absent when `None`; use with `default`).
    pub mod optional {
        use std::time::Duration;

        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}
