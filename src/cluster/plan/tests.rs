use super::*;
use crate::inventory::lab::Lab;

/// The shared lab without its cluster's nodes: network `cluster`, reservations .10-.99.
fn empty_lab() -> Inventory {
    let mut inv = Lab::okd().build();
    inv.nodes.clear();
    inv.reindex();
    inv
}

fn facts() -> Facts {
    Facts { hypervisors: vec!["pve".into()], ..Facts::default() }
}

fn hosts() -> Vec<Host> {
    vec![
        Host { name: "pve1".into(), online: true, mem_free_mib: 64 * 1024, default_target: true },
        Host { name: "pve2".into(), online: true, mem_free_mib: 64 * 1024, default_target: true },
        Host { name: "pve3".into(), online: false, mem_free_mib: 256 * 1024, default_target: true },
    ]
}

/// The OKD shape: a temporary bootstrap, three masters spread over hosts, two workers,
/// dual-homed on VLAN 107.
const OKD: &str = r#"
name: prod
kind: okd
base_domain: lab.example
network: cluster
api_address: 192.0.2.10
api_int_address: 10.1.107.1
ingress_address: 192.0.2.10
hypervisor: pve
node_groups:
  - name: bootstrap
    role: bootstrap
    count: 1
  - name: master
    role: control-plane
    count: 3
    memory: 16GiB
    disks: [{ storage: local-lvm, size: 120GiB }]
    nics: [{ bridge: vmbr1, vlan: 107 }, { bridge: vmbr0 }]
    firmware: uefi
    placement: { anti_affinity: hard }
  - name: worker
    role: worker
    count: 2
"#;

fn definition(yaml: &str) -> Definition {
    serde_norway::from_str(yaml).expect("a definition")
}

fn okd() -> Definition {
    definition(OKD)
}

fn problems(def: &Definition, inv: &Inventory, facts: &Facts) -> Vec<String> {
    plan(def, inv, facts).expect_err("refused").iter().map(ToString::to_string).collect()
}

/// The inventory after applying `plan` (what the engine will do).
fn applied(inv: &Inventory, plan: &Plan) -> Inventory {
    let mut after = inv.clone();
    after.nodes.retain(|_, n| n.cluster.as_ref() != Some(&plan.cluster.name));
    after.clusters.insert(plan.cluster.name.clone(), plan.cluster.clone());
    for p in &plan.nodes {
        after.nodes.insert(p.node.name.clone(), p.node.clone());
    }
    after.reindex();
    after
}

#[test]
fn groups_become_named_nodes_with_the_lowest_free_addresses_and_derived_macs() {
    let inv = empty_lab();
    let plan = plan(&okd(), &inv, &facts()).expect("plan");
    let names: Vec<&str> = plan.nodes.iter().map(|p| p.node.name.as_str()).collect();
    assert_eq!(names, ["bootstrap-0", "master-0", "master-1", "master-2", "worker-0", "worker-1"]);
    let ips: Vec<String> = plan.nodes.iter().map(|p| p.node.ipv4.to_string()).collect();
    assert_eq!(ips, ["10.1.107.10", "10.1.107.11", "10.1.107.12", "10.1.107.13", "10.1.107.14", "10.1.107.15"]);
    let macs: BTreeSet<MacAddr> = plan.nodes.iter().map(|p| p.node.mac).collect();
    assert_eq!(macs.len(), 6, "unique");
    assert!(macs.iter().all(|m| m.0[0] == 0x02), "locally administered, unicast: {macs:?}");
    assert!(plan.changes.iter().all(|c| c.action == Action::Create), "{:?}", plan.changes);
    assert!(plan.nodes[0].lifecycle.temporary, "the bootstrap node is temporary");
}

