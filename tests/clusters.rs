//! Defined clusters end to end: a definition applied through the admin API becomes VMs made by
//! slipway's own QEMU backend, which network-boot from slipway and phone home; the engine moves
//! every node through its phases. The daemon is killed with SIGKILL while the VMs are being
//! made and started again: it resumes from the stored phases, and the backend holds exactly
//! the planned VMs. Scaling down and deleting leave no VM or reservation behind, a kill while a
//! node drains included. On the Proxmox stand-in (VMs backed by QEMU), hard anti-affinity
//! spreads three VMs over three nodes, with a kill while a create task runs. Needs root
//! (namespaces, taps) and QEMU.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::boot::{self, BOOT_LIMIT, Lab, SERVER};
use crate::support::{self, Config, TOKEN};

/// A k3s cluster of two control-plane VMs that boot the boot kit's `tiny` profile.
const DEFINITION: &str = r#"
name: lab
kind: k3s
base_domain: lab.example
network: lab
api_address: 10.1.107.1
api_int_address: 10.1.107.1
ingress_address: 10.1.107.1
hypervisor: local
node_groups:
  - name: server
    role: control-plane
    count: 2
    cores: 1
    memory: 512MiB
    disks: [{ size: 1GiB }]
    profile: tiny
validation:
  phases:
    shutdown: 5s
"#;

/// DHCP and HTTP boot on the lab's bridge, node addresses from .10-.99, the boot kit's `tiny`
/// profile; the hypervisor section comes next.
fn base(dir: &Path, images: &Path) -> Config {
    let config = Config::new(dir)
        .section("[dhcp]")
        .list("interfaces", ["br0"])
        .section("[http]")
        .set("listen", format!("{SERVER}:8080"))
        .set("images", images.display());
    let config = boot::lab_network(config).value("static_range", r#"{ start = "10.1.107.10", end = "10.1.107.99" }"#);
    boot::tiny_profile(config).section("[[hypervisors]]")
}

/// `base` with slipway's local QEMU backend on the lab's bridge.
fn config(dir: &Path, lab: &Lab, images: &Path) -> std::path::PathBuf {
    base(dir, images)
        .set("name", "local")
        .set("kind", "qemu")
        .set("dir", dir.join("vms").display())
        .set("bridge", "br0")
        .set("netns", &lab.ns)
        .set("accel", "tcg")
        .write()
}

/// The boot kit's kernel and initramfs in `dir/images`.
fn images(dir: &Path) -> std::path::PathBuf {
    let kit = boot::boot_kit();
    let images = dir.join("images");
    std::fs::create_dir(&images).expect("images dir");
    std::fs::copy(kit.join("vmlinuz"), images.join("vmlinuz")).expect("kernel");
    std::fs::copy(kit.join("initrd.cpio"), images.join("initrd.cpio")).expect("initramfs");
    images
}

/// `curl` against the admin API inside the lab: (HTTP status, JSON body).
fn api(lab: &Lab, daemon: &support::Daemon, method: &str, path: &str, yaml: Option<&str>) -> (u16, Value) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.ns, "curl", "-s", "-m", "30", "-w", "\n%{http_code}", "-X", method]);
    cmd.args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
    if let Some(body) = yaml {
        cmd.args(["-H", "Content-Type: application/yaml", "--data-binary", body]);
    }
    let out = cmd.arg(daemon.url(path)).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

