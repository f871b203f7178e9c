//! From a definition to the nodes and VMs it means, against what exists (pure).
//!
//! Node names come from the group (`master-0`, `master-1`, ...). A node that exists keeps its
//! MAC and address; a new one gets a locally administered MAC derived from the cluster's and the
//! node's names (stable across re-plans and restarts; the next candidate when another node
//! holds it) and the lowest free address of the network's `static_range` (never the pool).
//! Every problem is reported at once, each naming the field and value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::definition::{Definition, Lifecycle, NodeGroup, Sizing};
use super::health;
use crate::hypervisor::placement::{self, Host};
use crate::hypervisor::{self, AntiAffinity, Disk, Nic, NicModel, Owner, Vm, VmSpec};
use crate::inventory::{Cluster, ClusterKind, Inventory, MacAddr, Name, Network, Node, Origin, Role};

/// What is known of the hypervisors when planning.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The configured hypervisors' names.
    pub hypervisors: Vec<String>,
    /// The hosts of the definition's hypervisor, when they could be read: placement is then
    /// checked (targets exist, hard anti-affinity can be met, the memory is free somewhere)
    /// and each new VM's host foreseen.
    pub hosts: Option<Vec<Host>>,
    /// The VMs slipway owns on the definition's hypervisor (where the existing ones run).
    pub vms: Vec<Vm>,
}

/// The definition made concrete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plan {
    pub cluster: Cluster,
    /// In definition order: the groups' nodes, then the listed ones.
    pub nodes: Vec<PlannedNode>,
    /// Against the inventory: what applying it creates, changes, keeps and deletes.
    pub changes: Vec<Change>,
    /// What the plan could not check (a hypervisor that did not answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlannedNode {
    pub node: Node,
    /// The group it belongs to; `None` for a listed node (no VM is made for it).
    pub group: Option<Name>,
    /// The VM to create; `None` for a listed node.
    pub vm: Option<VmSpec>,
    /// Where its VM runs, or (a new one) is foreseen to go; `None` when the hypervisor's hosts
    /// could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<Place>,
    pub lifecycle: Lifecycle,
}

/// A VM's host and hypervisor id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Place {
    pub host: String,
    /// The VMID of an existing VM. A new one's is given by the hypervisor when it is made
    /// (Proxmox's `/cluster/nextid`), so a plan cannot promise it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = PlanAction)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Keep,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Change {
    pub node: Name,
    pub action: Action,
    /// For an update: the fields that change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// The most nodes one group may have.
pub const MAX_GROUP: u32 = 1000;
pub use super::definition::{MAX_PHASE, Problem};

/// Turns `def` into a plan against `inv`, or every problem it has.
pub fn plan(def: &Definition, inv: &Inventory, facts: &Facts) -> Result<Plan, Vec<Problem>> {
    let mut problems = Problems::default();
    let network = inv.networks.get(&def.network);
    if network.is_none() {
        problems.add("network", &def.network, "no such network");
    }
    check_hypervisor(def, facts, &mut problems);
    check_timeouts(def, &mut problems);
    check_health(def, &mut problems);
    check_groups(def, &mut problems);
    check_roles(def, &mut problems);
    problems.0.extend(crate::cluster::addons::check::check(def));
    if let Some(hosts) = &facts.hosts {
        check_placement(def, inv, hosts, &mut problems);
    }
    // Names are made only for a definition whose groups are sound (a count is bounded then).
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    let names = node_names(def, inv, &mut problems);
    let Some(network) = network else { return Err(problems.0) };
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    let addresses = allocate_addresses(def, inv, network, &names, &mut problems);
    let macs = allocate_macs(def, inv, &names);
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    let cluster = Cluster {
        name: def.name.clone(),
        kind: def.kind,
        base_domain: def.base_domain.clone(),
        network: def.network.clone(),
        api_address: def.api_address,
        api_int_address: def.api_int_address,
        ingress_address: def.ingress_address,
        origin: Origin::Api,
    };
    let mut nodes = planned_nodes(def, &names, &addresses, &macs);
    check_result(def, inv, &cluster, &nodes, &mut problems);
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    place_vms(def, inv, &mut nodes, facts, &mut problems);
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    let changes = changes(def, inv, &nodes);
    Ok(Plan { cluster, nodes, changes, warnings: Vec::new() })
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, value: impl fmt::Display, message: impl Into<String>) {
        self.0.push(Problem { field: field.into(), value: value.to_string(), message: message.into() });
    }
}

