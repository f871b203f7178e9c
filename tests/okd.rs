//! OKD's lifecycle end to end: a cluster defined in the config file (bootstrap, three masters,
//! two workers) is made on the Proxmox stand-in, and the Kubernetes API stand-in listens on
//! every control-plane node's address in the lab namespace, behind slipway's own load balancer
//! (`api-int`). The test plays the nodes (phone-home from each node's address, kubelets filing
//! CSRs) and the cluster (the API coming up, the bootstrap ConfigMap, the etcd handoff,
//! ClusterVersion and operators); slipway follows each stage, removes the bootstrap node only
//! after etcd let go of it and only after draining it from the pools (a stream to a master
//! stays up), approves the workers' CSRs and nothing else, and reports Ready. A restart after
//! that makes no bootstrap node again. Needs root (namespaces).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::boot::{self, Lab, SERVER};
use crate::kubesim::{CsrFile, KubeSim};
use crate::pve::StandIn;
use crate::support::{self, Config};

const LIMIT: Duration = Duration::from_secs(60);

fn config(dir: &Path, pve: &StandIn) -> std::path::PathBuf {
    let group = |name: &str, role: &str, count: u32| {
        format!(
            "{{ name = \"{name}\", role = \"{role}\", count = {count}, cores = 1, memory = \"1GiB\", disks = [{{ size = \"10GiB\" }}] }}"
        )
    };
    let groups =
        [group("bootstrap", "bootstrap", 1), group("master", "control-plane", 3), group("worker", "worker", 2)];
    // An add-on, applied once the install is complete: a ConfigMap the cluster's users read.
    let motd = dir.join("motd.yaml");
    std::fs::write(&motd, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: motd}\ndata: {text: built by slipway}\n")
        .expect("add-on");
    boot::pve_cluster(dir, pve, "prod", "okd", &groups)
        .value("validation", r#"{ phases = { shutdown = "2s" } }"#)
        .value(
            "addons",
            format!(
                r#"[{{ name = "motd", path = "{}", namespace = "openshift-config" , create_namespace = true }}]"#,
                motd.display()
            ),
        )
        .section("[[lb.pools]]")
        .set("name", "api")
        .set("cluster", "prod")
        .set("members", "control-plane")
        .value("port", 6443)
        .value("check", r#"{ kind = "tcp", interval = "1s", timeout = "500ms", rise = 1 }"#)
        .section("[[lb.frontends]]")
        .set("name", "api-int")
        .set("listen", format!("{SERVER}:6443"))
        .set("pool", "api")
        .write()
}

pub fn cli(lab: &Lab, daemon: &support::Daemon, args: &[&str]) -> String {
    let (ok, out, err) = support::cli_in(Some(&lab.ns), daemon, args);
    assert!(ok, "slipway {args:?}: {err}");
    out
}

fn status(lab: &Lab, daemon: &support::Daemon) -> Value {
    cluster_status(lab, daemon, "prod")
}

/// `cluster status NAME -o json`, or null when it fails.
pub fn cluster_status(lab: &Lab, daemon: &support::Daemon, name: &str) -> Value {
    let (ok, out, _) = support::cli_in(Some(&lab.ns), daemon, &["cluster", "status", name, "-o", "json"]);
    if !ok {
        return Value::Null;
    }
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

fn stage(status: &Value) -> String {
    status["stage"]["stage"].as_str().unwrap_or("").to_owned()
}

fn condition(status: &Value, kind: &str) -> String {
    let found = status["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == kind);
    found.map(|c| c["status"].as_str().unwrap_or("").to_owned()).unwrap_or_default()
}

/// Each node's reserved address, from the admin API.
pub fn addresses(lab: &Lab, daemon: &support::Daemon) -> Vec<(String, String)> {
    let nodes: Value = serde_json::from_str(&cli(lab, daemon, &["get", "nodes", "-o", "json"])).expect("nodes JSON");
    let mut out: Vec<(String, String)> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| (n["name"].as_str().unwrap_or("").to_owned(), n["ipv4"].as_str().unwrap_or("").to_owned()))
        .collect();
    out.sort();
    out
}

pub fn phone_home(lab: &Lab, ip: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns, "curl", "-sf", "-m", "10", "--interface", ip, "-X", "POST"])
        .arg(format!("http://{SERVER}:8080/phone-home"))
        .output()
        .expect("curl");
    assert!(out.status.success(), "phone-home from {ip}: {}", String::from_utf8_lossy(&out.stderr));
}

fn events(lab: &Lab, daemon: &support::Daemon, kind: &str) -> Vec<Value> {
    let out = cli(lab, daemon, &["get", "events", "--type", kind, "-o", "json"]);
    serde_json::from_str::<Vec<Value>>(&out).expect("events JSON")
}

/// `ip -n <lab> ARGS`, which must work.
fn ip_in(lab: &Lab, args: &[&str]) {
    let out = Command::new("ip").args(["-n", &lab.ns]).args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `config` checked, the daemon started on it in the lab, and cluster `name`'s `count` VMs made
/// and powered on, their addresses on the lab's bridge; the daemon and each node's address.
pub fn powered_on(lab: &Lab, config: &Path, name: &str, count: usize) -> (support::Daemon, Vec<(String, String)>) {
    let check = Command::new(support::BIN).args(["check", "--config"]).arg(config).output().expect("slipway check");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let daemon = support::start_in(Some(&lab.ns), config, &[]);
    support::eventually("every VM made and started", LIMIT, || {
        cluster_status(lab, &daemon, name)["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == count && n.iter().all(|n| n["phase"] == "powering-on"))
    });
    let ips = addresses(lab, &daemon);
    for (_, address) in &ips {
        ip_in(lab, &["addr", "add", &format!("{address}/32"), "dev", "br0"]);
    }
    (daemon, ips)
}

/// A TLS connection to the API through `api-int`, trusting the cluster's serving CA.
struct Stream(rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>);

impl Stream {
    fn open(lab: &Lab, ca: &Path) -> Stream {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls_pki_types::CertificateDer::from_pem_file(ca).expect("ca")).expect("root");
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = "api-int.prod.lab.example".try_into().expect("name");
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("tls");
        let tcp = crate::netns::in_netns(&lab.ns, || std::net::TcpStream::connect((SERVER, 6443)).expect("connect"));
        tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut stream = Stream(rustls::StreamOwned::new(conn, tcp));
        assert_eq!(stream.readyz(), "ok");
        stream
    }

    /// `GET /readyz` on this connection.
    fn readyz(&mut self) -> String {
        use std::io::{Read, Write};
        self.0.write_all(b"GET /readyz HTTP/1.1\r\nHost: api-int.prod.lab.example\r\n\r\n").expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).ends_with("ok") {
            let n = self.0.read(&mut buf).expect("read");
            assert!(n > 0, "the stream closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        "ok".into()
    }
}

/// A lab with the Proxmox stand-in, the daemon, and the Kubernetes API stand-in on every
/// control-plane node's address, taken through the install up to `waiting-etcd-handoff`.
struct Install {
    lab: Lab,
    pve: StandIn,
    sim: KubeSim,
    daemon: support::Daemon,
    config: std::path::PathBuf,
    ips: Vec<(String, String)>,
    control: Vec<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Install {
    fn to_etcd_handoff(tag: &str) -> Install {
        let dir = tempfile::tempdir().expect("tempdir");
        let lab = Lab::bridge_only(tag);
        let pve_dir = dir.path().join("pve");
        std::fs::create_dir_all(&pve_dir).expect("pve dir");
        let pve = StandIn::start_in(&pve_dir, Some(&lab.ns));
        let config = config(dir.path(), &pve);
        let (daemon, ips) = powered_on(&lab, &config, "prod", 6);
        let ip = |name: &str| ips.iter().find(|(n, _)| n == name).map(|(_, ip)| ip.clone()).expect("node address");
        // The API on every control-plane node.
        let control: Vec<SocketAddr> = ["bootstrap-0", "master-0", "master-1", "master-2"]
            .iter()
            .map(|n| SocketAddr::new(ip(n).parse::<IpAddr>().expect("ip"), 6443))
            .collect();
        let kube_dir = dir.path().join("kube");
        std::fs::create_dir_all(&kube_dir).expect("kube dir");
        let sim = KubeSim::start_on(&kube_dir, Some(&lab.ns), &control);
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, &sim.kubeconfig).expect("kubeconfig");
        let out = cli(&lab, &daemon, &["cluster", "kubeconfig", "prod", "-f", &kubeconfig.display().to_string()]);
        assert!(out.contains("as system:admin"), "{out}");

        // The bootstrap node runs: the API is waited for.
        phone_home(&lab, &ip("bootstrap-0"));
        support::eventually("waiting for the API", LIMIT, || stage(&status(&lab, &daemon)) == "waiting-for-api");
        assert_eq!(condition(&status(&lab, &daemon), "APIReachable"), "False");
        sim.with(|s| s.api_up = true);
        support::eventually("bootstrapping", LIMIT, || stage(&status(&lab, &daemon)) == "bootstrapping");
        assert_eq!(condition(&status(&lab, &daemon), "APIReachable"), "True");
        for node in ["master-0", "master-1", "master-2", "worker-0", "worker-1"] {
            phone_home(&lab, &ip(node));
        }
        sim.with(|s| s.bootstrap_complete = true);
        support::eventually("waiting for etcd", LIMIT, || stage(&status(&lab, &daemon)) == "waiting-etcd-handoff");
        Install { lab, pve, sim, daemon, config, ips, control, _dir: dir }
    }

    fn ip(&self, name: &str) -> String {
        self.ips.iter().find(|(n, _)| n == name).map(|(_, ip)| ip.clone()).expect("node address")
    }

    fn status(&self) -> Value {
        status(&self.lab, &self.daemon)
    }

    fn stage(&self) -> String {
        stage(&self.status())
    }

    fn bootstrap_vm(&self) -> bool {
        self.pve.with(|s| s.vms.values().any(|vm| vm.config.get("name").map(String::as_str) == Some("bootstrap-0")))
    }

    /// The masters registered (approved by the bootstrap node in a real install).
    fn masters_registered(&self) {
        self.sim.with(|s| {
            for m in ["master-0", "master-1", "master-2"] {
                let node = serde_json::json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": m },
                    "status": { "conditions": [{ "type": "Ready", "status": "True" }] } });
                s.nodes.insert(m.into(), node);
            }
        });
    }

    /// SIGKILL, then the same daemon started again.
    fn kill_and_restart(&mut self) {
        support::signal(&self.daemon.child, "KILL");
        support::wait_exit(&mut self.daemon.child, Duration::from_secs(10)).expect("killed");
        self.daemon = support::start_in(Some(&self.lab.ns), &self.config, &[]);
    }
}

#[test]
fn an_okd_install_is_followed_from_bootstrap_to_ready() {
    let mut install = Install::to_etcd_handoff("okd");
    let (lab, sim) = (&install.lab, &install.sim);
    std::thread::sleep(Duration::from_secs(3));
    assert!(install.bootstrap_vm(), "the bootstrap VM stays until etcd lets go of it");
    assert_eq!(install.stage(), "waiting-etcd-handoff");

    // Scripts wait for what they need.
    let out = cli(lab, &install.daemon, &["cluster", "wait", "prod", "--for", "BootstrapComplete", "--timeout", "10s"]);
    assert_eq!(out.trim(), "cluster prod: BootstrapComplete");
    let (ok, _, err) = support::cli_in(Some(&lab.ns), &install.daemon, &["cluster", "wait", "prod", "--for", "done"]);
    assert!(!ok && err.contains("--for done: not a stage") && err.contains("APIReachable"), "{err}");
    let (ok, _, err) = support::cli_in(
        Some(&lab.ns),
        &install.daemon,
        &["cluster", "wait", "prod", "--for", "ready", "--timeout", "1s"],
    );
    assert!(!ok && err.contains("ready not reached within 1s; now waiting-etcd-handoff"), "{err}");

    // Removing the bootstrap by hand before etcd let go of it is refused.
    let (ok, _, err) = support::cli_in(Some(&lab.ns), &install.daemon, &["cluster", "bootstrap", "remove", "prod"]);
    assert!(!ok && err.contains("EtcdBootstrapMemberRemoved is not True") && err.contains("--force"), "{err}");

    // A stream through api-int to a master (round robin: at most one per backend to find it).
    let masters: Vec<IpAddr> = install.control[1..].iter().map(SocketAddr::ip).collect();
    let mut stream = None;
    for _ in 0..8 {
        let s = Stream::open(lab, &sim.ca);
        let reached = sim.with(|st| st.connections.last().copied()).expect("a connection");
        if masters.contains(&reached.ip()) {
            stream = Some(s);
            break;
        }
    }
    let mut stream = stream.expect("a stream to a master");

    sim.with(|s| s.etcd_bootstrap_removed = true);
    support::eventually("the bootstrap node removed", LIMIT, || install.stage() == "joining-workers");
    assert!(!install.bootstrap_vm(), "the bootstrap VM is deleted");
    let phases = events(lab, &install.daemon, "node_phase");
    let draining = phases.iter().position(|e| e["node"] == "bootstrap-0" && e["details"]["phase"] == "draining");
    let deleted = events(lab, &install.daemon, "vm_deleted");
    assert!(draining.is_some(), "drained first: {phases:?}");
    assert_eq!(deleted.len(), 1, "one VM deleted, once: {deleted:?}");
    let lb: Value = serde_json::from_str(&cli(lab, &install.daemon, &["get", "lb", "-o", "json"])).expect("lb JSON");
    // Out of the pool: gone, or draining the connections it still had.
    let backends = lb["pools"][0]["backends"].as_array().cloned().unwrap_or_default();
    let bootstrap = format!("{}:6443", install.ip("bootstrap-0"));
    assert!(backends.iter().filter(|b| b["address"] == bootstrap.as_str()).all(|b| b["state"] == "draining"), "{lb}");
    assert_eq!(stream.readyz(), "ok", "the stream to a master stays up across the removal");
    assert_eq!(condition(&install.status(), "BootstrapRemoved"), "True");

    // The masters were approved by the bootstrap node; the workers' kubelets wait for slipway.
    install.masters_registered();
    let intruder = sim.file(&CsrFile::client("intruder"));
    let clients = [sim.kubelet("worker-0", &install.ip("worker-0")), sim.kubelet("worker-1", &install.ip("worker-1"))];
    support::eventually("the workers joined", LIMIT, || install.stage() == "finalizing");
    let approvals = sim.with(|s| s.approvals.clone());
    assert_eq!(approvals.len(), 4, "two client and two serving CSRs, each once: {approvals:?}");
    assert!(approvals.iter().all(|(_, reason)| reason == "SlipwayApprove"));
    assert!(clients.iter().all(|c| approvals.iter().any(|(a, _)| a == c)));
    assert!(!approvals.iter().any(|(a, _)| *a == intruder), "the intruder's CSR stays pending");
    let left = events(lab, &install.daemon, "csr_left");
    assert!(left.iter().any(|e| e["details"]["csr"] == intruder.as_str()), "{left:?}");
    let listed = cli(lab, &install.daemon, &["cluster", "csr", "list", "prod"]);
    let row = listed.lines().find(|l| l.starts_with(&intruder)).unwrap_or_default().to_owned();
    assert!(row.contains("pending") && row.contains("leave: intruder is not a machine of this cluster"), "{listed}");
    // The operator decides otherwise.
    cli(lab, &install.daemon, &["cluster", "csr", "approve", "prod", &intruder]);
    assert!(sim.with(|s| s.approvals.contains(&(intruder.clone(), "OperatorApprove".to_owned()))));
    let approved = events(lab, &install.daemon, "csr_approved");
    assert!(
        approved.iter().any(|e| e["details"]["csr"] == intruder.as_str() && e["details"]["approver"] == "operator")
    );

    // The install settles: one operator Degraded first.
    sim.with(|s| {
        s.version = (true, false, false, String::new());
        s.operators.insert("dns".into(), (true, false, false));
        s.operators.insert("ingress".into(), (true, false, true));
    });
    support::eventually("the degraded operator named", LIMIT, || {
        install.status()["stage"]["observed"].as_str().is_some_and(|o| o.contains("Degraded: ingress"))
    });
    sim.with(|s| s.operators.insert("ingress".into(), (true, false, false)));
    let out = cli(lab, &install.daemon, &["cluster", "wait", "prod", "--for", "ready", "--timeout", "2m"]);
    assert_eq!(out.trim(), "cluster prod: ready");
    let done = install.status();
    assert_eq!(done["phase"], "ready");
    for kind in
        ["APIReachable", "BootstrapComplete", "BootstrapRemoved", "NodesJoined", "ClusterAvailable", "Addon/motd"]
    {
        assert_eq!(condition(&done, kind), "True", "{kind}: {done}");
    }
    // The add-on went in through api-int, with the installer's kubeconfig, before Ready.
    let motd = sim.with(|s| s.objects.stored.get("/api/v1/namespaces/openshift-config/configmaps/motd").cloned());
    assert_eq!(motd.expect("the add-on's ConfigMap")["data"]["text"], "built by slipway");
    let events = cli(lab, &install.daemon, &["get", "events", "--type", "cluster_stage", "-o", "json"]);
    let moves: Vec<(String, String)> = serde_json::from_str::<Vec<Value>>(&events)
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["details"]["from"].as_str().unwrap_or_default().into(),
                e["details"]["stage"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    let last = &moves[moves.len() - 2..];
    assert_eq!(last, [("finalizing".into(), "applying-addons".into()), ("applying-addons".into(), "ready".into())]);

    // The file still says one bootstrap node: a restart does not make it again.
    install.kill_and_restart();
    std::thread::sleep(Duration::from_secs(5));
    let after = install.status();
    assert_eq!(stage(&after), "ready");
    assert_eq!(after["nodes"].as_array().map(Vec::len), Some(5), "{after}");
    assert!(!install.bootstrap_vm());
}

/// SIGKILL while the bootstrap node shuts down (drained, not yet deleted) and right after the
/// first CSR approval: the restarted daemon deletes the VM once and approves each CSR once.
#[test]
fn a_kill_during_the_bootstrap_removal_and_the_approvals_converges() {
    let mut install = Install::to_etcd_handoff("okdk");
    // A shutdown that takes a while: the kill lands between the drain and the delete.
    install.pve.with(|s| s.faults.slow_tasks.insert("qmshutdown".into(), Duration::from_secs(8)));
    install.sim.with(|s| s.etcd_bootstrap_removed = true);
    support::eventually("shutting the bootstrap node down", LIMIT, || {
        install.status()["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["name"] == "bootstrap-0" && n["phase"] == "shutting-down")
    });
    install.kill_and_restart();
    support::eventually("the bootstrap node removed", LIMIT, || install.stage() == "joining-workers");
    assert!(!install.bootstrap_vm());
    let destroys = install.pve.with(|s| s.requests.iter().filter(|r| r.starts_with("DELETE /nodes/")).count());
    assert_eq!(destroys, 1, "one delete of the bootstrap VM");

    install.masters_registered();
    install.sim.kubelet("worker-0", &install.ip("worker-0"));
    support::eventually("the first approval", LIMIT, || !install.sim.with(|s| s.approvals.is_empty()));
    install.kill_and_restart();
    install.sim.kubelet("worker-1", &install.ip("worker-1"));
    support::eventually("the workers joined", LIMIT, || install.stage() == "finalizing");
    let approvals = install.sim.with(|s| s.approvals.clone());
    let mut names: Vec<&String> = approvals.iter().map(|(n, _)| n).collect();
    names.sort();
    names.dedup();
    assert_eq!((approvals.len(), names.len()), (4, 4), "each CSR approved once: {approvals:?}");
}

/// New nodes fetch the uploaded Ignition of their role. A bootstrap.ign dated 25 h ago by its
/// one-day certificates (the installer's kubelet-signer) refuses a plan or apply that adds a
/// bootstrap node, naming the file and its age; 21 h ago is a warning; `status` shows when the
/// certificates expire. A worker pointer config (no short-lived certificate) stays usable.
#[test]
fn a_stale_ignition_upload_refuses_new_nodes_with_its_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::new(dir.path())
        .network("cluster", "lab0", "10.2.0.0/16")
        .set("gateway", "10.2.0.1")
        .set("domain", "lab.example")
        .value("static_range", r#"{ start = "10.2.0.10", end = "10.2.0.99" }"#)
        .write();
    let daemon = support::start(&config, &[]);
    let definition = |bootstrap: &str, workers: &[&str]| {
        let mut nodes = vec![
            format!(r#"{{ name: {bootstrap}, role: bootstrap, mac: "52:54:00:bb:00:01" }}"#),
            r#"{ name: master-0, role: control-plane, mac: "52:54:00:bb:00:02" }"#.to_owned(),
        ];
        for (i, w) in workers.iter().enumerate() {
            nodes.push(format!(r#"{{ name: {w}, role: worker, mac: "52:54:00:bb:01:0{i}" }}"#));
        }
        let text = format!(
            "name: prod\nkind: okd\nbase_domain: lab.example\nnetwork: cluster\napi_address: 10.2.0.1\napi_int_address: 10.2.0.1\ningress_address: 10.2.0.1\nnodes: [{}]\n",
            nodes.join(", ")
        );
        let file = dir.path().join("prod.yaml");
        std::fs::write(&file, text).expect("definition");
        file.display().to_string()
    };
    let (ok, _, err) = support::cli(&daemon, &["cluster", "apply", "-f", &definition("bootstrap-0", &[])]);
    assert!(ok, "{err}");
    // bootstrap.ign with a one-day signer made now, as the installer writes it.
    let ca = crate::pki::ca(dir.path(), "kubelet-signer", "/OU=openshift/CN=kubelet-signer");
    let pem = std::fs::read(&ca.0).expect("pem");
    use base64::Engine as _;
    let source =
        format!("data:text/plain;charset=utf-8;base64,{}", base64::engine::general_purpose::STANDARD.encode(pem));
    let bootstrap = serde_json::json!({ "ignition": { "version": "3.2.0" }, "storage": { "files": [
        { "path": "/opt/openshift/tls/kubelet-signer.crt", "mode": 420, "contents": { "source": source } }] } });
    assert_eq!(upload(&daemon, "bootstrap", &bootstrap.to_string()).0, 200);
    let pointer = r#"{"ignition":{"version":"3.2.0","config":{"merge":[{"source":"https://api-int.prod.lab.example:22623/config/worker"}]}}}"#;
    assert_eq!(upload(&daemon, "worker", pointer).0, 200);
    let stored = |role: &str| dir.path().join(format!("state/ignition/prod/{role}.ign"));
    let date = |role: &str, hours: u64| {
        let at = std::time::SystemTime::now() - Duration::from_secs(hours * 3600);
        std::fs::File::options().write(true).open(stored(role)).expect("stored").set_modified(at).expect("mtime");
    };
    date("worker", 400);

    date("bootstrap", 21);
    let (ok, out, err) = support::cli(&daemon, &["cluster", "plan", "-f", &definition("bootstrap-1", &["worker-0"])]);
    assert!(ok, "{err}");
    assert!(out.contains("ignition/bootstrap.ign was made 21 h ago: its certificates expire in"), "{out}");
    assert!(!out.contains("worker.ign"), "a pointer config has no short-lived certificate: {out}");

    date("bootstrap", 25);
    let (ok, _, err) = support::cli(&daemon, &["cluster", "apply", "-f", &definition("bootstrap-1", &[])]);
    assert!(!ok, "refused");
    assert!(err.contains("ignition/bootstrap.ign = made 25 h ago") && err.contains("create ignition-configs"), "{err}");
    let (_, shown, _) = support::cli(&daemon, &["cluster", "status", "prod"]);
    assert!(shown.contains("ignition: bootstrap made 1day 1h ago (certificates expired)"), "{shown}");
    let (ok, _, err) = support::cli(&daemon, &["cluster", "apply", "-f", &definition("bootstrap-0", &["worker-0"])]);
    assert!(ok, "no new bootstrap node, nothing fetches it; a new worker is fine: {err}");
    daemon.stop(Duration::from_secs(10));
}

/// `PUT /api/v1/clusters/prod/ignition/{role}`: (status, body).
fn upload(daemon: &support::Daemon, role: &str, body: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let response = support::http()
            .put(daemon.url(&format!("/api/v1/clusters/prod/ignition/{role}")))
            .bearer_auth(support::TOKEN)
            .body(body.to_owned())
            .send()
            .await
            .expect("upload");
        (response.status().as_u16(), response.text().await.unwrap_or_default())
    })
}
