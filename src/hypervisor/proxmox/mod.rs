//! The Proxmox VE backend: the REST API through the `proxmox-api` crate's typed endpoints on
//! slipway's own client ([`api`]). VMs are found by their tags ([`super::Owner::tags`]) in
//! `/cluster/resources`; new ones get a node from [`placement`], a VMID from `/cluster/nextid`
//! (retried when another client takes it first), parameters from [`params`], and every
//! asynchronous call is followed through its task to the end ([`task`]). A create that fails
//! after the VM exists deletes it again; when even that fails, the error says so and the VM,
//! still tagged, shows in `slipway get vms` for the next reconcile.

pub mod api;
pub mod params;
pub mod task;
pub mod tls;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use proxmox_api::client::Client as _;
use proxmox_api::cluster::ClusterClient;
use proxmox_api::cluster::resources::{GetOutputItems as Resource, GetParams as ResourceParams, Type2 as ResourceType};
use proxmox_api::nodes::NodesClient;
use proxmox_api::types::VmId;
use proxmox_api::types::bounded_integer::BoundedInteger as _;

use super::placement::{self, Host};
use super::{Error, ErrorKind, Hypervisor, Owner, Step, Vm, VmSpec, VmState};
use crate::inventory::Name;
use api::{Api, ApiError};
use params::Defaults;
use task::TaskError;
pub use tls::Trust;

#[derive(Clone, Debug)]
pub struct Settings {
    pub name: String,
    /// `https://pve1.lab.example:8006`; several nodes of one cluster are asked in turn.
    pub urls: Vec<String>,
    /// `USER@REALM!TOKENID`
    pub token_id: String,
    pub token_secret: String,
    pub trust: Trust,
    pub defaults: Defaults,
    /// Nodes VMs may go to when a spec names none (empty: any online node).
    pub nodes: Vec<String>,
    /// How long one Proxmox task (create, start, stop, delete) may run.
    pub task_timeout: Duration,
    /// How a node's free memory is counted for placement.
    pub memory: MemoryView,
}

/// How placement counts a node's free memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryView {
    /// Proxmox's own figure, `maxmem - mem` (what the host uses now), less what slipway's
    /// not-yet-started VMs will take. A ZFS ARC counts as used.
    #[default]
    Used,
    /// `maxmem` less the memory assigned to every VM that runs there (and slipway's
    /// not-yet-started ones): blind to the ARC and to the host's own use, so what a ZFS host
    /// can give is not taken by its cache.
    Assigned,
}

#[derive(Debug)]
pub struct Proxmox {
    name: String,
    api: Api,
    defaults: Defaults,
    nodes: Vec<String>,
    task_timeout: Duration,
    memory: MemoryView,
    /// Creates go one at a time: a VMID and a node's free memory are decided per create.
    create_lock: tokio::sync::Mutex<()>,
}

/// A cluster's node list comes back empty only when the token may not see the nodes.
const NO_NODES: &str = "no Proxmox node is visible to the API token: /cluster/resources shows a node only with Sys.Audit on /nodes (or /nodes/<node>)";

/// How many times a create asks for a new VMID after another client took the last one.
const ID_ATTEMPTS: usize = 5;

/// A VM slipway owns, as `/cluster/resources` lists it.
#[derive(Clone, Debug)]
struct Owned {
    vmid: VmId,
    host: String,
    owner: Owner,
    state: VmState,
}

