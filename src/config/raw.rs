//! The config file's shapes, exactly as written. `deny_unknown_fields` everywhere, so a typo is
//! an error with a line number rather than a silently ignored setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::locate::{FieldPath, Seg};
use crate::cluster::definition::Definition;
use crate::inventory::{Algorithm, Cluster, Members, Name, Network, Node, Profile};

/// An array of tables read one element at a time: an element that does not parse is kept as
/// its error (so every bad element is reported in one run) and the others are still checked.
/// Positions are kept, so an error names the element as the file has it.
#[derive(Debug)]
pub struct Items<T>(pub Vec<Result<T, ItemError>>);

/// Why one element did not parse: the field inside it, its value when there is one, and why.
#[derive(Debug)]
pub struct ItemError {
    pub path: FieldPath,
    pub value: Option<String>,
    pub message: String,
}

impl<T> Default for Items<T> {
    fn default() -> Self {
        Items(Vec::new())
    }
}

impl<T> Items<T> {
    /// The elements that parsed, with their positions in the file.
    pub fn parsed(&self) -> impl Iterator<Item = (usize, &T)> {
        self.0.iter().enumerate().filter_map(|(i, item)| item.as_ref().ok().map(|t| (i, t)))
    }

    /// The elements that did not parse, with their positions.
    pub fn failed(&self) -> impl Iterator<Item = (usize, &ItemError)> {
        self.0.iter().enumerate().filter_map(|(i, item)| item.as_ref().err().map(|e| (i, e)))
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Items<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let values = Vec::<toml::Value>::deserialize(d)?;
        Ok(Items(values.into_iter().map(item).collect()))
    }
}

fn item<T: DeserializeOwned>(value: toml::Value) -> Result<T, ItemError> {
    let copy = value.clone();
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = FieldPath(
            e.path()
                .iter()
                .filter_map(|seg| match seg {
                    serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                    _ => None,
                })
                .collect(),
        );
        let mut at = Some(&copy);
        for seg in &path.0 {
            at = match seg {
                Seg::Key(k) => at.and_then(|v| v.get(k.as_str())),
                Seg::Index(i) => at.and_then(|v| v.get(*i)),
            };
        }
        let value = at.filter(|v| !v.is_table() && !v.is_array()).map(|v| match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        // toml names the field again after a newline ("\nin `mac`"); the path says it already.
        let message = e.into_inner().to_string();
        let message = message.split("\nin `").next().unwrap_or_default().trim().to_string();
        ItemError { path, value, message }
    })
}

/// The config as the file has it, each table read on its own so that one that does not parse
/// is reported without hiding the problems of the others. `into_raw` hands on the tables that
/// parsed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    state_dir: Option<PathBuf>,
    admin: Option<Section<RawAdmin>>,
    dhcp: Option<Section<RawDhcp>>,
    dns: Option<Section<RawDns>>,
    tftp: Option<Section<RawTftp>>,
    http: Option<Section<RawHttp>>,
    boot: Option<Section<RawBoot>>,
    events: Option<Section<RawEvents>>,
    store: Option<Section<RawStore>>,
    #[serde(default)]
    networks: Items<Network>,
    #[serde(default)]
    clusters: Items<Cluster>,
    #[serde(default)]
    nodes: Items<Node>,
    #[serde(default)]
    profiles: Items<Profile>,
    lb: Option<Section<RawLb>>,
    #[serde(default)]
    hypervisors: Items<RawHypervisor>,
    #[serde(default)]
    cluster_definitions: Items<Definition>,
}

/// One table of the file, or why it did not parse.
#[derive(Debug)]
pub struct Section<T>(Result<T, ItemError>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Section(item(toml::Value::deserialize(d)?)))
    }
}

