//! slipway's Kubernetes client against the Kubernetes API stand-in (tests/kubesim), and the
//! stand-in against the real `kubectl`: what kubectl lists and approves, slipway reads and
//! approves the same way, so both speak the API's real format.

use std::process::Command;

use serde_json::Value;
use slipway::kube::objects::{self, ConfigMap, Csr, List, Version};
use slipway::kube::{Kube, KubeError, Kubeconfig};

use crate::kubesim::{self, CsrFile, KubeSim};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// slipway's view: the installer's kubeconfig, the API reached through `api-int`.
fn client(sim: &KubeSim, config: &Kubeconfig) -> Kube {
    let base = format!("https://api-int.{}:{}", kubesim::ZONE, sim.addr.port());
    Kube::new(config, &base, Some(sim.addr)).expect("client")
}

fn kubectl(sim: &KubeSim, cache: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&sim.kubectl_config)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--request-timeout=20s")
        .args(args)
        .output()
        .expect("kubectl (scripts/test installs it: Debian's kubernetes-client)");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_client_reads_the_api_over_mutual_tls_with_the_installers_kubeconfig() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = KubeSim::start(dir.path());
    let config = slipway::kube::config::parse(sim.kubeconfig.as_bytes()).expect("the installer's kubeconfig");
    assert_eq!(config.server, format!("https://api.{}:6443", kubesim::ZONE));
    let kube = client(&sim, &config);
    let rt = runtime();

    let err = rt.block_on(kube.get::<Version>("/version")).expect_err("the API is not up");
    assert!(matches!(err, KubeError::Unreachable { tls: false, .. }), "{err}");
    sim.with(|s| s.api_up = true);
    assert_eq!(rt.block_on(kube.get::<Version>("/version")).expect("version").git_version, "v1.32.5");

    let path = "/api/v1/namespaces/kube-system/configmaps/bootstrap";
    assert!(rt.block_on(kube.get_opt::<ConfigMap>(path)).expect("read").is_none(), "404 is 'not yet'");
    sim.with(|s| s.bootstrap_complete = true);
    let found = rt.block_on(kube.get_opt::<ConfigMap>(path)).expect("read").expect("there");
    assert_eq!(found.data.get("status").map(String::as_str), Some("complete"));

    let err = rt.block_on(kube.get::<Value>("/apis/config.openshift.io/v1/clusterversions/other")).expect_err("404");
    assert_eq!(err.to_string(), "404 NotFound: clusterversions.config.openshift.io \"other\" not found");

    // The name connected to is what the server's certificate must name.
    let wrong =
        Kube::new(&config, &format!("https://wrong.example:{}", sim.addr.port()), Some(sim.addr)).expect("client");
    let err = rt.block_on(wrong.get::<Version>("/version")).expect_err("wrong name");
    assert!(matches!(err, KubeError::Unreachable { tls: true, .. }), "{err}");
}

#[test]
fn a_client_certificate_the_api_does_not_know_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = KubeSim::start(dir.path());
    sim.with(|s| s.api_up = true);
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = KubeSim::start(other_dir.path());
    // This cluster's CA, the other cluster's admin certificate.
    let mut config = slipway::kube::config::parse(sim.kubeconfig.as_bytes()).expect("parse");
    let theirs = slipway::kube::config::parse(other.kubeconfig.as_bytes()).expect("parse");
    (config.cert, config.key) = (theirs.cert, theirs.key);
    let err = runtime().block_on(client(&sim, &config).get::<Version>("/version")).expect_err("refused");
    assert!(matches!(err, KubeError::Unreachable { tls: true, .. }), "{err}");
}