/// `ip -n <lab> ARGS`, which must work.
fn ip_in(lab: &Lab, args: &[&str]) {
    let out = Command::new("ip").args(["-n", &lab.ns]).args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The cluster's status (`Null` when there is none).
fn status(lab: &Lab, daemon: &support::Daemon) -> Value {
    api(lab, daemon, "GET", "/api/v1/clusters/lab/status", None).1
}

/// SIGKILL, then the same daemon started again.
fn kill_and_restart(lab: &Lab, mut daemon: support::Daemon, config: &Path) -> support::Daemon {
    support::signal(&daemon.child, "KILL");
    support::wait_exit(&mut daemon.child, Duration::from_secs(10)).expect("killed");
    support::start_in(Some(&lab.ns), config, &[])
}

/// `base` with a Proxmox hypervisor `pve`: the stand-in, its token and its pinned certificate.
fn pve_config(dir: &Path, images: &Path, pve: &crate::pve::StandIn) -> std::path::PathBuf {
    boot::pve_hypervisor(base(dir, images), dir, pve).write()
}

/// A third Proxmox node with 8 GiB, local-lvm and vmbr0/vmbr1.
fn third_node() -> crate::pve::PveNode {
    crate::pve::PveNode {
        name: "pve3".into(),
        online: true,
        maxmem: 8 * 1024 * 1024 * 1024,
        arc: 0,
        storages: vec!["local-lvm".into()],
        bridges: vec!["vmbr0".into(), "vmbr1".into()],
    }
}

fn phases(status: &Value) -> Vec<String> {
    status["nodes"].as_array().into_iter().flatten().map(|n| n["phase"].as_str().unwrap_or("?").to_owned()).collect()
}

/// The VM directories the QEMU backend holds (one per VM it made).
fn vm_dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("vms"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_definition_becomes_booted_vms_survives_kill_9_scales_down_and_deletes_without_leftovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::bridge_only("cl");
    let images = images(dir.path());
    let config = config(dir.path(), &lab, &images);
    let daemon = support::start_in(Some(&lab.ns), &config, &[]);

    // A dry run changes nothing; a bad definition is refused naming the field.
    let (code, plan) = api(&lab, &daemon, "POST", "/api/v1/clusters/lab/plan", Some(DEFINITION));
    assert_eq!(code, 200, "{plan}");
    let planned: Vec<(String, String)> = plan["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (n["node"]["name"].as_str().unwrap_or("").to_owned(), n["node"]["mac"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    assert_eq!(planned.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["server-0", "server-1"]);
    assert!(planned.iter().all(|(_, mac)| mac.starts_with("02:")), "{planned:?}");
    let (code, _) = api(&lab, &daemon, "GET", "/api/v1/clusters/lab/status", None);
    assert_eq!(code, 404, "a plan stores nothing");
    let (code, refused) =
        api(&lab, &daemon, "PUT", "/api/v1/clusters/lab/definition", Some(&DEFINITION.replace("count: 2", "count: 0")));
    assert_eq!(code, 422, "{refused}");
    assert!(refused["message"].as_str().is_some_and(|m| m.contains("node_groups[0].count = 0")), "{refused}");

    let (code, applied) = api(&lab, &daemon, "PUT", "/api/v1/clusters/lab/definition", Some(DEFINITION));
    assert_eq!(code, 200, "{applied}");
    assert_eq!(applied["nodes"], plan["nodes"], "the apply made the plan");

    // Killed while a VM boots (it asked for its address, it has not phoned home); started
    // again, slipway carries on without touching the booting VM, under the stored deadline.
    let mut booting = Value::Null;
    support::eventually("a node booting", BOOT_LIMIT, || {
        let status = status(&lab, &daemon);
        let found = status["nodes"].as_array().into_iter().flatten().find(|n| n["phase"] == "booting").cloned();
        booting = found.unwrap_or(Value::Null);
        !booting.is_null()
    });
    let name = booting["name"].as_str().unwrap_or_default().to_owned();
    let pid = || std::fs::read_to_string(dir.path().join("vms").join(&name).join("qemu.pid")).unwrap_or_default();
    let qemu = pid();
    let daemon = kill_and_restart(&lab, daemon, &config);
    // Right after the restart the VM is still booting (from its DHCP request to its phone-home
    // takes tens of seconds under TCG): the same QEMU process, the same phase and deadline.
    let again = status(&lab, &daemon);
    let same = again["nodes"].as_array().into_iter().flatten().find(|n| n["name"] == name.as_str()).cloned();
    let same = same.unwrap_or(Value::Null);
    assert_eq!((&same["phase"], &same["deadline"]), (&booting["phase"], &booting["deadline"]), "{booting} then {same}");
    assert!(!qemu.is_empty() && pid() == qemu, "{name}'s VM was not started again: {qemu} then {}", pid());

    let deadline = Instant::now() + 2 * BOOT_LIMIT;
    let mut status = Value::Null;
    while Instant::now() < deadline {
        status = api(&lab, &daemon, "GET", "/api/v1/clusters/lab/status", None).1;
        if phases(&status).iter().all(|p| p == "installed") && phases(&status).len() == 2 {
            break;
        }
        assert!(!phases(&status).iter().any(|p| p == "failed"), "a node failed: {status}");
        std::thread::sleep(Duration::from_secs(2));
    }
    let serials: String = ["server-0", "server-1"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.path().join("vms").join(n).join("serial.log")).unwrap_or_default())
        .collect();
    assert_eq!(phases(&status), ["installed", "installed"], "{status}\nserial:\n{serials}");
    assert_eq!(status["phase"], "installed");
    assert_eq!(vm_dirs(dir.path()), ["server-0", "server-1"], "exactly the planned VMs");
    for node in status["nodes"].as_array().expect("nodes") {
        assert_eq!(node["vm"]["hypervisor"], "local", "{node}");
    }

    // The booting node's events tell the story: its VM made, its phases in order (never
    // powered on again after the kill).
    let (_, events) = api(&lab, &daemon, "GET", &format!("/api/v1/events?node={name}&limit=1000"), None);
    let events = events.as_array().cloned().unwrap_or_default();
    let created = events.iter().filter(|e| e["details"]["type"] == "vm_created").count();
    assert!(created >= 1, "{events:?}");
    let reached: Vec<&str> = events
        .iter()
        .filter(|e| e["details"]["type"] == "node_phase")
        .filter_map(|e| e["details"]["phase"].as_str())
        .collect();
    assert_eq!(reached.last(), Some(&"installed"), "{reached:?}");
    // Phases only move forward. (The events of the last moments before the kill may be lost
    // with the process, as the event log is written in batches; the phases were stored first.)
    let order = ["planned", "creating", "created", "powering-on", "booting", "config-served", "installed"];
    let ranks: Vec<usize> = reached.iter().map(|p| order.iter().position(|o| o == p).unwrap_or(99)).collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{reached:?}");
    // The MAC each VM boots with is the planned one: its DHCP lease is on it.
    let (_, leases) = api(&lab, &daemon, "GET", "/api/v1/leases", None);
    for (name, mac) in &planned {
        let lease = leases.as_array().into_iter().flatten().find(|l| l["mac"] == mac.as_str());
        assert!(lease.is_some(), "no lease for {name} ({mac}): {leases}");
    }

    // The stored definition planned again: nothing to do, each VM where it runs.
    let (ok, replan, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "plan", "lab"]);
    assert!(ok, "{err}");
    for node in ["server-0", "server-1"] {
        let line = replan.lines().find(|l| l.starts_with(node)).unwrap_or_default();
        assert!(line.contains(&format!("local (VMID {node})")) && line.ends_with("keep"), "{replan}");
    }

    // Scaling down: server-1 drains, its VM is shut down and deleted, its reservation goes.
    let (ok, scaled, err) =
        support::cli_in(Some(&lab.ns), &daemon, &["cluster", "scale", "lab", "-g", "server", "--count", "1"]);
    assert!(ok, "{err}");
    assert!(scaled.lines().any(|l| l.starts_with("server-1") && l.ends_with("delete")), "{scaled}");
    // Killed while server-1 drains (before its VM is touched); started again, it finishes.
    let (_, status) = api(&lab, &daemon, "GET", "/api/v1/clusters/lab/status", None);
    assert!(status["nodes"].as_array().into_iter().flatten().any(|n| n["phase"] == "draining"), "{status}");
    let daemon = kill_and_restart(&lab, daemon, &config);
    support::eventually("server-1 removed", Duration::from_secs(120), || {
        phases(&api(&lab, &daemon, "GET", "/api/v1/clusters/lab/status", None).1).len() == 1
    });
    assert_eq!(vm_dirs(dir.path()), ["server-0"], "the leaving node's VM is gone");
    assert_eq!(api(&lab, &daemon, "GET", "/api/v1/nodes/server-1", None).0, 404, "and its reservation");
    assert_eq!(api(&lab, &daemon, "GET", "/api/v1/nodes/server-0", None).0, 200);
    let (_, events) = api(&lab, &daemon, "GET", "/api/v1/events?node=server-1&type=node_phase,vm_deleted", None);
    let story: Vec<String> = events
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            e["details"]["phase"].as_str().unwrap_or_else(|| e["details"]["type"].as_str().unwrap_or("")).to_owned()
        })
        .collect();
    let tail: Vec<&str> = story.iter().rev().take(4).rev().map(String::as_str).collect();
    assert_eq!(tail, ["shutting-down", "deleting", "vm_deleted", "removed"], "{story:?}");

    // Deleting the cluster takes every node, VM and reservation with it, then the cluster.
    let (ok, removing, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "delete", "lab"]);
    assert!(ok && removing.starts_with("removing: server-0"), "{removing}{err}");
    support::eventually("the cluster gone", Duration::from_secs(120), || {
        api(&lab, &daemon, "GET", "/api/v1/clusters/lab/status", None).0 == 404
    });
    assert!(vm_dirs(dir.path()).is_empty(), "VMs left: {:?}", vm_dirs(dir.path()));
    assert_eq!(api(&lab, &daemon, "GET", "/api/v1/clusters/lab", None).0, 404);
    let (_, nodes) = api(&lab, &daemon, "GET", "/api/v1/nodes", None);
    assert_eq!(nodes, serde_json::json!([]), "no reservation left");
    daemon.stop(Duration::from_secs(10));
}

