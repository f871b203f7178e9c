//! slipway's Proxmox VE backend against the Proxmox API stand-in (tests/pve): create (BIOS and
//! UEFI, dual-homed, VLAN-tagged), start, shutdown, delete; idempotent create; a VMID race;
//! failed and hung tasks with their clean-up; a wrong token; certificate pinning; specs
//! Proxmox cannot take. The last test runs the whole chain: the backend creates a VM on the
//! stand-in, which backs it with a real QEMU VM that network-boots from slipway and phones home.

use std::time::Duration;

use slipway::hypervisor::proxmox::params::{self, Defaults};
use slipway::hypervisor::proxmox::{MemoryView, Proxmox, Settings, Trust, tls};
use slipway::hypervisor::{
    AntiAffinity, Disk, ErrorKind, Firmware, Hypervisor, Nic, NicModel, Owner, Placement, Step, VmSpec, VmState,
};

use crate::pve::{self, StandIn};

fn settings(pve: &StandIn, trust: Trust, secret: &str) -> Settings {
    Settings {
        name: "pve".into(),
        urls: vec![pve.url.clone()],
        token_id: pve::TOKEN_ID.into(),
        token_secret: secret.into(),
        trust,
        defaults: Defaults { storage: "local-lvm".into(), bridge: "vmbr0".into(), cpu: params::DEFAULT_CPU.into() },
        nodes: Vec::new(),
        task_timeout: Duration::from_secs(20),
        memory: MemoryView::Used,
    }
}

fn pinned(pve: &StandIn) -> Trust {
    Trust::Fingerprints(vec![tls::parse_fingerprint(&pve.fingerprint).expect("fingerprint")])
}

fn backend(pve: &StandIn) -> Proxmox {
    Proxmox::new(settings(pve, pinned(pve), pve::SECRET)).expect("backend")
}

fn spec(node: &str, firmware: Firmware) -> VmSpec {
    VmSpec {
        owner: Owner { cluster: Some("prod".parse().expect("name")), node: node.parse().expect("name") },
        cores: 2,
        cpu: None,
        memory_mib: 4096,
        disks: vec![Disk { storage: None, size_gib: 32 }],
        nics: vec![
            Nic {
                bridge: None,
                vlan: Some(107),
                mac: "52:54:00:6b:00:10".parse().expect("mac"),
                model: NicModel::Virtio,
            },
            Nic {
                bridge: Some("vmbr1".into()),
                vlan: None,
                mac: "52:54:00:6b:01:10".parse().expect("mac"),
                model: NicModel::Virtio,
            },
        ],
        firmware,
        placement: Placement::default(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn posts(pve: &StandIn) -> usize {
    pve.with(|s| s.requests.iter().filter(|r| r.starts_with("POST /nodes/") && r.ends_with("/qemu")).count())
}

#[test]
fn a_dual_homed_vlan_tagged_vm_is_created_started_shut_down_and_deleted_on_proxmox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let backend = backend(&pve);
    let rt = runtime();
    for (node, firmware) in [("master-0", Firmware::Bios), ("master-1", Firmware::Uefi)] {
        let spec = spec(node, firmware);
        let name = spec.owner.clone();
        let vm = rt.block_on(backend.create(&spec)).expect("create");
        assert_eq!(vm.state, VmState::Stopped);
        assert_eq!(vm.host, "pve1", "the node with the most free memory");
        let vmid: u32 = vm.id.parse().expect("vmid");
        let config = pve.with(|s| s.vms[&vmid].config.clone());
        assert_eq!(config["net0"], "virtio=52:54:00:6B:00:10,bridge=vmbr0,tag=107");
        assert_eq!(config["net1"], "virtio=52:54:00:6B:01:10,bridge=vmbr1");
        assert_eq!(config["boot"], "order=scsi0;net0");
        assert_eq!(config["tags"], format!("slipway;slipway.cluster.prod;slipway.node.{node}"));
        assert_eq!(config.get("bios").map(String::as_str), (firmware == Firmware::Uefi).then_some("ovmf"));
        assert_eq!(config.contains_key("efidisk0"), firmware == Firmware::Uefi);

        let before = posts(&pve);
        let again = rt.block_on(backend.create(&spec)).expect("second create");
        assert_eq!(again, vm, "asking twice finds the first VM");
        assert_eq!(posts(&pve), before, "and creates nothing");

        rt.block_on(backend.start(&name)).expect("start");
        assert_eq!(rt.block_on(backend.status(&name)).expect("status").expect("exists").state, VmState::Running);
        rt.block_on(backend.shutdown(&name, Duration::from_secs(5))).expect("shutdown");
        assert_eq!(rt.block_on(backend.status(&name)).expect("status").expect("exists").state, VmState::Stopped);
        rt.block_on(backend.start(&name)).expect("start again");
        rt.block_on(backend.delete(&name)).expect("delete stops a running VM first");
        assert_eq!(rt.block_on(backend.status(&name)).expect("status"), None);
        assert!(pve.with(|s| s.vms.is_empty()), "nothing left on Proxmox");
        rt.block_on(backend.delete(&name)).expect("deleting a deleted VM is fine");
    }
}

/// The same life — create, start, shut down, start, delete — on a stand-in that does at once
/// everything a real cluster does that a schema does not say: the resource list lagging,
/// errors only in the reason phrase, HA-managed VMs, forwarded reads failing in passing, tasks
/// slower than a poll, and the first node's certificate renewed halfway.
#[test]
fn a_vms_whole_life_holds_on_a_stand_in_with_every_realism_mode_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let (url2, fp2) = pve.open_node("pve2");
    pve.with(|s| {
        s.faults.stale_resources = true;
        s.faults.reason_only = true;
        s.faults.ha_managed = true;
        s.faults.forwarded_failures = 2;
        s.faults.task_time = Some(Duration::from_secs(1));
    });
    let mut settings = settings(&pve, Trust::CaFile(pve.ca.clone()), pve::SECRET);
    settings.urls = vec![pve.url.clone(), url2];
    let backend = Proxmox::new(settings).expect("backend");
    let rt = runtime();
    let spec = spec("master-0", Firmware::Uefi);
    let vmid: u32 = rt.block_on(backend.create(&spec)).expect("create").id.parse().expect("vmid");
    let running = || pve.with(|s| s.vms[&vmid].running);
    rt.block_on(backend.start(&spec.owner)).expect("start");
    assert!(running());
    pve.with(|s| s.faults.forwarded_failures = 2);
    assert_ne!(pve.renew(&pve.url), fp2);
    rt.block_on(backend.shutdown(&spec.owner, Duration::from_secs(5))).expect("shutdown");
    assert!(!running());
    rt.block_on(backend.start(&spec.owner)).expect("start again");
    let again = rt.block_on(backend.create(&spec)).expect("create again");
    assert_eq!(again.id, vmid.to_string(), "asking again finds the VM, although the list lags");
    rt.block_on(backend.delete(&spec.owner)).expect("delete");
    assert!(pve.with(|s| s.vms.is_empty()), "nothing left on Proxmox");
}

/// A VM acts only on its own owner's VM: the same node name in another cluster is another
/// VM (never started or deleted for this one), and two VMs carrying one owner's tags (a clone
/// copies them) are refused by name rather than acting on whichever comes first.
#[test]
fn a_vm_is_found_by_its_whole_owner_and_a_cloned_owner_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let backend = backend(&pve);
    let rt = runtime();
    let spec = spec("master-0", Firmware::Bios);
    let vm = rt.block_on(backend.create(&spec)).expect("create");
    let vmid: u32 = vm.id.parse().expect("vmid");

    let mut other = spec.owner.clone();
    other.cluster = Some("staging".parse().expect("name"));
    let err = rt.block_on(backend.start(&other)).expect_err("no such VM");
    assert!(matches!(err.kind, ErrorKind::NotFound), "{err}");
    rt.block_on(backend.delete(&other)).expect("nothing of its own to delete");
    assert!(pve.with(|s| s.vms.contains_key(&vmid)), "prod's master-0 untouched");
    assert_eq!(rt.block_on(backend.status(&other)).expect("status"), None);

    // A clone of the VM (Proxmox copies its tags) on another node.
    pve.with(|s| {
        let mut clone = s.vms[&vmid].clone();
        clone.node = "pve2".into();
        s.vms.insert(vmid + 50, clone);
    });
    let err = rt.block_on(backend.start(&spec.owner)).expect_err("two VMs claim master-0");
    let text = err.to_string();
    assert!(text.contains(&format!("VMs {vmid} on pve1 and {} on pve2", vmid + 50)), "{text}");
    assert!(pve.with(|s| s.vms.values().all(|v| !v.running)), "neither was started");
}