fn check_hypervisor(def: &Definition, facts: &Facts, problems: &mut Problems) {
    match &def.hypervisor {
        None if !def.node_groups.is_empty() => {
            problems.add("hypervisor", "(none)", "node groups need a hypervisor to create their VMs")
        }
        Some(h) if !facts.hypervisors.iter().any(|c| c == h.as_str()) => {
            let known = if facts.hypervisors.is_empty() { "none".to_owned() } else { facts.hypervisors.join(", ") };
            problems.add("hypervisor", h, format!("no such hypervisor in the config (configured: {known})"));
        }
        _ => {}
    }
}

fn check_groups(def: &Definition, problems: &mut Problems) {
    let mut seen = BTreeSet::new();
    for (i, g) in def.node_groups.iter().enumerate() {
        let at = |field: &str| format!("node_groups[{i}].{field}");
        if !seen.insert(&g.name) {
            problems.add(at("name"), &g.name, "another group has this name");
        }
        if g.count == 0 {
            problems.add(at("count"), g.count, "must be at least 1 (delete the group to have none)");
        }
        if g.count > MAX_GROUP {
            problems.add(at("count"), g.count, format!("must be at most {MAX_GROUP}"));
        }
        if let Some(cpu) = g.cpu.as_ref().filter(|c| !hypervisor::cpu_model_ok(c)) {
            problems.add(at("cpu"), cpu, "a CPU model name, e.g. x86-64-v2-AES or host (no flags)");
        }
        if g.cores == Some(0) {
            problems.add(at("cores"), 0, "must be at least 1");
        }
        if let Some(memory) = g.memory
            && memory.mib < 512
        {
            problems.add(at("memory"), memory, "must be at least 512MiB");
        }
        for (j, nic) in g.nics.iter().enumerate() {
            if let Some(vlan) = nic.vlan
                && !(1..=4094).contains(&vlan)
            {
                problems.add(at(&format!("nics[{j}].vlan")), vlan, "must be 1-4094");
            }
        }
        let longest = format!("{}-{}", g.name, g.count.saturating_sub(1));
        if longest.len() > 63 {
            problems.add(at("name"), &g.name, format!("its node names ({longest}) would be longer than 63 characters"));
        }
        if g.lifecycle.cleanup_after_boot == Some(true) && matches!(g.role, Role::ControlPlane) {
            problems.add(
                at("lifecycle.cleanup_after_boot"),
                true,
                format!("only bootstrap, worker or infra nodes may be deleted after boot, not {}", g.role.as_str()),
            );
        }
    }
}

fn check_timeouts(def: &Definition, problems: &mut Problems) {
    let t = &def.validation.phases;
    let phases = [
        ("create", t.create),
        ("boot", t.boot),
        ("config", t.config),
        ("phone_home", t.phone_home),
        ("shutdown", t.shutdown),
        ("api", t.api),
        ("bootstrap", t.bootstrap),
        ("etcd_handoff", t.etcd_handoff),
        ("remove_bootstrap", t.remove_bootstrap),
        ("join", t.join),
        ("finalize", t.finalize),
        ("init", t.init),
        ("server_join", t.server_join),
        ("agent_join", t.agent_join),
        ("kubeconfig", t.kubeconfig),
    ];
    let all = phases.into_iter().map(|(n, d)| (format!("validation.phases.{n}"), d));
    for (field, d) in all.chain([("validation.timeout".to_owned(), def.validation.timeout)]) {
        if let Some(d) = d
            && (d < std::time::Duration::from_secs(1) || d > MAX_PHASE)
        {
            problems.add(field, crate::inventory::types::format_duration(d), "must be between 1s and 7days");
        }
    }
}