#[test]
fn group_settings_reach_the_vm_and_defaults_follow_kind_and_role() {
    let plan = plan(&okd(), &empty_lab(), &facts()).expect("plan");
    let master = plan.nodes[1].vm.as_ref().expect("a VM");
    assert_eq!((master.cores, master.memory_mib, master.firmware), (4, 16 * 1024, hypervisor::Firmware::Uefi));
    assert_eq!(master.disks, [Disk { storage: Some("local-lvm".into()), size_gib: 120 }]);
    assert_eq!(master.nics.len(), 2);
    assert_eq!((master.nics[0].bridge.as_deref(), master.nics[0].vlan), (Some("vmbr1"), Some(107)));
    assert_eq!(master.nics[0].mac, plan.nodes[1].node.mac, "the first NIC boots with the node's MAC");
    assert_ne!(master.nics[1].mac, master.nics[0].mac);
    assert_eq!(master.placement.anti_affinity, AntiAffinity::Hard);
    assert_eq!(master.placement.group.as_ref().map(Name::as_str), Some("prod-master"));
    let worker = plan.nodes[4].vm.as_ref().expect("a VM");
    assert_eq!((worker.cores, worker.memory_mib, worker.disks[0].size_gib), (2, 8 * 1024, 100), "OKD compute minimums");
    assert_eq!(worker.placement.anti_affinity, AntiAffinity::None);
    assert_eq!(
        worker.owner,
        Owner { cluster: Some("prod".parse().expect("name")), node: "worker-0".parse().expect("name") }
    );
}

#[test]
fn a_replan_is_stable_and_scaling_keeps_every_existing_node() {
    let inv = empty_lab();
    let first = plan(&okd(), &inv, &facts()).expect("plan");
    assert_eq!(plan(&okd(), &inv, &facts()).expect("again"), first, "the same definition plans the same");
    let inv = applied(&inv, &first);
    let again = plan(&okd(), &inv, &facts()).expect("replan");
    assert_eq!(again.nodes, first.nodes);
    assert!(again.changes.iter().all(|c| c.action == Action::Keep), "{:?}", again.changes);

    let mut bigger = okd();
    bigger.node_groups[2].count = 3;
    let scaled = plan(&bigger, &inv, &facts()).expect("scale up");
    assert_eq!(&scaled.nodes[..6], &first.nodes[..], "existing nodes keep MAC and address");
    assert_eq!(scaled.nodes[6].node.name.as_str(), "worker-2");
    assert_eq!(scaled.nodes[6].node.ipv4.to_string(), "10.1.107.16");
    let actions: Vec<(&str, Action)> = scaled.changes.iter().map(|c| (c.node.as_str(), c.action)).collect();
    assert_eq!(actions.last(), Some(&("worker-2", Action::Create)));

    let mut smaller = okd();
    smaller.node_groups[2].count = 1;
    let down = plan(&smaller, &inv, &facts()).expect("scale down");
    assert!(down.changes.contains(&Change {
        node: "worker-1".parse().expect("name"),
        action: Action::Delete,
        fields: vec![]
    }));
}

#[test]
fn a_mac_another_node_holds_is_skipped_and_addresses_in_use_are_too() {
    let mut inv = empty_lab();
    let taken = derived_mac(&"prod".parse().expect("name"), &"master-0".parse().expect("name"), 0);
    let other = crate::inventory::lab::node("other", &taken.to_string(), "10.1.107.10", None, None);
    inv.nodes.insert(other.name.clone(), other);
    inv.reindex();
    let plan = plan(&okd(), &inv, &facts()).expect("plan");
    let master = &plan.nodes[1].node;
    assert_ne!(master.mac, taken);
    assert_eq!(master.mac, derived_mac(&"prod".parse().expect("name"), &master.name, 1), "the next candidate");
    assert_eq!(plan.nodes[0].node.ipv4.to_string(), "10.1.107.11", ".10 is taken");
}

#[test]
fn load_balancer_addresses_of_other_clusters_and_frontends_are_never_given_to_nodes() {
    let mut inv = empty_lab();
    let mut edge = inv.clusters.values().next().expect("the lab's cluster").clone();
    edge.name = "edge".parse().expect("name");
    edge.api_int_address = "10.1.107.10".parse().expect("ip");
    inv.clusters.insert(edge.name.clone(), edge);
    let frontend = crate::inventory::Frontend {
        name: "edge-api".parse().expect("name"),
        listen: "10.1.107.11:6443".parse().expect("addr"),
        pool: "api".parse().expect("name"),
        max_connections: 10,
    };
    inv.frontends.insert(frontend.name.clone(), frontend);
    inv.reindex();
    let plan = plan(&okd(), &inv, &facts()).expect("plan");
    assert_eq!(plan.nodes[0].node.ipv4.to_string(), "10.1.107.12", ".10 is edge's api-int, .11 a frontend's");
}