/// The hosts a plan checks placement against: every node with its free memory; with `nodes`
/// set, the others take only VMs whose group targets them.
#[test]
fn hosts_are_the_proxmox_nodes_with_their_free_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let rt = runtime();
    let hosts = rt.block_on(backend(&pve).hosts()).expect("hosts");
    let names: Vec<(&str, bool, bool)> = hosts.iter().map(|h| (h.name.as_str(), h.online, h.default_target)).collect();
    assert_eq!(names, [("pve1", true, true), ("pve2", true, true)]);
    let maxmem = pve.with(|s| s.nodes[0].maxmem);
    assert_eq!(hosts[0].mem_free_mib, maxmem / (1024 * 1024), "nothing runs yet");
    let mut settings = settings(&pve, pinned(&pve), pve::SECRET);
    settings.nodes = vec!["pve2".into()];
    let hosts = rt.block_on(Proxmox::new(settings).expect("backend").hosts()).expect("hosts");
    assert_eq!(hosts.iter().map(|h| h.default_target).collect::<Vec<_>>(), [false, true]);
}

/// `/cluster/resources` lags as pvestatd fills it (a new VM is `unknown`, a started one still
/// `stopped` for up to 10 s): start, shutdown and delete act on the VM's own state
/// (`status/current`) instead. A paused VM is resumed, not started; one halted on an I/O error
/// is named on start, and stopped before it is deleted.
#[test]
fn the_state_acted_on_is_the_vms_own_not_the_lagging_resource_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    pve.with(|s| s.faults.stale_resources = true);
    let backend = backend(&pve);
    let rt = runtime();
    let spec = spec("master-0", Firmware::Bios);
    let vm = rt.block_on(backend.create(&spec)).expect("create");
    let vmid: u32 = vm.id.parse().expect("vmid");
    let running = || pve.with(|s| s.vms[&vmid].running);

    rt.block_on(backend.start(&spec.owner)).expect("start");
    assert!(running());
    rt.block_on(backend.shutdown(&spec.owner, Duration::from_secs(5))).expect("shutdown");
    assert!(!running(), "shut down although the resource list did not show it running yet");
    rt.block_on(backend.start(&spec.owner)).expect("start again");
    assert!(running(), "started although the resource list showed it running a moment ago");

    pve.with(|s| s.vms.get_mut(&vmid).expect("vm").qmp = Some("paused".into()));
    rt.block_on(backend.start(&spec.owner)).expect("a paused VM is resumed");
    assert_eq!(pve.with(|s| s.vms[&vmid].qmp.clone()), None);
    assert!(pve.with(|s| s.requests.iter().any(|r| r.ends_with("/status/resume"))));

    pve.with(|s| s.vms.get_mut(&vmid).expect("vm").qmp = Some("io-error".into()));
    let err = rt.block_on(backend.start(&spec.owner)).expect_err("halted");
    assert!(err.to_string().contains(&format!("VM {vmid} on pve1 halted (io-error)")), "{err}");
    rt.block_on(backend.delete(&spec.owner)).expect("a halted VM is stopped, then deleted");
    assert!(pve.with(|s| s.vms.is_empty()));
}