fn check_health(def: &Definition, problems: &mut Problems) {
    let checks = &def.validation.health_checks;
    if checks.len() > health::MAX_CHECKS {
        problems.add("validation.health_checks", checks.len(), format!("at most {} checks", health::MAX_CHECKS));
    }
    let zone = format!("{}.{}", def.name, def.base_domain);
    let mut names = BTreeSet::new();
    for (i, c) in checks.iter().enumerate() {
        let at = |field: &str| format!("validation.health_checks[{i}].{field}");
        if !names.insert(&c.name) {
            problems.add(at("name"), &c.name, "another health check has this name");
        }
        match health::Target::parse(c, &zone) {
            Err(why) => problems.add(at("target"), &c.target, why),
            Ok(health::Target::Tcp { .. }) if c.status.is_some() || c.insecure => {
                let field = if c.status.is_some() { "status" } else { "insecure" };
                problems.add(at(field), &c.target, "only for http:// and https:// targets");
            }
            Ok(_) => {}
        }
        if let Some(status) = c.status.filter(|s| !(100..=599).contains(s)) {
            problems.add(at("status"), status, "an HTTP status is 100-599");
        }
    }
}

/// The roles a kind has: OKD one temporary bootstrap node and a control plane; k3s a control
/// plane (its first server initialises the cluster) and no bootstrap node.
fn check_roles(def: &Definition, problems: &mut Problems) {
    let groups = def.node_groups.iter().enumerate().map(|(i, g)| (format!("node_groups[{i}]"), g.role, g.count));
    let listed = def.nodes.iter().enumerate().map(|(i, n)| (format!("nodes[{i}]"), n.role, 1));
    let all: Vec<(String, Role, u32)> = groups.chain(listed).collect();
    let count = |role: Role| all.iter().filter(|(_, r, _)| *r == role).map(|(_, _, c)| u64::from(*c)).sum::<u64>();
    match def.kind {
        ClusterKind::K3s => {
            for (at, role, _) in all.iter().filter(|(_, r, _)| *r == Role::Bootstrap) {
                problems.add(
                    format!("{at}.role"),
                    role.as_str(),
                    "k3s has no bootstrap node: its first control-plane node initialises the cluster",
                );
            }
        }
        ClusterKind::Okd => {
            let bootstrap = count(Role::Bootstrap);
            if bootstrap != 1 && !all.is_empty() {
                problems.add(
                    "node_groups",
                    format!("{bootstrap} bootstrap nodes"),
                    "OKD needs exactly one bootstrap node",
                );
            }
        }
    }
    if !all.is_empty() && count(Role::ControlPlane) == 0 {
        problems.add("node_groups", "no control-plane nodes", "a cluster needs at least one control-plane node");
    }
}

/// Targets must exist; a group that gets new VMs must have the hosts (hard anti-affinity) and
/// the memory for them. A group whose VMs all exist is not held to hosts that are down now.
fn check_placement(def: &Definition, inv: &Inventory, hosts: &[Host], problems: &mut Problems) {
    for (i, g) in def.node_groups.iter().enumerate() {
        let exists = |n: u32| {
            inv.nodes
                .get(format!("{}-{n}", g.name).as_str())
                .is_some_and(|node| node.cluster.as_ref() == Some(&def.name))
        };
        let grows = !(0..g.count.min(MAX_GROUP)).all(exists);
        let at = |field: &str| format!("node_groups[{i}].placement.{field}");
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        for (j, t) in g.placement.target_nodes.iter().enumerate() {
            if !names.contains(&t.as_str()) {
                problems.add(
                    at(&format!("target_nodes[{j}]")),
                    t,
                    format!("the hypervisor has no such node (nodes: {})", names.join(", ")),
                );
            }
        }
        let targets = hypervisor::Placement { targets: g.placement.target_nodes.clone(), ..Default::default() };
        let allowed: Vec<&Host> =
            hosts.iter().filter(|h| h.online).filter(|h| placement::allowed(&targets, h)).collect();
        if grows && anti_affinity(g) == AntiAffinity::Hard && (allowed.len() as u64) < u64::from(g.count) {
            problems.add(
                at("anti_affinity"),
                "hard",
                format!(
                    "{} nodes need {} hosts, but only {} allowed hosts are online",
                    g.count,
                    g.count,
                    allowed.len()
                ),
            );
        }
        let memory = g.memory.unwrap_or(Sizing::default_for(def.kind, g.role).memory);
        if grows && !allowed.is_empty() && allowed.iter().all(|h| h.mem_free_mib < memory.mib) {
            let free: Vec<String> = allowed.iter().map(|h| format!("{} {} MiB", h.name, h.mem_free_mib)).collect();
            problems.add(
                format!("node_groups[{i}].memory"),
                memory,
                format!("no allowed host has that much memory free (free: {})", free.join(", ")),
            );
        }
    }
}

