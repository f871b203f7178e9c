//! Every config document slipway serves passes its ecosystem's validator: Ignition for an OKD
//! cluster from uploads shaped like `openshift-install`'s output (a bootstrap.ign with user
//! `core` and its keys, many files and units; master.ign and worker.ign as pointer configs), an
//! Ignition template that writes `/etc/hostname` itself, and cloud-init templates that set
//! their own keys, hostname and phone_home (kept as written) — each served to its node, with and without
//! `[boot] ssh_authorized_keys`, through `ignition-validate` and `cloud-init schema`. A stored
//! config that would be invalid is answered 500 with an event, never served. Needs root.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::http::{admin, get};
use crate::netns::Pair;
use crate::support::{self, TOKEN};

const OPS_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOPSKEY ops@lab";
/// The install-config's key, which bootstrap.ign already gives `core`: listed once after merging.
const INSTALLER_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDinstaller installer@workstation";
const BOOTSTRAP_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDbootstrapkeypair";
const BASE: &str = "http://10.1.107.1:8080";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/okd").join(name)).expect("fixture")
}

/// The nodes: OKD's bootstrap, master and worker (uploads), and in a k3s cluster a CoreOS
/// worker with an Ignition template and two cloud-init machines with templates.
const NODES: &[(&str, &str, &str, &str, &str)] = &[
    ("bootstrap", "okd", "bootstrap", "52:54:00:00:00:40", "10.1.107.40"),
    ("master-0", "okd", "control-plane", "52:54:00:00:00:41", "10.1.107.41"),
    ("worker-0", "okd", "worker", "52:54:00:00:00:42", "10.1.107.42"),
    ("t0", "prod", "worker", "52:54:00:00:00:43", "10.1.107.43"),
    ("c0", "prod", "infra", "52:54:00:00:00:44", "10.1.107.44"),
    ("c1", "prod", "control-plane", "52:54:00:00:00:45", "10.1.107.45"),
];