/// An HA-managed VM is started, shut down and stopped by the HA manager: the `hastart`/`hastop`
/// task ends before the VM changes state, so each call waits for the state itself, and a delete
/// does not find the VM it stopped still running.
#[test]
fn an_ha_managed_vm_is_waited_for_not_its_ha_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    pve.with(|s| s.faults.ha_managed = true);
    let backend = backend(&pve);
    let rt = runtime();
    let spec = spec("master-0", Firmware::Bios);
    let vmid: u32 = rt.block_on(backend.create(&spec)).expect("create").id.parse().expect("vmid");
    let running = || pve.with(|s| s.vms[&vmid].running);

    rt.block_on(backend.start(&spec.owner)).expect("start");
    assert!(running(), "running when start returns, not only when hastart ended");
    rt.block_on(backend.shutdown(&spec.owner, Duration::from_secs(5))).expect("shutdown");
    assert!(!running(), "stopped when shutdown returns");
    rt.block_on(backend.start(&spec.owner)).expect("start again");
    rt.block_on(backend.delete(&spec.owner)).expect("delete waits for the HA stop before the destroy");
    assert!(pve.with(|s| s.vms.is_empty()), "nothing left on Proxmox");
}

/// Reads that fail in passing — a request pveproxy forwards to a node it cannot reach (`595`,
/// its reason only in the status line) — are tried again, a task wait outlives polls that fail
/// so, and a connection idle past pveproxy's 5 s keep-alive is not reused. One that keeps
/// failing is named with what 595 means.
#[test]
fn reads_that_fail_in_passing_are_tried_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let backend = backend(&pve);
    let rt = runtime();
    pve.with(|s| s.faults.forwarded_failures = 2);
    assert!(rt.block_on(backend.list()).expect("list after two 595s").is_empty());

    pve.with(|s| s.faults.forwarded_failures = 100);
    let err = rt.block_on(backend.list()).expect_err("always 595");
    assert!(matches!(err.kind, ErrorKind::Api { status: 595, .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("Errors during connection establishment") && text.contains("could not reach the node"),
        "{text}"
    );
    pve.with(|s| s.faults.forwarded_failures = 0);

    // Polls of a create task fail six times in a row; the create still completes.
    pve.with(|s| s.faults.slow_tasks.insert("qmcreate".into(), Duration::from_secs(2)));
    // Its own client: a connection belongs to the runtime that opened it.
    let creator = self::backend(&pve);
    let creating = std::thread::spawn(move || runtime().block_on(creator.create(&spec("master-0", Firmware::Bios))));
    crate::support::eventually("the create posted", Duration::from_secs(20), || posts(&pve) == 1);
    pve.with(|s| s.faults.forwarded_failures = 6);
    let vm = creating.join().expect("thread").expect("created despite the failed polls");
    assert_eq!(pve.with(|s| (s.faults.forwarded_failures, s.vms.len())), (0, 1), "every failure met, one VM");

    // Idle past pveproxy's keep-alive: a fresh connection.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(rt.block_on(backend.list()).expect("list after an idle pause").len(), 1, "{vm:?}");
}

/// Placement looks at every node's storages, bridges and vCPUs before it picks one: a node
/// without the VM's storage or bridge is passed over (not chosen and then refused), and the
/// memory of VMs made but not started yet is counted as promised, so a batch of creates spreads.
#[test]
fn placement_passes_over_nodes_without_the_storage_or_bridge_and_counts_stopped_vms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    pve.with(|s| {
        s.nodes[1].storages.push("fast".into());
        s.nodes[1].bridges.push("vmbr7".into());
    });
    let backend = backend(&pve);
    let rt = runtime();
    let mut on_fast = spec("db-0", Firmware::Bios);
    on_fast.memory_mib = 1024;
    on_fast.disks[0].storage = Some("fast".into());
    assert_eq!(rt.block_on(backend.create(&on_fast)).expect("create").host, "pve2", "only pve2 has 'fast'");
    let mut on_vmbr7 = spec("edge-0", Firmware::Bios);
    on_vmbr7.memory_mib = 1024;
    on_vmbr7.nics[1].bridge = Some("vmbr7".into());
    assert_eq!(rt.block_on(backend.create(&on_vmbr7)).expect("create").host, "pve2", "only pve2 has vmbr7");
    let mut wide = spec("wide-0", Firmware::Bios);
    wide.cores = 12;
    let err = rt.block_on(backend.create(&wide)).expect_err("no node has 12 vCPUs");
    assert!(err.to_string().contains("node pve1: 12 vCPUs asked, the node has 8"), "{err}");

    // 6 GiB VMs, made and not started: pve1 (16 GiB) takes two, then pve2 (8 GiB, 2 promised).
    let hosts: Vec<String> = (0..3)
        .map(|i| {
            let mut s = spec(&format!("big-{i}"), Firmware::Bios);
            s.memory_mib = 6 * 1024;
            rt.block_on(backend.create(&s)).expect("create").host
        })
        .collect();
    assert_eq!(hosts, ["pve1", "pve1", "pve2"]);
}