/// A VM whose NIC is on a bridge that reaches nothing never asks for an address: it fails at
/// its boot deadline with what was last seen, and after the cause is fixed `slipway cluster
/// retry` powers it off and on again and it boots.
#[test]
fn a_vm_that_never_boots_fails_at_its_deadline_and_retry_resumes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::bridge_only("cf");
    let images = images(dir.path());
    let netns = |args: &[&str]| ip_in(&lab, args);
    netns(&["link", "add", "br9", "type", "bridge"]);
    netns(&["link", "set", "br9", "up"]);
    let daemon = support::start_in(Some(&lab.ns), &config(dir.path(), &lab, &images), &[]);
    let definition = DEFINITION
        .replace("count: 2", "count: 1\n    nics: [{ bridge: br9 }]")
        // Short deadlines bound the test (and `status --watch`, which ends once every node settled).
        .replace("shutdown: 5s", "shutdown: 5s\n    boot: 20s\n    config: 3m\n    phone_home: 3m");
    let file = dir.path().join("lab.yaml");
    std::fs::write(&file, &definition).expect("definition");
    let file = file.display().to_string();

    let (ok, plan, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "plan", "-f", &file]);
    assert!(ok, "{err}");
    assert!(
        plan.lines().any(|l| l.starts_with("server-0") && l.contains("10.1.107.10") && l.ends_with("create")),
        "{plan}"
    );
    assert!(plan.contains("(a plan: nothing was changed)"), "{plan}");
    let (ok, _, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "apply", "-f", &file]);
    assert!(ok, "{err}");

    let mut status = Value::Null;
    support::eventually("the node failing at its boot deadline", Duration::from_secs(120), || {
        status = api(&lab, &daemon, "GET", "/api/v1/clusters/lab/status", None).1;
        status["phase"] == "failed"
    });
    let node = &status["nodes"][0];
    assert_eq!(node["failed_in"], "powering-on", "{status}");
    let error = node["error"].as_str().unwrap_or_default();
    assert_eq!(error, "no DHCP request from its MAC within 20s; last seen: nothing from it since power-on", "{status}");
    let (ok, shown, _) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "status", "lab"]);
    assert!(ok && shown.starts_with("cluster lab: failed") && shown.contains("no DHCP request"), "{shown}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(api(&lab, &daemon, "GET", "/api/v1/clusters/lab/status", None).1["phase"], "failed", "it stays failed");

    // The cause fixed (the bridge now reaches slipway's), a retry boots it.
    netns(&["link", "add", "v9a", "type", "veth", "peer", "name", "v9b"]);
    netns(&["link", "set", "v9a", "master", "br9", "up"]);
    netns(&["link", "set", "v9b", "master", "br0", "up"]);
    let (ok, resumed, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "retry", "lab"]);
    assert!(ok && resumed.trim() == "resumed: server-0", "{resumed}{err}");
    let (ok, watched, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "status", "lab", "--watch"]);
    assert!(ok, "{err}");
    let last = watched.split("cluster lab: ").last().unwrap_or_default();
    let serial = std::fs::read_to_string(dir.path().join("vms/server-0/serial.log")).unwrap_or_default();
    assert!(last.starts_with("installed"), "{watched}\nserial:\n{serial}");
    daemon.stop(Duration::from_secs(10));
}

