//! A cluster definition as operators write it (YAML, JSON or the TOML config): the cluster's
//! addresses, node groups slipway creates as VMs, and nodes listed by hand that it only tracks.
//! Plain data; `plan` checks it against the inventory and turns it into nodes and VM specs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hypervisor::{AntiAffinity, Firmware};
use crate::inventory::{ClusterKind, DomainName, MacAddr, Name, Role};

/// A whole cluster: what `slipway cluster apply -f FILE` sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: Name,
    pub kind: ClusterKind,
    /// OKD: informational (the installer's release decides); k3s: the version installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub base_domain: DomainName,
    /// The provisioning network; node addresses come from its `static_range`.
    pub network: Name,
    #[schema(value_type = String, format = Ipv4)]
    pub api_address: Ipv4Addr,
    #[schema(value_type = String, format = Ipv4)]
    pub api_int_address: Ipv4Addr,
    #[schema(value_type = String, format = Ipv4)]
    pub ingress_address: Ipv4Addr,
    /// The configured hypervisor that creates the groups' VMs (required when there are groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<Name>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_groups: Vec<NodeGroup>,
    /// Machines slipway does not create (real hardware, VMs made elsewhere): tracked through the
    /// same boot phases, the VM steps skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<ListedNode>,
    #[serde(default)]
    pub validation: Validation,
    /// OKD: whether slipway approves kubelet CSRs that pass the machine-approver's checks
    /// against its inventory (`inventory`, the default) or leaves every CSR to the operator
    /// (`off`).
    #[serde(default, skip_serializing_if = "CsrApproval::is_default")]
    pub csr_approval: CsrApproval,
    /// Manifest sets applied, in order, once the cluster is Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addons: Vec<AddonSet>,
}

/// A problem with a definition: the field (`node_groups[1].count`), its value, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub field: String,
    pub value: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}: {}", self.field, self.value, self.message)
    }
}

/// The longest a phase may be given (and the shortest: 1 s).
pub const MAX_PHASE: Duration = Duration::from_secs(7 * 24 * 3600);

/// One add-on: a file or directory of manifests (YAML, several documents per file, or JSON)
/// applied with server-side apply, then optionally waited for before the next set starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddonSet {
    pub name: Name,
    /// A file or directory on the slipway host (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "/etc/slipway/addons/ingress")]
    pub path: Option<std::path::PathBuf>,
    /// A file or directory under the images directory (`argocd/install.yaml`), what `slipway
    /// images fetch` put there: an offline appliance carries its add-ons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The namespace of namespaced objects that name none (kubectl's `-n`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Create that namespace first when the set does not (kubectl create namespace).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_namespace: bool,
    /// What must hold before the next set starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<WaitFor>,
    /// k3s only: written to the first server's auto-deploy directory through its cloud-init,
    /// so k3s applies it itself as the cluster comes up (HelmChart objects included).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub at_install: bool,
    /// How long applying and waiting may take (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "10m")]
    pub timeout: Option<Duration>,
}

/// An object of the cluster and a condition of it: `Available` for a Deployment (its default),
/// `Established` for a CustomResourceDefinition (its default), any condition type otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitFor {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `apps/v1`, ...; default: that of the set's object of this kind and name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// A condition type that must be `True`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// Who approves an OKD cluster's kubelet CSRs after its bootstrap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CsrApproval {
    /// slipway, for its own machines, by the machine-approver's checks.
    #[default]
    Inventory,
    /// Nobody but the operator (`oc adm certificate approve`).
    Off,
}

impl CsrApproval {
    fn is_default(&self) -> bool {
        *self == CsrApproval::Inventory
    }
}

