//! k3s's lifecycle end to end: a cluster defined in the config file (three servers, two agents
//! with a label and a taint) is made on the Proxmox stand-in; a k3s API stand-in answers on each
//! server's address once that server runs k3s, behind slipway's own load balancer (checked with
//! `/ping`: k3s answers 401 to anything else without credentials). The test plays the nodes as
//! slipway's `cloud-init/k3s.user-data` makes them behave: each asks `/k3s/config` from its own
//! address until it is let in, then "starts k3s" (its API answers; its Node turns Ready a moment
//! later). The first server's OpenSSH (its host key and user `slipway` from its own served
//! user-data) holds k3s's kubeconfig at the real path. slipway checks the CA `/cacerts` serves
//! against that kubeconfig, lets the servers in one at a time — a SIGKILL while the second one
//! joins changes nothing — then the agents, and reports Ready once the kubeconfig it stored
//! answers through the load balancer. The cluster's password is in no log line, event, API
//! answer, served document or state file but its own. Needs root (namespaces).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::boot::{self, Lab, SERVER};
use crate::kubesim::KubeSim;
use crate::okd::{cli, phone_home, powered_on};
use crate::pve::StandIn;
use crate::sshd::{Setup, Sshd};
use crate::support;

const LIMIT: Duration = Duration::from_secs(90);
/// The Git repository's password in the Argo CD credentials Secret an add-on delivers.
const REPO_SECRET: &str = "repo-password-7f3c9a1e5b";
const ZONE: &str = "edge.lab.example";

/// Add-ons in order: Argo CD's released manifest into the namespace the set makes, waited
/// for until its server Deployment is available; then a root Application in a directory with
/// its CRD (placed after it: slipway applies the CRD first and the Application once it is
/// served).
fn addons(dir: &Path) -> String {
    // The Git repository's credentials, in a file of the slipway host only root reads.
    let repo = dir.join("argocd-repo.yaml");
    std::fs::write(&repo, format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: platform-repo\n  labels: {{ argocd.argoproj.io/secret-type: repository }}\nstringData:\n  url: https://git.example/platform.git\n  username: slipway\n  password: {REPO_SECRET}\n")).expect("repo secret");
    std::fs::set_permissions(&repo, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).expect("root dir");
    std::fs::write(root.join("a-root.yaml"), crate::addons::ROOT_APP).expect("root app");
    std::fs::write(root.join("b-crd.yaml"), crate::addons::CRD).expect("crd");
    format!(
        r#"[{{ name = "argocd", path = "{}", namespace = "argocd", create_namespace = true, wait_for = {{ kind = "Deployment", name = "argocd-server" }} }}, {{ name = "repo", path = "{}", namespace = "argocd" }}, {{ name = "root", path = "{}", namespace = "argocd" }}]"#,
        crate::addons::argocd_manifest().display(),
        repo.display(),
        root.display()
    )
}

fn config(dir: &Path, pve: &StandIn) -> std::path::PathBuf {
    let groups = [
        r#"{ name = "server", role = "control-plane", count = 3, cores = 1, memory = "1GiB", disks = [{ size = "10GiB" }] }"#.to_owned(),
        r#"{ name = "agent", role = "worker", count = 2, cores = 1, memory = "1GiB", disks = [{ size = "10GiB" }], labels = { tier = "edge" }, taints = ["dedicated=edge:NoSchedule"] }"#.to_owned(),
    ];
    config_with(dir, pve, &groups, &addons(dir))
}

/// Cluster `edge` of `groups` with `addons`, its API behind slipway's load balancer.
pub(crate) fn config_with(dir: &Path, pve: &StandIn, groups: &[String], addons: &str) -> std::path::PathBuf {
    boot::pve_cluster(dir, pve, "edge", "k3s", groups)
        .value("addons", addons)
        .section("[[lb.pools]]")
        .set("name", "api")
        .set("cluster", "edge")
        .set("members", "control-plane")
        .value("port", 6443)
        .value("check", r#"{ kind = "https", path = "/ping", interval = "1s", timeout = "500ms", rise = 1 }"#)
        .section("[[lb.frontends]]")
        .set("name", "api")
        .set("listen", format!("{SERVER}:6443"))
        .set("pool", "api")
        .write()
}

pub(crate) fn status(lab: &Lab, daemon: &support::Daemon) -> Value {
    crate::okd::cluster_status(lab, daemon, "edge")
}

/// `curl` from `ip` inside the lab: (HTTP status, body).
fn fetch(ns: &str, ip: &str, url: &str) -> (u16, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "-m", "10", "--interface", ip, "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// When each node was let in (its config served) and when its Node turned Ready.
#[derive(Default)]
struct Played {
    configs: BTreeMap<String, (Instant, Value)>,
    ready: BTreeMap<String, Instant>,
}

/// Each node asks for its k3s config until it gets it, then starts "k3s": a server's address
/// answers the API, and its Node is Ready a moment later (an agent's Node likewise).
fn play(lab: &Lab, sim: &KubeSim, nodes: &[(String, String)], played: &Arc<Mutex<Played>>, stop: &Arc<Mutex<bool>>) {
    for (name, ip) in nodes {
        let (name, ip) = (name.clone(), ip.clone());
        let (ns, state, played, stop) = (lab.ns.clone(), sim.state.clone(), played.clone(), stop.clone());
        std::thread::spawn(move || {
            loop {
                if *stop.lock().expect("stop") {
                    return;
                }
                let (code, body) = fetch(&ns, &ip, &format!("http://{SERVER}:8080/k3s/config"));
                if code == 200 {
                    let config: Value = serde_norway::from_str(&body).expect("config.yaml is YAML");
                    played.lock().expect("played").configs.insert(name.clone(), (Instant::now(), config));
                    if name.starts_with("server") {
                        let addr: std::net::IpAddr = ip.parse().expect("ip");
                        state.lock().expect("sim").serving.get_or_insert_default().insert(addr);
                    }
                    std::thread::sleep(Duration::from_millis(1500));
                    let node = serde_json::json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name },
                        "status": { "conditions": [{ "type": "Ready", "status": "True" }] } });
                    state.lock().expect("sim").nodes.insert(name.clone(), node);
                    played.lock().expect("played").ready.insert(name.clone(), Instant::now());
                    return;
                }
                // 503: not its turn; 0: slipway is down (restarting after the SIGKILL).
                assert!(code == 503 || code == 0, "{name}: {code} {body}");
                std::thread::sleep(Duration::from_millis(300));
            }
        });
    }
}