/// Deleting a cluster whose VM is already gone completes (a missing VM is shut down and deleted
/// already), and a cluster a profile still names is refused up front instead of sticking.
#[test]
fn a_cluster_whose_vm_is_gone_deletes_and_one_a_profile_names_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::bridge_only("cd");
    let images = images(dir.path());
    let daemon = support::start_in(Some(&lab.ns), &config(dir.path(), &lab, &images), &[]);
    // The VM is made, but cannot start (its bridge does not exist): it stays powering-on.
    let definition = DEFINITION.replace("count: 2", "count: 1\n    nics: [{ bridge: nosuchbr }]");
    let (code, body) = api(&lab, &daemon, "PUT", "/api/v1/clusters/lab/definition", Some(&definition));
    assert_eq!(code, 200, "{body}");
    support::eventually("the start failing on the missing bridge", Duration::from_secs(60), || {
        let (_, status) = api(&lab, &daemon, "GET", "/api/v1/clusters/lab/status", None);
        status["nodes"][0]["error"].as_str().is_some_and(|e| e.contains("nosuchbr"))
    });

    let profile = "clusters: []\nprofiles:\n  - name: pinned\n    kernel: vmlinuz\n    match: { cluster: lab }\n";
    let (code, body) = api(&lab, &daemon, "POST", "/api/v1/apply", Some(profile));
    assert_eq!(code, 200, "{body}");
    let (code, refused) = api(&lab, &daemon, "DELETE", "/api/v1/clusters/lab/definition", None);
    assert_eq!(code, 409, "{refused}");
    assert!(
        refused["message"].as_str().is_some_and(|m| m.contains("cannot be deleted") && m.contains("pinned")),
        "{refused}"
    );
    assert_eq!(api(&lab, &daemon, "DELETE", "/api/v1/profiles/pinned", None).0, 204);

    // The VM vanishes behind slipway's back; the delete still completes.
    std::fs::remove_dir_all(dir.path().join("vms/server-0")).expect("remove the VM's directory");
    let (code, body) = api(&lab, &daemon, "DELETE", "/api/v1/clusters/lab/definition", None);
    assert_eq!(code, 200, "{body}");
    let (ok, watched, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "status", "lab", "--watch"]);
    assert!(ok && watched.trim_end().ends_with("cluster lab: deleted"), "{watched}{err}");
    assert_eq!(api(&lab, &daemon, "GET", "/api/v1/clusters/lab", None).0, 404);
    assert_eq!(api(&lab, &daemon, "GET", "/api/v1/nodes", None).1, serde_json::json!([]));
    daemon.stop(Duration::from_secs(10));
}