fn anti_affinity(g: &NodeGroup) -> AntiAffinity {
    g.placement.anti_affinity.unwrap_or(match g.role {
        Role::ControlPlane => AntiAffinity::Soft,
        _ => AntiAffinity::None,
    })
}

/// Every node's name, in definition order, with the field that makes it; clashes reported.
fn node_names(def: &Definition, inv: &Inventory, problems: &mut Problems) -> Vec<(Name, String)> {
    let mut names: Vec<(Name, String)> = Vec::new();
    for (i, g) in def.node_groups.iter().enumerate() {
        for n in 0..g.count {
            if let Ok(name) = format!("{}-{n}", g.name).parse::<Name>() {
                names.push((name, format!("node_groups[{i}]")));
            }
        }
    }
    names.extend(def.nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), format!("nodes[{i}].name"))));
    let mut seen = BTreeSet::new();
    for (name, at) in &names {
        if !seen.insert(name) {
            problems.add(at.as_str(), name, "another node of this definition has this name");
        } else if let Some(other) = inv.nodes.get(name)
            && other.cluster.as_ref() != Some(&def.name)
        {
            let owner = other.cluster.as_ref().map_or("no cluster".to_owned(), |c| format!("cluster {c}"));
            problems.add(at.as_str(), name, format!("a node of {owner} has this name"));
        }
    }
    names
}

/// Each node's address: the one it has (if still on the network), the listed one, else the
/// lowest free one of the static range.
fn allocate_addresses(
    def: &Definition,
    inv: &Inventory,
    network: &Network,
    names: &[(Name, String)],
    problems: &mut Problems,
) -> Vec<Ipv4Addr> {
    let ours = |n: &Node| n.cluster.as_ref() == Some(&def.name) && names.iter().any(|(name, _)| name == &n.name);
    let mut taken: BTreeSet<Ipv4Addr> = inv.nodes.values().filter(|n| !ours(n)).map(|n| n.ipv4).collect();
    taken.extend(network.gateway);
    taken.extend(&network.dns_servers);
    taken.extend([def.api_address, def.api_int_address, def.ingress_address]);
    // Other clusters' load-balancer addresses and every frontend's listen address are slipway's
    // own: a node given one would fight the load balancer for it.
    for c in inv.clusters.values().filter(|c| c.name != def.name) {
        taken.extend([c.api_address, c.api_int_address, c.ingress_address]);
    }
    taken.extend(inv.frontends.values().filter_map(|f| match f.listen.ip() {
        std::net::IpAddr::V4(ip) => Some(ip),
        std::net::IpAddr::V6(_) => None,
    }));
    let listed: BTreeMap<&Name, Ipv4Addr> = def.nodes.iter().filter_map(|n| Some((&n.name, n.ipv4?))).collect();
    let mut out: Vec<Option<Ipv4Addr>> = names
        .iter()
        .map(|(name, _)| {
            listed.get(name).copied().or_else(|| {
                let existing = inv.nodes.get(name).filter(|n| ours(n))?.ipv4;
                network.static_range.filter(|r| r.contains(existing)).map(|_| existing)
            })
        })
        .collect();
    taken.extend(out.iter().flatten());
    let Some(range) = network.static_range else {
        if out.iter().any(Option::is_none) {
            problems.add(
                "network",
                &def.network,
                "has no static_range to take node addresses from (set one, or list every node's ipv4)",
            );
        }
        return out.into_iter().flatten().collect();
    };
    let mut free = (u32::from(range.start)..=u32::from(range.end)).map(Ipv4Addr::from).filter(|ip| !taken.contains(ip));
    let wanted = out.iter().filter(|a| a.is_none()).count();
    for slot in out.iter_mut().filter(|a| a.is_none()) {
        *slot = free.next();
    }
    if out.iter().any(Option::is_none) {
        let left = wanted - out.iter().filter(|a| a.is_none()).count();
        problems.add(
            "network",
            &def.network,
            format!("its static_range {}-{} has {left} free addresses for {wanted} new nodes", range.start, range.end),
        );
    }
    out.into_iter().flatten().collect()
}

