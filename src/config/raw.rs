//! The config file's shapes, exactly as written. `deny_unknown_fields` everywhere, so a typo is
//! an error with a line number rather than a silently ignored setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::inventory::{Algorithm, Cluster, Members, Name, Network, Node, Profile};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub admin: RawAdmin,
    pub dhcp: Option<RawDhcp>,
    pub dns: Option<RawDns>,
    pub tftp: Option<RawTftp>,
    pub http: Option<RawHttp>,
    #[serde(default)]
    pub boot: RawBoot,
    #[serde(default)]
    pub events: RawEvents,
    #[serde(default)]
    pub networks: Vec<Network>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub profiles: Vec<Profile>,
    #[serde(default)]
    pub lb: RawLb,
    #[serde(default)]
    pub hypervisors: Vec<RawHypervisor>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    pub token_credential: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDhcp {
    pub interfaces: Vec<String>,
    /// Send a minimal IPv6 router advertisement on these interfaces so iPXE starts DHCPv4
    /// without waiting ~13 s for one.
    #[serde(default)]
    pub router_advertisements: bool,
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
    pub records: Vec<RawRecord>,
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
    pub frontends: Vec<RawFrontend>,
    #[serde(default)]
    pub pools: Vec<RawPool>,
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

/// A hypervisor entry; which fields apply depends on `kind` (checked in `hypervisors.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHypervisor {
    pub name: Name,
    pub kind: HypervisorKind,
    // Proxmox VE
    pub url: Option<String>,
    pub token_id: Option<String>,
    pub token_file: Option<PathBuf>,
    pub token_credential: Option<String>,
    pub fingerprint: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub storage: Option<String>,
    #[serde(default)]
    pub nodes: Vec<String>,
    pub task_timeout: Option<String>,
    // both
    pub bridge: Option<String>,
    // local QEMU
    pub dir: Option<PathBuf>,
    pub netns: Option<String>,
    pub accel: Option<crate::hypervisor::qemu::Accel>,
}