fn config(dir: &Path, keys: &[&str]) -> std::path::PathBuf {
    let templates = dir.join("templates");
    std::fs::create_dir_all(templates.join("ignition")).expect("templates");
    std::fs::create_dir_all(templates.join("cloud-init")).expect("templates");
    std::fs::write(
        templates.join("ignition/worker.ign"),
        r#"{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":["ssh-ed25519 AAAAtemplate tmpl@lab"]}]},"storage":{"files":[{"path":"/etc/hostname","mode":420,"overwrite":true,"contents":{"source":"data:,{{hostname}}-custom"}}]},"systemd":{"units":[{"name":"k3s.service","enabled":true,"contents":"[Unit]\nDescription=k3s on {{fqdn}}\n[Service]\nExecStart=/usr/local/bin/k3s server\n[Install]\nWantedBy=multi-user.target\n"}]}}"#,
    )
    .expect("template");
    std::fs::write(
        templates.join("cloud-init/infra.user-data"),
        "#cloud-config\n# the operator's own choices\nhostname: {{hostname}}-infra\nssh_authorized_keys:\n  - ssh-ed25519 AAAAtemplate tmpl@lab\nphone_home:\n  url: {{phone_home_url}}\n  post: all\n  tries: 3\npackages: [curl]\n",
    )
    .expect("template");
    std::fs::write(
        templates.join("cloud-init/control-plane.user-data"),
        "#cloud-config\npackage_update: true\nruncmd:\n  - [sh, -c, 'echo {{node}} > /etc/motd']\n",
    )
    .expect("template");
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("token");
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    let mut text = format!(
        r#"state_dir = "{state}"
[admin]
listen = "127.0.0.1:0"
token_file = "{token}"
[http]
listen = "10.1.107.1:8080"
[boot]
ssh_authorized_keys = [{keys}]
templates = "{templates}"
[[networks]]
name = "lab"
interface = "srv0"
cidr = "10.1.107.0/24"
gateway = "10.1.107.1"
[[clusters]]
name = "okd"
kind = "okd"
base_domain = "lab.example"
network = "lab"
api_address = "192.0.2.11"
api_int_address = "10.1.107.1"
ingress_address = "192.0.2.11"
[[clusters]]
name = "prod"
kind = "k3s"
base_domain = "lab.example"
network = "lab"
api_address = "192.0.2.10"
api_int_address = "10.1.107.1"
ingress_address = "192.0.2.10"
[[profiles]]
name = "fcos"
kernel = "fcos/kernel"
args = ["coreos.inst.ignition_url={{{{config_url}}}}"]
config = "ignition"
match = {{ cluster = "okd" }}
[[profiles]]
name = "fcos-k3s"
kernel = "fcos/kernel"
args = ["coreos.inst.ignition_url={{{{config_url}}}}"]
config = "ignition"
match = {{ cluster = "prod", role = "worker" }}
[[profiles]]
name = "ubuntu"
kernel = "ubuntu/vmlinuz"
args = ["ds=nocloud;s={{{{config_url}}}}"]
config = "cloud-init"
match = {{ cluster = "prod" }}
"#,
        keys = keys.join(", "),
        state = dir.join("state").display(),
        token = dir.join("token").display(),
        templates = templates.display(),
    );
    for (name, cluster, role, mac, ip) in NODES {
        text.push_str(&format!(
            "[[nodes]]\nname = \"{name}\"\ncluster = \"{cluster}\"\nrole = \"{role}\"\nmac = \"{mac}\"\nipv4 = \"{ip}\"\n"
        ));
    }
    let path = dir.join("slipway.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn ignition(pair: &Pair, node: &str, ip: &str) -> Value {
    let (status, body) = get(pair, ip, &format!("{BASE}/ignition"), &[]);
    assert_eq!(status, 200, "{node}: {}", String::from_utf8_lossy(&body));
    crate::validate::ignition(&format!("{node}'s Ignition"), &body);
    serde_json::from_slice(&body).expect("JSON")
}

fn user_data(pair: &Pair, node: &str, ip: &str) -> Value {
    let (status, body) = get(pair, ip, &format!("{BASE}/nocloud/{node}/user-data"), &[]);
    assert_eq!(status, 200, "{node}: {}", String::from_utf8_lossy(&body));
    crate::validate::user_data(&format!("{node}'s user-data"), &body);
    serde_norway::from_slice(&body).expect("YAML")
}

pub fn core_keys(config: &Value) -> Vec<String> {
    let users = config["passwd"]["users"].as_array().cloned().unwrap_or_default();
    let core: Vec<&Value> = users.iter().filter(|u| u["name"] == "core").collect();
    assert!(core.len() <= 1, "one user core: {users:?}");
    core.first()
        .map(|c| c["sshAuthorizedKeys"].as_array().into_iter().flatten().filter_map(|k| k.as_str().map(String::from)))
        .into_iter()
        .flatten()
        .collect()
}

fn files_at<'a>(config: &'a Value, path: &str) -> Vec<&'a Value> {
    config["storage"]["files"].as_array().into_iter().flatten().filter(|f| f["path"] == path).collect()
}

/// The contents of a `data:` URL file (`data:,text` or `data:;base64,…`).
pub fn data_url(file: &Value) -> String {
    use base64::Engine as _;
    let source = file["contents"]["source"].as_str().expect("contents.source");
    let (head, data) = source.strip_prefix("data:").and_then(|s| s.split_once(',')).expect("a data URL");
    if head.ends_with(";base64") {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).expect("base64")).expect("UTF-8")
    } else {
        data.to_string()
    }
}

/// User `core`'s keys without the cluster's own, which must come last (`slipway@<cluster>`).
fn without_cluster_key(mut keys: Vec<String>, cluster: &str) -> Vec<String> {
    let last = keys.pop().unwrap_or_default();
    assert!(last.starts_with("ssh-ed25519 AAAA") && last.ends_with(&format!(" slipway@{cluster}")), "{last}");
    keys
}

