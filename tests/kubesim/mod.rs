//! A Kubernetes API stand-in for an OKD cluster, on 127.0.0.1 over mutual TLS: the endpoints
//! `openshift-install wait-for` and the machine-approver read (version, the bootstrap ConfigMap,
//! etcd's operator conditions, CSRs and their approval, nodes, ClusterVersion, ClusterOperators)
//! with the objects' real shapes, Kubernetes `Status` errors, an increasing `resourceVersion`,
//! field selectors, and the legacy discovery documents `kubectl` reads first. Its certificates
//! are made as the installer makes them: a serving CA for the API's names, and an admin client
//! certificate (`CN=system:admin, O=system:masters`, an RSA PKCS#1 key) from another CA, written
//! into a kubeconfig of the installer's shape.
//!
//! Tests script the install by changing [`State`] (the API coming up, the ConfigMap, the etcd
//! condition, ClusterVersion and operators) and boot kubelets ([`KubeSim::kubelet`]) that file
//! a client CSR, and once it is approved register their Node and file a serving CSR.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};

mod objects;
mod proto;

use crate::pki;

/// The cluster's zone; the API's certificate names `api.` and `api-int.` of it.
pub const ZONE: &str = "prod.lab.example";
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
pub const BOOTSTRAPPER: &str = "system:serviceaccount:openshift-machine-config-operator:node-bootstrapper";

/// What the cluster is and has; tests change it as an install would.
#[derive(Default)]
pub struct State {
    /// The API answers (before: connections are closed at once, as a load balancer without a
    /// healthy backend does).
    pub api_up: bool,
    /// `kube-system/bootstrap` exists with `status: complete`.
    pub bootstrap_complete: bool,
    /// `etcds/cluster` has `EtcdBootstrapMemberRemoved=True`.
    pub etcd_bootstrap_removed: bool,
    /// ClusterVersion `version`'s Available / Progressing / Failing, and its message.
    pub version: (bool, bool, bool, String),
    /// ClusterOperators: name -> (Available, Progressing, Degraded).
    pub operators: BTreeMap<String, (bool, bool, bool)>,
    pub csrs: BTreeMap<String, Value>,
    pub nodes: BTreeMap<String, Value>,
    /// Kubelets waiting for their client CSR: CSR name -> (node, serving CSR to file).
    kubelets: BTreeMap<String, (String, Value)>,
    /// The next N approvals find their CSR changed meanwhile (409 Conflict).
    pub conflicts: usize,
    /// Every approval that took: (CSR, reason).
    pub approvals: Vec<(String, String)>,
    /// `METHOD path?query` of every request.
    pub requests: Vec<String>,
    /// Answers as k3s does: `/cacerts` and `/ping` open, everything else 401 without a client
    /// certificate (its apiserver runs with anonymous requests off).
    pub k3s: bool,
    /// When set, only these addresses answer (k3s: the servers running k3s so far).
    pub serving: Option<std::collections::BTreeSet<std::net::IpAddr>>,
    /// The serving CA's PEM file (what `/cacerts` serves).
    pub ca_pem: Vec<u8>,
    /// The local address of every TLS connection accepted, in order (which node's API a
    /// client reached).
    pub connections: Vec<SocketAddr>,
    /// Objects applied with server-side apply, and the resources served for them.
    pub objects: objects::Objects,
    rv: u64,
}

impl State {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }
}

