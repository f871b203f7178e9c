//! OKD bootstrap diagnostics over SSH against Debian's OpenSSH server. The bootstrap node of a
//! cluster fetches its Ignition config from slipway; the test gives an sshd in the lab
//! namespace exactly what that config carries (the host key slipway made for the node, and
//! user `core`'s keys), listening on the node's address. The API never comes up: when
//! waiting-for-api fails, slipway logs in as `core`, runs the journal and failed-units commands
//! and keeps their output as an event on the node's timeline — the same output those commands
//! give `core` on that machine. Then sshd offers another host key: `cluster bootstrap gather`
//! is refused, naming both fingerprints; and a `core` without the cluster's key is named too.
//! Needs root (namespaces; sshd's own /etc with user `core`: `tests/sshd.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::boot::{self, Lab, SERVER};
use crate::sshd::{Setup, Sshd};
use crate::support::{self, Config};

const LIMIT: Duration = Duration::from_secs(60);
/// User `core`'s id in sshd's namespace.
const CORE_UID: u32 = crate::sshd::UID;
const JOURNAL: &str = "journalctl -b --no-pager -n 200 -u bootkube.service -u release-image.service";
const FAILED: &str = "systemctl --failed --no-legend --plain";

/// An sshd on the bootstrap node's address with user `core`.
fn start_sshd(lab: &Lab, dir: &Path, host_key: &Path, authorized: &Path) -> Sshd {
    let setup = Setup { ip: "10.1.107.20", host_key, authorized, user: "core", files: &[] };
    Sshd::start(lab, dir, &setup)
}

