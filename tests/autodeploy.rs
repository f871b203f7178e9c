//! k3s `at_install` add-on sets end to end. The first server's own cloud-init carries the set
//! as a file of k3s's auto-deploy directory (no other node's does); the test writes it where
//! that node's cloud-init would, and plays k3s's deploy controller over that directory as k3s
//! runs it (pkg/deploy/controller.go): every file whose bytes changed is applied, and its
//! `Addon` gets the file's SHA-256 once all of it applied. slipway follows that `Addon`, then
//! the set's `wait_for`, then applies the next set itself. A set changed after the install is
//! written to the first server's copy over SSH, and k3s applies it from there.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sha2::Digest;

use crate::kubesim::State;
use crate::okd::{cli, powered_on};
use crate::support;

/// k3s's auto-deploy directory.
pub const DIRECTORY: &str = "/var/lib/rancher/k3s/server/manifests";

/// SHA-256 (hex), as k3s's `Addon` keeps a file's.
fn checksum(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// k3s's deploy controller on the first server (sshd's mount namespace is that node's disk),
/// from the moment `started` says k3s runs there until `stop`: every 300 ms each file of the
/// directory (dotfiles aside) whose content is not what its `Addon` says was applied is applied,
/// object by object (a failure leaves it for the next round, as k3s retries), then the `Addon`
/// (kube-system, the file's name up to its first dot) gets its checksum.
pub fn controller(
    node: u32,
    state: Arc<Mutex<State>>,
    started: impl Fn() -> bool + Send + 'static,
    stop: Arc<Mutex<bool>>,
) {
    std::thread::spawn(move || {
        while !*stop.lock().expect("stop") {
            std::thread::sleep(Duration::from_millis(300));
            if !started() {
                continue;
            }
            for (name, bytes) in crate::sshd::files_of(node, DIRECTORY) {
                let base = name.split('.').next().unwrap_or_default().to_owned();
                let sum = checksum(&bytes);
                let addon = format!("/apis/k3s.cattle.io/v1/namespaces/kube-system/addons/{base}");
                let mut s = state.lock().expect("sim");
                s.objects.settle();
                if s.objects.stored.get(&addon).is_some_and(|a| a["spec"]["checksum"] == sum.as_str()) {
                    continue;
                }
                let documents: Vec<Value> = serde_norway::Deserializer::from_slice(&bytes)
                    .filter_map(|d| serde::Deserialize::deserialize(d).ok())
                    .filter(|v: &Value| !v.is_null())
                    .collect();
                let manager = BTreeMap::from([("fieldManager".to_owned(), "deploy".to_owned())]);
                let all = documents.iter().all(|object| {
                    let Some(path) = s.objects.path_of(object) else { return false };
                    let body = serde_json::to_vec(object).expect("JSON");
                    s.objects.apply(&path, "application/apply-patch+yaml", &manager, &body).is_ok()
                });
                if all {
                    let record = serde_json::json!({ "apiVersion": "k3s.cattle.io/v1", "kind": "Addon",
                        "metadata": { "name": base, "namespace": "kube-system" },
                        "spec": { "source": format!("{DIRECTORY}/{name}"), "checksum": sum } });
                    let body = serde_json::to_vec(&record).expect("JSON");
                    s.objects.apply(&addon, "application/apply-patch+yaml", &manager, &body).expect("Addon");
                }
            }
        }
    });
}

const INGRESS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: web}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-config, namespace: web}\ndata: {color: COLOR, enabled: 'on'}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n";
const AFTER: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: after}\ndata: {set: after}\n";