pub struct KubeSim {
    /// The first address listened on.
    pub addr: SocketAddr,
    /// The serving CA (what the kubeconfig trusts).
    pub ca: PathBuf,
    /// The installer's `auth/kubeconfig`: server `https://api.<zone>:6443`, the serving CA, the
    /// admin client certificate and key.
    pub kubeconfig: String,
    /// The same credentials with the server at `url` (for `kubectl`).
    pub kubectl_config: PathBuf,
    pub state: Arc<Mutex<State>>,
    dir: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl KubeSim {
    /// Listening on one port of 127.0.0.1.
    pub fn start(dir: &Path) -> KubeSim {
        KubeSim::start_on(dir, None, &["127.0.0.1:0".parse().expect("addr")])
    }

    /// Listening on each of `addrs` (each node's API), inside network namespace `ns` if given.
    pub fn start_on(dir: &Path, ns: Option<&str>, addrs: &[SocketAddr]) -> KubeSim {
        KubeSim::start_with(dir, ns, addrs, ZONE, &[], false)
    }

    /// A k3s cluster's API on each server's address (`addrs`), its certificate naming `api.`
    /// and `api-int.` of `zone`, the servers' addresses and `ips`; `kubeconfig` is k3s's own
    /// `k3s.yaml` (server `https://127.0.0.1:6443`).
    pub fn start_k3s(dir: &Path, ns: Option<&str>, addrs: &[SocketAddr], zone: &str, ips: &[&str]) -> KubeSim {
        let mut all: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        all.extend(ips.iter().map(|i| i.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut sim = KubeSim::start_with(dir, ns, addrs, zone, &all, true);
        sim.with(|s| s.objects.serve_k3s());
        sim.kubeconfig = sim.kubeconfig.replace(&format!("https://api.{zone}:6443"), "https://127.0.0.1:6443");
        sim
    }

    fn start_with(dir: &Path, ns: Option<&str>, addrs: &[SocketAddr], zone: &str, ips: &[&str], k3s: bool) -> KubeSim {
        let files = certificates(dir, zone, ips);
        let state = Arc::new(Mutex::new(State {
            version: (false, true, false, "Working towards 4.19.0-okd-scos.1".into()),
            k3s,
            ca_pem: std::fs::read(&files.serving_ca).expect("ca"),
            ..State::default()
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("stand-in runtime");
        let acceptor = acceptor(&files);
        let _entered = runtime.enter();
        let mut first = None;
        for want in addrs {
            let want = *want;
            let bind = move || {
                let listener = std::net::TcpListener::bind(want).expect("bind");
                listener.set_nonblocking(true).expect("nonblocking");
                listener
            };
            let listener = match ns {
                Some(ns) => crate::netns::in_netns(ns, bind),
                None => bind(),
            };
            first.get_or_insert(listener.local_addr().expect("addr"));
            serve(state.clone(), listener, acceptor.clone());
        }
        let addr = first.expect("an address to listen on");
        let url = format!("https://127.0.0.1:{}", addr.port());
        let kubeconfig = kubeconfig(&files, &format!("https://api.{zone}:6443"));
        let kubectl_config = dir.join("kubectl.kubeconfig");
        std::fs::write(&kubectl_config, kubeconfig.replace(&format!("https://api.{zone}:6443"), &url))
            .expect("kubeconfig");
        drop(_entered);
        KubeSim {
            addr,
            ca: files.serving_ca.clone(),
            kubeconfig,
            kubectl_config,
            state,
            dir: dir.to_owned(),
            _runtime: runtime,
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().expect("kube state"))
    }

    /// A CSR filed as `csr` says; returns its name.
    pub fn file(&self, csr: &CsrFile) -> String {
        let request = csr_pem(&self.dir, csr);
        self.with(|s| add_csr(s, csr, &request))
    }

    /// A kubelet of node `name` at `ip` starts: it files a client CSR as the node-bootstrapper;
    /// once that is approved it registers its Node (Ready) and files a serving CSR for its name
    /// and address. Returns the client CSR's name.
    pub fn kubelet(&self, name: &str, ip: &str) -> String {
        let client = CsrFile::client(name);
        let serving = CsrFile::serving(name, &[name], &[ip]);
        let (client_pem, serving_pem) = (csr_pem(&self.dir, &client), csr_pem(&self.dir, &serving));
        self.with(|s| {
            let csr = add_csr(s, &client, &client_pem);
            let later = csr_object(s, &serving, &serving_pem);
            s.kubelets.insert(csr.clone(), (name.to_owned(), later));
            csr
        })
    }
}

/// What a CSR says and who filed it.
#[derive(Clone, Debug)]
pub struct CsrFile {
    pub cn: String,
    pub orgs: Vec<String>,
    pub dns: Vec<String>,
    pub ips: Vec<String>,
    pub username: String,
    pub groups: Vec<String>,
    pub usages: Vec<String>,
    pub signer: String,
    /// `metadata.creationTimestamp`; default now.
    pub created: Option<SystemTime>,
}

impl CsrFile {
    /// A kubelet's client CSR, as the node-bootstrapper files it (an EC key: no key
    /// encipherment).
    pub fn client(node: &str) -> CsrFile {
        CsrFile {
            cn: format!("system:node:{node}"),
            orgs: vec!["system:nodes".into()],
            dns: Vec::new(),
            ips: Vec::new(),
            username: BOOTSTRAPPER.into(),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:openshift-machine-config-operator".into(),
                "system:authenticated".into(),
            ],
            usages: vec!["digital signature".into(), "client auth".into()],
            signer: CLIENT_SIGNER.into(),
            created: None,
        }
    }

    /// A kubelet's serving CSR, filed as the node itself.
    pub fn serving(node: &str, dns: &[&str], ips: &[&str]) -> CsrFile {
        CsrFile {
            cn: format!("system:node:{node}"),
            orgs: vec!["system:nodes".into()],
            dns: dns.iter().map(|d| d.to_string()).collect(),
            ips: ips.iter().map(|i| i.to_string()).collect(),
            username: format!("system:node:{node}"),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
            usages: vec!["digital signature".into(), "server auth".into()],
            signer: SERVING_SIGNER.into(),
            created: None,
        }
    }
}

fn add_csr(s: &mut State, csr: &CsrFile, request: &str) -> String {
    let object = csr_object(s, csr, request);
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    s.csrs.insert(name.clone(), object);
    name
}

fn csr_object(s: &mut State, csr: &CsrFile, request: &str) -> Value {
    let rv = s.next_rv();
    let name = format!("csr-{:05x}", s.rv * 7919 % 0xfffff);
    let created = humantime::format_rfc3339_seconds(csr.created.unwrap_or_else(SystemTime::now)).to_string();
    json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": { "name": name, "generateName": "csr-", "uid": format!("6b1c0d1e-0000-4000-8000-{:012}", s.rv),
            "resourceVersion": rv, "creationTimestamp": created },
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request),
            "signerName": csr.signer, "usages": csr.usages, "username": csr.username, "groups": csr.groups,
            "uid": format!("a0c4{:04}", s.rv),
        },
        "status": {},
    })
}