/// A directory, a lab namespace `tag` and the Proxmox stand-in in it.
pub(crate) fn lab(tag: &str) -> (tempfile::TempDir, Lab, StandIn) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::bridge_only(tag);
    let pve_dir = dir.path().join("pve");
    std::fs::create_dir_all(&pve_dir).expect("pve dir");
    let pve = StandIn::start_in(&pve_dir, Some(&lab.ns));
    (dir, lab, pve)
}

/// The cluster's nodes, running as slipway's k3s user-data makes them behave.
pub(crate) struct Running {
    pub sim: KubeSim,
    /// Every node's user-data, as served (in the order of the nodes given).
    pub served: Vec<String>,
    /// The first server's OpenSSH, holding k3s's kubeconfig and the files its cloud-init wrote
    /// into k3s's auto-deploy directory.
    pub sshd: Sshd,
    played: Arc<Mutex<Played>>,
    pub stop: Arc<Mutex<bool>>,
}

/// The API stand-in on every server's address (none answers until its server runs k3s), each
/// node's user-data fetched (and validated) and its phone-home sent, the first server's sshd
/// with k3s's kubeconfig and the auto-deploy files its cloud-init writes, every node playing
/// its part and k3s's deploy controller on the first server.
pub(crate) fn run(dir: &Path, lab: &Lab, ips: &[(String, String)], servers: &[&str]) -> Running {
    let ip = |name: &str| ips.iter().find(|(n, _)| n == name).map(|(_, ip)| ip.clone()).expect("address");
    let addrs: Vec<std::net::SocketAddr> =
        servers.iter().map(|s| format!("{}:6443", ip(s)).parse().expect("addr")).collect();
    let kube_dir = dir.join("kube");
    std::fs::create_dir_all(&kube_dir).expect("kube dir");
    let sim = KubeSim::start_k3s(&kube_dir, Some(&lab.ns), &addrs, ZONE, &[SERVER]);
    sim.with(|s| {
        s.api_up = true;
        s.serving = Some(Default::default());
    });
    let mut served = Vec::new();
    for (name, address) in ips {
        let (code, body) = fetch(&lab.ns, address, &format!("http://{SERVER}:8080/nocloud/{name}/user-data"));
        assert_eq!(code, 200, "{name}: {body}");
        crate::validate::user_data(&format!("{name}'s user-data"), body.as_bytes());
        let doc: Value = serde_norway::from_str(&body).expect("YAML");
        let units: Vec<&str> =
            doc["write_files"].as_array().expect("files").iter().filter_map(|f| f["path"].as_str()).collect();
        assert!(units.contains(&"/etc/systemd/system/slipway-k3s.service"), "{name}: {units:?}");
        served.push(body);
        // cloud-init ends by phoning home (the node waits for its turn in a unit of its own).
        phone_home(lab, address);
    }
    let s0: Value =
        serde_norway::from_str(&served[ips.iter().position(|(n, _)| n == "server-0").expect("s0")]).expect("YAML");
    let host_key = dir.join("server-0.host");
    std::fs::write(&host_key, s0["ssh_keys"]["ed25519_private"].as_str().expect("host key")).expect("key");
    std::fs::set_permissions(&host_key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let authorized = dir.join("authorized_keys");
    let key = s0["users"][1]["ssh_authorized_keys"][0].as_str().expect("the cluster's key");
    std::fs::write(&authorized, format!("{key}\n")).expect("authorized_keys");
    let mut files = vec![("/etc/rancher/k3s/k3s.yaml", sim.kubeconfig.as_str(), 0o600)];
    for file in s0["write_files"].as_array().into_iter().flatten() {
        if let (Some(path), Some(content)) = (file["path"].as_str(), file["content"].as_str())
            && path.starts_with(crate::autodeploy::DIRECTORY)
        {
            files.push((path, content, 0o600));
        }
    }
    let setup =
        Setup { ip: &ip("server-0"), host_key: &host_key, authorized: &authorized, user: "slipway", files: &files };
    let sshd = Sshd::start(lab, dir, &setup);
    let played = Arc::new(Mutex::new(Played::default()));
    let stop = Arc::new(Mutex::new(false));
    play(lab, &sim, ips, &played, &stop);
    let first = played.clone();
    let started = move || first.lock().expect("played").configs.contains_key("server-0");
    crate::autodeploy::controller(sshd.pid(), sim.state.clone(), started, stop.clone());
    Running { sim, served, sshd, played, stop }
}

#[test]
fn a_k3s_cluster_joins_its_servers_one_at_a_time_and_hands_over_a_kubeconfig() {
    let (dir, lab, pve) = lab("k3s");
    let config = config(dir.path(), &pve);
    let (mut daemon, ips) = powered_on(&lab, &config, "edge", 5);
    let ip = |name: &str| ips.iter().find(|(n, _)| n == name).map(|(_, ip)| ip.clone()).expect("address");
    let servers = ["server-0", "server-1", "server-2"];

    let Running { sim, served, sshd, played, stop } = run(dir.path(), &lab, &ips, &servers);
    support::eventually("the first server initialised the cluster", LIMIT, || {
        status(&lab, &daemon)["stage"]["stage"] == "joining-servers"
    });
    // SIGKILL while the second server joins: the third still waits its turn.
    support::eventually("server-1 let in", LIMIT, || played.lock().expect("played").configs.contains_key("server-1"));
    support::signal(&daemon.child, "KILL");
    support::wait_exit(&mut daemon.child, Duration::from_secs(10)).expect("killed");
    // The first daemon's log (it served the first server's cluster-init config), kept.
    let mut lines = Vec::new();
    while let Ok(line) = daemon.log.recv_timeout(Duration::from_secs(2)) {
        lines.push(line);
    }
    daemon = support::start_in(Some(&lab.ns), &config, &[]);
    support::eventually("ready", Duration::from_secs(180), || {
        let s = status(&lab, &daemon);
        assert_ne!(s["stage"]["stage"], "failed", "{s}");
        s["stage"]["stage"] == "ready"
    });
    *stop.lock().expect("stop") = true;
    let sshd_log = sshd.stop();
    assert!(sshd_log.contains("Accepted publickey for slipway"), "{sshd_log}");

    // The add-ons, applied through the cluster's API once its kubeconfig answered, in order:
    // Argo CD into its namespace, waited for, then the root Application after its CRD.
    let stored = sim.with(|s| s.objects.stored.clone());
    assert_eq!(
        stored.values().filter(|o| o["metadata"]["namespace"] == "argocd").count(),
        52,
        "Argo CD's 50, the repository Secret and the root app"
    );
    let secret = &stored["/api/v1/namespaces/argocd/secrets/platform-repo"];
    assert!(secret.get("stringData").is_none(), "{secret}");
    let password = secret["data"]["password"].as_str().expect("data");
    assert_eq!(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, password).expect("base64"),
        REPO_SECRET.as_bytes()
    );
    assert_eq!(
        stored["/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/root"]["metadata"]["managedFields"][0]["manager"],
        "slipway"
    );
    let applied = sim.with(|s| s.objects.applied.clone());
    let position = |path: &str| applied.iter().position(|p| p == path).unwrap_or_else(|| panic!("{path} applied"));
    assert!(
        position("/apis/apps/v1/namespaces/argocd/deployments/argocd-server")
            < position("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/applications.argoproj.io")
    );
    let events = cli(&lab, &daemon, &["get", "events", "--type", "addon,cluster_stage", "-o", "json"]);
    let events: Vec<Value> = serde_json::from_str(&events).expect("events");
    let sets: Vec<(String, String, u64)> = events
        .iter()
        .filter(|e| e["details"]["type"] == "addon")
        .map(|e| {
            (
                e["details"]["set"].as_str().unwrap_or_default().to_owned(),
                e["details"]["state"].as_str().unwrap_or_default().to_owned(),
                e["details"]["objects"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let want = [("argocd", "applied", 51), ("repo", "applied", 1), ("root", "applied", 2)];
    assert_eq!(sets, want.map(|(s, a, n)| (s.to_owned(), a.to_owned(), n)));
    let listed = cli(&lab, &daemon, &["cluster", "addons", "edge"]);
    assert!(
        listed.lines().nth(1).is_some_and(|l| l.starts_with("argocd") && l.contains("applied") && l.contains("51")),
        "{listed}"
    );
    assert!(
        events.iter().any(|e| e["details"]["from"] == "applying-addons" && e["details"]["stage"] == "ready"),
        "{events:?}"
    );

    // One server at a time: each let in only after the one before it was a Ready node.
    let played = played.lock().expect("played");
    for pair in servers.windows(2) {
        let (before, after) = (played.ready[pair[0]], played.configs[pair[1]].0);
        assert!(after > before, "{} let in before {} was Ready", pair[1], pair[0]);
    }
    for agent in ["agent-0", "agent-1"] {
        assert!(played.configs[agent].0 > played.ready["server-2"], "{agent} before every server joined");
    }
    // What each node was told.
    let password = played.configs["server-0"].1["token"].as_str().expect("password").to_owned();
    assert_eq!(password.len(), 48);
    assert_eq!(played.configs["server-0"].1["cluster-init"], true);
    let ca = std::fs::read(&sim.ca).expect("ca");
    let hash: String = <sha2::Sha256 as sha2::Digest>::digest(&ca).iter().map(|b| format!("{b:02x}")).collect();
    for (name, (_, config)) in played.configs.iter().filter(|(n, _)| *n != "server-0") {
        assert_eq!(config["token"], format!("K10{hash}::server:{password}"), "{name}");
        assert_eq!(config["server"], format!("https://{SERVER}:6443"), "{name}");
        assert_eq!(config["node-name"], name.as_str());
    }
    assert_eq!(played.configs["agent-0"].1["node-label"], serde_json::json!(["tier=edge"]));
    assert_eq!(played.configs["agent-0"].1["node-taint"], serde_json::json!(["dedicated=edge:NoSchedule"]));
    let sans = &played.configs["server-1"].1["tls-san"];
    assert!(sans.as_array().is_some_and(|s| s.contains(&Value::from(format!("api.{ZONE}")))), "{sans}");

    // The kubeconfig: k3s's, pointed at the load balancer.
    let stored = cli(&lab, &daemon, &["cluster", "kubeconfig", "edge"]);
    let doc: Value = serde_norway::from_str(&stored).expect("kubeconfig");
    assert_eq!(doc["clusters"][0]["cluster"]["server"], format!("https://api.{ZONE}:6443"));
    let original: Value = serde_norway::from_str(&sim.kubeconfig).expect("k3s.yaml");
    assert_eq!(doc["users"], original["users"]);
    let conditions = status(&lab, &daemon)["conditions"].clone();
    let all = [
        "installed",
        "ServerInitialised",
        "ServersJoined",
        "AgentsJoined",
        "KubeconfigReady",
        "Addon/argocd",
        "Addon/repo",
        "Addon/root",
    ];
    for kind in all {
        let found = conditions.as_array().into_iter().flatten().find(|c| c["type"] == kind);
        assert_eq!(found.map(|c| c["status"].clone()), Some(Value::from("True")), "{kind}: {conditions}");
    }

    // A reinstall deletes the node's Node object first (k3s would refuse it back under its name);
    // with the API down it is refused, naming why.
    // A node that joined is not handed its config (the token) again; reinstalled, it is.
    let config_url = format!("http://{SERVER}:8080/k3s/config");
    assert_eq!(fetch(&lab.ns, &ip("agent-1"), &config_url).0, 410);
    assert_eq!(fetch(&lab.ns, &ip("server-1"), &config_url).0, 410);
    cli(&lab, &daemon, &["reinstall", "agent-1"]);
    sim.with(|s| {
        assert!(!s.nodes.contains_key("agent-1"), "the Node object is gone");
        assert!(s.requests.iter().any(|r| r == "DELETE /api/v1/nodes/agent-1"), "{:?}", s.requests);
    });
    assert_eq!(fetch(&lab.ns, &ip("agent-1"), &config_url).0, 200, "it joins anew");
    sim.with(|s| s.api_up = false);
    let (ok, _, err) = support::cli_in(Some(&lab.ns), &daemon, &["reinstall", "agent-0"]);
    assert!(!ok && err.contains("cannot delete Node agent-0") && err.contains("Node password rejected"), "{err}");

    // The password: in no event, API answer or served document, and no state file but its own.
    let events = cli(&lab, &daemon, &["get", "events", "-o", "json"]);
    assert!(!events.contains(&password), "the password in an event");
    assert!(!status(&lab, &daemon).to_string().contains(&password));
    // Nor the Git repository's credentials: only the cluster's API got them.
    assert!(!events.contains(REPO_SECRET) && !status(&lab, &daemon).to_string().contains(REPO_SECRET));
    let grep = Command::new("grep").args(["-rl", REPO_SECRET]).arg(dir.path().join("state")).output().expect("grep");
    assert!(String::from_utf8_lossy(&grep.stdout).trim().is_empty(), "the repository's password in a state file");
    assert!(served.iter().all(|doc| !doc.contains(&password)), "the password in a user-data");
    let grep = Command::new("grep").args(["-rl", &password]).arg(dir.path().join("state")).output().expect("grep");
    let holding = String::from_utf8_lossy(&grep.stdout).into_owned();
    assert_eq!(holding.trim(), dir.path().join("state/k3s/edge/token").display().to_string(), "{holding}");
    support::signal(&daemon.child, "TERM");
    assert!(support::wait_exit(&mut daemon.child, Duration::from_secs(10)).is_some());
    while let Ok(line) = daemon.log.recv_timeout(Duration::from_secs(5)) {
        lines.push(line);
    }
    assert!(lines.iter().any(|l| l.contains("the first server starts the cluster")), "both daemons' logs were read");
    assert!(!lines.iter().any(|l| l.contains(&password)), "the password in the log");
    assert!(!lines.iter().any(|l| l.contains(REPO_SECRET)), "the repository's password in the log");
}

/// A first server whose k3s never answers: another machine's host key at its address is refused
/// and named; init-server fails past its limit, naming what it waited for, and slipway reads the
/// server over SSH (user `slipway`, `sudo journalctl`): the output is what those commands print
/// there.
#[test]
fn a_server_that_never_answers_fails_its_stage_and_is_read_over_ssh() {
    let (dir, lab, pve) = lab("k3f");
    let groups = [r#"{ name = "server", role = "control-plane", count = 1, cores = 1, memory = "1GiB", disks = [{ size = "10GiB" }] }"#.to_owned()];
    let config = boot::pve_cluster(dir.path(), &pve, "edge", "k3s", &groups)
        .value("validation", r#"{ phases = { init = "12s" } }"#)
        .write();
    let (daemon, ips) = powered_on(&lab, &config, "edge", 1);
    let (name, address) = ips[0].clone();
    let (code, body) = fetch(&lab.ns, &address, &format!("http://{SERVER}:8080/nocloud/{name}/user-data"));
    assert_eq!(code, 200, "{body}");
    crate::validate::user_data(&format!("{name}'s user-data"), body.as_bytes());
    let doc: Value = serde_norway::from_str(&body).expect("YAML");
    let host_key = dir.path().join("host");
    std::fs::write(&host_key, doc["ssh_keys"]["ed25519_private"].as_str().expect("host key")).expect("key");
    std::fs::set_permissions(&host_key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let authorized = dir.path().join("authorized_keys");
    std::fs::write(&authorized, format!("{}\n", doc["users"][1]["ssh_authorized_keys"][0].as_str().expect("key")))
        .expect("authorized_keys");
    // First a machine with another host key at its address: refused, both keys named.
    let other = dir.path().join("other");
    let made = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&other).output();
    assert!(made.expect("ssh-keygen").status.success());
    let setup = Setup { ip: &address, host_key: &other, authorized: &authorized, user: "slipway", files: &[] };
    let impostor = Sshd::start(&lab, dir.path(), &setup);
    // It fetches its config (starting the cluster's stages); its k3s never comes up.
    let (code, _) = fetch(&lab.ns, &address, &format!("http://{SERVER}:8080/k3s/config"));
    assert_eq!(code, 200);
    let fingerprint = |public: &Path| {
        let out = Command::new("ssh-keygen").arg("-lf").arg(public).output().expect("ssh-keygen");
        String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).expect("fingerprint").to_owned()
    };
    let offered =
        format!("offered host key {}, not the one slipway made for it", fingerprint(&other.with_extension("pub")));
    support::eventually("the other host key refused", LIMIT, || {
        status(&lab, &daemon)["stage"]["error"].as_str().is_some_and(|e| e.contains(&offered))
    });
    assert!(!impostor.stop().contains("Accepted publickey"), "nothing was sent to it");
    let setup = Setup { ip: &address, host_key: &host_key, authorized: &authorized, user: "slipway", files: &[] };
    let sshd = Sshd::start(&lab, dir.path(), &setup);
    support::eventually("init-server failed", LIMIT, || status(&lab, &daemon)["stage"]["stage"] == "failed");
    let s = status(&lab, &daemon);
    let error = s["stage"]["error"].as_str().expect("reason");
    assert!(error.starts_with(&format!("{name}'s /cacerts and kubeconfig were not read within 12s")), "{error}");
    assert!(error.contains("k3s.yaml"), "the last error says what was missing: {error}");
    assert_eq!(s["stage"]["failed_in"], "init-server");
    let read = |e: &Value| e["details"]["reason"].as_str().is_some_and(|r| r.starts_with("init-server failed"));
    let events = || -> Vec<Value> {
        serde_json::from_str(&cli(&lab, &daemon, &["get", "events", "--type", "node_diagnostics", "-o", "json"]))
            .expect("events")
    };
    support::eventually("the server read over SSH", LIMIT, || events().iter().any(read));
    let event = events().into_iter().find(read).expect("event");
    sshd.stop();
    assert_eq!(event["node"], name.as_str());
    assert!(event["details"]["error"].is_null(), "{event}");
    let commands = event["details"]["commands"].as_array().expect("commands");
    assert_eq!(commands[0]["command"], slipway::cluster::k3s::drive::DIAGNOSTICS[0]);
    // `sudo -n journalctl …` as that user prints here what it printed there.
    let local = Command::new("setpriv")
        .args(["--reuid", "0", "--regid", "0", "--clear-groups", "sh", "-c"])
        .arg(slipway::cluster::k3s::drive::DIAGNOSTICS[0].trim_start_matches("sudo -n "))
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .output()
        .expect("journalctl");
    assert_eq!(commands[0]["stdout"], String::from_utf8_lossy(&local.stdout).as_ref(), "{event}");
    assert_eq!(commands[0]["status"], local.status.code().unwrap_or(255));
    // Retried with a longer limit, it waits again.
    let (ok, out, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "retry", "edge"]);
    assert!(ok && out.contains("cluster (init-server)"), "{out}{err}");
    assert_eq!(status(&lab, &daemon)["stage"]["stage"], "init-server");
}

const WEB: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-config}\ndata: {color: COLOR}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n";
const BROKEN: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: worker}\nspec:\n  template:\n    metadata: {labels: {app: worker}}\n    spec: {containers: [{name: worker, image: busybox}]}\n";

/// A set waiting for its Deployment when slipway is SIGKILLed resumes with the same deadline.
/// A set the API refuses fails the cluster in applying-addons with the object and the API's
/// message (status, `cluster addons`, an event); fixed and retried, it alone is applied and the
/// cluster is Ready. A set whose file changes is applied again when the definition is (the
/// config file, as slipway starts), and it alone.
#[test]
fn a_refused_add_on_fails_the_cluster_and_a_changed_set_alone_applies_again() {
    let (dir, lab, pve) = lab("k3a");
    let (web, worker) = (dir.path().join("web"), dir.path().join("worker"));
    std::fs::create_dir_all(&web).expect("web");
    std::fs::create_dir_all(&worker).expect("worker");
    std::fs::write(web.join("web.yaml"), WEB.replace("COLOR", "blue")).expect("web");
    std::fs::write(worker.join("deploy.yaml"), BROKEN).expect("worker");
    let addons = format!(
        r#"[{{ name = "web", path = "{}", namespace = "apps", create_namespace = true, wait_for = {{ kind = "Deployment", name = "web" }} }}, {{ name = "worker", path = "{}", namespace = "apps" }}]"#,
        web.display(),
        worker.display()
    );
    let groups = [r#"{ name = "server", role = "control-plane", count = 1, cores = 1, memory = "1GiB", disks = [{ size = "10GiB" }] }"#.to_owned()];
    let config = config_with(dir.path(), &pve, &groups, &addons);
    let (mut daemon, ips) = powered_on(&lab, &config, "edge", 1);
    let running = run(dir.path(), &lab, &ips, &["server-0"]);
    running.sim.with(|s| s.objects.rollouts_held = true);

    // web waits for its Deployment; slipway is killed and starts again: the same wait.
    support::eventually("web waiting for its Deployment to roll out", LIMIT, || {
        let s = status(&lab, &daemon);
        s["stage"]["stage"] == "applying-addons"
            && s["addons"][0]["state"] == "applying"
            && s["addons"][0]["detail"] == "Deployment web: 0 of 1 updated replicas available"
    });
    let waiting = status(&lab, &daemon)["addons"][0].clone();
    support::signal(&daemon.child, "KILL");
    support::wait_exit(&mut daemon.child, Duration::from_secs(10)).expect("killed");
    daemon = support::start_in(Some(&lab.ns), &config, &[]);
    let resumed = status(&lab, &daemon)["addons"][0].clone();
    assert_eq!((&resumed["state"], &resumed["deadline"]), (&waiting["state"], &waiting["deadline"]), "{resumed}");
    // Its file replaced meanwhile (gone for a moment): read again, the set still waits.
    std::fs::rename(web.join("web.yaml"), dir.path().join("web.yaml.moved")).expect("moved away");
    support::eventually("the unreadable set read again", LIMIT, || {
        let s = status(&lab, &daemon);
        assert_eq!(s["stage"]["stage"], "applying-addons", "{s}");
        s["stage"]["observed"]
            .as_str()
            .is_some_and(|o| o.starts_with("add-ons: addons[0].path: cannot be read") && o.ends_with("(read again)"))
    });
    std::fs::rename(dir.path().join("web.yaml.moved"), web.join("web.yaml")).expect("back");
    running.sim.with(|s| s.objects.rollouts_held = false);

    support::eventually("the refused add-on fails the cluster", LIMIT, || {
        status(&lab, &daemon)["stage"]["stage"] == "failed"
    });
    let s = status(&lab, &daemon);
    let refused = "Deployment apps/worker (deploy.yaml document 1): Deployment.apps \"worker\" is invalid: spec.selector: Required value";
    assert_eq!(s["stage"]["failed_in"], "applying-addons");
    assert_eq!(s["stage"]["error"], format!("add-on worker: {refused}"));
    assert_eq!(s["addons"][0]["state"], "applied");
    assert_eq!((s["addons"][1]["state"].as_str(), s["addons"][1]["detail"].as_str()), (Some("failed"), Some(refused)));
    let listed = cli(&lab, &daemon, &["cluster", "addons", "edge"]);
    assert!(
        listed.contains("worker") && listed.contains("failed") && listed.contains("spec.selector: Required value"),
        "{listed}"
    );
    let events = cli(&lab, &daemon, &["get", "events", "--type", "addon", "-o", "json"]);
    assert!(events.contains("spec.selector: Required value"), "{events}");

    // Fixed and retried: the failed set is applied, the other is not touched again.
    std::fs::write(worker.join("deploy.yaml"), WEB.replace("web", "worker").replace("COLOR", "x")).expect("fixed");
    running.sim.with(|s| s.objects.applied.clear());
    let (ok, out, err) = support::cli_in(Some(&lab.ns), &daemon, &["cluster", "retry", "edge"]);
    assert!(ok, "{out}{err}");
    support::eventually("ready", LIMIT, || status(&lab, &daemon)["stage"]["stage"] == "ready");
    let applied = running.sim.with(|s| s.objects.applied.clone());
    assert!(!applied.is_empty() && applied.iter().all(|p| p.contains("worker")), "only the failed set: {applied:?}");

    // web's file changes; the definition (the config file) is applied again as slipway starts.
    std::fs::write(web.join("web.yaml"), WEB.replace("COLOR", "green")).expect("web changed");
    running.sim.with(|s| s.objects.applied.clear());
    support::signal(&daemon.child, "TERM");
    support::wait_exit(&mut daemon.child, Duration::from_secs(10)).expect("stopped");
    daemon = support::start_in(Some(&lab.ns), &config, &[]);
    support::eventually("web applied again", LIMIT, || {
        running
            .sim
            .with(|s| s.objects.stored["/api/v1/namespaces/apps/configmaps/web-config"]["data"]["color"] == "green")
    });
    support::eventually("ready again", LIMIT, || status(&lab, &daemon)["stage"]["stage"] == "ready");
    let applied = running.sim.with(|s| s.objects.applied.clone());
    assert!(applied.iter().all(|p| !p.contains("worker")), "only the changed set: {applied:?}");
    *running.stop.lock().expect("stop") = true;
    running.sshd.stop();
}