/// The node's host key files as served: the private key passes `ssh-keygen -y` (OpenSSH's own
/// reader), which derives the public key the `.pub` file holds. Returns the private key.
fn host_key(dir: &Path, node: &str, config: &Value) -> String {
    let private = files_at(config, "/etc/ssh/ssh_host_ed25519_key");
    let public = files_at(config, "/etc/ssh/ssh_host_ed25519_key.pub");
    assert_eq!((private.len(), public.len()), (1, 1), "{node}: one host key, private and public");
    assert_eq!((&private[0]["mode"], &public[0]["mode"]), (&serde_json::json!(0o600), &serde_json::json!(0o644)));
    let (private, public) = (data_url(private[0]), data_url(public[0]));
    let file = dir.join(format!("{node}.host-key"));
    std::fs::write(&file, &private).expect("write");
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let out = Command::new("ssh-keygen").arg("-y").arg("-f").arg(&file).output().expect("ssh-keygen (openssh-client)");
    assert!(out.status.success(), "{node}: ssh-keygen -y: {}", String::from_utf8_lossy(&out.stderr));
    let derived = String::from_utf8_lossy(&out.stdout);
    let fields = |s: &str| s.split_whitespace().take(2).map(String::from).collect::<Vec<_>>();
    assert_eq!(fields(&derived), fields(&public), "{node}: the .pub file is the private key's");
    assert_eq!(fields(&public)[0], "ssh-ed25519");
    private
}

fn events(pair: &Pair, daemon: &support::Daemon, kind: &str) -> Vec<Value> {
    let (status, body) = admin(pair, daemon, "GET", &format!("/api/v1/events?type={kind}"), b"");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("events");
    v.as_array().or(v["events"].as_array()).cloned().unwrap_or_default()
}

