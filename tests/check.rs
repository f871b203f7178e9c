//! `slipway check`: golden output for a config with many problems, and success output.

use std::process::Command;

use crate::support::BIN;

fn check(dir: &str, file: &str) -> (bool, String, String) {
    let out = Command::new(BIN).current_dir(dir).args(["check", "--config", file]).output().expect("run slipway check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Set `UPDATE_GOLDEN=1` to rewrite the expected output after an intended change.
#[test]
fn check_lists_every_problem_with_file_line_field_and_value() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/check");
    let (ok, stdout, stderr) = check(dir, "bad.toml");
    assert!(!ok, "bad.toml must fail the check");
    assert_eq!(stdout, "");
    let golden = format!("{dir}/bad.out");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &stderr).expect("write golden");
    }
    let expected = std::fs::read_to_string(&golden).expect("golden file");
    assert_eq!(stderr, expected, "slipway check output changed; rerun with UPDATE_GOLDEN=1 if intended");
}

#[test]
fn check_accepts_the_example_config() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let (ok, stdout, stderr) = check(dir, "slipway.toml");
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "slipway.toml: ok (1 networks, 1 clusters, 2 nodes, 1 profiles, 1 pools, 1 frontends)\n");
}

#[test]
fn check_reports_a_missing_file() {
    let (ok, _, stderr) = check("/", "/nonexistent/slipway.toml");
    assert!(!ok);
    assert!(stderr.starts_with("/nonexistent/slipway.toml: cannot read the config file: "), "{stderr}");
}

#[test]
fn check_reports_every_value_that_does_not_parse_in_one_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = r#"state_dir = "state"
[dhcp]
interfaces = "eth1"
[[networks]]
name = "cluster"
interface = "eth1"
cidr = "10.97.0.0/24"
gateway = "10.97.0.300"
[[networks]]
name = "other"
interface = "eth2"
cidr = "10.98.0.0/24"
lease_time = "10s"
[[nodes]]
name = "a"
mac = "52:54:00:zz:00:01"
ipv4 = "10.98.0.10"
[[nodes]]
name = "b"
mac = "52:54:00:00:00"
ipv4 = "10.98.0.11"
[[nodes]]
name = "c"
mac = "52:54:00:00:00:03"
ipv4 = "10.98.0.300"
"#;
    std::fs::write(dir.path().join("s.toml"), text).expect("config");
    let (ok, _, stderr) = check(dir.path().to_str().expect("utf-8"), "s.toml");
    assert!(!ok);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "s.toml:3: dhcp.interfaces = eth1: invalid type: string \"eth1\", expected a sequence",
            "s.toml:8: networks[0].gateway = 10.97.0.300: invalid IPv4 address syntax",
            "s.toml:13: networks[1].lease_time = 10s: network other: must be between 1 minute and 136 years",
            "s.toml:16: nodes[0].mac = 52:54:00:zz:00:01: '52:54:00:zz:00:01' is not a MAC address (expected aa:bb:cc:dd:ee:ff)",
            "s.toml:20: nodes[1].mac = 52:54:00:00:00: '52:54:00:00:00' is not a MAC address (expected aa:bb:cc:dd:ee:ff)",
            "s.toml:25: nodes[2].ipv4 = 10.98.0.300: invalid IPv4 address syntax",
            "6 problems found",
        ],
        "{stderr}"
    );
}

#[test]
fn check_refuses_what_serve_would_refuse_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("short.token"), "too-short\n").expect("token");
    let text = r#"state_dir = "state"
[admin]
token_file = "short.token"
[[hypervisors]]
name = "pve"
kind = "proxmox"
url = "https://pve1:8006"
token_id = "slipway@pve!slipway"
token_file = "missing.secret"
fingerprint = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
storage = "local-lvm"
bridge = "vmbr0"
"#;
    std::fs::write(dir.path().join("s.toml"), text).expect("config");
    let (ok, stdout, stderr) = check(dir.path().to_str().expect("utf-8"), "s.toml");
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("short.token: the admin token must be at least 16 characters"), "{stderr}");
    assert!(stderr.contains("hypervisor pve: API token secret: ") && stderr.contains("missing.secret"), "{stderr}");
    assert!(stderr.ends_with("2 problems found\n"), "{stderr}");
    // Fixed, the same config passes.
    std::fs::write(dir.path().join("short.token"), "0123456789abcdef0123\n").expect("token");
    std::fs::write(dir.path().join("missing.secret"), "00000000-0000-0000-0000-000000000000\n").expect("secret");
    let (ok, stdout, stderr) = check(dir.path().to_str().expect("utf-8"), "s.toml");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ok (0 networks"), "{stdout}");
}

/// k3s's API answers 401 to requests without credentials: an HTTPS `/readyz` check on a pool of
/// a k3s cluster would mark every server down, so `check` refuses it, naming the pool's field
/// and the reason; `/ping` passes.
#[test]
fn check_refuses_an_https_readyz_check_on_a_k3s_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |path: &str| {
        format!(
            r#"state_dir = "state"
[[networks]]
name = "lab"
interface = "br0"
cidr = "10.1.107.0/24"
gateway = "10.1.107.1"
domain = "lab.example"
static_range = {{ start = "10.1.107.10", end = "10.1.107.99" }}

[[cluster_definitions]]
name = "edge"
kind = "k3s"
base_domain = "lab.example"
network = "lab"
api_address = "10.1.107.1"
api_int_address = "10.1.107.1"
ingress_address = "10.1.107.1"
nodes = [{{ name = "s0", role = "control-plane", mac = "52:54:00:ee:00:01" }}]

[[lb.pools]]
name = "api"
cluster = "edge"
members = "control-plane"
port = 6443
check = {{ kind = "https", path = "{path}" }}
"#
        )
    };
    std::fs::write(dir.path().join("k.toml"), config("/readyz")).expect("config");
    let (ok, _, stderr) = check(dir.path().to_str().expect("utf-8"), "k.toml");
    assert!(!ok, "refused");
    assert!(stderr.contains("check.path") && stderr.contains("/readyz"), "{stderr}");
    assert!(stderr.contains("cluster edge is k3s") && stderr.contains("path = \"/ping\""), "{stderr}");
    std::fs::write(dir.path().join("k.toml"), config("/ping")).expect("config");
    let (ok, _, stderr) = check(dir.path().to_str().expect("utf-8"), "k.toml");
    assert!(ok, "{stderr}");
}