/// On Proxmox (the stand-in, its VMs backed by local QEMU VMs): three control-plane nodes with
/// hard anti-affinity land on three different Proxmox nodes with the planned MACs, boot from
/// slipway and reach installed.
#[test]
fn a_cluster_on_proxmox_spreads_over_its_nodes_and_installs() {
    use crate::pve::{self, StandIn};
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::bridge_only("cp");
    let images = images(dir.path());
    let pve = StandIn::start_in(dir.path(), Some(&lab.ns));
    let qemu = std::sync::Arc::new(crate::hypervisor::qemu_backend(&lab, dir.path()));
    pve.with(|s| {
        s.nodes.push(third_node());
        s.backing = Some(pve::Backing { qemu: qemu.clone(), bridges: [("vmbr0".to_owned(), "br0".to_owned())].into() });
    });
    let config = pve_config(dir.path(), &images, &pve);
    // Creates take 5 s: slipway is killed while the first create task runs, and restarted.
    pve.with(|s| s.faults.task_time = Some(Duration::from_secs(5)));
    let daemon = support::start_in(Some(&lab.ns), &config, &[]);
    let definition = DEFINITION
        .replace("hypervisor: local", "hypervisor: pve")
        .replace("count: 2", "count: 3\n    nics: [{ bridge: vmbr0 }]\n    placement: { anti_affinity: hard }");
    let (code, plan) = api(&lab, &daemon, "PUT", "/api/v1/clusters/lab/definition", Some(&definition));
    assert_eq!(code, 200, "{plan}");
    support::eventually("a create task running on the stand-in", Duration::from_secs(30), || {
        pve.with(|s| s.requests.iter().any(|r| r.starts_with("POST /nodes/") && r.ends_with("/qemu")))
    });
    let daemon = kill_and_restart(&lab, daemon, &config);
    pve.with(|s| s.faults.task_time = None);

    let deadline = Instant::now() + 2 * BOOT_LIMIT;
    let mut status = Value::Null;
    while Instant::now() < deadline {
        status = api(&lab, &daemon, "GET", "/api/v1/clusters/lab/status", None).1;
        if status["phase"] == "installed" {
            break;
        }
        assert!(status["phase"] != "failed", "a node failed: {status}");
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(status["phase"], "installed", "{status}");
    let mut hosts: Vec<String> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["vm"]["host"].as_str().unwrap_or("").to_owned())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["pve1", "pve2", "pve3"], "hard anti-affinity: one control-plane VM per Proxmox node");
    assert_eq!(pve.with(|s| s.vms.len()), 3, "no VM made twice across the kill");
    // Each VM on Proxmox carries its planned MAC on its first NIC.
    for node in plan["nodes"].as_array().expect("planned nodes") {
        let (name, mac) = (node["node"]["name"].as_str().unwrap_or(""), node["node"]["mac"].as_str().unwrap_or(""));
        let on_pve = pve.with(|s| {
            s.vms.values().any(|vm| {
                vm.config.get("name").map(String::as_str) == Some(name)
                    && vm.config.get("net0").is_some_and(|n| n.to_lowercase().contains(&mac.to_lowercase()))
            })
        });
        assert!(on_pve, "{name} with {mac} on the stand-in");
    }
    daemon.stop(Duration::from_secs(10));
}