/// Each node's MAC: listed, kept, else derived from the cluster's and node's names.
fn allocate_macs(def: &Definition, inv: &Inventory, names: &[(Name, String)]) -> Vec<MacAddr> {
    let listed: BTreeMap<&Name, MacAddr> = def.nodes.iter().map(|n| (&n.name, n.mac)).collect();
    let existing = |name: &Name| inv.nodes.get(name).filter(|n| n.cluster.as_ref() == Some(&def.name)).map(|n| n.mac);
    let mut chosen: Vec<Option<MacAddr>> =
        names.iter().map(|(name, _)| listed.get(name).copied().or_else(|| existing(name))).collect();
    let ours: BTreeSet<&Name> = names.iter().map(|(n, _)| n).collect();
    let mut taken: BTreeSet<MacAddr> = inv
        .nodes
        .values()
        .filter(|n| !ours.contains(&n.name) || n.cluster.as_ref() != Some(&def.name))
        .map(|n| n.mac)
        .collect();
    taken.extend(chosen.iter().flatten());
    for ((name, _), slot) in names.iter().zip(chosen.iter_mut()) {
        if slot.is_none() {
            let mac = (0u32..).map(|attempt| derived_mac(&def.name, name, attempt)).find(|m| !taken.contains(m));
            *slot = mac;
            taken.extend(mac);
        }
    }
    chosen.into_iter().flatten().collect()
}

/// `02:..`: locally administered, unicast; five bytes of SHA-256 over the names.
pub fn derived_mac(cluster: &Name, node: &Name, attempt: u32) -> MacAddr {
    let digest = Sha256::digest(format!("slipway/{cluster}/{node}/{attempt}"));
    MacAddr([0x02, digest[0], digest[1], digest[2], digest[3], digest[4]])
}

