//! The README's first quick-start command: `scripts/lab` brings up the local lab, has slipway
//! create and network-boot the example cluster's VMs until each phoned home, prints what it
//! serves and the first node's boot timeline, and tears everything down again (the cluster
//! deleted, its VMs with it, the namespace removed). Needs root (network namespaces); run as a
//! normal user it fails, loudly.

use std::process::Command;

#[test]
fn the_local_lab_makes_and_boots_the_example_cluster_and_cleans_up() {
    let ns = format!("slipway-lab-test-{}", std::process::id());
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lab"))
        .arg("--once")
        .env("SLIPWAY_BIN", env!("CARGO_BIN_EXE_slipway"))
        .env("SLIPWAY_LAB_NS", &ns)
        .output()
        .expect("run scripts/lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/lab failed (it needs root):\n{stdout}\n{stderr}");
    let plan = stdout.split("==> slipway cluster plan").nth(1).expect("the plan");
    for node in ["server-0", "agent-0"] {
        assert!(plan.lines().any(|l| l.starts_with(node) && l.ends_with("create")), "{stdout}");
    }
    let watched = stdout.split("==> slipway cluster status demo --watch").nth(1).expect("status");
    assert!(watched.contains("cluster demo: installed"), "{stdout}");
    let nodes = stdout.split("==> slipway get nodes").nth(1).expect("node listing");
    assert!(
        nodes.lines().any(|l| l.starts_with("server-0") && l.contains("10.1.107.10") && l.contains("control-plane")),
        "{stdout}"
    );
    let vms = stdout.split("==> slipway get vms").nth(1).expect("VM listing");
    assert!(vms.lines().filter(|l| l.contains(" demo ") && l.contains("local")).count() == 2, "{stdout}");
    assert!(stdout.contains("daemon_started") && stdout.contains("vm_created"), "{stdout}");
    // The VM booted from slipway alone and its timeline was printed.
    let timeline = stdout.split("==> slipway get timeline server-0").nth(1).expect("timeline");
    for step in ["dhcp", "script", "kernel", "initrd", "config", "phone-home", "the latest boot completed"] {
        assert!(timeline.contains(step), "timeline lacks {step}:\n{stdout}");
    }
    assert!(stdout.contains("tiny: hostname server-0"), "{stdout}");
    assert!(stdout.contains("==> slipway cluster delete demo"), "the cluster was deleted on the way out:\n{stdout}");
    let namespaces = Command::new("ip").args(["netns", "list"]).output().expect("ip netns");
    assert!(!String::from_utf8_lossy(&namespaces.stdout).contains(&ns), "the namespace was removed");
}