/// The files of the stand-in's PKI.
struct Files {
    serving_ca: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    client_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn certificates(dir: &Path, zone: &str, ips: &[&str]) -> Files {
    let serving_ca = pki::ca(dir, "kube-apiserver-lb-signer", "/OU=openshift/CN=kube-apiserver-lb-signer");
    let extra: String = ips.iter().map(|ip| format!(",IP:{ip}")).collect();
    let names =
        format!("subjectAltName=DNS:api.{zone},DNS:api-int.{zone},IP:127.0.0.1{extra}\nextendedKeyUsage=serverAuth\n");
    let subject = format!("/CN=api-int.{zone}");
    let serving = pki::issue(dir, "kube-apiserver", &subject, &names, &pki::EC_KEY, &serving_ca);
    let client_ca = pki::ca(dir, "admin-kubeconfig-signer", "/OU=openshift/CN=admin-kubeconfig-signer");
    // The installer's admin key is RSA in PKCS#1 ("BEGIN RSA PRIVATE KEY").
    let admin = "/O=system:masters/CN=system:admin";
    let client = pki::issue(dir, "admin", admin, "extendedKeyUsage=clientAuth\n", &pki::RSA_PKCS1_KEY, &client_ca);
    Files {
        serving_ca: serving_ca.0,
        serving_cert: serving.0,
        serving_key: serving.1,
        client_ca: client_ca.0,
        client_cert: client.0,
        client_key: client.1,
    }
}

/// A kubeconfig of the installer's shape for `server`.
fn kubeconfig(files: &Files, server: &str) -> String {
    let b64 = |p: &Path| base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).expect("pem"));
    format!(
        "clusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: prod\ncontexts:\n- context:\n    cluster: prod\n    user: admin\n  name: admin\ncurrent-context: admin\npreferences: {{}}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&files.serving_ca),
        b64(&files.client_cert),
        b64(&files.client_key)
    )
}