/// A ZFS host's ARC is memory the kernel does not count available, so Proxmox shows it used:
/// by default placement goes by that figure; `placement_memory = "assigned"` counts the memory
/// the node's VMs are given instead, including a running VM slipway did not make and its own
/// made-but-stopped ones.
#[test]
fn a_zfs_hosts_arc_is_not_taken_for_vms_when_memory_is_counted_as_assigned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    pve.with(|s| s.nodes[0].arc = 12 * 1024 * 1024 * 1024);
    let rt = runtime();
    let sized = |name: &str, gib: u32| VmSpec { memory_mib: gib * 1024, ..spec(name, Firmware::Bios) };
    let used = backend(&pve);
    let vm = rt.block_on(used.create(&sized("used-0", 6))).expect("create");
    assert_eq!(vm.host, "pve2", "pve1's 16 GiB less a 12 GiB ARC look like 4 GiB free");
    rt.block_on(used.delete(&sized("used-0", 6).owner)).expect("delete");

    let mut settings = settings(&pve, pinned(&pve), pve::SECRET);
    settings.memory = MemoryView::Assigned;
    let assigned = Proxmox::new(settings).expect("backend");
    let hosts = rt.block_on(assigned.hosts()).expect("hosts");
    assert_eq!(
        hosts.iter().map(|h| (h.name.as_str(), h.mem_free_mib)).collect::<Vec<_>>(),
        [("pve1", 16384), ("pve2", 8192)]
    );
    let first = sized("assigned-0", 6);
    assert_eq!(rt.block_on(assigned.create(&first)).expect("create").host, "pve1");
    rt.block_on(assigned.start(&first.owner)).expect("start");
    let second = sized("assigned-1", 6);
    assert_eq!(rt.block_on(assigned.create(&second)).expect("create").host, "pve1", "10 GiB not assigned there");
    let third = sized("assigned-2", 6);
    assert_eq!(rt.block_on(assigned.create(&third)).expect("create").host, "pve2", "pve1's 4 GiB left are too few");
    let err = rt.block_on(assigned.create(&sized("assigned-3", 6))).expect_err("the stopped VMs' memory is promised");
    assert!(matches!(err.kind, ErrorKind::NoHost(_)), "{err}");
}

/// Several nodes' URLs: one that does not answer hands the request to the next, which is then
/// asked first. Several pins: the certificate of either node, or the old and the renewed one.
#[test]
fn a_node_that_does_not_answer_hands_over_to_the_next_and_any_pinned_certificate_is_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let down = format!("https://127.0.0.1:{}", dead.local_addr().expect("addr").port());
    drop(dead);
    let good = tls::parse_fingerprint(&pve.fingerprint).expect("fingerprint");
    let mut settings = settings(&pve, Trust::Fingerprints(vec![[0x42; 32], good]), pve::SECRET);
    settings.urls = vec![down.clone(), pve.url.clone()];
    let backend = Proxmox::new(settings).expect("backend");
    let rt = runtime();
    let vm = rt.block_on(backend.create(&spec("master-0", Firmware::Bios))).expect("create through the second node");
    assert_eq!(vm.host, "pve1");
    let before = pve.with(|s| s.requests.len());
    assert_eq!(rt.block_on(backend.list()).expect("list").len(), 1);
    assert_eq!(pve.with(|s| s.requests.len()), before + 1, "the node that answered is asked first now");

    // Every node down: the error names the one asked last.
    let mut settings = self::settings(&pve, pinned(&pve), pve::SECRET);
    settings.urls = vec![down.clone()];
    let err = rt.block_on(Proxmox::new(settings).expect("backend").list()).expect_err("nobody answers");
    assert!(matches!(err.kind, ErrorKind::Unreachable { .. }) && err.to_string().contains(&down), "{err}");
}

/// Missing privileges look like "nothing" on Proxmox (`/cluster/resources` silently leaves out
/// what the token may not audit): each such case names the privilege and the path that would
/// show it, as does a create refused for its tags under a restricted `user-tag-access`.
#[test]
fn missing_privileges_are_named_not_shown_as_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let backend = backend(&pve);
    let rt = runtime();
    let case = |fault: &dyn Fn(&mut pve::Faults)| {
        pve.with(|s| {
            s.faults = pve::Faults::default();
            fault(&mut s.faults);
        });
        rt.block_on(backend.create(&spec("master-0", Firmware::Bios))).expect_err("refused").to_string()
    };
    let nodes = case(&|f| f.hidden = vec!["node".into()]);
    assert!(nodes.contains("Sys.Audit on /nodes"), "{nodes}");
    let storage = case(&|f| f.hidden = vec!["storage".into()]);
    assert!(storage.contains("Datastore.Audit on /storage/local-lvm"), "{storage}");
    let network = case(&|f| f.network_forbidden = true);
    assert!(network.contains("Sys.Audit on /nodes/pve1"), "{network}");
    let tags = case(&|f| f.tags_need_sys_modify = true);
    assert!(tags.contains("user-tag-access") && tags.contains("Sys.Modify on /"), "{tags}");
    assert!(pve.with(|s| s.vms.is_empty()), "nothing made");
    let hosts = rt.block_on(backend.hosts()).map(|h| h.len());
    pve.with(|s| s.faults.hidden = vec!["node".into()]);
    assert_eq!(hosts.ok(), Some(2));
    let err = rt.block_on(backend.hosts()).expect_err("no node visible");
    assert!(err.to_string().contains("Sys.Audit on /nodes"), "{err}");
}

