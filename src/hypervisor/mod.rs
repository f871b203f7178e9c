//! Hypervisors: the small trait every VM goes through, the VM spec it takes, and its two real
//! implementations — Proxmox VE over its REST API ([`proxmox`]) and local QEMU processes
//! ([`qemu`]). A backend owns only VMs it tagged as slipway's; it never touches others.
//!
//! Errors name the VM and the step that failed, so "master-0: start: bridge 'vmbr9' does not
//! exist" reaches the operator rather than a bare HTTP status.

pub mod placement;
pub mod proxmox;
pub mod qemu;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::inventory::Name;
use crate::inventory::types::MacAddr;

/// What a backend is asked to build. The VM's name is its node's name; `owner` is written to
/// the hypervisor (Proxmox tags, the QEMU state file) so slipway finds its VMs again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmSpec {
    pub owner: Owner,
    pub cores: u16,
    /// The CPU model (`x86-64-v2-AES`, `host`, ...); `None` takes the hypervisor's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    pub memory_mib: u32,
    pub disks: Vec<Disk>,
    /// Several for a dual-homed VM; the first one network-boots.
    pub nics: Vec<Nic>,
    pub firmware: Firmware,
    pub placement: Placement,
}

/// Which slipway object a VM belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Owner {
    pub cluster: Option<Name>,
    pub node: Name,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Disk {
    /// Proxmox storage; `None` takes the hypervisor's default.
    pub storage: Option<String>,
    pub size_gib: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Nic {
    /// `None` takes the hypervisor's default bridge.
    pub bridge: Option<String>,
    /// 802.1Q tag on the bridge port.
    pub vlan: Option<u16>,
    pub mac: MacAddr,
    pub model: NicModel,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NicModel {
    #[default]
    Virtio,
    E1000,
}

impl NicModel {
    pub fn as_str(self) -> &'static str {
        match self {
            NicModel::Virtio => "virtio",
            NicModel::E1000 => "e1000",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    #[default]
    Bios,
    Uefi,
}

/// Where a VM may run, for hypervisors with several hosts (Proxmox nodes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Placement {
    /// Only these hosts (empty: any online host).
    pub targets: Vec<String>,
    /// Tried first, in order, among the allowed hosts.
    pub preferred: Vec<String>,
    /// VMs of one group (e.g. a cluster's control plane) spread over hosts.
    pub group: Option<Name>,
    pub anti_affinity: AntiAffinity,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AntiAffinity {
    /// Group members may share a host.
    #[default]
    None,
    /// Prefer a host with no member of the group; share one when none is left.
    Soft,
    /// Never two members of the group on one host.
    Hard,
}

/// A VM slipway owns, as the hypervisor reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Vm {
    /// The node's name.
    pub name: String,
    pub cluster: Option<String>,
    /// The hypervisor entry in the config.
    pub hypervisor: String,
    /// The hypervisor's id: the Proxmox VMID, or the local VM's directory name.
    pub id: String,
    /// The Proxmox node it runs on; `local` for QEMU.
    pub host: String,
    pub state: VmState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VmState {
    Running,
    Stopped,
    /// Created, but a create step is still running (Proxmox `lock: create`).
    Creating,
    Paused,
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmState::Running => "running",
            VmState::Stopped => "stopped",
            VmState::Creating => "creating",
            VmState::Paused => "paused",
        })
    }
}

/// The operations the cluster lifecycle needs. Every one is idempotent: creating a VM slipway
/// already owns returns it, stopping a stopped VM and deleting a deleted one succeed.
#[async_trait]
pub trait Hypervisor: Send + Sync + fmt::Debug {
    /// The config entry's name.
    fn name(&self) -> &str;
    /// Creates the VM (stopped) or finds the one slipway made before for the same node.
    async fn create(&self, spec: &VmSpec) -> Result<Vm, Error>;
    /// The rest act on the VM `owner` owns (the same node name in another cluster is another
    /// VM), `NotFound` when there is none.
    async fn start(&self, owner: &Owner) -> Result<(), Error>;
    /// ACPI shutdown; after `timeout` a forced stop.
    async fn shutdown(&self, owner: &Owner, timeout: Duration) -> Result<(), Error>;
    /// Stops the VM if it runs and deletes it with its disks; one that is not there is deleted.
    async fn delete(&self, owner: &Owner) -> Result<(), Error>;
    async fn status(&self, owner: &Owner) -> Result<Option<Vm>, Error>;
    /// Every VM this hypervisor holds that slipway owns.
    async fn list(&self) -> Result<Vec<Vm>, Error>;
    /// The hosts VMs can go to, with their free memory (what a plan checks placement against).
    async fn hosts(&self) -> Result<Vec<placement::Host>, Error>;
}