/// Identical VMs, named `<name>-0`, `<name>-1`, ...
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeGroup {
    pub name: Name,
    pub role: Role,
    pub count: u32,
    /// Default: by kind and role (see `Sizing::default_for`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u16>,
    /// The CPU model (`x86-64-v2-AES`, `host`, ...); default: the hypervisor's `cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "16GiB")]
    pub memory: Option<Size>,
    /// Default: one disk on the hypervisor's default storage, sized by kind and role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskSpec>,
    /// Several for dual-homed VMs; the first one network-boots. Default: one NIC on the
    /// hypervisor's default bridge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<NicSpec>,
    #[serde(default)]
    pub firmware: Firmware,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Name>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Taints the group's nodes register with (k3s): `key[=value]:NoSchedule|PreferNoSchedule|NoExecute`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<String>,
    #[serde(default)]
    pub placement: GroupPlacement,
    #[serde(default)]
    pub lifecycle: Lifecycle,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Proxmox storage; default: the hypervisor's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[schema(value_type = String, example = "120GiB")]
    pub size: Size,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// Default: the hypervisor's bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// Where a group's VMs may run (Proxmox nodes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupPlacement {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_nodes: Vec<String>,
    /// Default: `soft` for control-plane groups (spread when possible), `none` for the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<AntiAffinity>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// Removed once the cluster no longer needs it (OKD's bootstrap node).
    #[serde(default)]
    pub temporary: bool,
    /// A bootstrap node: removed once etcd has let go of it (the default; `false` keeps its
    /// VM). A worker or infra node: its VM is deleted once it has booted and phoned home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_after_boot: Option<bool>,
}

/// A machine listed by hand: slipway reserves its address and serves it, but creates nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListedNode {
    pub name: Name,
    pub role: Role,
    pub mac: MacAddr,
    /// Default: the next free address of the network's `static_range`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub ipv4: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Name>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<String>,
}

/// How long each phase may take before its node fails (nothing is destroyed then).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// The whole cluster, from apply to Ready; default: none beyond the phases'.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub phases: PhaseTimeouts,
    /// Probes that must all answer, once every node is installed, for the cluster to count as
    /// healthy (the `healthy` condition); run every 10 s from slipway's host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheck>,
}

/// One probe of a cluster from slipway's host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ClusterHealthCheck)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub name: Name,
    /// `tcp://HOST:PORT` (a connection is accepted), or an `http://` / `https://` URL (a GET
    /// answers `status`). `{zone}` stands for the cluster's zone (`<name>.<base_domain>`), and
    /// names in it resolve as slipway's DNS answers them: `api`, `api-int`, `*.apps`, nodes.
    pub target: String,
    /// The HTTP status expected; default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// https: accept any certificate (a cluster's self-signed ingress); by default it is
    /// verified against the system's CAs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// Per-phase limits; unset ones take the defaults in `PhaseTimeouts::DEFAULT`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhaseTimeouts {
    /// The VM is created (default 10 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub create: Option<Duration>,
    /// From power-on to the first DHCP request from its MAC (default 5 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub boot: Option<Duration>,
    /// From the first DHCP request to its Ignition / cloud-init fetched (default 15 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub config: Option<Duration>,
    /// From the config fetched to the node's phone-home (default 30 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub phone_home: Option<Duration>,
    /// How long a VM being removed gets to shut down on ACPI before it is stopped (default 1 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub shutdown: Option<Duration>,
    /// OKD: from the bootstrap node's phone-home to the API answering `/version` (default 20 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub api: Option<Duration>,
    /// OKD: from the API answering to the bootstrap complete (default 60 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub bootstrap: Option<Duration>,
    /// OKD: from the bootstrap complete to etcd letting go of the bootstrap member (default 15 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub etcd_handoff: Option<Duration>,
    /// OKD: to remove the bootstrap node (default 15 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub remove_bootstrap: Option<Duration>,
    /// OKD: for every master and worker to be a Ready node (default 60 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub join: Option<Duration>,
    /// OKD: for the ClusterVersion and every operator to settle (default 60 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub finalize: Option<Duration>,
    /// k3s: from the first server's phone-home to its `/cacerts`, kubeconfig and Ready Node
    /// (default 15 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub init: Option<Duration>,
    /// k3s: for each further server, from its turn to its Ready Node (default 10 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub server_join: Option<Duration>,
    /// k3s: for every agent to be a Ready Node (default 10 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub agent_join: Option<Duration>,
    /// k3s: for the kubeconfig to answer through the load balancer (default 5 min).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::inventory::duration_text::optional")]
    #[schema(value_type = Option<String>, example = "15m")]
    pub kubeconfig: Option<Duration>,
}