#[test]
fn listed_nodes_keep_their_mac_and_get_no_vm() {
    let mut def = okd();
    def.nodes = vec![super::super::definition::ListedNode {
        name: "metal-0".parse().expect("name"),
        role: Role::Worker,
        mac: "52:54:00:aa:00:01".parse().expect("mac"),
        ipv4: Some("10.1.107.50".parse().expect("ip")),
        profile: None,
        labels: BTreeMap::new(),
        taints: vec![],
    }];
    let plan = plan(&def, &empty_lab(), &facts()).expect("plan");
    let metal = plan.nodes.last().expect("listed");
    assert_eq!(
        (metal.node.mac.to_string().as_str(), metal.node.ipv4.to_string().as_str()),
        ("52:54:00:aa:00:01", "10.1.107.50")
    );
    assert!(metal.vm.is_none() && metal.group.is_none());
}

#[test]
fn every_bad_definition_is_refused_naming_the_field_and_value() {
    let inv = empty_lab();
    type Case = (&'static str, Box<dyn Fn(&mut Definition)>, &'static str);
    let cases: Vec<Case> = vec![
        ("count 0", Box::new(|d| d.node_groups[2].count = 0), "node_groups[2].count = 0: must be at least 1"),
        (
            "a huge count (no names are made for it)",
            Box::new(|d| d.node_groups[2].count = 4_000_000_000),
            "node_groups[2].count = 4000000000: must be at most 1000",
        ),
        (
            "a zero timeout",
            Box::new(|d| d.validation.phases.boot = Some(std::time::Duration::ZERO)),
            "validation.phases.boot = 0s: must be between 1s and 7days",
        ),
        (
            "a timeout past any date",
            Box::new(|d| d.validation.phases.create = Some(std::time::Duration::from_secs(10_000 * 365 * 86_400))),
            "validation.phases.create = 9993years 1month 26days 7h 26m 24s: must be between 1s and 7days",
        ),
        (
            "k3s bootstrap",
            Box::new(|d| d.kind = ClusterKind::K3s),
            "node_groups[0].role = bootstrap: k3s has no bootstrap node",
        ),
        (
            "no bootstrap",
            Box::new(|d| {
                d.node_groups.remove(0);
            }),
            "node_groups = 0 bootstrap nodes: OKD needs exactly one",
        ),
        ("two bootstraps", Box::new(|d| d.node_groups[0].count = 2), "node_groups = 2 bootstrap nodes"),
        (
            "no control plane",
            Box::new(|d| d.node_groups[1].role = Role::Worker),
            "node_groups = no control-plane nodes: a cluster needs at least one control-plane node",
        ),
        ("unknown network", Box::new(|d| d.network = "nope".parse().expect("name")), "network = nope: no such network"),
        (
            "unknown hypervisor",
            Box::new(|d| d.hypervisor = Some("vmware".parse().expect("name"))),
            "hypervisor = vmware: no such hypervisor in the config (configured: pve)",
        ),
        ("no hypervisor", Box::new(|d| d.hypervisor = None), "hypervisor = (none): node groups need a hypervisor"),
        (
            "duplicate group",
            Box::new(|d| d.node_groups[2].name = "master".parse().expect("name")),
            "node_groups[2].name = master: another group has this name",
        ),
        (
            "bad vlan",
            Box::new(|d| d.node_groups[1].nics[0].vlan = Some(4095)),
            "node_groups[1].nics[0].vlan = 4095: must be 1-4094",
        ),
        ("zero cores", Box::new(|d| d.node_groups[1].cores = Some(0)), "node_groups[1].cores = 0: must be at least 1"),
        (
            "tiny memory",
            Box::new(|d| d.node_groups[1].memory = Some("256MiB".parse().expect("size"))),
            "node_groups[1].memory = 256MiB: must be at least 512MiB",
        ),
        (
            "too many nodes",
            Box::new(|d| d.node_groups[2].count = 200),
            "network = cluster: its static_range 10.1.107.10-10.1.107.99 has 90 free addresses for 204 new nodes",
        ),
        (
            "cleanup a master",
            Box::new(|d| d.node_groups[1].lifecycle.cleanup_after_boot = Some(true)),
            "node_groups[1].lifecycle.cleanup_after_boot = true: only bootstrap, worker or infra nodes",
        ),
        (
            "internal API outside the network",
            Box::new(|d| d.api_int_address = "10.9.9.9".parse().expect("ip")),
            "cluster prod.api_int_address = 10.9.9.9: not inside network cluster",
        ),
    ];
    for (what, change, expected) in cases {
        let mut def = okd();
        change(&mut def);
        let found = problems(&def, &inv, &facts());
        assert!(found.iter().any(|p| p.contains(expected)), "{what}: expected {expected:?} in {found:#?}");
    }
}