impl Document {
    /// The tables that parsed (a table that did not counts as absent), and for each one that
    /// did not, its name and why.
    pub fn into_raw(self) -> (RawConfig, Vec<(&'static str, ItemError)>) {
        fn take<T>(
            name: &'static str,
            section: Option<Section<T>>,
            failed: &mut Vec<(&'static str, ItemError)>,
        ) -> Option<T> {
            match section.map(|s| s.0) {
                Some(Ok(t)) => Some(t),
                Some(Err(e)) => {
                    failed.push((name, e));
                    None
                }
                None => None,
            }
        }
        let mut failed = Vec::new();
        let admin = take("admin", self.admin, &mut failed);
        let dhcp = take("dhcp", self.dhcp, &mut failed);
        let dns = take("dns", self.dns, &mut failed);
        let tftp = take("tftp", self.tftp, &mut failed);
        let http = take("http", self.http, &mut failed);
        let boot = take("boot", self.boot, &mut failed);
        let events = take("events", self.events, &mut failed);
        let store = take("store", self.store, &mut failed);
        let lb = take("lb", self.lb, &mut failed);
        let raw = RawConfig {
            state_dir: self.state_dir,
            admin: admin.unwrap_or_default(),
            dhcp,
            dns,
            tftp,
            http,
            boot: boot.unwrap_or_default(),
            events: events.unwrap_or_default(),
            store: store.unwrap_or_default(),
            networks: self.networks,
            clusters: self.clusters,
            nodes: self.nodes,
            profiles: self.profiles,
            lb: lb.unwrap_or_default(),
            hypervisors: self.hypervisors,
            cluster_definitions: self.cluster_definitions,
        };
        (raw, failed)
    }
}

/// The tables of the config that parsed.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub state_dir: Option<PathBuf>,
    pub admin: RawAdmin,
    pub dhcp: Option<RawDhcp>,
    pub dns: Option<RawDns>,
    pub tftp: Option<RawTftp>,
    pub http: Option<RawHttp>,
    pub boot: RawBoot,
    pub events: RawEvents,
    pub store: RawStore,
    pub networks: Items<Network>,
    pub clusters: Items<Cluster>,
    pub nodes: Items<Node>,
    pub profiles: Items<Profile>,
    pub lb: RawLb,
    pub hypervisors: Items<RawHypervisor>,
    /// Clusters slipway makes and drives (the same shape `slipway cluster apply` takes).
    pub cluster_definitions: Items<Definition>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    pub token_credential: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// More tokens, with names and roles (`name role token` per line), re-read on SIGHUP.
    pub tokens_file: Option<PathBuf>,
    /// Connections open at once, in all and from one client address.
    pub max_connections: Option<usize>,
    pub max_connections_per_address: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDhcp {
    pub interfaces: Vec<String>,
    /// Send a minimal IPv6 router advertisement on these interfaces so iPXE starts DHCPv4
    /// without waiting ~13 s for one.
    #[serde(default)]
    pub router_advertisements: bool,
    /// The address DHCP names as its own on a network (a floating address, in a pair).
    #[serde(default)]
    pub server_addresses: Vec<std::net::Ipv4Addr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// Default: port 53 on the address of every network's interface (the provisioning side).
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    #[serde(default)]
    pub upstream: Vec<SocketAddr>,
    /// Client networks allowed recursion; default: loopback and the provisioning networks.
    pub allow_recursion: Option<Vec<ipnet::IpNet>>,
    /// TTL of generated and static records (`60s`, `5m`).
    pub ttl: Option<String>,
    /// Extra zones slipway is authoritative for (for static records).
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default)]
    pub records: Items<RawRecord>,
}

/// A static DNS record: `{ name = "registry.lab.example", type = "A", value = "10.1.107.5" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub value: String,
    pub ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTftp {
    pub listen: SocketAddr,
    pub root: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: SocketAddr,
    pub images: Option<PathBuf>,
    pub max_connections: Option<usize>,
    pub max_connections_per_address: Option<usize>,
}

/// iPXE binaries handed to firmware PXE clients (paths under the TFTP root).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBoot {
    pub bios_file: Option<String>,
    pub uefi_file: Option<String>,
    pub arm64_file: Option<String>,
    /// SSH public keys put into every rendered Ignition and cloud-init config.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// Operator templates: `cloud-init/[<role>.]user-data`, `ignition/<role>.ign`, `ignition/default.ign`.
    pub templates: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    pub max_count: Option<u64>,
    pub max_age: Option<String>,
    /// The audit trail's own retention.
    pub audit_max_count: Option<u64>,
    pub audit_max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLb {
    /// Time to open a backend connection before the next backend is tried.
    pub connect_timeout: Option<String>,
    /// A connection with no traffic either way for this long is closed.
    pub idle_timeout: Option<String>,
    /// Connections to a backend that left its pool may continue this long.
    pub drain_timeout: Option<String>,
    #[serde(default)]
    pub frontends: Items<RawFrontend>,
    #[serde(default)]
    pub pools: Items<RawPool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFrontend {
    pub name: Name,
    pub listen: SocketAddr,
    pub pool: Name,
    pub max_connections: Option<usize>,
}

/// A pool lists `backends`, or derives them from a cluster with `cluster`, `members`, `port`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub name: Name,
    #[serde(default)]
    pub algorithm: Algorithm,
    pub backends: Option<Vec<SocketAddr>>,
    pub cluster: Option<Name>,
    pub members: Option<Members>,
    pub port: Option<u16>,
    #[serde(default)]
    pub check: crate::inventory::HealthCheck,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HypervisorKind {
    Proxmox,
    Qemu,
}

/// A key that takes one string or a list of them (`url = "..."` or `url = ["...", "..."]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one.clone()],
            OneOrMany::Many(many) => many.clone(),
        }
    }
}

/// A hypervisor entry; which fields apply depends on `kind` (checked in `hypervisors.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHypervisor {
    pub name: Name,
    pub kind: HypervisorKind,
    // Proxmox VE
    pub url: Option<OneOrMany>,
    pub token_id: Option<String>,
    pub token_file: Option<PathBuf>,
    pub token_credential: Option<String>,
    pub fingerprint: Option<OneOrMany>,
    pub ca_file: Option<PathBuf>,
    pub storage: Option<String>,
    #[serde(default)]
    pub nodes: Vec<String>,
    pub task_timeout: Option<String>,
    pub placement_memory: Option<crate::hypervisor::proxmox::MemoryView>,
    // both
    pub bridge: Option<String>,
    pub cpu: Option<String>,
    // local QEMU
    pub dir: Option<PathBuf>,
    pub netns: Option<String>,
    pub accel: Option<crate::hypervisor::qemu::Accel>,
}

/// `[store]`: where the shared state lives (the embedded file, or etcd for an HA pair/trio).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub backend: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub prefix: Option<String>,
    pub instance: Option<String>,
    pub lease_ttl: Option<String>,
    pub timeout: Option<String>,
}