/// A PKCS#10 request (PEM) saying what `csr` says, on a new EC key.
fn csr_pem(dir: &Path, csr: &CsrFile) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (key, out) = (dir.join(format!("kubelet-{n}.key")), dir.join(format!("kubelet-{n}.csr")));
    let mut subject: String = csr.orgs.iter().map(|o| format!("/O={o}")).collect();
    subject.push_str(&format!("/CN={}", csr.cn));
    let sans: Vec<String> =
        csr.dns.iter().map(|d| format!("DNS:{d}")).chain(csr.ips.iter().map(|i| format!("IP:{i}"))).collect();
    let mut args = vec![
        "req".to_owned(),
        "-new".into(),
        "-newkey".into(),
        "ec".into(),
        "-pkeyopt".into(),
        "ec_paramgen_curve:prime256v1".into(),
        "-nodes".into(),
        "-subj".into(),
        subject,
        "-keyout".into(),
        s(&key),
        "-out".into(),
        s(&out),
    ];
    if !sans.is_empty() {
        args.extend(["-addext".into(), format!("subjectAltName={}", sans.join(","))]);
    }
    pki::openssl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::read_to_string(out).expect("csr")
}

fn acceptor(files: &Files) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&files.client_ca).expect("client CA")).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .expect("client verifier");
    let chain = CertificateDer::pem_file_iter(&files.serving_cert).expect("cert").map(|c| c.expect("cert")).collect();
    let key = PrivateKeyDer::from_pem_file(&files.serving_key).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Who a connection authenticated as: the admin (a client certificate from the admin CA) or
/// nobody.
#[derive(Clone, Copy)]
struct Admin(bool);

