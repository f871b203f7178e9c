//! The systemd unit and the NixOS module, checked with the tools that consume them.

use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn tool(name: &str) -> Command {
    let found = Command::new("sh").args(["-c", &format!("command -v {name}")]).output().expect("sh");
    assert!(found.status.success(), "{name} is not installed; run ./scripts/test, which installs it");
    Command::new(name)
}

/// The unit with ExecStart pointing at the binary under test (verify checks it exists).
fn unit_under_test(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("{ROOT}/systemd/slipway.service")).expect("unit");
    let path = dir.join("slipway.service");
    std::fs::write(&path, text.replace("/usr/bin/slipway", env!("CARGO_BIN_EXE_slipway"))).expect("write");
    path
}

#[test]
fn the_systemd_unit_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tool("systemd-analyze").arg("verify").arg(unit_under_test(dir.path())).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("slipway.service:"), "{stderr}");
}

#[test]
fn the_systemd_unit_scores_as_documented_in_the_readme() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tool("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit_under_test(dir.path()))
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    let score = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for slipway.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an exposure score");
    let value: f64 = score.parse().expect("number");
    assert!(value <= 2.0, "exposure {value} regressed: {text}");
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).expect("README");
    assert!(readme.contains(&format!("exposure level {score}")), "README must state the current score {score}");
}

#[test]
fn the_unit_and_the_nixos_module_keep_the_same_hardening() {
    let unit = std::fs::read_to_string(format!("{ROOT}/systemd/slipway.service")).expect("unit");
    let module = std::fs::read_to_string(format!("{ROOT}/nixos/module.nix")).expect("module");
    let directives = [
        "NoNewPrivileges",
        "ProtectSystem",
        "CapabilityBoundingSet",
        "AmbientCapabilities",
        "DynamicUser",
        "StateDirectory",
        "SystemCallFilter",
        "RestrictAddressFamilies",
        "MemoryDenyWriteExecute",
        "ProtectProc",
        "Type",
    ];
    for d in directives {
        assert!(unit.contains(&format!("{d}=")), "unit lacks {d}");
        assert!(module.contains(&format!("{d} = ")), "module lacks {d}");
    }
}

#[test]
fn the_nixos_module_parses() {
    let out = tool("nix-instantiate").arg("--parse").arg(format!("{ROOT}/nixos/module.nix")).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