fn planned_nodes(def: &Definition, names: &[(Name, String)], ips: &[Ipv4Addr], macs: &[MacAddr]) -> Vec<PlannedNode> {
    let mut out = Vec::new();
    let mut at = 0;
    for g in &def.node_groups {
        let sizing = Sizing::default_for(def.kind, g.role);
        for _ in 0..g.count {
            let (name, ipv4, mac) = (names[at].0.clone(), ips[at], macs[at]);
            at += 1;
            let nics = if g.nics.is_empty() { vec![Default::default()] } else { g.nics.clone() };
            let disks = if g.disks.is_empty() {
                vec![Disk { storage: None, size_gib: gib(sizing.disk.whole_gib()) }]
            } else {
                g.disks.iter().map(|d| Disk { storage: d.storage.clone(), size_gib: gib(d.size.whole_gib()) }).collect()
            };
            let vm = VmSpec {
                owner: Owner { cluster: Some(def.name.clone()), node: name.clone() },
                cores: g.cores.unwrap_or(sizing.cores),
                cpu: g.cpu.clone(),
                memory_mib: u32::try_from(g.memory.unwrap_or(sizing.memory).mib).unwrap_or(u32::MAX),
                disks,
                // The first NIC boots and carries the node's MAC; the others get the next MACs.
                nics: nics
                    .iter()
                    .enumerate()
                    .map(|(k, n)| Nic {
                        bridge: n.bridge.clone(),
                        vlan: n.vlan,
                        mac: nth_mac(mac, k),
                        model: NicModel::Virtio,
                    })
                    .collect(),
                firmware: g.firmware,
                placement: hypervisor::Placement {
                    targets: g.placement.target_nodes.clone(),
                    preferred: g.placement.preferred_nodes.clone(),
                    group: format!("{}-{}", def.name, g.name).parse().ok(),
                    anti_affinity: anti_affinity(g),
                },
            };
            let lifecycle =
                Lifecycle { temporary: g.lifecycle.temporary || g.role == Role::Bootstrap, ..g.lifecycle.clone() };
            let mut node = node(def, name, g.role, mac, ipv4, g.profile.clone(), g.labels.clone());
            node.taints = g.taints.clone();
            out.push(PlannedNode { node, group: Some(g.name.clone()), vm: Some(vm), place: None, lifecycle });
        }
    }
    for listed in &def.nodes {
        let (ipv4, mac) = (ips[at], macs[at]);
        at += 1;
        let mut node =
            node(def, listed.name.clone(), listed.role, mac, ipv4, listed.profile.clone(), listed.labels.clone());
        node.taints = listed.taints.clone();
        out.push(PlannedNode { node, group: None, vm: None, place: None, lifecycle: Lifecycle::default() });
    }
    out
}

/// Where each VM runs (an existing one) or will go: the hypervisor's own placement, run in
/// definition order over the hosts as they are, each foreseen VM counting as a member of its
/// group on its host. A VM no host can take is a problem of its group's placement.
fn place_vms(def: &Definition, inv: &Inventory, nodes: &mut [PlannedNode], facts: &Facts, problems: &mut Problems) {
    let Some(hosts) = &facts.hosts else { return };
    let mut hosts = hosts.clone();
    let cluster = Some(def.name.to_string());
    let ours: Vec<&Vm> = facts.vms.iter().filter(|vm| vm.cluster == cluster).collect();
    // Per group, how many of its VMs each host holds (existing ones, then foreseen ones).
    let mut members: BTreeMap<Name, BTreeMap<String, usize>> = BTreeMap::new();
    for g in &def.node_groups {
        let group = nodes.iter().find(|p| p.group.as_ref() == Some(&g.name)).and_then(|p| p.vm.as_ref());
        let Some(key) = group.and_then(|spec| spec.placement.group.clone()) else { continue };
        let counts = members.entry(key).or_default();
        let prefix = format!("{}-", g.name);
        for vm in ours.iter().filter(|vm| vm.name.strip_prefix(&prefix).is_some_and(|n| n.parse::<u32>().is_ok())) {
            *counts.entry(vm.host.clone()).or_default() += 1;
        }
    }
    for p in nodes.iter_mut() {
        let Some(spec) = &p.vm else { continue };
        if let Some(vm) = ours.iter().find(|vm| vm.name == p.node.name.as_str()) {
            p.place = Some(Place { host: vm.host.clone(), id: Some(vm.id.clone()) });
            continue;
        }
        // A node that exists is not placed again (its VM, if any, is the engine's to find).
        if inv.nodes.contains_key(&p.node.name) {
            continue;
        }
        let empty = BTreeMap::new();
        let counts = spec.placement.group.as_ref().and_then(|g| members.get(g)).unwrap_or(&empty);
        match placement::choose(&spec.placement, &hosts, counts, u64::from(spec.memory_mib)) {
            Ok(host) => {
                if let Some(g) = &spec.placement.group {
                    *members.entry(g.clone()).or_default().entry(host.clone()).or_default() += 1;
                }
                // Its memory is promised from now on, as the hypervisor counts it.
                if let Some(h) = hosts.iter_mut().find(|h| h.name == host) {
                    h.mem_free_mib = h.mem_free_mib.saturating_sub(u64::from(spec.memory_mib));
                }
                p.place = Some(Place { host, id: None });
            }
            Err(e) => {
                let i = def.node_groups.iter().position(|g| Some(&g.name) == p.group.as_ref()).unwrap_or(0);
                problems.add(format!("node_groups[{i}].placement"), &p.node.name, e.to_string());
            }
        }
    }
}