#[test]
fn several_problems_are_reported_together() {
    let mut def = okd();
    def.node_groups[2].count = 0;
    def.node_groups[1].nics[0].vlan = Some(0);
    def.hypervisor = Some("vmware".parse().expect("name"));
    assert_eq!(problems(&def, &empty_lab(), &facts()).len(), 3);
}

#[test]
fn names_other_clusters_hold_are_refused() {
    let inv = Lab::okd().build(); // cluster prod holds bootstrap and master-0
    let mut def = okd();
    def.name = "dev".parse().expect("name");
    def.node_groups[0].name = "boot".parse().expect("name");
    def.nodes = vec![super::super::definition::ListedNode {
        name: "metal-0".parse().expect("name"),
        role: Role::Worker,
        mac: "52:54:00:00:00:02".parse().expect("master-0's MAC"),
        ipv4: None,
        profile: None,
        labels: BTreeMap::new(),
        taints: vec![],
    }];
    let found = problems(&def, &inv, &facts());
    assert!(found.iter().any(|p| p == "node_groups[1] = master-0: a node of cluster prod has this name"), "{found:#?}");
    def.node_groups[1].name = "cp".parse().expect("name");
    let found = problems(&def, &inv, &facts());
    assert!(
        found.iter().any(|p| p.starts_with("node metal-0.mac = 52:54:00:00:00:02: already used by node master-0")),
        "{found:#?}"
    );
}

#[test]
fn placement_is_checked_against_the_hosts_when_known() {
    let facts = Facts { hypervisors: vec!["pve".into()], hosts: Some(hosts()), vms: Vec::new() };
    let found = problems(&okd(), &empty_lab(), &facts);
    assert!(
        found
            .iter()
            .any(|p| p.contains("node_groups[1].placement.anti_affinity = hard: 3 nodes need 3 hosts, but only 2")),
        "pve3 is offline: {found:#?}"
    );
    let mut def = okd();
    def.node_groups[1].placement.anti_affinity = Some(AntiAffinity::Soft);
    def.node_groups[1].placement.target_nodes = vec!["pve9".into()];
    def.node_groups[2].memory = Some("100GiB".parse().expect("size"));
    let found = problems(&def, &empty_lab(), &facts);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("node_groups[1].placement.target_nodes[0] = pve9: the hypervisor has no such node")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("node_groups[2].memory = 100GiB: no allowed host has that much memory free")),
        "{found:#?}"
    );
    def.node_groups[1].placement.target_nodes = vec!["pve1".into(), "pve2".into()];
    def.node_groups[2].memory = None;
    assert!(plan(&def, &empty_lab(), &facts).is_ok());

    // Once the three masters exist, a host going down does not block a re-apply (or a scale of
    // another group); only new VMs need hosts.
    let mut all_up = hosts();
    all_up[2].online = true;
    let up = Facts { hypervisors: vec!["pve".into()], hosts: Some(all_up), vms: Vec::new() };
    let made = applied(&empty_lab(), &plan(&okd(), &empty_lab(), &up).expect("plan"));
    assert!(plan(&okd(), &made, &facts).is_ok(), "{:?}", plan(&okd(), &made, &facts).err());
}