/// An at-install set reaches the first server's cloud-init (only its), k3s applies it, slipway
/// waits for k3s's `Addon` and the set's Deployment before applying the next set itself; a
/// change to it after the install is written to the first server over SSH and applied by k3s.
#[test]
fn an_at_install_set_comes_with_the_first_server_and_its_changes_reach_k3s_over_ssh() {
    let (dir, lab, pve) = crate::k3s::lab("k3i");
    let (ingress, after) = (dir.path().join("ingress"), dir.path().join("after.yaml"));
    std::fs::create_dir_all(&ingress).expect("ingress");
    std::fs::write(ingress.join("ingress.yaml"), INGRESS.replace("COLOR", "blue")).expect("ingress");
    std::fs::write(&after, AFTER).expect("after");
    let addons = format!(
        r#"[{{ name = "ingress", path = "{}", at_install = true, wait_for = {{ kind = "Deployment", name = "web", namespace = "web" }} }}, {{ name = "after", path = "{}", namespace = "apps", create_namespace = true }}]"#,
        ingress.display(),
        after.display()
    );
    let groups = [
        r#"{ name = "server", role = "control-plane", count = 2, cores = 1, memory = "1GiB", disks = [{ size = "10GiB" }] }"#.to_owned(),
        r#"{ name = "agent", role = "worker", count = 1, cores = 1, memory = "1GiB", disks = [{ size = "10GiB" }] }"#.to_owned(),
    ];
    let config = crate::k3s::config_with(dir.path(), &pve, &groups, &addons);
    let (mut daemon, ips) = powered_on(&lab, &config, "edge", 3);
    let running = crate::k3s::run(dir.path(), &lab, &ips, &["server-0", "server-1"]);
    let status = || crate::k3s::status(&lab, &daemon);
    support::eventually("ready", Duration::from_secs(180), || {
        let s = status();
        assert_ne!(s["stage"]["stage"], "failed", "{s}");
        s["stage"]["stage"] == "ready"
    });

    // The set is in the first server's cloud-init, as one file of k3s's directory, and in no
    // other node's.
    let path = format!("{DIRECTORY}/slipway-ingress.yaml");
    let mut written = None;
    for ((name, _), body) in ips.iter().zip(&running.served) {
        let doc: Value = serde_norway::from_str(body).expect("YAML");
        let file = doc["write_files"].as_array().expect("files").iter().find(|f| f["path"] == path.as_str());
        if name == "server-0" {
            let file = file.expect("the first server writes the set");
            assert_eq!(file["permissions"], "0600");
            written = file["content"].as_str().map(str::to_owned);
        } else {
            assert!(file.is_none() && !body.contains(DIRECTORY) && !body.contains("web-config"), "{name}: {body}");
        }
    }
    let written = written.expect("content");
    // As k3s reads it: its documents are the set's objects, values as written ('on' a string).
    let docs: Vec<Value> = written.split("\n---\n").map(|d| serde_json::from_str(d).expect("JSON document")).collect();
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[1]["data"], serde_json::json!({ "color": "blue", "enabled": "on" }));

    // k3s applied it (its field manager, not slipway's); slipway waited for that, then for the
    // Deployment, then applied the next set itself.
    let stored = running.sim.with(|s| s.objects.stored.clone());
    let config_map = &stored["/api/v1/namespaces/web/configmaps/web-config"];
    assert_eq!(config_map["data"]["color"], "blue");
    assert_eq!(config_map["metadata"]["managedFields"][0]["manager"], "deploy");
    let addon = &stored["/apis/k3s.cattle.io/v1/namespaces/kube-system/addons/slipway-ingress"];
    assert_eq!(addon["spec"]["checksum"], checksum(written.as_bytes()).as_str());
    assert_eq!(
        stored["/api/v1/namespaces/apps/configmaps/after"]["metadata"]["managedFields"][0]["manager"],
        "slipway"
    );
    let applied = running.sim.with(|s| s.objects.applied.clone());
    let position = |p: &str| applied.iter().position(|a| a == p).unwrap_or_else(|| panic!("{p} applied: {applied:?}"));
    assert!(
        position("/apis/k3s.cattle.io/v1/namespaces/kube-system/addons/slipway-ingress")
            < position("/api/v1/namespaces/apps/configmaps/after")
    );
    let listed = cli(&lab, &daemon, &["cluster", "addons", "edge"]);
    assert!(listed.lines().any(|l| l.contains("ingress") && l.contains("applied") && l.contains('3')), "{listed}");

    // Changed after the install, and applied again as slipway starts: the first server's copy
    // is rewritten over SSH and k3s applies it; the other set is not touched.
    std::fs::write(ingress.join("ingress.yaml"), INGRESS.replace("COLOR", "green")).expect("changed");
    running.sim.with(|s| s.objects.applied.clear());
    support::signal(&daemon.child, "TERM");
    support::wait_exit(&mut daemon.child, Duration::from_secs(10)).expect("stopped");
    daemon = support::start_in(Some(&lab.ns), &config, &[]);
    support::eventually("k3s applied the new content", Duration::from_secs(90), || {
        running
            .sim
            .with(|s| s.objects.stored["/api/v1/namespaces/web/configmaps/web-config"]["data"]["color"] == "green")
    });
    support::eventually("ready again", Duration::from_secs(90), || {
        crate::k3s::status(&lab, &daemon)["stage"]["stage"] == "ready"
    });
    let on_node = running.sshd.files(DIRECTORY);
    assert_eq!(on_node.len(), 1, "one file, no leftover part: {:?}", on_node.iter().map(|f| &f.0).collect::<Vec<_>>());
    assert!(String::from_utf8_lossy(&on_node[0].1).contains("\"color\": \"green\""));
    let applied = running.sim.with(|s| s.objects.applied.clone());
    assert!(applied.iter().all(|p| !p.contains("/configmaps/after")), "only the changed set: {applied:?}");
    *running.stop.lock().expect("stop") = true;
    let log = running.sshd.stop();
    assert!(log.contains("Accepted publickey for slipway"), "{log}");
}