fn config(dir: &Path) -> PathBuf {
    let config = Config::new(dir).section("[http]").set("listen", format!("{SERVER}:8080"));
    boot::lab_network(config).value("static_range", r#"{ start = "10.1.107.10", end = "10.1.107.99" }"#).write()
}

fn definition(dir: &Path) -> String {
    let text = "name: prod\nkind: okd\nbase_domain: lab.example\nnetwork: lab\napi_address: 10.1.107.1\n\
                api_int_address: 10.1.107.1\ningress_address: 10.1.107.1\n\
                nodes: [{ name: bootstrap-0, role: bootstrap, mac: \"52:54:00:dd:00:01\", ipv4: 10.1.107.20 },\n\
                        { name: master-0, role: control-plane, mac: \"52:54:00:dd:00:02\", ipv4: 10.1.107.21 }]\n\
                validation: { phases: { api: 3s } }\n";
    let file = dir.join("prod.yaml");
    std::fs::write(&file, text).expect("definition");
    file.display().to_string()
}

/// `ip netns exec <lab> ARGS` must work; its stdout.
fn in_lab(lab: &Lab, args: &[&str]) -> String {
    let out = Command::new("ip").args(["netns", "exec", &lab.ns]).args(args).output().expect("ip netns exec");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn events(lab: &Lab, daemon: &support::Daemon) -> Vec<Value> {
    let (ok, out, err) =
        support::cli_in(Some(&lab.ns), daemon, &["get", "events", "--type", "node_diagnostics", "-o", "json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).expect("events JSON")
}

/// (stdout, stderr, exit status) of `command` run as `core` (by id) on this machine, as sshd
/// runs it.
fn as_core(command: &str) -> (String, String, u32) {
    let out = Command::new("setpriv")
        .args(["--reuid", &CORE_UID.to_string(), "--regid", &CORE_UID.to_string(), "--clear-groups"])
        .args(["sh", "-c", command])
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .output()
        .expect("setpriv");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&out.stdout), text(&out.stderr), out.status.code().map_or(255, |c| c as u32))
}

/// `ssh-keygen -l` of a public key file: `SHA256:…`.
fn fingerprint(public: &Path) -> String {
    let out = Command::new("ssh-keygen").arg("-lf").arg(public).output().expect("ssh-keygen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).expect("fingerprint").to_owned()
}

#[test]
fn a_failed_bootstrap_is_read_over_ssh_with_the_host_key_pinned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::bridge_only("ssh");
    for ip in ["10.1.107.20", "10.1.107.21"] {
        in_lab(&lab, &["ip", "addr", "add", &format!("{ip}/32"), "dev", "br0"]);
    }
    let daemon = support::start_in(Some(&lab.ns), &config(dir.path()), &[]);
    let (ok, _, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "apply", "-f", &definition(dir.path())]);
    assert!(ok, "{err}");

    // Before the bootstrap node fetched a config carrying slipway's host key, nothing is tried.
    let (ok, _, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "bootstrap", "gather", "prod"]);
    assert!(!ok && err.contains("409") && err.contains("its SSH host cannot be identified"), "{err}");

    // The bootstrap node fetches its config; sshd gets what it carries.
    let body =
        in_lab(&lab, &["curl", "-sf", "-m", "10", "--interface", "10.1.107.20", "http://10.1.107.1:8080/ignition"]);
    crate::validate::ignition("the bootstrap node's Ignition", body.as_bytes());
    let served: Value = serde_json::from_str(&body).expect("Ignition JSON");
    let host_key = dir.path().join("ssh_host_ed25519_key");
    let file = |path: &str| {
        let found = served["storage"]["files"].as_array().into_iter().flatten().find(|f| f["path"] == path);
        crate::configs::data_url(found.unwrap_or_else(|| panic!("{path} in the served config")))
    };
    std::fs::write(&host_key, file("/etc/ssh/ssh_host_ed25519_key")).expect("host key");
    std::fs::set_permissions(&host_key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    std::fs::write(dir.path().join("ssh_host_ed25519_key.pub"), file("/etc/ssh/ssh_host_ed25519_key.pub"))
        .expect("pub");
    let keys = crate::configs::core_keys(&served);
    let authorized = dir.path().join("authorized_keys");
    std::fs::write(&authorized, keys.join("\n") + "\n").expect("authorized_keys");
    let sshd = start_sshd(&lab, dir.path(), &host_key, &authorized);

    // It runs; the API never answers: waiting-for-api fails and slipway reads the node.
    let phone = ["curl", "-sf", "-m", "10", "--interface", "10.1.107.20", "-X", "POST"];
    in_lab(&lab, &[&phone[..], &["http://10.1.107.1:8080/phone-home"]].concat());
    let after_failure = |e: &Value| e["details"]["reason"].as_str().is_some_and(|r| r.starts_with("waiting-for-api"));
    support::eventually("diagnostics read", LIMIT, || events(&lab, &daemon).iter().any(after_failure));
    let event = events(&lab, &daemon).into_iter().find(after_failure).expect("the event");
    let sshd_log = sshd.stop();
    assert_eq!(event["node"], "bootstrap-0", "{event}");
    let details = &event["details"];
    assert!(details["error"].is_null(), "{details}\nsshd:\n{sshd_log}");
    assert!(details["reason"].as_str().is_some_and(|r| r.starts_with("waiting-for-api failed: ")), "{details}");
    assert!(sshd_log.contains("Accepted publickey for core"), "{sshd_log}");
    let commands = details["commands"].as_array().expect("commands");
    assert_eq!(commands.len(), 2);
    for (ran, command) in commands.iter().zip([JOURNAL, FAILED]) {
        assert_eq!(ran["command"], command);
        let (stdout, stderr, status) = as_core(command);
        assert_eq!(ran["stdout"], stdout, "{command}: what core sees here");
        assert_eq!(ran["stderr"].as_str().unwrap_or_default(), stderr, "{command}");
        assert_eq!(ran["status"], status, "{command}");
    }
    // The node's timeline shows it.
    let (ok, out, err) = support::cli_in(Some(&lab.ns), &daemon, &["get", "timeline", "bootstrap-0"]);
    assert!(ok, "{err}");
    assert!(out.contains("diagnostics") && out.contains("read over SSH: journalctl"), "{out}");

    // Another host key on that address: refused, both keys named; nothing is run.
    let other = dir.path().join("other_key");
    let made = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&other).output();
    assert!(made.expect("ssh-keygen").status.success());
    let sshd = start_sshd(&lab, dir.path(), &other, &authorized);
    let (ok, _, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "bootstrap", "gather", "prod"]);
    let sshd_log = sshd.stop();
    assert!(!ok, "refused");
    let offered = fingerprint(&dir.path().join("other_key.pub"));
    let pinned = fingerprint(&dir.path().join("ssh_host_ed25519_key.pub"));
    assert!(err.contains(&format!("offered host key {offered}, not the one slipway made for it ({pinned})")), "{err}");
    assert!(!sshd_log.contains("Accepted publickey"), "{sshd_log}");
    let refused = events(&lab, &daemon).pop().expect("an event");
    assert!(refused["details"]["error"].as_str().is_some_and(|e| e.contains(&offered)), "{refused}");
    assert_eq!(refused["details"]["reason"], "asked by the operator");

    // The right host, but core's keys without the cluster's: named.
    let without: Vec<&String> = keys.iter().filter(|k| !k.ends_with(" slipway@prod")).collect();
    std::fs::write(&authorized, without.iter().map(|k| format!("{k}\n")).collect::<String>()).expect("keys");
    let sshd = start_sshd(&lab, dir.path(), &host_key, &authorized);
    let (ok, _, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "bootstrap", "gather", "prod"]);
    sshd.stop();
    assert!(!ok);
    let client =
        slipway::ssh::keys::client_public(&slipway::store::files::Files::Local(dir.path().join("state")), "prod")
            .expect("the cluster's key");
    let client_file = dir.path().join("client.pub");
    std::fs::write(&client_file, client).expect("client.pub");
    let did_not =
        format!("did not let core in with key {} (not among core's authorized keys)", fingerprint(&client_file));
    assert!(err.contains(&did_not), "{err}");

    // And it works by hand again once the node is what slipway made.
    std::fs::write(&authorized, keys.join("\n") + "\n").expect("authorized_keys");
    let sshd = start_sshd(&lab, dir.path(), &host_key, &authorized);
    let (ok, out, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "bootstrap", "gather", "prod"]);
    sshd.stop();
    assert!(ok, "{err}");
    assert!(out.contains(&format!("$ {JOURNAL}")) && out.contains(&format!("$ {FAILED}")), "{out}");
    daemon.stop(Duration::from_secs(10));
}