/// The real kubectl lists and approves a kubelet's client CSR on the stand-in; slipway's client
/// reads the same objects, approves the serving CSR that follows, and a stale copy gets 409.
#[test]
fn kubectl_and_slipway_read_and_approve_csrs_the_same_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("kube-cache");
    let sim = KubeSim::start(dir.path());
    sim.with(|s| s.api_up = true);
    let client_csr = sim.kubelet("worker-0", "10.1.107.21");

    let listed: Value = serde_json::from_str(&kubectl(&sim, &cache, &["get", "csr", "-o", "json"])).expect("json");
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["metadata"]["name"], client_csr.as_str());
    let parsed: Csr = serde_json::from_value(items[0].clone()).expect("slipway reads what kubectl printed");
    assert!(parsed.pending() && parsed.spec.signer_name == kubesim::CLIENT_SIGNER);

    kubectl(&sim, &cache, &["certificate", "approve", &client_csr]);
    assert_eq!(sim.with(|s| s.approvals.clone()), [(client_csr.clone(), "KubectlApprove".to_owned())]);
    let nodes: Value = serde_json::from_str(&kubectl(&sim, &cache, &["get", "nodes", "-o", "json"])).expect("json");
    assert_eq!(nodes["items"][0]["metadata"]["name"], "worker-0");

    let config = slipway::kube::config::parse(sim.kubeconfig.as_bytes()).expect("parse");
    let kube = client(&sim, &config);
    let rt = runtime();
    let path = format!(
        "/apis/certificates.k8s.io/v1/certificatesigningrequests?fieldSelector=spec.signerName%3D{}",
        kubesim::SERVING_SIGNER
    );
    let serving: List<Value> = rt.block_on(kube.get(&path)).expect("list");
    assert_eq!(serving.items.len(), 1, "only the serving CSR");
    let csr = &serving.items[0];
    let name = csr["metadata"]["name"].as_str().expect("name").to_owned();

    sim.with(|s| s.conflicts = 1);
    let body = objects::approved(csr, "SlipwayApprove", "node worker-0", "2026-12-05T03:00:00Z");
    let err = rt.block_on(kube.put::<Value>(&objects::approval_path(&name), &body)).expect_err("changed meanwhile");
    assert!(err.is_conflict(), "{err}");
    let fresh: Value =
        rt.block_on(kube.get(&format!("/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}"))).expect("get");
    let body = objects::approved(&fresh, "SlipwayApprove", "node worker-0", "2026-12-05T03:00:00Z");
    let done: Csr = rt.block_on(kube.put(&objects::approval_path(&name), &body)).expect("approve");
    assert!(!done.pending());

    let listed: Value = serde_json::from_str(&kubectl(&sim, &cache, &["get", "csr", "-o", "json"])).expect("json");
    let approved = |item: &Value| {
        item["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Approved"))
    };
    assert!(listed["items"].as_array().expect("items").iter().all(approved), "kubectl sees both approved: {listed}");
}

/// The approval decision on CSRs as the API serves them (PKCS#10 from openssl, base64 in
/// `spec.request`): a kubelet's own CSRs pass; each hostile one stays pending with its reason.
#[test]
fn hostile_csrs_read_from_the_api_are_left_pending_and_the_kubelets_own_approved() {
    use slipway::cluster::okd::csr::{Machine, Verdict, decide};
    use std::time::{Duration, SystemTime};
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = KubeSim::start(dir.path());
    sim.with(|s| s.api_up = true);
    let started = SystemTime::now() - Duration::from_secs(600);
    let good = sim.kubelet("worker-0", "10.1.107.21");
    let mut hostile = vec![
        ("unknown host", sim.file(&CsrFile::client("intruder"))),
        ("extra IP SAN", sim.file(&CsrFile::serving("worker-0", &["worker-0"], &["10.1.107.21", "10.9.9.9"]))),
        (
            "wrong requester",
            sim.file(&CsrFile { username: "system:serviceaccount:default:x".into(), ..CsrFile::client("worker-0") }),
        ),
        (
            "wrong signer",
            sim.file(&CsrFile { signer: "kubernetes.io/kube-apiserver-client".into(), ..CsrFile::client("worker-0") }),
        ),
        (
            "older than the VM",
            sim.file(&CsrFile { created: Some(started - Duration::from_secs(3600)), ..CsrFile::client("worker-0") }),
        ),
        ("another cluster's node", sim.file(&CsrFile::client("master-0"))),
    ];
    // A node that has registered: a new client CSR for it is a renewal, not slipway's.
    sim.with(|s| s.nodes.insert("worker-1".into(), serde_json::json!({ "metadata": { "name": "worker-1" } })));
    hostile.push(("existing Node", sim.file(&CsrFile::client("worker-1"))));

    let config = slipway::kube::config::parse(sim.kubeconfig.as_bytes()).expect("parse");
    let kube = client(&sim, &config);
    let rt = runtime();
    let machine = |name: &str, ip: &str| Machine {
        name: name.into(),
        names: vec![name.into(), format!("{name}.{}", kubesim::ZONE)],
        ips: vec![ip.parse().expect("ip")],
        started: Some(slipway::inventory::Timestamp(started)),
    };
    let machines = [machine("worker-0", "10.1.107.21"), machine("worker-1", "10.1.107.22")];
    let nodes: std::collections::BTreeSet<String> = sim.with(|s| s.nodes.keys().cloned().collect());
    let all: List<Csr> =
        rt.block_on(kube.get("/apis/certificates.k8s.io/v1/certificatesigningrequests")).expect("list");
    for csr in &all.items {
        let verdict = decide(csr, &machines, &nodes, kubesim::ZONE);
        let name = &csr.metadata.name;
        if *name == good {
            assert!(matches!(verdict, Verdict::Approve { ref node, .. } if node == "worker-0"), "{verdict:?}");
        } else {
            let case = hostile.iter().find(|(_, n)| n == name).map(|(case, _)| *case).expect("a filed CSR");
            assert!(matches!(verdict, Verdict::Leave(_)), "{case}: {verdict:?}");
        }
    }
    assert_eq!(all.items.len(), hostile.len() + 1);
}