fn serve(state: Arc<Mutex<State>>, listener: std::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("register the listener");
    let app = router(state.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let answering = {
                let s = state.lock().expect("state");
                let here = tcp.local_addr().map(|a| a.ip()).ok();
                s.api_up && s.serving.as_ref().is_none_or(|up| here.is_some_and(|ip| up.contains(&ip)))
            };
            if !answering {
                drop(tcp);
                continue;
            }
            let (acceptor, app, state) = (acceptor.clone(), app.clone(), state.clone());
            tokio::spawn(async move {
                let local = tcp.local_addr().ok();
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                if let Some(local) = local {
                    state.lock().expect("state").connections.push(local);
                }
                let admin = Admin(tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()));
                let app = app.layer(axum::Extension(admin));
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
}

type Shared = Arc<Mutex<State>>;

fn router(state: Shared) -> Router {
    const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    Router::new()
        .route("/version", get(version))
        .route("/readyz", get(|| async { "ok" }))
        .route("/ping", get(|| async { "pong" }))
        .route("/cacerts", get(cacerts))
        .route(
            "/api",
            get(|| async {
                Json(json!({ "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "192.0.2.10:6443" }] }))
            }),
        )
        .route("/apis", get(groups))
        .route("/api/v1", get(|AxState(state): AxState<Shared>| async move { served(&state, "v1") }))
        .route(
            "/apis/{group}/{version}",
            get(|AxState(state): AxState<Shared>, UrlPath((g, v)): UrlPath<(String, String)>| async move {
                served(&state, &format!("{g}/{v}"))
            }),
        )
        .route(
            "/apis/certificates.k8s.io/v1",
            get(|| async {
                resources(
                    "certificates.k8s.io/v1",
                    &[
                        ("certificatesigningrequests", "CertificateSigningRequest", false),
                        ("certificatesigningrequests/approval", "CertificateSigningRequest", false),
                    ],
                )
            }),
        )
        .route(
            "/apis/config.openshift.io/v1",
            get(|| async {
                resources(
                    "config.openshift.io/v1",
                    &[("clusterversions", "ClusterVersion", false), ("clusteroperators", "ClusterOperator", false)],
                )
            }),
        )
        .route(
            "/apis/operator.openshift.io/v1",
            get(|| async { resources("operator.openshift.io/v1", &[("etcds", "Etcd", false)]) }),
        )
        .route("/api/v1/namespaces/{ns}/configmaps/{name}", get(configmap).patch(stored))
        .route("/apis/operator.openshift.io/v1/etcds/{name}", get(etcd))
        .route(CSRS, get(csr_list))
        .route(&format!("{CSRS}/{{name}}"), get(csr_get))
        .route(&format!("{CSRS}/{{name}}/approval"), axum::routing::put(approve))
        .route("/api/v1/nodes", get(node_list))
        .route("/api/v1/nodes/{name}", get(node_get).delete(node_delete))
        .route("/apis/config.openshift.io/v1/clusterversions/{name}", get(cluster_version))
        .route("/apis/config.openshift.io/v1/clusteroperators", get(operators))
        .fallback(stored)
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

struct Json(Value);

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        ([("content-type", "application/json")], self.0.to_string()).into_response()
    }
}

/// A Kubernetes `Status` error.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": {}, "code": code.as_u16() });
    (code, Json(body)).into_response()
}

fn not_found(resource: &str, name: &str) -> Response {
    status(StatusCode::NOT_FOUND, "NotFound", &format!("{resource} \"{name}\" not found"))
}

/// Records the request; refuses anyone without the admin's client certificate, as OKD's
/// apiserver refuses `system:anonymous`.
async fn authenticate(
    AxState(state): AxState<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = format!("{} {}", request.method(), request.uri());
    {
        let mut s = state.lock().expect("state");
        s.requests.push(line);
        s.objects.settle();
    }
    let admin = request.extensions().get::<Admin>().is_some_and(|a| a.0);
    let k3s = state.lock().expect("state").k3s;
    let path = request.uri().path();
    if !admin && k3s && path != "/cacerts" && path != "/ping" {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    // Health probes are public, as kube-apiserver's are.
    if !admin && !k3s && request.uri().path() != "/readyz" {
        let path = request.uri().path().to_owned();
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("forbidden: User \"system:anonymous\" cannot get path \"{path}\""),
        );
    }
    next.run(request).await
}

/// k3s's `/cacerts`: the CA bundle file as it is on disk.
async fn cacerts(AxState(state): AxState<Shared>) -> Response {
    let ca = state.lock().expect("state").ca_pem.clone();
    ([("content-type", "text/plain")], ca).into_response()
}

async fn version() -> Json {
    Json(json!({ "major": "1", "minor": "32", "gitVersion": "v1.32.5", "gitCommit": "0000000", "gitTreeState": "clean",
        "buildDate": "2025-06-01T00:00:00Z", "goVersion": "go1.23.9", "compiler": "gc", "platform": "linux/amd64" }))
}

async fn groups(AxState(state): AxState<Shared>) -> Json {
    let mut versions = state.lock().expect("state").objects.group_versions();
    versions.extend(["certificates.k8s.io/v1", "config.openshift.io/v1", "operator.openshift.io/v1"].map(String::from));
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for gv in versions {
        if let Some((g, v)) = gv.split_once('/') {
            by_group.entry(g.to_owned()).or_default().push(v.to_owned());
        }
    }
    let groups: Vec<Value> = by_group
        .into_iter()
        .map(|(name, versions)| {
            let list: Vec<Value> =
                versions.iter().map(|v| json!({ "groupVersion": format!("{name}/{v}"), "version": v })).collect();
            json!({ "name": name, "versions": list.clone(), "preferredVersion": list[0] })
        })
        .collect();
    Json(json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups }))
}

/// The discovery document of a group version the object store serves.
fn served(state: &Shared, group_version: &str) -> Response {
    match state.lock().expect("state").objects.discovery(group_version) {
        Some(list) => {
            let list: Vec<(&str, &str, bool)> = list.iter().map(|(p, k, n)| (p.as_str(), k.as_str(), *n)).collect();
            resources(group_version, &list).into_response()
        }
        None => status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource"),
    }
}

/// Server-side apply (`PATCH`) and reads (`GET`) of stored objects; anything else is a
/// resource the stand-in does not serve.
async fn stored(AxState(state): AxState<Shared>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let unknown = || status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource");
    match parts.method {
        axum::http::Method::PATCH => {
            let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let query: BTreeMap<String, String> =
                serde_urlencoded::from_str(parts.uri.query().unwrap_or("")).unwrap_or_default();
            let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else { return unknown() };
            let applied = state.lock().expect("state").objects.apply(&path, &content_type, &query, &bytes);
            match applied {
                Ok((created, object)) => {
                    let code = if created { StatusCode::CREATED } else { StatusCode::OK };
                    (code, Json(object)).into_response()
                }
                Err((code, reason, message)) => {
                    status(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST), reason, &message)
                }
            }
        }
        axum::http::Method::GET => match state.lock().expect("state").objects.get(&path) {
            Some(object) => Json(object).into_response(),
            None => {
                let segments: Vec<&str> = path.rsplitn(3, '/').collect();
                match segments[..] {
                    [name, plural, _] => not_found(plural, name),
                    _ => unknown(),
                }
            }
        },
        _ => unknown(),
    }
}

