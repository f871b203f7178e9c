//! Hypervisor backends end to end. The local QEMU backend creates a VM whose NIC sits on the
//! bridge of a namespace where slipway serves network boot; the VM's empty disk falls through
//! to the network, it boots from slipway and phones home; delete leaves no process, tap or disk.
//! Needs root (namespaces, taps).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use slipway::hypervisor::qemu::{Accel, Qemu, Settings};
use slipway::hypervisor::{Disk, Firmware, Hypervisor, Nic, NicModel, Owner, Placement, VmSpec, VmState};

use crate::boot::{self, BOOT_LIMIT, Lab, NODE};
use crate::support;

pub fn spec(firmware: Firmware) -> VmSpec {
    VmSpec {
        owner: Owner { cluster: None, node: NODE.0.parse().expect("name") },
        cores: 1,
        cpu: None,
        memory_mib: 512,
        disks: vec![Disk { storage: None, size_gib: 1 }],
        nics: vec![Nic { bridge: None, vlan: None, mac: NODE.1.parse().expect("mac"), model: NicModel::Virtio }],
        firmware,
        placement: Placement::default(),
    }
}

pub fn qemu_backend(lab: &Lab, dir: &Path) -> Qemu {
    let mut settings = Settings::new("local", dir.join("vms"), "br0");
    settings.netns = Some(lab.ns.clone());
    settings.accel = Accel::Tcg;
    Qemu::new(settings)
}

/// Waits (bounded) for the node's phone-home event; the serial console is in the panic.
pub fn await_phone_home(daemon: &support::Daemon, lab: &Lab, serial: &Path) -> serde_json::Value {
    let deadline = Instant::now() + BOOT_LIMIT;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        let events = boot::event_types(daemon, lab);
        if let Some(e) = events.into_iter().find(|e| e["details"]["type"] == "phone_home") {
            return e;
        }
    }
    panic!("no phone-home within {BOOT_LIMIT:?}; serial:\n{}", std::fs::read_to_string(serial).unwrap_or_default());
}

/// Tap devices slipway's QEMU backend made in the namespace (`sw` + hash + index).
pub fn taps(lab: &Lab) -> Vec<String> {
    let out = Command::new("ip").args(["-n", &lab.ns, "-o", "link", "show"]).output().expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .filter(|name| name.starts_with("sw"))
        .collect()
}

fn qemu_processes(dir: &Path) -> usize {
    let out = Command::new("pgrep").args(["-f", &dir.display().to_string()]).output().expect("pgrep");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn the_qemu_backend_boots_a_vm_from_slipway_and_delete_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::bridge_only("q");
    let daemon = boot::serve(&lab, dir.path(), false);
    let backend = qemu_backend(&lab, dir.path());
    let spec = spec(Firmware::Bios);
    let node = spec.owner.clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");

    let vm = runtime.block_on(backend.create(&spec)).expect("create");
    assert_eq!(vm.state, VmState::Stopped);
    let again = runtime.block_on(backend.create(&spec)).expect("second create");
    assert_eq!(again, vm, "asking twice finds the first VM");
    runtime.block_on(backend.start(&node)).expect("start");
    runtime.block_on(backend.start(&node)).expect("starting a running VM is fine");
    let status = runtime.block_on(backend.status(&node)).expect("status").expect("the VM exists");
    assert_eq!(status.state, VmState::Running);
    assert_eq!(taps(&lab).len(), 1, "one tap for one NIC");
    // A second backend over the same directory (a restarted slipway) finds the running VM.
    let restarted = qemu_backend(&lab, dir.path());
    let found = runtime.block_on(restarted.status(&node)).expect("status").expect("found after restart");
    assert_eq!(found.state, VmState::Running);

    let phoned = await_phone_home(&daemon, &lab, &backend.serial_log(&node.node));
    assert_eq!(phoned["details"]["ip"], NODE.2, "the VM phoned home from its reserved address");
    let listed = runtime.block_on(backend.list()).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, NODE.0);
    // The test system powers off after phoning home; the backend sees the process go.
    support::eventually("the VM powering off", Duration::from_secs(60), || {
        runtime.block_on(restarted.status(&node)).expect("status").is_some_and(|vm| vm.state == VmState::Stopped)
    });

    // Shutdown asks over QMP, then stops it when the guest ignores ACPI (busybox does).
    runtime.block_on(restarted.start(&node)).expect("start again");
    runtime.block_on(restarted.shutdown(&node, Duration::from_secs(2))).expect("shutdown");
    let stopped = runtime.block_on(restarted.status(&node)).expect("status").expect("still there");
    assert_eq!(stopped.state, VmState::Stopped);
    assert!(taps(&lab).is_empty(), "shutdown removes the taps: {:?}", taps(&lab));

    runtime.block_on(restarted.delete(&node)).expect("delete");
    assert_eq!(runtime.block_on(restarted.status(&node)).expect("status"), None);
    assert!(taps(&lab).is_empty(), "taps left: {:?}", taps(&lab));
    assert_eq!(qemu_processes(&dir.path().join("vms")), 0, "a QEMU process survived delete");
    let left: Vec<_> =
        std::fs::read_dir(dir.path().join("vms")).expect("vms dir").flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    runtime.block_on(restarted.delete(&node)).expect("deleting a deleted VM is fine");
    daemon.stop(Duration::from_secs(10));
}

#[test]
fn the_qemu_backend_names_a_missing_bridge_and_leaves_no_tap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::bridge_only("m");
    let backend = qemu_backend(&lab, dir.path());
    let mut spec = spec(Firmware::Uefi);
    spec.nics[0].bridge = Some("nosuchbr".into());
    let node = spec.owner.clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(backend.create(&spec)).expect("create");
    assert!(dir.path().join("vms").join(NODE.0).join("efivars.fd").exists(), "UEFI VMs get their own variables");
    let err = runtime.block_on(backend.start(&node)).expect_err("no such bridge");
    let text = err.to_string();
    assert!(text.starts_with(&format!("VM {}: start: ", NODE.0)) && text.contains("bridge 'nosuchbr'"), "{text}");
    assert!(taps(&lab).is_empty(), "taps left: {:?}", taps(&lab));
    runtime.block_on(backend.delete(&node)).expect("delete");
}