/// The stand-in's answers are checked against what Proxmox's schema says each endpoint returns
/// (every test runs through that check); the check itself refuses what Proxmox would not send.
#[test]
fn the_stand_ins_answers_are_held_to_proxmoxs_return_schemas() {
    let schema = pve::schema::Schema::load();
    let task = "GET /nodes/{node}/tasks/{upid}/status";
    let good = serde_json::json!({ "status": "stopped", "exitstatus": "OK", "id": "100", "node": "pve1",
        "pid": 4001, "pstart": 9001, "starttime": 1700000001, "type": "qmcreate", "upid": "UPID:pve1:…", "user": "root@pam" });
    assert_eq!(schema.check_returns(task, &good), Ok(()));
    let mut bad = good.clone();
    bad["status"] = "done".into();
    assert!(schema.check_returns(task, &bad).expect_err("enum").contains("data.status: 'done' is not one of"));
    let mut bad = good.clone();
    bad.as_object_mut().expect("object").remove("upid");
    assert_eq!(schema.check_returns(task, &bad), Err("data.upid: missing, and it is not optional".into()));
    let nodes = serde_json::json!([{ "id": "node/pve1", "type": "nodes", "node": "pve1" }]);
    assert!(schema.check_returns("GET /cluster/resources", &nodes).expect_err("type enum").contains("data[0].type"));
}

#[test]
fn another_client_taking_the_vmid_makes_create_ask_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    pve.with(|s| s.faults.steal_ids = 2);
    let rt = runtime();
    let vm = rt.block_on(backend(&pve).create(&spec("worker-0", Firmware::Bios))).expect("create");
    assert_eq!(vm.id, "102", "100 and 101 went to another client");
    assert_eq!(posts(&pve), 3, "two refused creates, then one that worked");
    let listed = rt.block_on(backend(&pve).list()).expect("list");
    assert_eq!(listed.len(), 1, "the other client's VMs are not slipway's: {listed:?}");
}

#[test]
fn two_slipways_creating_at_once_get_different_vmids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let (a, b) = (backend(&pve), backend(&pve));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (sa, sb) = (spec("worker-0", Firmware::Bios), spec("worker-1", Firmware::Bios));
    let (va, vb) = rt.block_on(async { tokio::join!(a.create(&sa), b.create(&sb)) });
    let (va, vb) = (va.expect("first create"), vb.expect("second create"));
    assert_ne!(va.id, vb.id);
    assert_eq!(pve.with(|s| s.vms.len()), 2, "one VM each, no duplicate");
}

#[test]
fn a_failed_create_task_is_reported_and_its_vm_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    pve.with(|s| s.faults.fail_create = Some("lvcreate 'pve/vm-100-disk-0' error: out of space".into()));
    let rt = runtime();
    let err = rt.block_on(backend(&pve).create(&spec("master-0", Firmware::Bios))).expect_err("the task fails");
    assert_eq!((err.vm.as_str(), err.step), ("master-0", Step::Create));
    assert!(matches!(&err.kind, ErrorKind::TaskFailed { message, .. } if message.contains("out of space")), "{err}");
    // Proxmox removed the config itself: the clean-up finds nothing and says nothing is left.
    assert!(pve.with(|s| s.vms.is_empty()), "the failed VM is gone");
    assert!(pve.with(|s| s.requests.iter().any(|r| r.starts_with("DELETE /nodes/pve1/qemu/"))), "clean-up asked");
    assert!(!err.to_string().contains("failed too"), "no leftover claimed: {err}");

    // When the failed create does leave its VM behind, slipway deletes it.
    pve.with(|s| {
        s.faults.fail_create = Some("lvcreate 'pve/vm-101-disk-0' error: out of space".into());
        s.faults.fail_create_keeps_config = true;
    });
    let err = rt.block_on(backend(&pve).create(&spec("master-0", Firmware::Bios))).expect_err("the task fails");
    assert!(!err.to_string().contains("failed too"), "{err}");
    assert!(pve.with(|s| s.vms.is_empty()), "the VM left behind was deleted");
}

/// PVE 8.0-8.3 put an error's text only in the HTTP reason phrase (and every version sends a
/// refused token as a bare 401): slipway still names the reason, and still recognises another
/// client taking the VMID, so it asks for the next one.
#[test]
fn errors_only_in_the_reason_phrase_are_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    pve.with(|s| {
        s.faults.reason_only = true;
        s.faults.steal_ids = 1;
    });
    let rt = runtime();
    let vm = rt.block_on(backend(&pve).create(&spec("worker-0", Firmware::Bios))).expect("create");
    assert_eq!(vm.id, "101", "100 went to another client, told only by the reason phrase");

    let wrong = Proxmox::new(settings(&pve, pinned(&pve), "not-the-secret")).expect("backend");
    let err = rt.block_on(wrong.list()).expect_err("refused");
    assert!(matches!(err.kind, ErrorKind::Auth { .. }) && err.to_string().contains("invalid token value"), "{err}");

    let none: [(&str, &str); 0] = [];
    let api = slipway::hypervisor::proxmox::api::Api::new(
        std::slice::from_ref(&pve.url),
        pve::TOKEN_ID,
        pve::SECRET,
        &pinned(&pve),
    )
    .expect("api");
    use proxmox_api::client::Client as _;
    let gone = rt.block_on(api.delete::<_, String>("/nodes/pve1/qemu/999", &none)).expect_err("no such VM");
    assert_eq!(gone.to_string(), "HTTP 500: Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist");
}