/// The kill points of a VM's life on Proxmox (the stand-in without VMs behind it: nothing
/// boots, so every node waits in powering-on under a long boot deadline): slipway is killed
/// while a create task outlives the create limit, while the start tasks run (the VMs made, not yet powered on), while a scale-down's shutdown
/// tasks run (drained, not yet deleted) and while the delete tasks run. After each restart it
/// carries on with the stored deadlines, and the stand-in holds exactly the planned VMs. On
/// the way: soft anti-affinity spreads four VMs over three nodes, and a plan checks placement
/// against Proxmox's nodes (hard anti-affinity for four on three is refused, naming the field).
#[test]
fn a_proxmox_cluster_survives_kill_9_at_every_step_of_its_vms_lives() {
    use crate::pve::StandIn;
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::bridge_only("ck");
    let images = images(dir.path());
    let pve = StandIn::start_in(dir.path(), Some(&lab.ns));
    // As on real Proxmox: /cluster/resources reports VMs as pvestatd last saw them.
    pve.with(|s| {
        s.nodes.push(third_node());
        s.faults.stale_resources = true;
    });
    let config = pve_config(dir.path(), &images, &pve);
    let mut daemon = support::start_in(Some(&lab.ns), &config, &[]);
    let definition = DEFINITION
        .replace("hypervisor: local", "hypervisor: pve")
        .replace("count: 2", "count: 4\n    nics: [{ bridge: vmbr0 }]\n    placement: { anti_affinity: soft }")
        .replace("shutdown: 5s", "shutdown: 5s\n    create: 2s\n    boot: 1h");

    let hard = definition.replace("anti_affinity: soft", "anti_affinity: hard");
    let (code, refused) = api(&lab, &daemon, "POST", "/api/v1/clusters/lab/plan", Some(&hard));
    assert_eq!(code, 422, "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("node_groups[0].placement.anti_affinity = hard: 4 nodes need 4 hosts, but only 3"),
        "{refused}"
    );
    let (code, plan) = api(&lab, &daemon, "POST", "/api/v1/clusters/lab/plan", Some(&definition));
    assert_eq!(code, 200, "{plan}");
    let foreseen: Vec<&str> =
        plan["nodes"].as_array().expect("nodes").iter().map(|n| n["place"]["host"].as_str().unwrap_or("?")).collect();
    assert_eq!(foreseen, ["pve1", "pve2", "pve3", "pve1"], "most free memory first, then spread: {plan}");

    // The first create task takes 8 s, past the 2 s create limit: killed while it runs and
    // started again at once, slipway finds the VM still locked by that task past the deadline,
    // waits for it rather than failing the node, then finds the VM made and moves on.
    pve.with(|s| s.faults.slow_tasks.insert("qmcreate".into(), Duration::from_secs(8)));
    let (code, applied) = api(&lab, &daemon, "PUT", "/api/v1/clusters/lab/definition", Some(&definition));
    assert_eq!(code, 200, "{applied}");
    support::eventually("a create task running", Duration::from_secs(30), || {
        pve.with(|s| s.requests.iter().any(|r| r.starts_with("POST /nodes/") && r.ends_with("/qemu")))
    });
    support::signal(&daemon.child, "KILL");
    support::wait_exit(&mut daemon.child, Duration::from_secs(10)).expect("killed");
    // Start tasks take 5 s: killed while they run, the VMs made but not yet powered on.
    pve.with(|s| {
        s.faults.slow_tasks.clear();
        s.faults.slow_tasks.insert("qmstart".into(), Duration::from_secs(5));
    });
    daemon = support::start_in(Some(&lab.ns), &config, &[]);
    support::eventually("the create task still running at the restart", Duration::from_secs(1), || {
        pve.with(|s| s.vms.values().any(|vm| vm.lock.is_some()))
    });
    support::eventually("a start task running", Duration::from_secs(60), || {
        pve.with(|s| s.requests.iter().any(|r| r.ends_with("/status/start")))
    });
    let before = status(&lab, &daemon);
    assert!(pve.with(|s| s.vms.values().all(|vm| !vm.running)), "no VM powered on yet");
    let deadlines = |status: &Value| -> Vec<(String, String)> {
        status["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["phase"] == "powering-on")
            .map(|n| (n["name"].as_str().unwrap_or("").to_owned(), n["deadline"].as_str().unwrap_or("").to_owned()))
            .collect()
    };
    let stored = deadlines(&before);
    assert!(!stored.is_empty(), "{before}");
    daemon = kill_and_restart(&lab, daemon, &config);
    pve.with(|s| s.faults.slow_tasks.clear());
    support::eventually("every VM running", Duration::from_secs(120), || {
        pve.with(|s| s.vms.len() == 4 && s.vms.values().all(|vm| vm.running))
    });
    let after = status(&lab, &daemon);
    assert_eq!(phases(&after), ["powering-on"; 4], "{after}");
    let kept: Vec<(String, String)> = deadlines(&after).into_iter().filter(|d| stored.contains(d)).collect();
    assert_eq!(kept, stored, "the deadlines stored before the kill: {before}\n{after}");
    let mut names: Vec<String> = pve.with(|s| s.vms.values().map(|vm| vm.config["name"].clone()).collect());
    names.sort();
    assert_eq!(names, ["server-0", "server-1", "server-2", "server-3"], "exactly the planned VMs");
    let mut per_host: Vec<usize> = ["pve1", "pve2", "pve3"]
        .iter()
        .map(|h| pve.with(|s| s.vms.values().filter(|vm| vm.node == *h).count()))
        .collect();
    per_host.sort();
    assert_eq!(per_host, [1, 1, 2], "soft anti-affinity: every node used, none twice before all once");

    let (ok, _, err) =
        support::cli_in(Some(&lab.ns), &daemon, &["cluster", "scale", "lab", "-g", "nosuch", "--count", "2"]);
    assert!(!ok && err.contains("group = nosuch: cluster lab has no such node group (groups: server)"), "{err}");
    // Scaling down to two: killed while the leaving VMs' shutdown tasks run.
    pve.with(|s| s.faults.slow_tasks.insert("qmshutdown".into(), Duration::from_secs(5)));
    let (ok, _, err) =
        support::cli_in(Some(&lab.ns), &daemon, &["cluster", "scale", "lab", "-g", "server", "--count", "2"]);
    assert!(ok, "{err}");
    support::eventually("a shutdown task running", Duration::from_secs(60), || {
        pve.with(|s| s.requests.iter().any(|r| r.ends_with("/status/shutdown")))
    });
    let leaving = status(&lab, &daemon);
    assert!(phases(&leaving).iter().any(|p| p == "shutting-down"), "{leaving}");
    daemon = kill_and_restart(&lab, daemon, &config);
    pve.with(|s| s.faults.slow_tasks.clear());
    support::eventually("server-2 and server-3 gone", Duration::from_secs(120), || {
        phases(&status(&lab, &daemon)).len() == 2
    });
    let mut names: Vec<String> = pve.with(|s| s.vms.values().map(|vm| vm.config["name"].clone()).collect());
    names.sort();
    assert_eq!(names, ["server-0", "server-1"], "the leaving VMs deleted, the others kept");

    // Deleting: killed while the delete tasks run.
    pve.with(|s| s.faults.slow_tasks.insert("qmdestroy".into(), Duration::from_secs(5)));
    let (code, body) = api(&lab, &daemon, "DELETE", "/api/v1/clusters/lab/definition", None);
    assert_eq!(code, 200, "{body}");
    support::eventually("a delete task running", Duration::from_secs(60), || {
        pve.with(|s| s.requests.iter().any(|r| r.starts_with("DELETE /nodes/")))
    });
    daemon = kill_and_restart(&lab, daemon, &config);
    pve.with(|s| s.faults.slow_tasks.clear());
    support::eventually("the cluster gone", Duration::from_secs(120), || {
        api(&lab, &daemon, "GET", "/api/v1/clusters/lab/status", None).0 == 404
    });
    assert!(pve.with(|s| s.vms.is_empty()), "no VM left on Proxmox");
    assert_eq!(api(&lab, &daemon, "GET", "/api/v1/nodes", None).1, serde_json::json!([]), "no reservation left");
    daemon.stop(Duration::from_secs(10));
}

/// A cluster defined in the config file: applied when slipway starts (its listed machines
/// tracked, waiting for their first DHCP request), refused to API changes with the file named,
/// applied again when the file changes, and handed to the API (its nodes kept) when the file
/// no longer defines it.
/// A config declaring k3s cluster `lab` of `machines` (none: no definition), written in `dir`.
fn declaring(dir: &std::path::Path, machines: &[&str]) -> std::path::PathBuf {
    // Each machine's MAC from its number: metal-2 is 52:54:00:aa:00:02.
    let nodes: Vec<String> = machines
        .iter()
        .map(|n| {
            let i = n.trim_start_matches("metal-");
            format!("{{ name = \"{n}\", role = \"control-plane\", mac = \"52:54:00:aa:00:0{i}\" }}")
        })
        .collect();
    let config =
        boot::lab_network(Config::new(dir)).value("static_range", r#"{ start = "10.1.107.10", end = "10.1.107.99" }"#);
    let config = if machines.is_empty() {
        config
    } else {
        config
            .section("[[cluster_definitions]]")
            .set("name", "lab")
            .set("kind", "k3s")
            .set("base_domain", "lab.example")
            .set("network", "lab")
            .set("api_address", "10.1.107.1")
            .set("api_int_address", "10.1.107.1")
            .set("ingress_address", "10.1.107.1")
            .value("nodes", format!("[{}]", nodes.join(", ")))
    };
    config.write()
}

/// `cluster status lab` as JSON, or the CLI's error as a string.
fn lab_status(daemon: &support::Daemon) -> Value {
    let (ok, out, err) = support::cli(daemon, &["cluster", "status", "lab", "-o", "json"]);
    if !ok {
        return Value::String(err);
    }
    serde_json::from_str(&out).expect("status JSON")
}

fn node_names(status: &Value) -> Vec<String> {
    status["nodes"].as_array().into_iter().flatten().map(|n| n["name"].as_str().unwrap_or("").to_owned()).collect()
}

#[test]
fn a_cluster_defined_in_the_config_file_follows_each_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = support::start(&declaring(dir.path(), &[]), &[]);
    let reload = |machines: &[&str]| {
        declaring(dir.path(), machines);
        let (ok, _, err) = support::cli(&daemon, &["reload"]);
        assert!(ok, "{err}");
    };
    reload(&["metal-0", "metal-1"]);
    support::eventually("the file's cluster applied", Duration::from_secs(30), || {
        phases(&lab_status(&daemon)) == ["powering-on", "powering-on"]
    });
    assert_eq!(lab_status(&daemon)["declared"], true);
    reload(&["metal-0", "metal-2"]);
    support::eventually("the changed definition applied", Duration::from_secs(60), || {
        node_names(&lab_status(&daemon)) == ["metal-0", "metal-2"]
    });
    reload(&[]);
    support::eventually("the definition released", Duration::from_secs(30), || {
        let now = lab_status(&daemon);
        now.is_object() && now["declared"].is_null()
    });
    assert_eq!(node_names(&lab_status(&daemon)), ["metal-0", "metal-2"], "its nodes stay");
}

#[test]
fn a_cluster_defined_in_the_config_file_is_applied_at_start_and_owned_by_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |machines: &[&str]| declaring(dir.path(), machines);
    let status = lab_status;
    let names = node_names;

    let config = write(&["metal-0", "metal-1"]);
    let daemon = support::start(&config, &[]);
    support::eventually("the file's cluster applied", Duration::from_secs(30), || {
        phases(&status(&daemon)) == ["powering-on", "powering-on"]
    });
    assert_eq!(status(&daemon)["declared"], true);
    assert_eq!(names(&status(&daemon)), ["metal-0", "metal-1"]);
    let file = dir.path().join("lab.yaml");
    std::fs::write(&file, DEFINITION.replace("hypervisor: local\n", "")).expect("definition");
    let (ok, _, err) = support::cli(&daemon, &["cluster", "apply", "-f", &file.display().to_string()]);
    assert!(!ok && err.contains("cluster lab is defined in") && err.contains("slipway.toml"), "{err}");
    let (ok, _, err) = support::cli(&daemon, &["cluster", "delete", "lab"]);
    assert!(!ok && err.contains("change it there"), "{err}");
    daemon.stop(Duration::from_secs(10));

    // The file changed: metal-1 leaves, metal-2 joins.
    let config = write(&["metal-0", "metal-2"]);
    let daemon = support::start(&config, &[]);
    support::eventually("the changed definition applied", Duration::from_secs(60), || {
        names(&status(&daemon)) == ["metal-0", "metal-2"]
    });
    daemon.stop(Duration::from_secs(10));

    // No longer in the file: it stays, its nodes kept, and is handed to the API.
    let config = write(&[]);
    let daemon = support::start(&config, &[]);
    support::eventually("the definition released", Duration::from_secs(30), || {
        let now = status(&daemon);
        now.is_object() && now["declared"].is_null()
    });
    assert_eq!(names(&status(&daemon)), ["metal-0", "metal-2"], "its nodes stay");
    let (ok, _, err) = support::cli(&daemon, &["cluster", "delete", "lab"]);
    assert!(ok, "the API may delete it now: {err}");
    support::eventually("the cluster deleted", Duration::from_secs(60), || status(&daemon).is_string());
    daemon.stop(Duration::from_secs(10));
}