fn served_documents_are_valid(keys: &[&str]) {
    let pair = Pair::new(if keys.is_empty() { "c" } else { "k" });
    for (_, _, _, _, ip) in NODES {
        pair.client_address(&format!("{ip}/24"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = support::start_in(Some(&pair.srv), &config(dir.path(), keys), &[]);
    let bootstrap_upload = fixture("bootstrap.ign");
    for (role, body) in [("bootstrap", &bootstrap_upload), ("master", &fixture("master.ign"))] {
        let (status, answer) = admin(&pair, &daemon, "PUT", &format!("/api/v1/clusters/okd/ignition/{role}"), body);
        assert_eq!(status, 200, "{role}: {answer}");
    }
    // worker.ign as stored by a slipway before uploads were checked by Ignition's rules: user
    // core twice. It is not served; the event names the node and the problem, not the values.
    let stored = dir.path().join("state/ignition/okd/worker.ign");
    std::fs::write(
        &stored,
        r#"{"ignition":{"version":"3.2.0"},"passwd":{"users":[{"name":"core","passwordHash":"OKD-SECRET"},{"name":"core"}]}}"#,
    )
    .expect("stored upload");
    let (status, body) = get(&pair, "10.1.107.42", &format!("{BASE}/ignition"), &[]);
    assert_eq!((status, body.len()), (500, 0), "an invalid config is never served");
    support::eventually("a config_refused event for worker-0", std::time::Duration::from_secs(5), || {
        events(&pair, &daemon, "config_refused").iter().any(|e| {
            e["node"] == "worker-0" && e["details"]["problem"].as_str().is_some_and(|p| p.contains("$.passwd.users.1"))
        })
    });
    let (status, answer) = admin(&pair, &daemon, "PUT", "/api/v1/clusters/okd/ignition/worker", &fixture("worker.ign"));
    assert_eq!(status, 200, "{answer}");
    let mut want_keys: Vec<&str> = keys.to_vec();

    // bootstrap.ign: the upload's user core keeps its keys and gains the operator's, once each.
    let served = ignition(&pair, "bootstrap", "10.1.107.40");
    let mut bootstrap_keys = vec![INSTALLER_KEY, BOOTSTRAP_KEY];
    bootstrap_keys.extend(keys.iter().filter(|k| **k != INSTALLER_KEY));
    assert_eq!(without_cluster_key(core_keys(&served), "okd"), bootstrap_keys);
    let mut host_keys = vec![host_key(dir.path(), "bootstrap", &served)];
    let upload: Value = serde_json::from_slice(&bootstrap_upload).expect("fixture");
    for file in upload["storage"]["files"].as_array().expect("files") {
        assert_eq!(files_at(&served, file["path"].as_str().expect("path")), [file], "the upload's files as uploaded");
    }
    for unit in upload["systemd"]["units"].as_array().expect("units") {
        assert!(served["systemd"]["units"].as_array().expect("units").contains(unit), "{unit}");
    }
    assert_eq!(files_at(&served, "/etc/hostname")[0]["contents"]["source"], "data:,bootstrap");
    assert!(
        served["systemd"]["units"].as_array().expect("units").iter().any(|u| u["name"] == "slipway-phone-home.service")
    );

    // The pointer configs keep their merge source and CA; the keys join a new user core.
    for (node, ip, role) in [("master-0", "10.1.107.41", "master"), ("worker-0", "10.1.107.42", "worker")] {
        let served = ignition(&pair, node, ip);
        let upload: Value = serde_json::from_slice(&fixture(&format!("{role}.ign"))).expect("fixture");
        assert_eq!(served["ignition"], upload["ignition"], "{node}: merge directive and CA untouched");
        assert_eq!(without_cluster_key(core_keys(&served), "okd"), want_keys, "{node}");
        assert_eq!(files_at(&served, "/etc/hostname")[0]["contents"]["source"], format!("data:,{node}"));
        host_keys.push(host_key(dir.path(), node, &served));
    }
    // The same key on the next fetch (a reinstall keeps its host key), another on each node.
    let again = ignition(&pair, "bootstrap", "10.1.107.40");
    assert_eq!(host_key(dir.path(), "bootstrap", &again), host_keys[0]);
    assert_eq!(host_keys.iter().collect::<std::collections::BTreeSet<_>>().len(), 3, "one host key per node");

    // A template that writes /etc/hostname keeps it; slipway says what it left out.
    let served = ignition(&pair, "t0", "10.1.107.43");
    let hostname = files_at(&served, "/etc/hostname");
    assert_eq!(hostname.len(), 1);
    assert_eq!(hostname[0]["contents"]["source"], "data:,t0-custom");
    want_keys.insert(0, "ssh-ed25519 AAAAtemplate tmpl@lab");
    assert_eq!(without_cluster_key(core_keys(&served), "prod"), want_keys);
    host_keys.push(host_key(dir.path(), "t0", &served));
    assert_eq!(host_keys.iter().collect::<std::collections::BTreeSet<_>>().len(), 4, "one host key per node");
    support::eventually("a config_additions_left_out event for t0", std::time::Duration::from_secs(5), || {
        events(&pair, &daemon, "config_additions_left_out")
            .iter()
            .any(|e| e["node"] == "t0" && e["details"]["left_out"].to_string().contains("/etc/hostname"))
    });

    // cloud-init: a template with its own hostname, keys and phone_home keeps them and gains
    // the operator's keys; one without them gets slipway's.
    let c0 = user_data(&pair, "c0", "10.1.107.44");
    assert_eq!(c0["hostname"], "c0-infra");
    assert_eq!(c0["phone_home"]["post"], "all");
    assert_eq!(
        c0["ssh_authorized_keys"],
        serde_json::json!(["ssh-ed25519 AAAAtemplate tmpl@lab"]),
        "a template's own key list is kept as written"
    );
    assert_eq!(c0["packages"], serde_json::json!(["curl"]));
    let c1 = user_data(&pair, "c1", "10.1.107.45");
    assert_eq!(c1["hostname"], "c1");
    assert_eq!(c1["phone_home"]["url"], format!("{BASE}/phone-home"));
    assert_eq!(c1["runcmd"][0][2], "echo c1 > /etc/motd");
    if keys.is_empty() {
        assert!(c1.get("ssh_authorized_keys").is_none());
    } else {
        assert_eq!(c1["ssh_authorized_keys"], serde_json::json!(keys));
    }
    // slipway's own access on both: user slipway with the cluster's key, the node's host key.
    for (node, served) in [("c0", &c0), ("c1", &c1)] {
        assert_eq!(served["users"][0], "default", "{node}");
        assert_eq!(served["users"][1]["name"], "slipway", "{node}");
        let key = served["users"][1]["ssh_authorized_keys"][0].as_str().expect("the cluster's key");
        assert!(key.starts_with("ssh-ed25519 ") && key.ends_with(" slipway@prod"), "{node}: {key}");
        let as_files = serde_json::json!({ "storage": { "files": [
            { "path": "/etc/ssh/ssh_host_ed25519_key", "mode": 0o600,
              "contents": { "source": format!("data:;base64,{}", base64::engine::general_purpose::STANDARD.encode(served["ssh_keys"]["ed25519_private"].as_str().expect("private"))) } },
            { "path": "/etc/ssh/ssh_host_ed25519_key.pub", "mode": 0o644,
              "contents": { "source": format!("data:,{}", served["ssh_keys"]["ed25519_public"].as_str().expect("public")) } },
        ] } });
        host_keys.push(host_key(dir.path(), node, &as_files));
    }
    assert_eq!(host_keys.iter().collect::<std::collections::BTreeSet<_>>().len(), 6, "one host key per node");
    support::eventually("a config_additions_left_out event for c0", std::time::Duration::from_secs(5), || {
        events(&pair, &daemon, "config_additions_left_out").iter().any(|e| {
            let what = e["details"]["left_out"].to_string();
            e["node"] == "c0"
                && what.contains("hostname")
                && what.contains("phone_home")
                && what.contains("ssh_authorized_keys") != keys.is_empty()
        })
    });

    // No secret from an upload reached an event or the log.
    let (_, all) = admin(&pair, &daemon, "GET", "/api/v1/events", b"");
    assert!(!all.contains("OKD-SECRET"), "{all}");
    // Nor a host key: none of its body's lines (the first is the same in every unencrypted
    // ed25519 key), nor a stretch of its base64 as served (from its key-specific part), in the
    // events or the log.
    use base64::Engine as _;
    let mut secret_lines: Vec<String> = host_keys
        .iter()
        .flat_map(|k| k.lines().filter(|l| !l.starts_with("-----")).skip(1).map(String::from))
        .collect();
    secret_lines
        .extend(host_keys.iter().map(|k| base64::engine::general_purpose::STANDARD.encode(k)[200..280].to_string()));
    let secret_lines: Vec<&str> = secret_lines.iter().map(String::as_str).collect();
    assert!(!secret_lines.iter().any(|l| all.contains(l)), "a host key in the events");
    let mut daemon = daemon;
    support::signal(&daemon.child, "TERM");
    assert!(support::wait_exit(&mut daemon.child, std::time::Duration::from_secs(10)).is_some(), "the daemon stops");
    // Every line up to the end of its stderr (the reader thread ends at EOF).
    let mut lines = Vec::new();
    while let Ok(line) = daemon.log.recv_timeout(std::time::Duration::from_secs(5)) {
        lines.push(line);
    }
    assert!(lines.iter().any(|l| l.contains("\"stopped\"")), "the whole log was read: {lines:?}");
    assert!(!lines.iter().any(|l| l.contains("OKD-SECRET")), "{lines:?}");
    assert!(!lines.iter().any(|l| secret_lines.iter().any(|s| l.contains(s))), "a host key in the log");
    drop(pair);
}

#[test]
fn served_configs_pass_their_validators_with_ssh_keys() {
    served_documents_are_valid(&[OPS_KEY, INSTALLER_KEY]);
}

#[test]
fn served_configs_pass_their_validators_without_ssh_keys() {
    served_documents_are_valid(&[]);
}

/// Each fragment in `ignition/`, rendered for a node (with a real host key), passes
/// `ignition-validate` on its own.
#[test]
fn every_ignition_fragment_passes_ignition_validate() {
    use slipway::boot::ignition::{Additions, HostKeyFiles, fragments};
    let dir = tempfile::tempdir().expect("tempdir");
    let host = slipway::ssh::keys::host(&slipway::store::files::Files::Local(dir.path().to_owned()), "prod", "m0")
        .expect("host key");
    let client = slipway::ssh::keys::client_public(&slipway::store::files::Files::Local(dir.path().to_owned()), "prod")
        .expect("client key");
    let keys = [OPS_KEY.to_string()];
    let host_files = Some(HostKeyFiles { private: &host.private, public: &host.public });
    let additions = Additions { ssh_keys: &keys, cluster_key: Some(&client), host_key: host_files };
    let vars = std::collections::BTreeMap::from([
        ("hostname", "m0".to_string()),
        ("phone_home_url", format!("{BASE}/phone-home")),
    ]);
    let vars = fragments::variables(&vars, &additions);
    for fragment in fragments::ALL {
        let config = fragments::render(fragment, &vars).unwrap_or_else(|e| panic!("{}: {e}", fragment.file));
        let body = serde_json::to_vec_pretty(&config).expect("JSON");
        crate::validate::ignition(fragment.file, &body);
    }
    let with_key = fragments::render(fragments::HOST_KEY, &vars).expect("host key fragment");
    assert_eq!(host_key(dir.path(), "m0", &with_key), *host.private);
}