#[test]
fn each_vm_is_placed_as_the_hypervisor_would_and_an_existing_one_keeps_its_host_and_vmid() {
    let mut hosts = hosts();
    hosts[2].online = true;
    let facts = |vms: Vec<Vm>| Facts { hypervisors: vec!["pve".into()], hosts: Some(hosts.clone()), vms };
    let at = |plan: &Plan, name: &str| {
        let p = plan.nodes.iter().find(|p| p.node.name.as_str() == name).expect("planned");
        p.place.as_ref().map(|at| (at.host.clone(), at.id.clone()))
    };
    let place = |host: &str, id: Option<&str>| Some((host.to_owned(), id.map(str::to_owned)));
    // Most free memory first (pve3), hard anti-affinity taking one host per master.
    let fresh = plan(&okd(), &empty_lab(), &facts(Vec::new())).expect("plan");
    assert_eq!(at(&fresh, "bootstrap-0"), place("pve3", None));
    let masters: Vec<_> = (0..3).map(|i| at(&fresh, &format!("master-{i}"))).collect();
    assert_eq!(masters, [place("pve3", None), place("pve1", None), place("pve2", None)]);
    assert_eq!(at(&fresh, "worker-1"), place("pve3", None), "no anti-affinity for workers");

    let vm = |name: &str, host: &str, id: &str| Vm {
        name: name.into(),
        cluster: Some("prod".into()),
        hypervisor: "pve".into(),
        id: id.into(),
        host: host.into(),
        state: crate::hypervisor::VmState::Running,
    };
    // master-0 runs on pve2 already: it stays there with its VMID, the next masters go around it.
    let replan = plan(&okd(), &empty_lab(), &facts(vec![vm("master-0", "pve2", "104")])).expect("plan");
    assert_eq!(at(&replan, "master-0"), place("pve2", Some("104")));
    assert_eq!(at(&replan, "master-1"), place("pve3", None));
    assert_eq!(at(&replan, "master-2"), place("pve1", None));
    // A leaving master still holds pve1: the third has no host left.
    let vms = vec![vm("master-0", "pve2", "104"), vm("master-7", "pve1", "111")];
    let found = problems(&okd(), &empty_lab(), &facts(vms));
    assert_eq!(
        found,
        [
            "node_groups[1].placement = master-2: every node with room already runs a member of group 'prod-master' (hard anti-affinity)"
        ]
    );
    // Unknown hosts: nothing is foreseen.
    assert_eq!(at(&plan(&okd(), &empty_lab(), &self::facts()).expect("plan"), "master-0"), None);
}

#[test]
fn unknown_fields_and_bad_values_are_refused_by_name() {
    let err = serde_norway::from_str::<Definition>(&OKD.replace("count: 2", "count: 2\n    colour: blue"))
        .expect_err("unknown");
    assert!(err.to_string().contains("colour"), "{err}");
    let err = serde_norway::from_str::<Definition>(&OKD.replace("memory: 16GiB", "memory: 16")).expect_err("size");
    assert!(err.to_string().contains("'16' is not a size"), "{err}");
    let err = serde_norway::from_str::<Definition>(&OKD.replace("anti_affinity: hard", "anti_affinity: always"))
        .expect_err("enum");
    assert!(err.to_string().contains("always"), "{err}");
}

#[test]
fn health_checks_are_checked_by_field() {
    let checks = r#"
validation:
  health_checks:
    - { name: api, target: "tcp://api.{zone}:6443" }
    - { name: api, target: "https://console.apps.{zone}/", status: 200, insecure: true }
    - { name: bad, target: "api.{zone}:6443" }
    - { name: odd, target: "tcp://api.{zone}:6443", status: 200 }
    - { name: code, target: "http://x.{zone}/", status: 999 }
"#;
    let def = definition(&format!("{OKD}{checks}"));
    let found = problems(&def, &empty_lab(), &facts());
    assert_eq!(
        found,
        [
            "validation.health_checks[1].name = api: another health check has this name",
            "validation.health_checks[2].target = api.{zone}:6443: use tcp://HOST:PORT, http://... or https://...",
            "validation.health_checks[3].status = tcp://api.{zone}:6443: only for http:// and https:// targets",
            "validation.health_checks[4].status = 999: an HTTP status is 100-599",
        ]
    );
    let good = checks.replace("name: api, target: \"https", "name: console, target: \"https");
    let good: String = good.lines().take(5).map(|l| format!("{l}\n")).collect();
    assert!(plan(&definition(&format!("{OKD}{good}")), &empty_lab(), &facts()).is_ok(), "{good}");
}