impl PhaseTimeouts {
    pub const DEFAULT_CREATE: Duration = Duration::from_secs(10 * 60);
    pub const DEFAULT_BOOT: Duration = Duration::from_secs(5 * 60);
    pub const DEFAULT_CONFIG: Duration = Duration::from_secs(15 * 60);
    pub const DEFAULT_PHONE_HOME: Duration = Duration::from_secs(30 * 60);
    pub const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(60);
}

/// An amount of memory or disk, kept in MiB: `16GiB`, `512MiB`, `1TiB` (`G`, `M`, `T` are the
/// same binary units, as Proxmox writes them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size {
    pub mib: u64,
}

impl Size {
    pub const fn gib(n: u64) -> Size {
        Size { mib: n * 1024 }
    }

    /// Whole GiB, rounded up.
    pub fn whole_gib(self) -> u64 {
        self.mib.div_ceil(1024)
    }
}

/// A size that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a size (e.g. 16GiB, 512MiB, 1TiB)")]
pub struct BadSize(String);

impl FromStr for Size {
    type Err = BadSize;
    fn from_str(s: &str) -> Result<Size, BadSize> {
        let bad = || BadSize(crate::inventory::types::shown(s));
        let text = s.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let factor = match unit.trim() {
            "MiB" | "M" => 1,
            "GiB" | "G" => 1024,
            "TiB" | "T" => 1024 * 1024,
            _ => return Err(bad()),
        };
        let mib = number.checked_mul(factor).filter(|&m| m > 0).ok_or_else(bad)?;
        Ok(Size { mib })
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mib {
            m if m % (1024 * 1024) == 0 => write!(f, "{}TiB", m / (1024 * 1024)),
            m if m % 1024 == 0 => write!(f, "{}GiB", m / 1024),
            m => write!(f, "{m}MiB"),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The VM a group member gets when the group leaves a size out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    pub cores: u16,
    pub memory: Size,
    pub disk: Size,
}

impl Sizing {
    /// OKD's documented minimums (bootstrap and control plane 4 vCPU, 16 GiB, 100 GiB; compute
    /// 2 vCPU, 8 GiB, 100 GiB); k3s servers 2 vCPU, 4 GiB, 40 GiB, agents 2 vCPU, 2 GiB, 40 GiB.
    pub fn default_for(kind: ClusterKind, role: Role) -> Sizing {
        match (kind, role) {
            (ClusterKind::Okd, Role::Bootstrap | Role::ControlPlane) => {
                Sizing { cores: 4, memory: Size::gib(16), disk: Size::gib(100) }
            }
            (ClusterKind::Okd, Role::Worker | Role::Infra) => {
                Sizing { cores: 2, memory: Size::gib(8), disk: Size::gib(100) }
            }
            (ClusterKind::K3s, Role::Bootstrap | Role::ControlPlane) => {
                Sizing { cores: 2, memory: Size::gib(4), disk: Size::gib(40) }
            }
            (ClusterKind::K3s, Role::Worker | Role::Infra) => {
                Sizing { cores: 2, memory: Size::gib(2), disk: Size::gib(40) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_binary_units_and_print_the_largest_whole_one() {
        for (text, mib, shown) in [
            ("16GiB", 16 * 1024, "16GiB"),
            ("512MiB", 512, "512MiB"),
            ("32G", 32 * 1024, "32GiB"),
            ("1T", 1 << 20, "1TiB"),
        ] {
            let size: Size = text.parse().expect(text);
            assert_eq!((size.mib, size.to_string().as_str()), (mib, shown));
        }
        for bad in ["", "16", "GiB", "0GiB", "16 gb", "-1GiB", "99999999999999999999GiB"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
    }
}