impl Proxmox {
    pub fn new(settings: Settings) -> Result<Proxmox, api::ClientError> {
        let api = Api::new(&settings.urls, &settings.token_id, &settings.token_secret, &settings.trust)?;
        Ok(Proxmox {
            name: settings.name,
            api,
            defaults: settings.defaults,
            nodes: settings.nodes,
            task_timeout: settings.task_timeout,
            memory: settings.memory,
            create_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn fail(&self, vm: &str, step: Step, e: ApiError) -> Error {
        let url = self.api.url().to_owned();
        let kind = match e {
            ApiError::Status { status: 401, message } => ErrorKind::Auth { url, message },
            ApiError::Status { status: 403, message } => ErrorKind::Forbidden(message),
            ApiError::Status { status, message } => ErrorKind::Api { status, message },
            ApiError::Transport { tls: true, message, .. } => ErrorKind::Tls(message),
            ApiError::Transport { tls: false, message, .. } => ErrorKind::Unreachable { url, message },
            ApiError::Decode(message) => ErrorKind::Rejected(format!("unreadable answer: {message}")),
        };
        Error::new(vm, step, kind)
    }

    fn task_fail(&self, vm: &str, step: Step, upid: &str, e: TaskError) -> Error {
        match e {
            TaskError::Failed(message) => Error::new(vm, step, ErrorKind::TaskFailed { upid: upid.into(), message }),
            TaskError::Timeout(after) => Error::new(vm, step, ErrorKind::TaskTimeout { upid: upid.into(), after }),
            TaskError::Api(e) => self.fail(vm, step, e),
        }
    }

    async fn resources(&self, vm: &str, step: Step) -> Result<Vec<Resource>, Error> {
        ClusterClient::new(self.api.clone())
            .resources()
            .get(ResourceParams::default())
            .await
            .map_err(|e| self.fail(vm, step, e))
    }

    fn owned(resources: &[Resource]) -> Vec<Owned> {
        resources
            .iter()
            .filter(|r| matches!(r.ty, ResourceType::Qemu) && r.template != Some(true))
            .filter_map(|r| {
                let tags = r.tags.as_deref().unwrap_or("");
                let owner = Owner::from_tags(tags.split([';', ',', ' ']).filter(|t| !t.is_empty()))?;
                let vmid = VmId::new(r.vmid?.get()).ok()?;
                let state = if r.lock.as_deref() == Some("create") {
                    VmState::Creating
                } else {
                    match r.status.as_deref() {
                        Some("running") => VmState::Running,
                        Some("paused") => VmState::Paused,
                        _ => VmState::Stopped,
                    }
                };
                Some(Owned { vmid, host: r.node.clone()?, owner, state })
            })
            .collect()
    }

    fn vm(&self, owned: &Owned) -> Vm {
        Vm {
            name: owned.owner.node.to_string(),
            cluster: owned.owner.cluster.as_ref().map(Name::to_string),
            hypervisor: self.name.clone(),
            id: owned.vmid.get().to_string(),
            host: owned.host.clone(),
            state: owned.state,
        }
    }

    /// `owner`'s VM. Two VMs carrying one owner's tags (a clone or a restore copies them) are
    /// an error naming both: acting on either could hit the wrong one.
    async fn find(&self, owner: &Owner, step: Step) -> Result<Option<Owned>, Error> {
        let resources = self.resources(owner.node.as_str(), step).await?;
        Self::find_in(&resources, owner, step)
    }

    /// `find` over resources already read.
    fn find_in(resources: &[Resource], owner: &Owner, step: Step) -> Result<Option<Owned>, Error> {
        let vm = owner.node.as_str();
        let mut found = Self::owned(resources).into_iter().filter(|o| &o.owner == owner);
        let first = found.next();
        if let (Some(a), Some(b)) = (&first, found.next()) {
            let msg = format!(
                "VMs {} on {} and {} on {} both carry slipway's tags for this node (a clone or a restore copies tags); remove the tags from the one that is not it",
                a.vmid.get(),
                a.host,
                b.vmid.get(),
                b.host
            );
            return Err(Error::new(vm, step, ErrorKind::Rejected(msg)));
        }
        Ok(first)
    }

    /// The cluster's nodes as placement sees them; a node outside the configured `nodes` takes
    /// a VM only when its group targets it. A VM slipway made and has not started yet counts 0
    /// in a node's `mem`: its memory is promised all the same, or a batch of creates would land
    /// on one node. With [`MemoryView::Assigned`], the memory taken is what the node's VMs are
    /// given, not what the host uses.
    fn hosts_of(&self, resources: &[Resource]) -> Vec<Host> {
        let bytes = |b: Option<i64>| u64::try_from(b.unwrap_or(0)).unwrap_or(0);
        let owned = Self::owned(resources);
        let vm_on = |vmid: i128| resources.iter().find(|v| v.vmid.map(|id| id.get()) == Some(vmid));
        resources
            .iter()
            .filter(|r| matches!(r.ty, ResourceType::Node))
            .filter_map(|r| {
                let name = r.node.clone()?;
                let taken = match self.memory {
                    MemoryView::Used => {
                        let promised: u64 = owned
                            .iter()
                            .filter(|o| o.host == name && o.state != VmState::Running)
                            .filter_map(|o| vm_on(o.vmid.get()))
                            .map(|v| bytes(v.maxmem))
                            .sum();
                        r.mem.unwrap_or(0) + promised
                    }
                    // Every VM not known to be stopped (`unknown` too), and slipway's own.
                    MemoryView::Assigned => resources
                        .iter()
                        .filter(|v| matches!(v.ty, ResourceType::Qemu) && v.node.as_deref() == Some(name.as_str()))
                        .filter(|v| {
                            v.status.as_deref() != Some("stopped")
                                || owned.iter().any(|o| Some(o.vmid.get()) == v.vmid.map(|id| id.get()))
                        })
                        .map(|v| bytes(v.maxmem))
                        .sum(),
                };
                let free = bytes(r.maxmem).saturating_sub(taken) / (1024 * 1024);
                let default_target = self.nodes.is_empty() || self.nodes.contains(&name);
                Some(Host { online: r.status.as_deref() == Some("online"), mem_free_mib: free, default_target, name })
            })
            .collect()
    }

    /// The VM's state now, from `status/current` (its QEMU process), and whether Proxmox HA
    /// manages it. `/cluster/resources` is not enough to act on: pvestatd refreshes it about
    /// every 10 s and reports a new VM as `unknown`.
    async fn current(&self, vm: &str, found: &Owned, step: Step) -> Result<(Now, bool), Error> {
        let path = format!("/nodes/{}/qemu/{}/status/current", found.host, found.vmid.get());
        let none: [(&str, &str); 0] = [];
        let status: serde_json::Value = self.api.get(&path, &none).await.map_err(|e| self.fail(vm, step, e))?;
        let managed = status["ha"]["managed"].as_u64() == Some(1);
        Ok((Now::of(status["status"].as_str(), status["qmpstatus"].as_str()), managed))
    }

    /// Polls `status/current` until `done` says so (an HA-managed VM's `hastart`/`hastop` task
    /// ends before the VM changes state), at most the task timeout.
    async fn settle(&self, vm: &str, found: &Owned, step: Step, done: fn(&Now) -> bool) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + self.task_timeout;
        loop {
            let (now, _) = self.current(vm, found, step).await?;
            if done(&now) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let msg = format!("VM {} is still {now} after its task ended (HA-managed)", found.vmid.get());
                return Err(Error::new(vm, step, ErrorKind::InProgress(msg)));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Stops the VM at once and waits for its task (and, HA-managed, for the VM to stop: the
    /// `hastop` task ends before it does, and a destroy right after would find it running).
    async fn stop(&self, vm: &str, found: &Owned, managed: bool) -> Result<(), Error> {
        let upid = self
            .qemu(&found.host, found.vmid)
            .status()
            .stop()
            .post(Default::default())
            .await
            .map_err(|e| self.fail(vm, Step::Stop, e))?;
        self.wait(vm, Step::Stop, &upid, self.task_timeout).await?;
        if managed {
            self.settle(vm, found, Step::Stop, |now| *now == Now::Stopped).await?;
        }
        Ok(())
    }

    /// The typed client for one VM's endpoints.
    fn qemu(&self, host: &str, vmid: VmId) -> proxmox_api::nodes::node::qemu::vmid::VmidClient<Api> {
        NodesClient::new(self.api.clone()).node(host).qemu().vmid(vmid)
    }

    async fn wait(&self, vm: &str, step: Step, upid: &str, limit: Duration) -> Result<(), Error> {
        task::wait(&self.api, upid, limit).await.map_err(|e| self.task_fail(vm, step, upid, e))
    }

    /// The node for a new VM, and a check that it has the spec's storages and bridges.
    async fn place(&self, spec: &VmSpec, resources: &[Resource]) -> Result<String, Error> {
        let vm = spec.owner.node.as_str();
        let hosts = self.hosts_of(resources);
        if hosts.is_empty() {
            return Err(Error::new(vm, Step::Place, ErrorKind::Rejected(NO_NODES.into())));
        }
        let mut members = BTreeMap::new();
        if let Some(group) = &spec.placement.group {
            let tag = format!("slipway.group.{group}");
            for r in resources.iter().filter(|r| matches!(r.ty, ResourceType::Qemu)) {
                if r.tags.as_deref().unwrap_or("").split(';').any(|t| t == tag) {
                    *members.entry(r.node.clone().unwrap_or_default()).or_insert(0) += 1;
                }
            }
        }
        // Only nodes that have the VM's storages, bridges and vCPUs are candidates: clusters mix
        // storages (local-zfs here, local-lvm there) and bridges.
        let mut unfit = Vec::new();
        for host in hosts.iter().filter(|h| h.online && placement::allowed(&spec.placement, h)) {
            if let Some(why) = self.unfit(vm, spec, &host.name, resources).await? {
                unfit.push((host.name.clone(), why));
            }
        }
        let fit: Vec<Host> = hosts.iter().filter(|h| !unfit.iter().any(|(n, _)| n == &h.name)).cloned().collect();
        let mut placement = spec.placement.clone();
        if !placement.targets.is_empty() {
            placement.targets.retain(|t| !unfit.iter().any(|(n, _)| n == t));
            if placement.targets.is_empty() {
                return Err(Error::new(vm, Step::Place, ErrorKind::Rejected(reasons(&unfit))));
            }
        }
        match placement::choose(&placement, &fit, &members, u64::from(spec.memory_mib)) {
            Ok(host) => Ok(host),
            Err(e) if unfit.is_empty() => Err(Error::new(vm, Step::Place, ErrorKind::NoHost(e))),
            Err(e) => Err(Error::new(vm, Step::Place, ErrorKind::Rejected(format!("{e}; {}", reasons(&unfit))))),
        }
    }

    /// Why `host` cannot take the VM: a disk's storage not there (with `images` content,
    /// available), a bridge missing, more vCPUs than it has; `None` when it can.
    async fn unfit(
        &self,
        vm: &str,
        spec: &VmSpec,
        host: &str,
        resources: &[Resource],
    ) -> Result<Option<String>, Error> {
        let storages: Vec<&str> = resources
            .iter()
            .filter(|r| matches!(r.ty, ResourceType::Storage) && r.node.as_deref() == Some(host))
            .filter(|r| r.status.as_deref() == Some("available"))
            .filter(|r| r.content.as_deref().unwrap_or("").split(',').any(|c| c == "images"))
            .filter_map(|r| r.storage.as_deref())
            .collect();
        for disk in &spec.disks {
            let want = params::storage(disk, &self.defaults);
            if !storages.contains(&want) {
                // /cluster/resources leaves out what the token may not audit: say so.
                return Ok(Some(format!(
                    "storage '{want}' for disks is not available (has: {}; a storage shows only with Datastore.Audit on /storage/{want})",
                    storages.join(", ")
                )));
            }
        }
        let cpus = resources
            .iter()
            .find(|r| matches!(r.ty, ResourceType::Node) && r.node.as_deref() == Some(host))
            .and_then(|r| r.maxcpu.as_ref())
            .map(|c| {
                use proxmox_api::types::bounded_number::BoundedNumber as _;
                c.get()
            });
        if let Some(cpus) = cpus.filter(|c| f64::from(spec.cores) > *c) {
            return Ok(Some(format!("{} vCPUs asked, the node has {cpus}", spec.cores)));
        }
        let query = [("type", "any_bridge")];
        let bridges: Vec<serde_json::Value> = match self.api.get(&format!("/nodes/{host}/network"), &query).await {
            Ok(bridges) => bridges,
            Err(ApiError::Status { status: 403, message }) => {
                let why = format!("{message}; listing a node's bridges needs Sys.Audit on /nodes/{host}");
                return Err(Error::new(vm, Step::Place, ErrorKind::Forbidden(why)));
            }
            Err(e) => return Err(self.fail(vm, Step::Place, e)),
        };
        let bridges: Vec<&str> = bridges.iter().filter_map(|b| b["iface"].as_str()).collect();
        for nic in &spec.nics {
            let want = nic.bridge.as_deref().unwrap_or(&self.defaults.bridge);
            if !bridges.contains(&want) {
                return Ok(Some(format!("bridge '{want}' does not exist (has: {})", bridges.join(", "))));
            }
        }
        Ok(None)
    }

    async fn next_id(&self, vm: &str) -> Result<VmId, Error> {
        let id = ClusterClient::new(self.api.clone())
            .nextid()
            .get(Default::default())
            .await
            .map_err(|e| self.fail(vm, Step::AllocateId, e))?;
        VmId::new(i128::from(id))
            .map_err(|_| Error::new(vm, Step::AllocateId, ErrorKind::Rejected(format!("/cluster/nextid gave {id}"))))
    }

    /// Deletes a VM a failed create left, waiting for it; the error says what is left.
    async fn clean_up(&self, vm: &str, host: &str, vmid: VmId, cause: Error) -> Error {
        // A failed `qmcreate` removes its own config on Proxmox: then there is nothing to do.
        let result = match self.qemu(host, vmid).delete(purge()).await {
            Ok(upid) => self.wait(vm, Step::Cleanup, &upid, self.task_timeout).await,
            Err(e) if no_such_vm(&e) => Ok(()),
            Err(e) => Err(self.fail(vm, Step::Cleanup, e)),
        };
        match result {
            Ok(()) => {
                tracing::info!(vm, vmid = %vmid.get(), host, "removed the VM a failed create left");
                cause
            }
            Err(e) => {
                tracing::warn!(vm, vmid = %vmid.get(), host, error = %e, "a failed create left a VM behind");
                let kind = ErrorKind::Local(format!(
                    "{}; removing VM {} on {host} failed too ({}); it keeps slipway's tags, so `slipway get vms` shows it and the next create or delete of {vm} handles it",
                    cause.kind,
                    vmid.get(),
                    e.kind
                ));
                Error::new(vm, cause.step, kind)
            }
        }
    }
}

/// A VM's state now (`status` and `qmpstatus` of `status/current`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Now {
    Stopped,
    Running,
    /// `paused`, `suspended`: `resume` runs it on.
    Paused(String),
    /// Starting, migrating, saving or restoring: wait.
    Busy(String),
    /// Stopped by an error with its process still there: `io-error`, `internal-error`,
    /// `guest-panicked`, `watchdog`, `shutdown`. Not stopped: a delete must stop it.
    Halted(String),
}

impl Now {
    fn of(status: Option<&str>, qmp: Option<&str>) -> Now {
        match (status, qmp) {
            (Some("stopped"), _) | (None, _) => Now::Stopped,
            (_, None | Some("running")) => Now::Running,
            (_, Some(s @ ("paused" | "suspended"))) => Now::Paused(s.into()),
            (_, Some(s @ ("io-error" | "internal-error" | "guest-panicked" | "watchdog" | "shutdown"))) => {
                Now::Halted(s.into())
            }
            (_, Some(other)) => Now::Busy(other.into()),
        }
    }
}

impl std::fmt::Display for Now {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Now::Stopped => f.write_str("stopped"),
            Now::Running => f.write_str("running"),
            Now::Paused(s) | Now::Busy(s) | Now::Halted(s) => f.write_str(s),
        }
    }
}

/// A create refused for its tags (`user-tag-access` in datacenter.cfg other than `free`: new tags
/// need `Sys.Modify` on `/`) says what to change.
fn tag_hint(mut e: Error) -> Error {
    let text = e.kind.to_string();
    if text.contains("Sys.Modify") {
        e.kind = ErrorKind::Forbidden(format!(
            "{text}; slipway marks its VMs with tags, and this cluster's datacenter.cfg user-tag-access is not `free`: give the token Sys.Modify on /, or allow the tags slipway, slipway.cluster.*, slipway.node.*, slipway.group.* (user-allow-list or registered-tags)"
        ));
    }
    e
}

/// `pve1: storage 'fast' … ; pve2: bridge 'vmbr9' …`
fn reasons(unfit: &[(String, String)]) -> String {
    unfit.iter().map(|(host, why)| format!("node {host}: {why}")).collect::<Vec<_>>().join("; ")
}

/// Delete with the VM's disks, and its entries in jobs and HA. Not
/// `destroy-unreferenced-disks`: it activates every storage of the node, so one offline NFS or
/// iSCSI storage would fail the delete after the VM's own disks are gone.
fn purge() -> proxmox_api::nodes::node::qemu::vmid::DeleteParams {
    proxmox_api::nodes::node::qemu::vmid::DeleteParams { purge: Some(true), ..Default::default() }
}

/// Another client took the VMID first: the same node (`VM 105 already exists on node`), or
/// another node of the cluster, where pmxcfs refuses the second config file (`close (rename)
/// atomic file '/etc/pve/nodes/pve2/qemu-server/105.conf' failed: File exists`).
fn already_exists(e: &ApiError) -> bool {
    matches!(e, ApiError::Status { message, .. }
        if message.contains("already exists") || (message.contains("atomic file") && message.contains("File exists")))
}

/// The VM is not there (`Configuration file 'nodes/pve1/qemu-server/105.conf' does not exist`).
fn no_such_vm(e: &ApiError) -> bool {
    matches!(e, ApiError::Status { message, .. } if message.contains("does not exist") && message.contains(".conf"))
}

#[async_trait]
impl Hypervisor for Proxmox {
    fn name(&self) -> &str {
        &self.name
    }

    #[tracing::instrument(name = "vm", skip_all, fields(hypervisor = %self.name, op = "create", vm = %spec.owner.node))]
    async fn create(&self, spec: &VmSpec) -> Result<Vm, Error> {
        let _guard = self.create_lock.lock().await;
        let vm = spec.owner.node.as_str();
        let resources = self.resources(vm, Step::Create).await?;
        if let Some(found) = Self::find_in(&resources, &spec.owner, Step::Create)? {
            if found.state == VmState::Creating {
                let msg = format!(
                    "VM {} on {} is still locked by its create task; try again when the task has ended",
                    found.vmid.get(),
                    found.host
                );
                return Err(Error::new(vm, Step::Create, ErrorKind::InProgress(msg)));
            }
            return Ok(self.vm(&found));
        }
        let host = self.place(spec, &resources).await?;
        for _ in 0..ID_ATTEMPTS {
            let vmid = self.next_id(vm).await?;
            let body = params::create(spec, vmid.get(), &self.defaults);
            let upid: String = match self.api.post(&format!("/nodes/{host}/qemu"), &body).await {
                Ok(upid) => upid,
                Err(e) if already_exists(&e) => {
                    tracing::info!(vm, vmid = %vmid.get(), "another client took the VMID; asking for the next one");
                    continue;
                }
                Err(e) => return Err(tag_hint(self.fail(vm, Step::Create, e))),
            };
            if let Err(cause) = self.wait(vm, Step::Create, &upid, self.task_timeout).await {
                let cause = tag_hint(cause);
                return Err(self.clean_up(vm, &host, vmid, cause).await);
            }
            tracing::info!(vm, vmid = %vmid.get(), host, hypervisor = %self.name, "VM created");
            let owned = Owned { vmid, host, owner: spec.owner.clone(), state: VmState::Stopped };
            return Ok(self.vm(&owned));
        }
        let msg = format!("other clients took {ID_ATTEMPTS} VMIDs in a row");
        Err(Error::new(vm, Step::AllocateId, ErrorKind::Rejected(msg)))
    }

    #[tracing::instrument(name = "vm", skip_all, fields(hypervisor = %self.name, op = "start", vm = %owner.node))]
    async fn start(&self, owner: &Owner) -> Result<(), Error> {
        let vm = owner.node.as_str();
        let found = self.find(owner, Step::Start).await?.ok_or(Error::new(vm, Step::Start, ErrorKind::NotFound))?;
        let vmid = found.vmid.get();
        let (now, managed) = self.current(vm, &found, Step::Start).await?;
        let upid = match now {
            Now::Running => return Ok(()),
            Now::Paused(_) => {
                // `start` on a paused VM is refused ("already running"): it is resumed.
                let none: [(&str, &str); 0] = [];
                self.api
                    .post(&format!("/nodes/{}/qemu/{vmid}/status/resume", found.host), &none)
                    .await
                    .map_err(|e| self.fail(vm, Step::Start, e))?
            }
            Now::Busy(state) => {
                let msg = format!("VM {vmid} on {} is {state}; trying again", found.host);
                return Err(Error::new(vm, Step::Start, ErrorKind::InProgress(msg)));
            }
            Now::Halted(state) => {
                let msg = format!(
                    "VM {vmid} on {} halted ({state}): stop it and look at its storage or guest before it is started again",
                    found.host
                );
                return Err(Error::new(vm, Step::Start, ErrorKind::Rejected(msg)));
            }
            Now::Stopped => self
                .qemu(&found.host, found.vmid)
                .status()
                .start()
                .post(Default::default())
                .await
                .map_err(|e| self.fail(vm, Step::Start, e))?,
        };
        self.wait(vm, Step::Start, &upid, self.task_timeout).await?;
        if managed {
            self.settle(vm, &found, Step::Start, |now| *now == Now::Running).await?;
        }
        tracing::info!(vm, vmid, "VM started");
        Ok(())
    }

    #[tracing::instrument(name = "vm", skip_all, fields(hypervisor = %self.name, op = "shutdown", vm = %owner.node))]
    async fn shutdown(&self, owner: &Owner, timeout: Duration) -> Result<(), Error> {
        let vm = owner.node.as_str();
        let found =
            self.find(owner, Step::Shutdown).await?.ok_or(Error::new(vm, Step::Shutdown, ErrorKind::NotFound))?;
        let (now, managed) = self.current(vm, &found, Step::Shutdown).await?;
        match now {
            Now::Stopped => return Ok(()),
            // A halted or paused guest does not answer ACPI.
            Now::Halted(_) | Now::Paused(_) => return self.stop(vm, &found, managed).await,
            Now::Running | Now::Busy(_) => {}
        }
        // Proxmox's own "ACPI, then stop after the timeout".
        let params = proxmox_api::nodes::node::qemu::vmid::status::shutdown::PostParams {
            timeout: Some(timeout.as_secs().max(1)),
            forcestop: Some(true),
            ..Default::default()
        };
        let upid = self
            .qemu(&found.host, found.vmid)
            .status()
            .shutdown()
            .post(params)
            .await
            .map_err(|e| self.fail(vm, Step::Shutdown, e))?;
        self.wait(vm, Step::Shutdown, &upid, timeout + self.task_timeout).await?;
        if managed {
            self.settle(vm, &found, Step::Shutdown, |now| *now == Now::Stopped).await?;
        }
        Ok(())
    }

    #[tracing::instrument(name = "vm", skip_all, fields(hypervisor = %self.name, op = "delete", vm = %owner.node))]
    async fn delete(&self, owner: &Owner) -> Result<(), Error> {
        let vm = owner.node.as_str();
        let Some(found) = self.find(owner, Step::Delete).await? else { return Ok(()) };
        // Whatever `/cluster/resources` said: a VM that runs in any way (paused, halted on an
        // I/O error) is stopped first, or the destroy fails ("VM N is running - destroy failed").
        match self.current(vm, &found, Step::Delete).await {
            Ok((Now::Stopped, _)) => {}
            Ok((_, managed)) => self.stop(vm, &found, managed).await?,
            Err(e) if matches!(&e.kind, ErrorKind::Api { message, .. } if message.contains("does not exist")) => {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let upid = match self.qemu(&found.host, found.vmid).delete(purge()).await {
            Ok(upid) => upid,
            // Gone meanwhile (deleted by hand, or by a retry of this call).
            Err(e) if no_such_vm(&e) => return Ok(()),
            Err(e) => return Err(self.fail(vm, Step::Delete, e)),
        };
        self.wait(vm, Step::Delete, &upid, self.task_timeout).await?;
        tracing::info!(vm, vmid = %found.vmid.get(), "VM deleted");
        Ok(())
    }

    async fn status(&self, owner: &Owner) -> Result<Option<Vm>, Error> {
        Ok(self.find(owner, Step::Status).await?.map(|o| self.vm(&o)))
    }

    async fn hosts(&self) -> Result<Vec<Host>, Error> {
        let resources = self.resources("*", Step::List).await?;
        let hosts = self.hosts_of(&resources);
        if hosts.is_empty() {
            return Err(Error::new("*", Step::List, ErrorKind::Rejected(NO_NODES.into())));
        }
        Ok(hosts)
    }

    async fn list(&self) -> Result<Vec<Vm>, Error> {
        let resources = self.resources("*", Step::List).await?;
        let mut vms: Vec<Vm> = Self::owned(&resources).iter().map(|o| self.vm(o)).collect();
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(vms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_qmp_run_state_has_a_meaning() {
        assert_eq!(Now::of(Some("stopped"), Some("stopped")), Now::Stopped);
        assert_eq!(Now::of(Some("running"), Some("running")), Now::Running);
        assert_eq!(Now::of(Some("running"), None), Now::Running, "PVE without qmpstatus");
        assert_eq!(Now::of(Some("running"), Some("paused")), Now::Paused("paused".into()));
        assert_eq!(Now::of(Some("running"), Some("suspended")), Now::Paused("suspended".into()));
        assert_eq!(Now::of(Some("running"), Some("io-error")), Now::Halted("io-error".into()), "not stopped");
        assert_eq!(Now::of(Some("running"), Some("guest-panicked")), Now::Halted("guest-panicked".into()));
        assert_eq!(Now::of(Some("running"), Some("prelaunch")), Now::Busy("prelaunch".into()));
        assert_eq!(Now::of(Some("running"), Some("inmigrate")), Now::Busy("inmigrate".into()));
    }
}