/// The step an operation was at when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Connect,
    List,
    Place,
    AllocateId,
    Create,
    Start,
    Shutdown,
    Stop,
    Delete,
    Status,
    Cleanup,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Connect => "connect",
            Step::List => "list",
            Step::Place => "placement",
            Step::AllocateId => "allocate id",
            Step::Create => "create",
            Step::Start => "start",
            Step::Shutdown => "shutdown",
            Step::Stop => "stop",
            Step::Delete => "delete",
            Step::Status => "status",
            Step::Cleanup => "clean-up",
        })
    }
}

/// A failed hypervisor operation: which VM, which step, what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("VM {vm}: {step}: {kind}")]
pub struct Error {
    pub vm: String,
    pub step: Step,
    pub kind: ErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("authentication refused by {url}: {message} (check the API token id and secret)")]
    Auth { url: String, message: String },
    #[error("permission denied: {0}")]
    Forbidden(String),
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the hypervisor refused it: {0}")]
    Rejected(String),
    /// Proxmox answered with an error status.
    #[error("Proxmox answered {status}: {message}{}", status_hint(*status))]
    Api { status: u16, message: String },
    #[error("task {upid} failed: {message}")]
    TaskFailed { upid: String, message: String },
    #[error("task {upid} did not finish within {}", humantime::format_duration(*.after))]
    TaskTimeout { upid: String, after: Duration },
    #[error("no host can take it: {0}")]
    NoHost(#[from] placement::NoHost),
    #[error("slipway owns no such VM")]
    NotFound,
    /// An earlier call's work is still under way (a create task holds the VM's lock).
    #[error("{0}")]
    InProgress(String),
    #[error("{0}")]
    Local(String),
}

/// What a Proxmox-specific status means, for the ones its text does not explain.
fn status_hint(status: u16) -> &'static str {
    match status {
        595 | 596 => {
            " (the Proxmox node that took the request could not reach the node it forwarded it to; check that node and the cluster network)"
        }
        _ => "",
    }
}

impl Error {
    pub fn new(vm: impl Into<String>, step: Step, kind: ErrorKind) -> Error {
        Error { vm: vm.into(), step, kind }
    }
}

/// Whether `model` can be a CPU model name: Proxmox's and QEMU's are letters, digits, `.`, `_`,
/// `-` (`x86-64-v2-AES`, `host`, `Skylake-Server-v4`); no flags, no separators.
pub fn cpu_model_ok(model: &str) -> bool {
    !model.is_empty() && model.len() <= 64 && model.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Proxmox tags marking a VM as slipway's: `slipway`, `slipway.cluster.<c>`, `slipway.node.<n>`.
pub const OWNER_TAG: &str = "slipway";

impl Owner {
    pub fn tags(&self) -> Vec<String> {
        let mut tags = vec![OWNER_TAG.to_owned()];
        if let Some(cluster) = &self.cluster {
            tags.push(format!("slipway.cluster.{cluster}"));
        }
        tags.push(format!("slipway.node.{}", self.node));
        tags
    }

    /// The owner a tag list names, if it carries slipway's mark and a node.
    pub fn from_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> Option<Owner> {
        let (mut marked, mut cluster, mut node) = (false, None, None);
        for tag in tags {
            if tag == OWNER_TAG {
                marked = true;
            } else if let Some(c) = tag.strip_prefix("slipway.cluster.") {
                cluster = c.parse().ok();
            } else if let Some(n) = tag.strip_prefix("slipway.node.") {
                node = n.parse().ok();
            }
        }
        Some(Owner { cluster, node: node.filter(|_| marked)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        s.parse().expect("name")
    }

    #[test]
    fn owner_tags_round_trip() {
        let owner = Owner { cluster: Some(name("prod")), node: name("master-0") };
        let tags = owner.tags();
        assert_eq!(tags, ["slipway", "slipway.cluster.prod", "slipway.node.master-0"]);
        assert_eq!(Owner::from_tags(tags.iter().map(String::as_str)), Some(owner));
    }

    #[test]
    fn a_vm_without_the_slipway_tag_is_not_ours() {
        assert_eq!(Owner::from_tags(["slipway.node.master-0", "prod"]), None);
        assert_eq!(Owner::from_tags(["slipway"]), None);
    }

    #[test]
    fn errors_name_the_vm_and_the_step() {
        let e = Error::new("master-0", Step::Start, ErrorKind::Rejected("bridge 'vmbr9' does not exist".into()));
        assert_eq!(e.to_string(), "VM master-0: start: the hypervisor refused it: bridge 'vmbr9' does not exist");
    }
}