/// A node with an offline storage (an unreachable NFS export): deleting a VM does not touch
/// the node's other storages, so it still works.
#[test]
fn a_delete_does_not_depend_on_the_nodes_other_storages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    pve.with(|s| s.faults.offline_storages = vec![("pve1".into(), "nfs-backup".into())]);
    let rt = runtime();
    let spec = spec("master-0", Firmware::Bios);
    let vm = rt.block_on(backend(&pve).create(&spec)).expect("create");
    assert_eq!(vm.host, "pve1");
    rt.block_on(backend(&pve).delete(&spec.owner)).expect("delete with nfs-backup offline");
    assert!(pve.with(|s| s.vms.is_empty()));
}

#[test]
fn a_task_that_never_finishes_times_out_and_the_vm_left_behind_is_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    pve.with(|s| s.faults.hang_tasks = true);
    let mut settings = settings(&pve, pinned(&pve), pve::SECRET);
    settings.task_timeout = Duration::from_secs(2);
    let backend = Proxmox::new(settings).expect("backend");
    let rt = runtime();
    let err = rt.block_on(backend.create(&spec("master-0", Firmware::Bios))).expect_err("times out");
    let text = err.to_string();
    assert!(text.starts_with("VM master-0: create: "), "{text}");
    assert!(text.contains("did not finish within 2s") && text.contains("slipway get vms"), "{text}");
    let listed = rt.block_on(backend.list()).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, VmState::Creating, "still locked by its create task");
    let again = rt.block_on(backend.create(&spec("master-0", Firmware::Bios))).expect_err("not a finished VM");
    assert!(again.to_string().contains("still locked by its create task"), "{again}");
}

#[test]
fn a_wrong_token_is_an_authentication_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let backend = Proxmox::new(settings(&pve, pinned(&pve), "not-the-secret")).expect("backend");
    let err = runtime().block_on(backend.list()).expect_err("refused");
    assert!(matches!(err.kind, ErrorKind::Auth { .. }), "{err}");
    assert!(err.to_string().contains("invalid token value"), "{err}");
    assert!(!err.to_string().contains("not-the-secret"), "the secret is not in errors: {err}");
}

#[test]
fn only_the_pinned_certificate_or_the_configured_ca_is_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let rt = runtime();
    let wrong = Trust::Fingerprints(vec![[0x42; 32]]);
    let err = rt.block_on(Proxmox::new(settings(&pve, wrong, pve::SECRET)).expect("backend").list()).expect_err("pin");
    assert!(matches!(err.kind, ErrorKind::Tls(_)), "{err}");
    assert!(err.to_string().contains("fingerprint mismatch"), "{err}");

    let by_ca = Proxmox::new(settings(&pve, Trust::CaFile(pve.ca.clone()), pve::SECRET)).expect("backend");
    assert!(rt.block_on(by_ca.list()).expect("the cluster CA is trusted").is_empty());

    let other = tempfile::tempdir().expect("tempdir");
    let stranger = StandIn::start(other.path());
    let by_other_ca = Proxmox::new(settings(&pve, Trust::CaFile(stranger.ca.clone()), pve::SECRET)).expect("backend");
    let err = rt.block_on(by_other_ca.list()).expect_err("another CA");
    assert!(matches!(err.kind, ErrorKind::Tls(_)), "{err}");
}