fn resources(group_version: &str, list: &[(&str, &str, bool)]) -> Json {
    let items: Vec<Value> = list
        .iter()
        .map(|(name, kind, namespaced)| {
            let verbs =
                if name.contains('/') { json!(["get", "patch", "update"]) } else { json!(["get", "list", "watch"]) };
            let mut r =
                json!({ "name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs });
            if *name == "certificatesigningrequests" {
                r["shortNames"] = json!(["csr"]);
            }
            r
        })
        .collect();
    Json(json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": items }))
}

fn list(kind: &str, api_version: &str, rv: u64, items: Vec<Value>) -> Json {
    Json(
        json!({ "kind": kind, "apiVersion": api_version, "metadata": { "resourceVersion": rv.to_string() }, "items": items }),
    )
}

async fn configmap(AxState(state): AxState<Shared>, UrlPath((ns, name)): UrlPath<(String, String)>) -> Response {
    let mut s = state.lock().expect("state");
    if ns != "kube-system" || name != "bootstrap" || !s.bootstrap_complete {
        return match s.objects.get(&format!("/api/v1/namespaces/{ns}/configmaps/{name}")) {
            Some(object) => Json(object).into_response(),
            None => not_found("configmaps", &name),
        };
    }
    Json(json!({ "kind": "ConfigMap", "apiVersion": "v1",
        "metadata": { "name": "bootstrap", "namespace": "kube-system", "resourceVersion": "4711", "creationTimestamp": "2026-12-05T03:00:00Z" },
        "data": { "status": "complete" } }))
    .into_response()
}

fn condition(kind: &str, on: bool, reason: &str, message: &str) -> Value {
    json!({ "type": kind, "status": if on { "True" } else { "False" }, "reason": reason, "message": message,
        "lastTransitionTime": "2026-12-05T03:00:00Z" })
}

async fn etcd(AxState(state): AxState<Shared>, UrlPath(name): UrlPath<String>) -> Response {
    if name != "cluster" {
        return not_found("etcds.operator.openshift.io", &name);
    }
    let removed = state.lock().expect("state").etcd_bootstrap_removed;
    let (reason, message) = if removed {
        ("BootstrapMemberRemoved", "Bootstrap member removed")
    } else {
        ("BootstrapMemberPresent", "etcd-bootstrap is a member")
    };
    Json(json!({ "apiVersion": "operator.openshift.io/v1", "kind": "Etcd", "metadata": { "name": "cluster", "resourceVersion": "99" },
        "spec": { "managementState": "Managed" },
        "status": { "conditions": [
            condition("EtcdMembersAvailable", true, "EtcdQuorate", "3 members are available"),
            condition("EtcdBootstrapMemberRemoved", removed, reason, message),
        ] } }))
    .into_response()
}

/// `fieldSelector=spec.signerName=X` or `metadata.name=X` (`=` and `==`).
fn selected(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector else { return true };
    selector.split(',').all(|term| {
        let (field, want) = term.split_once("==").or_else(|| term.split_once('=')).unwrap_or((term, ""));
        let pointer = format!("/{}", field.replace('.', "/"));
        object.pointer(&pointer).and_then(Value::as_str) == Some(want)
    })
}

async fn csr_list(AxState(state): AxState<Shared>, Query(q): Query<BTreeMap<String, String>>) -> Json {
    let s = state.lock().expect("state");
    let items = s.csrs.values().filter(|c| selected(c, q.get("fieldSelector"))).cloned().collect();
    list("CertificateSigningRequestList", "certificates.k8s.io/v1", s.rv, items)
}

async fn csr_get(AxState(state): AxState<Shared>, UrlPath(name): UrlPath<String>) -> Response {
    match state.lock().expect("state").csrs.get(&name) {
        Some(csr) => Json(csr.clone()).into_response(),
        None => not_found("certificatesigningrequests.certificates.k8s.io", &name),
    }
}

/// `PUT .../{name}/approval`: the object as read with its conditions changed. A stale
/// `resourceVersion` is a 409; Approved and Denied are exclusive and cannot be taken back.
async fn approve(
    AxState(state): AxState<Shared>,
    UrlPath(name): UrlPath<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let ty = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let body = if ty.starts_with("application/vnd.kubernetes.protobuf") {
        proto::csr(&body)
    } else {
        serde_json::from_slice::<Value>(&body).ok()
    };
    let Some(body) = body else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("the body of the request was in an unknown format ({ty})"),
        );
    };
    let mut s = state.lock().expect("state");
    let Some(current) = s.csrs.get(&name).cloned() else {
        return not_found("certificatesigningrequests.certificates.k8s.io", &name);
    };
    let conflict = || {
        status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on certificatesigningrequests.certificates.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
    };
    if s.conflicts > 0 {
        // Someone else changed it just before.
        s.conflicts -= 1;
        let rv = s.next_rv();
        if let Some(csr) = s.csrs.get_mut(&name) {
            csr["metadata"]["resourceVersion"] = json!(rv);
        }
        return conflict();
    }
    for (field, want) in [("kind", "CertificateSigningRequest"), ("apiVersion", "certificates.k8s.io/v1")] {
        if body.get(field).is_some_and(|v| v != want) {
            return status(StatusCode::BAD_REQUEST, "BadRequest", &format!("{field}: must be {want}"));
        }
    }
    if body["metadata"]["name"] != json!(name) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the name of the object does not match the name on the URL",
        );
    }
    if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
        return conflict();
    }
    let conditions = body["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let has = |list: &[Value], kind: &str| list.iter().any(|c| c["type"] == kind && c["status"] == "True");
    let before = current["status"]["conditions"].as_array().cloned().unwrap_or_default();
    if has(&conditions, "Approved") && has(&conditions, "Denied") {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!(
                "CertificateSigningRequest.certificates.k8s.io \"{name}\" is invalid: status.conditions[1].type: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive"
            ),
        );
    }
    if (has(&before, "Approved") && !has(&conditions, "Approved"))
        || (has(&before, "Denied") && !has(&conditions, "Denied"))
    {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!(
                "CertificateSigningRequest.certificates.k8s.io \"{name}\" is invalid: status.conditions: Forbidden: updates may not remove a condition of type \"Approved\" or \"Denied\""
            ),
        );
    }
    let newly = has(&conditions, "Approved") && !has(&before, "Approved");
    let rv = s.next_rv();
    let mut updated = current.clone();
    updated["status"]["conditions"] = Value::Array(conditions.clone());
    updated["metadata"]["resourceVersion"] = json!(rv);
    s.csrs.insert(name.clone(), updated.clone());
    if newly {
        let reason = conditions
            .iter()
            .rev()
            .find(|c| c["type"] == "Approved")
            .and_then(|c| c["reason"].as_str())
            .unwrap_or("")
            .to_owned();
        s.approvals.push((name.clone(), reason));
        // The kubelet got its client certificate: it registers and asks for a serving one.
        if let Some((node, serving)) = s.kubelets.remove(&name) {
            let rv = s.next_rv();
            let node_object = json!({ "apiVersion": "v1", "kind": "Node",
                "metadata": { "name": node, "resourceVersion": rv, "labels": { "kubernetes.io/hostname": node } },
                "status": { "conditions": [condition("Ready", true, "KubeletReady", "kubelet is posting ready status")] } });
            s.nodes.insert(node, node_object);
            let serving_name = serving["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            s.csrs.insert(serving_name, serving);
        }
    }
    Json(updated).into_response()
}