fn gib(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The `k`-th NIC's MAC: the node's with its last byte advanced (only the first NIC is the
/// node's identity; the others must not clash with it).
fn nth_mac(mac: MacAddr, k: usize) -> MacAddr {
    let mut bytes = mac.0;
    bytes[5] = bytes[5].wrapping_add(u8::try_from(k).unwrap_or(u8::MAX));
    MacAddr(bytes)
}

fn node(
    def: &Definition,
    name: Name,
    role: Role,
    mac: MacAddr,
    ipv4: Ipv4Addr,
    profile: Option<Name>,
    labels: BTreeMap<String, String>,
) -> Node {
    Node {
        name,
        cluster: Some(def.name.clone()),
        role: Some(role),
        mac,
        ipv4,
        hostname: None,
        profile,
        labels,
        dhcp: Default::default(),
        origin: Origin::Api,
        retiring: false,
        taints: Vec::new(),
    }
}

/// The inventory with the plan in it must validate; its problems are the definition's.
fn check_result(def: &Definition, inv: &Inventory, cluster: &Cluster, nodes: &[PlannedNode], problems: &mut Problems) {
    let mut after = inv.clone();
    after.nodes.retain(|_, n| n.cluster.as_ref() != Some(&def.name));
    after.clusters.insert(cluster.name.clone(), cluster.clone());
    for p in nodes {
        after.nodes.insert(p.node.name.clone(), p.node.clone());
    }
    after.reindex();
    let before: BTreeSet<String> = crate::inventory::validate(inv).iter().map(ToString::to_string).collect();
    // In a clash, the newcomer is the one named: what exists ranks first.
    let rank = |_, name: &str| usize::from(!inv.nodes.contains_key(name));
    for p in crate::inventory::validate_ranked(&after, &rank) {
        if !before.contains(&p.to_string()) {
            problems.add(format!("{} {}.{}", p.kind, p.name, p.field), &p.value, p.message);
        }
    }
}

fn changes(def: &Definition, inv: &Inventory, nodes: &[PlannedNode]) -> Vec<Change> {
    let mut out = Vec::new();
    for p in nodes {
        let change = match inv.nodes.get(&p.node.name) {
            None => Change { node: p.node.name.clone(), action: Action::Create, fields: vec![] },
            Some(now) => {
                let fields = differences(now, &p.node);
                let action = if fields.is_empty() { Action::Keep } else { Action::Update };
                Change { node: p.node.name.clone(), action, fields }
            }
        };
        out.push(change);
    }
    let planned: BTreeSet<&Name> = nodes.iter().map(|p| &p.node.name).collect();
    for n in inv.nodes.values().filter(|n| n.cluster.as_ref() == Some(&def.name) && !planned.contains(&n.name)) {
        out.push(Change { node: n.name.clone(), action: Action::Delete, fields: vec![] });
    }
    out
}

fn differences(now: &Node, planned: &Node) -> Vec<String> {
    let mut fields = Vec::new();
    if now.role != planned.role {
        fields.push("role".into());
    }
    if now.mac != planned.mac {
        fields.push("mac".into());
    }
    if now.ipv4 != planned.ipv4 {
        fields.push("ipv4".into());
    }
    if now.profile != planned.profile {
        fields.push("profile".into());
    }
    if now.labels != planned.labels {
        fields.push("labels".into());
    }
    if now.taints != planned.taints {
        fields.push("taints".into());
    }
    fields
}

#[cfg(test)]
mod tests;