/// Health checks and the cluster's own timeout, on machines listed by hand (no VMs): once the
/// machine phones home the checks run from slipway, a name in the cluster's zone resolving as
/// slipway's DNS answers it; one passes and one fails, named in the `healthy` condition. A
/// second cluster whose machine never shows up fails at its `validation.timeout`, and `retry`
/// starts its clock again.
#[test]
fn health_checks_run_once_installed_and_the_cluster_timeout_fails_what_is_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::bridge_only("ch");
    let config = boot::lab_network(Config::new(dir.path()))
        .value("static_range", r#"{ start = "10.1.107.10", end = "10.1.107.99" }"#)
        .section("[http]")
        .set("listen", format!("{SERVER}:8080"))
        .write();
    let daemon = support::start_in(Some(&lab.ns), &config, &[]);
    let cluster = |name: &str, node: &str, ip: &str, tail: &str| {
        format!(
            "name: {name}\nkind: k3s\nbase_domain: lab.example\nnetwork: lab\napi_address: {SERVER}\n\
             api_int_address: 10.1.107.2\ningress_address: {SERVER}\n\
             nodes: [{{ name: {node}, role: control-plane, mac: \"52:54:00:aa:00:{}\", ipv4: {ip} }}]\n{tail}",
            &ip[ip.len() - 2..]
        )
    };
    // api.<zone> is slipway's own address here, so its HTTP port answers; api-int has nothing.
    let checks = "validation:\n  health_checks:\n    - { name: api, target: \"tcp://api.{zone}:8080\" }\n    - { name: inner, target: \"http://api-int.{zone}:8080/\" }\n    - { name: web, target: \"http://x.apps.{zone}:8080/nosuch?token=s3cret\", status: 404 }\n";
    let (code, body) = api(
        &lab,
        &daemon,
        "PUT",
        "/api/v1/clusters/lab/definition",
        Some(&cluster("lab", "metal-0", "10.1.107.10", checks)),
    );
    assert_eq!(code, 200, "{body}");
    let late = cluster("late", "metal-1", "10.1.107.11", "validation:\n  timeout: 3s\n");
    let (code, body) = api(&lab, &daemon, "PUT", "/api/v1/clusters/late/definition", Some(&late));
    assert_eq!(code, 200, "{body}");

    let condition = |status: &Value, kind: &str| -> (String, String) {
        let c = status["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == kind).cloned();
        let c = c.unwrap_or(Value::Null);
        (c["status"].as_str().unwrap_or("").to_owned(), c["message"].as_str().unwrap_or("").to_owned())
    };
    let before = status(&lab, &daemon);
    assert_eq!(condition(&before, "healthy").0, "Unknown", "{before}");
    assert_eq!(condition(&before, "installed"), ("False".into(), "0/1 nodes phoned home".into()));

    // metal-0 phones home from its address.
    let netns = |args: &[&str]| ip_in(&lab, args);
    netns(&["addr", "add", "10.1.107.10/24", "dev", "br0"]);
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns, "curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--interface", "10.1.107.10", "-X", "POST", &format!("http://{SERVER}:8080/phone-home")])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "204");
    let mut lab_status = Value::Null;
    support::eventually("the checks run", Duration::from_secs(60), || {
        lab_status = status(&lab, &daemon);
        condition(&lab_status, "healthy").0 == "False"
    });
    assert_eq!(lab_status["phase"], "installed", "{lab_status}");
    let (_, message) = condition(&lab_status, "healthy");
    assert!(message.starts_with("inner: http://api-int.lab.lab.example:8080/ (10.1.107.2:8080): "), "{message}");
    let web = lab_status["checks"].as_array().into_iter().flatten().find(|c| c["name"] == "web").cloned();
    let web = web.unwrap_or(Value::Null);
    assert_eq!(web["ok"], true, "*.apps resolved to the ingress address, which answered 404 as expected: {lab_status}");
    assert_eq!(web["message"], format!("http://x.apps.lab.lab.example:8080/nosuch ({SERVER}:8080): 404"));
    assert!(!lab_status.to_string().contains("s3cret"), "the query stays out of the status");
    let api_check = lab_status["checks"].as_array().into_iter().flatten().find(|c| c["name"] == "api").cloned();
    let api_check = api_check.unwrap_or(Value::Null);
    assert_eq!(api_check["ok"], true, "{lab_status}");
    assert_eq!(api_check["message"], format!("connected to {SERVER}:8080"), "api.<zone> resolved to the api address");
    let (_, events) = api(&lab, &daemon, "GET", "/api/v1/events?type=health_check", None);
    let changes: Vec<(String, bool)> = events
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["details"]["check"].as_str().unwrap_or("").to_owned(), e["details"]["ok"] == true))
        .collect();
    assert!(changes.contains(&("api".into(), true)) && changes.contains(&("inner".into(), false)), "{events}");

    // late's machine never shows up: its cluster's timeout fails it, naming the timeout.
    let late_status = |daemon: &support::Daemon| api(&lab, daemon, "GET", "/api/v1/clusters/late/status", None).1;
    let mut failed = Value::Null;
    support::eventually("late failing at its cluster timeout", Duration::from_secs(30), || {
        failed = late_status(&daemon);
        failed["phase"] == "failed"
    });
    assert_eq!(
        failed["nodes"][0]["error"],
        "the cluster was not installed within 3s (validation.timeout); this node was powering-on",
        "{failed}"
    );
    let (ok, resumed, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "retry", "late"]);
    assert!(ok && resumed.trim() == "resumed: metal-1", "{resumed}{err}");
    let again = late_status(&daemon);
    assert_eq!(again["nodes"][0]["phase"], "powering-on", "{again}");
    assert!(again["deadline"].as_str() > failed["deadline"].as_str(), "the clock started again: {failed} then {again}");
    daemon.stop(Duration::from_secs(10));
}