/// Every node has its own certificate, and a renewal (`pveupdate` regenerating `pve-ssl.pem`,
/// or ACME) replaces it and restarts pveproxy, closing open connections. With the cluster CA, a
/// create whose task wait spans the renewal goes on; with pins, the node whose new certificate
/// is not pinned hands over to the next; with no node left, the error names the certificate
/// presented, the one to pin.
#[test]
fn a_certificate_renewed_mid_task_stays_trusted_by_the_ca_and_a_stale_pin_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let (url2, fp2) = pve.open_node("pve2");
    assert_ne!(fp2, pve.fingerprint, "every node has its own certificate");
    let urls = vec![pve.url.clone(), url2.clone()];
    let pins = |fps: &[&str]| Trust::Fingerprints(fps.iter().map(|f| tls::parse_fingerprint(f).expect("fp")).collect());
    let mut pinned = settings(&pve, pins(&[&pve.fingerprint, &fp2]), pve::SECRET);
    pinned.urls = urls.clone();
    let pinned = Proxmox::new(pinned).expect("backend");
    let rt = runtime();
    assert!(rt.block_on(pinned.list()).expect("list before the renewal").is_empty());

    pve.with(|s| s.faults.slow_tasks.insert("qmcreate".into(), Duration::from_secs(3)));
    let mut by_ca = settings(&pve, Trust::CaFile(pve.ca.clone()), pve::SECRET);
    by_ca.urls = urls;
    let creating = std::thread::spawn(move || {
        let backend = Proxmox::new(by_ca).expect("backend");
        runtime().block_on(backend.create(&spec("master-0", Firmware::Bios)))
    });
    let created = || pve.with(|s| s.requests.iter().position(|r| r == "POST /nodes/pve1/qemu"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while created().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(created().is_some(), "the create was posted");
    let renewed = pve.renew(&pve.url);
    let at_renewal = pve.with(|s| s.requests.len());
    let vm = creating.join().expect("create thread").expect("the create outlives the renewal");
    assert_eq!(vm.state, VmState::Stopped);
    assert!(
        pve.with(|s| s.requests[at_renewal..].iter().any(|r| r.contains("/tasks/"))),
        "its task was still being waited for after the renewal"
    );

    assert_eq!(rt.block_on(pinned.list()).expect("pve2 answers").len(), 1, "pve1's new certificate is not pinned");
    let mut stale = settings(&pve, pins(&[&pve.fingerprint]), pve::SECRET);
    stale.urls = vec![pve.url.clone()];
    let err = rt.block_on(Proxmox::new(stale).expect("backend").list()).expect_err("stale pin");
    assert!(matches!(err.kind, ErrorKind::Tls(_)), "{err}");
    assert!(err.to_string().contains(&format!("presented {renewed}")), "the fingerprint to pin: {err}");
}

#[test]
fn specs_proxmox_cannot_take_are_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let backend = backend(&pve);
    let rt = runtime();
    let mut cases = Vec::new();
    let mut s = spec("master-0", Firmware::Bios);
    s.disks[0].storage = Some("nosuch".into());
    cases.push((s, "storage 'nosuch'"));
    let mut s = spec("master-0", Firmware::Bios);
    s.nics[1].bridge = Some("vmbr9".into());
    cases.push((s, "node pve1: bridge 'vmbr9' does not exist (has: vmbr0, vmbr1)"));
    let mut s = spec("master-0", Firmware::Bios);
    s.memory_mib = 64 * 1024;
    cases.push((s, "no node has 65536 MiB of memory free"));
    let mut s = spec("master-0", Firmware::Bios);
    s.placement = Placement { targets: vec!["pve7".into()], ..Placement::default() };
    cases.push((s, "target node 'pve7'"));
    for (s, want) in cases {
        let err = rt.block_on(backend.create(&s)).expect_err(want);
        assert_eq!(err.step, Step::Place, "{err}");
        assert!(err.to_string().contains(want), "{err} should say {want}");
    }
    assert_eq!(posts(&pve), 0, "nothing reached Proxmox's create");

    // Hard anti-affinity: two control-plane VMs on two nodes, the third has nowhere to go.
    for (i, want) in [(0, Ok("pve1")), (1, Ok("pve2")), (2, Err("hard anti-affinity"))] {
        let mut s = spec(&format!("cp-{i}"), Firmware::Bios);
        s.memory_mib = 1024;
        s.placement = Placement {
            group: Some("prod-cp".parse().expect("name")),
            anti_affinity: AntiAffinity::Hard,
            ..Placement::default()
        };
        match (rt.block_on(backend.create(&s)), want) {
            (Ok(vm), Ok(host)) => assert_eq!(vm.host, host),
            (Err(e), Err(text)) => assert!(e.to_string().contains(text), "{e}"),
            (got, want) => panic!("cp-{i}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn an_unreachable_api_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let mut settings = settings(&pve, pinned(&pve), pve::SECRET);
    settings.urls = vec![format!("https://127.0.0.1:{port}")];
    let err = runtime().block_on(Proxmox::new(settings).expect("backend").list()).expect_err("refused");
    assert!(matches!(err.kind, ErrorKind::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn a_vm_created_through_proxmox_boots_from_slipway_and_phones_home() {
    use crate::boot::{self, Lab, NODE};
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::bridge_only("x");
    let daemon = boot::serve(&lab, dir.path(), false);
    let pve = StandIn::start(dir.path());
    let qemu = std::sync::Arc::new(crate::hypervisor::qemu_backend(&lab, dir.path()));
    pve.with(|s| {
        s.backing = Some(pve::Backing { qemu: qemu.clone(), bridges: [("vmbr0".to_owned(), "br0".to_owned())].into() });
    });
    let backend = backend(&pve);
    let mut spec = crate::hypervisor::spec(Firmware::Bios);
    spec.owner.cluster = Some("prod".parse().expect("name"));
    spec.nics[0].bridge = Some("vmbr0".into());
    let node = spec.owner.clone();
    let rt = runtime();

    // A VM with the CPU model Proxmox takes when none is sent (kvm64, x86-64-v1): the guest,
    // built for x86-64-v2 like CentOS Stream CoreOS, dies before it asks for an address.
    let mut old = spec.clone();
    old.cpu = Some("kvm64".into());
    rt.block_on(backend.create(&old)).expect("create");
    rt.block_on(backend.start(&old.owner)).expect("start");
    let serial = qemu.serial_log(&old.owner.node);
    crate::support::eventually("the kvm64 guest giving up", crate::boot::BOOT_LIMIT, || {
        std::fs::read_to_string(&serial).is_ok_and(|s| s.contains("Fatal glibc error: CPU does not support x86-64-v2"))
    });
    rt.block_on(backend.delete(&old.owner)).expect("delete");

    // slipway's default model (x86-64-v2-AES) boots it.
    let vm = rt.block_on(backend.create(&spec)).expect("create on Proxmox");
    let vmid: u32 = vm.id.parse().expect("vmid");
    assert_eq!(pve.with(|s| s.vms[&vmid].config.get("cpu").cloned()), Some("x86-64-v2-AES".into()));
    rt.block_on(backend.start(&node)).expect("start on Proxmox");
    let phoned = crate::hypervisor::await_phone_home(&daemon, &lab, &qemu.serial_log(&node.node));
    assert_eq!(phoned["details"]["ip"], NODE.2, "the VM phoned home from its reserved address");
    let local = rt.block_on(qemu.status(&node)).expect("status").expect("the stand-in's QEMU VM");
    assert_eq!(local.cluster.as_deref(), Some("prod"), "the stand-in built it from the Proxmox parameters");

    rt.block_on(backend.delete(&node)).expect("delete on Proxmox");
    assert!(pve.with(|s| s.vms.is_empty()), "gone from Proxmox");
    assert_eq!(rt.block_on(qemu.status(&node)).expect("status"), None, "and its QEMU VM with it");
    assert!(crate::hypervisor::taps(&lab).is_empty());
    eprintln!("VM {} on {} booted and phoned home: {phoned}", vm.id, vm.host);
    daemon.stop(Duration::from_secs(10));
}

fn hypervisor_config(pve: &StandIn, dir: &std::path::Path, name: &str, url: &str) -> String {
    format!(
        "\n[[hypervisors]]\nname = \"{name}\"\nkind = \"proxmox\"\nurl = \"{url}\"\ntoken_id = \"{}\"\ntoken_file = \"{}\"\nfingerprint = \"{}\"\n",
        pve::TOKEN_ID,
        dir.join("pve-token").display(),
        pve.fingerprint
    )
}

#[test]
fn slipway_get_vms_lists_owned_vms_and_names_a_hypervisor_it_cannot_reach() {
    use crate::support;
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    std::fs::write(dir.path().join("pve-token"), format!("{}\n", pve::SECRET)).expect("token file");
    runtime().block_on(backend(&pve).create(&spec("master-0", Firmware::Uefi))).expect("create");
    pve.with(|s| s.faults.steal_ids = 1); // a VM that is not slipway's
    runtime().block_on(backend(&pve).create(&spec("worker-0", Firmware::Bios))).expect("create");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("https://127.0.0.1:{}", closed.local_addr().expect("addr").port());
    drop(closed);
    let extra =
        hypervisor_config(&pve, dir.path(), "pve", &pve.url) + &hypervisor_config(&pve, dir.path(), "old-pve", &dead);
    let daemon = support::start(&support::config(dir.path(), &extra), &[]);

    let (ok, stdout, stderr) = support::cli(&daemon, &["get", "vms"]);
    assert!(!ok, "one hypervisor is unreachable, so the command fails");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("STATE"), "{stdout}");
    let cells = |line: &str| line.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(cells(lines[1]), ["master-0", "prod", "pve", "100", "pve1", "stopped"], "{stdout}");
    assert_eq!(
        cells(lines[2]),
        ["worker-0", "prod", "pve", "102", "pve1", "stopped"],
        "the other client's 101 is not listed"
    );
    assert!(stderr.contains("old-pve: VM *: list: cannot reach"), "{stderr}");

    let (_, json, _) = support::cli(&daemon, &["get", "vms", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(list["vms"][0]["state"], "stopped");
    assert_eq!(list["errors"].as_array().map(Vec::len), Some(1));
    daemon.stop(Duration::from_secs(10));
}

#[test]
fn hypervisor_config_errors_name_the_field_and_the_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = r#"
[[hypervisors]]
name = "pve"
kind = "proxmox"
url = "http://pve1:8006"
token_id = "slipway@pve"
fingerprint = "AB:CD"
netns = "lab"

[[hypervisors]]
name = "local"
kind = "qemu"
storage = "local-lvm"
placement_memory = "assigned"
"#;
    let config = crate::support::config(dir.path(), extra);
    let out = std::process::Command::new(crate::support::BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("slipway check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for want in [
        "hypervisors[0].url = http://pve1:8006: must be an https:// URL",
        "hypervisors[0].token_id = slipway@pve: must be USER@REALM!TOKENID",
        "hypervisors[0].token_file: required (or token_credential)",
        "hypervisors[0].fingerprint: 'AB:CD' is not a SHA-256 fingerprint",
        "hypervisors[0].netns: applies to kind = \"qemu\" only",
        "hypervisors[1].storage: applies to kind = \"proxmox\" only",
        "hypervisors[1].bridge: required",
        "hypervisors[1].placement_memory: applies to kind = \"proxmox\" only",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
}

#[test]
fn the_stand_in_refuses_what_proxmox_refuses() {
    use proxmox_api::client::Client as _;
    use slipway::hypervisor::proxmox::api::{Api, ApiError};
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let api = Api::new(std::slice::from_ref(&pve.url), pve::TOKEN_ID, pve::SECRET, &pinned(&pve)).expect("api");
    let rt = runtime();
    let spec = spec("master-0", Firmware::Bios);
    let vm = rt.block_on(backend(&pve).create(&spec)).expect("create");
    rt.block_on(backend(&pve).start(&spec.owner)).expect("start");
    let message = |r: Result<String, ApiError>| match r {
        Err(ApiError::Status { status, message }) => format!("{status} {message}"),
        other => panic!("expected a refusal, got {other:?}"),
    };

    let none: [(&str, &str); 0] = [];
    let running = rt.block_on(api.delete(&format!("/nodes/pve1/qemu/{}", vm.id), &none));
    assert_eq!(message(running), format!("500 VM {} is running - destroy failed", vm.id));

    let taken = [("vmid", vm.id.as_str()), ("memory", "1024")];
    let exists = rt.block_on(api.post("/nodes/pve1/qemu", &taken));
    assert!(message(exists).contains("already exists on node 'pve1'"));

    let small = [("vmid", "150"), ("memory", "8"), ("net0", "virtio=52:54:00:00:00:01,bridge=vmbr0,tag=9999")];
    let text = message(rt.block_on(api.post("/nodes/pve1/qemu", &small)));
    assert!(text.starts_with("400 Parameter verification failed."), "{text}");
    assert!(text.contains("memory: invalid format - current: value must have a minimum value of 16"), "{text}");
    assert!(text.contains("net0: invalid format - tag: value may have a maximum value of 4094"), "{text}");
}
