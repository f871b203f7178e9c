//! The README's first quick-start command: `scripts/lab` brings up the local lab, boots a VM
//! from it, prints the VM's boot timeline and tears everything down again. Needs root (network namespaces); run as a normal user it fails, loudly.

use std::process::Command;

#[test]
fn the_local_lab_starts_serves_the_example_inventory_and_cleans_up() {
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
    assert!(stdout.contains("node agent-0 created"), "{stdout}");
    let nodes = stdout.split("==> slipway get nodes").nth(1).expect("node listing");
    assert!(
        nodes.lines().any(|l| l.starts_with("server-0") && l.contains("10.1.107.10") && l.contains("bootstrap")),
        "{stdout}"
    );
    assert!(stdout.contains("daemon_started"), "{stdout}");
    // The VM booted from slipway alone and its timeline was printed.
    let timeline = stdout.split("==> slipway get timeline server-0").nth(1).expect("timeline");
    for step in ["dhcp", "script", "kernel", "initrd", "config", "phone-home", "the latest boot completed"] {
        assert!(timeline.contains(step), "timeline lacks {step}:\n{stdout}");
    }
    assert!(stdout.contains("tiny: hostname server-0"), "{stdout}");
    let namespaces = Command::new("ip").args(["netns", "list"]).output().expect("ip netns");
    assert!(!String::from_utf8_lossy(&namespaces.stdout).contains(&ns), "the namespace was removed");
}