async fn node_list(AxState(state): AxState<Shared>) -> Json {
    let s = state.lock().expect("state");
    list("NodeList", "v1", s.rv, s.nodes.values().cloned().collect())
}

async fn node_delete(AxState(state): AxState<Shared>, UrlPath(name): UrlPath<String>) -> Response {
    match state.lock().expect("state").nodes.remove(&name) {
        Some(node) => Json(json!({ "kind": "Status", "apiVersion": "v1", "status": "Success",
            "details": { "name": name, "kind": "nodes", "uid": node["metadata"]["uid"] } }))
        .into_response(),
        None => not_found("nodes", &name),
    }
}

async fn node_get(AxState(state): AxState<Shared>, UrlPath(name): UrlPath<String>) -> Response {
    match state.lock().expect("state").nodes.get(&name) {
        Some(node) => Json(node.clone()).into_response(),
        None => not_found("nodes", &name),
    }
}

async fn cluster_version(AxState(state): AxState<Shared>, UrlPath(name): UrlPath<String>) -> Response {
    if name != "version" {
        return not_found("clusterversions.config.openshift.io", &name);
    }
    let (available, progressing, failing, message) = state.lock().expect("state").version.clone();
    Json(json!({ "apiVersion": "config.openshift.io/v1", "kind": "ClusterVersion", "metadata": { "name": "version", "resourceVersion": "77" },
        "spec": { "clusterID": "3c6f1a84-0000-4000-8000-000000000001" },
        "status": { "conditions": [
            condition("Available", available, "", if available { "Done applying 4.19.0-okd-scos.1" } else { "" }),
            condition("Failing", failing, "", if failing { &message } else { "" }),
            condition("Progressing", progressing, "", &message),
        ], "desired": { "version": "4.19.0-okd-scos.1" } } }))
    .into_response()
}

async fn operators(AxState(state): AxState<Shared>) -> Json {
    let s = state.lock().expect("state");
    let items = s
        .operators
        .iter()
        .map(|(name, (available, progressing, degraded))| {
            json!({ "apiVersion": "config.openshift.io/v1", "kind": "ClusterOperator", "metadata": { "name": name },
                "status": { "conditions": [
                    condition("Available", *available, "AsExpected", ""),
                    condition("Progressing", *progressing, "AsExpected", ""),
                    condition("Degraded", *degraded, if *degraded { "OperatorFailing" } else { "AsExpected" }, if *degraded { "the operator is failing" } else { "" }),
                ] } })
        })
        .collect();
    list("ClusterOperatorList", "config.openshift.io/v1", s.rv, items)
}
