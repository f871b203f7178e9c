//! A Proxmox VE API stand-in (test support, not shipped): the endpoints slipway uses, with
//! Proxmox's semantics — HTTPS, `PVEAPIToken` auth, form-urlencoded bodies checked against
//! Proxmox's own schema ([`schema`]), the `{"data": …}` envelope and its error shapes, tasks
//! (UPIDs) that finish asynchronously and can fail, `VM … already exists`, `VM is locked
//! (create)`, destroy refused while running, free memory and bridges checked at start. Faults
//! can be switched on: another client taking VMIDs, a create task that fails, tasks that never
//! finish. With a [`Backing`], its VMs are slipway's local QEMU VMs, so a VM "created on
//! Proxmox" really boots.

// Handlers return a ready Proxmox error response as their `Err`; its size does not matter here.
#![allow(clippy::result_large_err)]

pub mod schema;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path as UrlPath, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use slipway::hypervisor::qemu::Qemu;
use slipway::hypervisor::{Disk, Firmware, Hypervisor, Nic, NicModel, Owner, Placement, VmSpec};
use slipway::inventory::{BadValue, MacAddr};

pub const TOKEN_ID: &str = "slipway@pve!ci";
pub const SECRET: &str = "0b6e1d4c-6c1f-4f6e-9a55-3d2f0e7b9c11";

type Params = BTreeMap<String, String>;

pub struct PveNode {
    pub name: String,
    pub online: bool,
    pub maxmem: u64,
    /// Bytes a ZFS ARC holds: the kernel does not count them available, so Proxmox's `mem`
    /// (total - MemAvailable) includes them.
    pub arc: u64,
    pub storages: Vec<String>,
    pub bridges: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct PveVm {
    pub node: String,
    pub config: Params,
    pub running: bool,
    pub lock: Option<String>,
    /// While running, the QMP run state other than `running`: `paused`, `io-error`,
    /// `prelaunch`, `internal-error`, `suspended`...
    pub qmp: Option<String>,
}

#[derive(Clone, Debug)]
struct Task {
    node: String,
    ty: String,
    id: String,
    exitstatus: Option<String>,
}

#[derive(Default)]
pub struct Faults {
    /// The next N `/cluster/nextid` answers are taken by another client right after.
    pub steal_ids: usize,
    /// The next create task fails with this message (and removes its VM, as Proxmox does).
    pub fail_create: Option<String>,
    /// A failed create leaves its VM behind (unlocked): the worst case slipway cleans up.
    pub fail_create_keeps_config: bool,
    /// Tasks never finish.
    pub hang_tasks: bool,
    /// Tasks take this long instead of 300 ms (a slow storage's create).
    pub task_time: Option<Duration>,
    /// Tasks of these types (`qmcreate`, `qmstart`, `qmshutdown`, `qmdestroy`...) take this
    /// long.
    pub slow_tasks: BTreeMap<String, Duration>,
    /// PVE 8.0-8.3 (libpve-http-server-perl before 5.2): an error's text only in the HTTP reason
    /// phrase, the body `{"data":null}`; a refused token a bare `401` with no body.
    pub reason_only: bool,
    /// A token without the audit privileges: `/cluster/resources` silently leaves out entries of
    /// these types (`node`, `storage`, `qemu`), as Proxmox filters it by ACL.
    pub hidden: Vec<String>,
    /// A token without Sys.Audit on the nodes: listing a node's network is refused.
    pub network_forbidden: bool,
    /// datacenter.cfg `user-tag-access` other than `free`: a create that sets new tags needs
    /// Sys.Modify on `/`.
    pub tags_need_sys_modify: bool,
    /// The next N reads (GET) fail as a request forwarded between nodes does when the other
    /// node is out of reach: `595` with the reason only in the status line.
    pub forwarded_failures: usize,
    /// `/cluster/resources` as pvestatd fills it: a VM's status as of up to 10 s ago, `unknown`
    /// before it was first seen.
    pub stale_resources: bool,
    /// Storages (node, storage) that are offline: `destroy-unreferenced-disks`, which activates
    /// every storage of the node, fails on them.
    pub offline_storages: Vec<(String, String)>,
    /// Every VM is managed by Proxmox HA: start, shutdown and stop are `hastart`/`hastop`
    /// requests to the HA manager, tasks that end at once, and the node's LRM changes the VM's
    /// state a second later; destroying one needs `purge`.
    pub ha_managed: bool,
}

/// The stand-in's VMs are local QEMU VMs; Proxmox bridge names map to local bridges.
pub struct Backing {
    pub qemu: Arc<Qemu>,
    pub bridges: BTreeMap<String, String>,
}

pub struct State {
    pub nodes: Vec<PveNode>,
    pub vms: BTreeMap<u32, PveVm>,
    tasks: BTreeMap<String, Task>,
    pub faults: Faults,
    pub backing: Option<Backing>,
    /// With `faults.stale_resources`: whether each VM ran when pvestatd last looked (every 10 s);
    /// a VM it has not seen yet is `unknown` in `/cluster/resources`.
    reported: BTreeMap<u32, bool>,
    /// `METHOD path` of every authenticated request, in order.
    pub requests: Vec<String>,
    seq: u32,
}

pub struct StandIn {
    /// The first node's (`pve1`) API.
    pub url: String,
    /// SHA-256 of that node's certificate, `AB:CD:…`.
    pub fingerprint: String,
    /// The cluster CA (`pve-root-ca.pem`) that signs every node's certificate.
    pub ca: PathBuf,
    pub state: Arc<Mutex<State>>,
    dir: PathBuf,
    /// Every node's API endpoint, the first one's included, by URL.
    endpoints: Mutex<BTreeMap<String, Endpoint>>,
    runtime: tokio::runtime::Runtime,
}

/// One node's pveproxy: its certificate can be renewed, which restarts it (open connections
/// are closed, as pveproxy's restart after a renewal does).
struct Endpoint {
    node: String,
    acceptor: Arc<Mutex<tokio_rustls::TlsAcceptor>>,
    restarts: tokio::sync::watch::Sender<u64>,
}

const GIB: u64 = 1024 * 1024 * 1024;

impl StandIn {
    /// Two nodes, `pve1` (16 GiB) and `pve2` (8 GiB), each with storage `local-lvm` and bridges
    /// `vmbr0` and `vmbr1`.
    pub fn start(dir: &Path) -> StandIn {
        StandIn::start_in(dir, None)
    }

    /// `start`, listening on 127.0.0.1 inside network namespace `ns` (for a daemon that runs
    /// there).
    pub fn start_in(dir: &Path, ns: Option<&str>) -> StandIn {
        let node = |name: &str, gib: u64| PveNode {
            name: name.into(),
            online: true,
            maxmem: gib * GIB,
            arc: 0,
            storages: vec!["local-lvm".into()],
            bridges: vec!["vmbr0".into(), "vmbr1".into()],
        };
        let state = State {
            nodes: vec![node("pve1", 16), node("pve2", 8)],
            vms: BTreeMap::new(),
            tasks: BTreeMap::new(),
            faults: Faults::default(),
            backing: None,
            reported: BTreeMap::new(),
            requests: Vec::new(),
            seq: 0,
        };
        let state = Arc::new(Mutex::new(state));
        let ca = cluster_ca(dir);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("stand-in runtime");
        // pvestatd: what `/cluster/resources` reports of VMs, refreshed every 10 s.
        let stats = state.clone();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let mut s = stats.lock().expect("state");
                s.reported = s.vms.iter().map(|(id, vm)| (*id, vm.running)).collect();
            }
        });
        let mut pve = StandIn {
            url: String::new(),
            fingerprint: String::new(),
            ca,
            state,
            dir: dir.to_owned(),
            endpoints: Mutex::new(BTreeMap::new()),
            runtime,
        };
        (pve.url, pve.fingerprint) = pve.open("pve1", ns);
        pve
    }

    /// Another node's API (`node`'s pveproxy) on a port of its own, with a certificate of its
    /// own signed by the cluster CA, over the same cluster: its URL and its certificate's
    /// fingerprint.
    pub fn open_node(&self, node: &str) -> (String, String) {
        self.open(node, None)
    }

    fn open(&self, node: &str, ns: Option<&str>) -> (String, String) {
        let bind = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            listener
        };
        let listener = match ns {
            Some(ns) => crate::netns::in_netns(ns, bind),
            None => bind(),
        };
        let (acceptor, fingerprint) = self.certificate(node);
        let endpoint = Endpoint {
            node: node.into(),
            acceptor: Arc::new(Mutex::new(acceptor)),
            restarts: tokio::sync::watch::Sender::new(0),
        };
        let _entered = self.runtime.enter();
        let addr = serve(self.state.clone(), listener, endpoint.acceptor.clone(), endpoint.restarts.clone());
        let url = format!("https://127.0.0.1:{}", addr.port());
        self.endpoints.lock().expect("endpoints").insert(url.clone(), endpoint);
        (url, fingerprint)
    }

    /// What `pveupdate` (a regenerated `pve-ssl.pem`) or an ACME renewal does to the node at
    /// `url`: a new certificate from the cluster CA, and pveproxy restarted, closing every
    /// open connection. Returns the new certificate's fingerprint.
    pub fn renew(&self, url: &str) -> String {
        let endpoints = self.endpoints.lock().expect("endpoints");
        let endpoint = endpoints.get(url).expect("a node of this stand-in");
        let (acceptor, fingerprint) = self.certificate(&endpoint.node);
        *endpoint.acceptor.lock().expect("acceptor") = acceptor;
        endpoint.restarts.send_modify(|n| *n += 1);
        fingerprint
    }

    /// A new certificate for `node` (127.0.0.1) from the cluster CA, and its fingerprint.
    fn certificate(&self, node: &str) -> (tokio_rustls::TlsAcceptor, String) {
        let (cert, key) = node_certificate(&self.dir, node);
        let der = {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateDer::from_pem_file(&cert).expect("server cert")
        };
        let fingerprint = {
            use sha2::Digest;
            slipway::hypervisor::proxmox::tls::format_fingerprint(&sha2::Sha256::digest(der.as_ref()))
        };
        (crate::support::tls_acceptor(&cert, &key), fingerprint)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().expect("stand-in state"))
    }
}

/// The cluster CA, `pve-ca.pem` (its key beside it), as `pvecm` makes it.
fn cluster_ca(dir: &Path) -> PathBuf {
    crate::pki::ca(dir, "pve-ca", "/CN=Proxmox Virtual Environment CA").0
}

/// A new `pve-ssl.pem` for `node`, valid for 127.0.0.1, signed by the cluster CA in `dir`; each
/// call makes another key and certificate.
fn node_certificate(dir: &Path, node: &str) -> (PathBuf, PathBuf) {
    static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ca = (dir.join("pve-ca.pem"), dir.join("pve-ca.key"));
    let ext = "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n";
    crate::pki::issue(dir, &format!("{node}-{n}"), &format!("/CN={node}"), ext, &crate::pki::EC_KEY, &ca)
}

/// Serves the API on `listener` with the certificate `acceptor` holds at each accept; a message
/// on `restarts` closes every open connection.
fn serve(
    state: Arc<Mutex<State>>,
    listener: std::net::TcpListener,
    acceptor: Arc<Mutex<tokio_rustls::TlsAcceptor>>,
    restarts: tokio::sync::watch::Sender<u64>,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::from_std(listener).expect("register the listener");
    let addr = listener.local_addr().expect("addr");
    let app = router(state);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.lock().expect("acceptor").clone();
            let (app, mut restart) = (app.clone(), restarts.subscribe());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper_util::service::TowerToHyperService::new(app);
                // pveproxy closes a keep-alive connection idle for 5 s.
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(5))
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                tokio::select! {
                    _ = connection => {}
                    _ = restart.changed() => {}
                }
            });
        }
    });
    addr
}

type Shared = Arc<Mutex<State>>;

fn router(state: Shared) -> Router {
    Router::new()
        .route("/api2/json/cluster/resources", get(resources))
        .route("/api2/json/cluster/nextid", get(nextid))
        .route("/api2/json/nodes/{node}/network", get(network))
        .route("/api2/json/nodes/{node}/qemu", post(create))
        .route("/api2/json/nodes/{node}/qemu/{vmid}", axum::routing::delete(destroy))
        .route("/api2/json/nodes/{node}/qemu/{vmid}/config", get(config))
        .route("/api2/json/nodes/{node}/qemu/{vmid}/status/start", post(start))
        .route("/api2/json/nodes/{node}/qemu/{vmid}/status/current", get(current))
        .route("/api2/json/nodes/{node}/qemu/{vmid}/status/resume", post(resume))
        .route("/api2/json/nodes/{node}/qemu/{vmid}/status/stop", post(stop))
        .route("/api2/json/nodes/{node}/qemu/{vmid}/status/shutdown", post(shutdown))
        .route("/api2/json/nodes/{node}/tasks/{upid}/status", get(task_status))
        .layer(axum::middleware::from_fn(auth))
        .layer(axum::middleware::from_fn(as_the_schema_says))
        .layer(axum::middleware::from_fn_with_state(state.clone(), old_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), forwarded))
        .with_state(state)
}

/// Every successful answer's `data` is checked against what Proxmox's schema says the endpoint
/// returns: a stand-in that drifts from Proxmox answers 500 naming the difference, so the test
/// using it fails.
async fn as_the_schema_says(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned());
    let endpoint = route.map(|r| format!("{} {}", request.method(), r.trim_start_matches("/api2/json")));
    let response = next.run(request).await;
    let Some(endpoint) = endpoint.filter(|_| response.status().is_success()) else { return response };
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if let Err(e) = schema::Schema::load().check_returns(&endpoint, &value["data"]) {
        eprintln!("the Proxmox stand-in broke the schema on {endpoint}: {e}");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("stand-in answer breaks the schema of {endpoint}: {e}"),
        );
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// With `forwarded_failures`, a read fails as pveproxy answers when it cannot reach the node it
/// forwards to.
async fn forwarded(
    AxState(state): AxState<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let fail = request.method() == axum::http::Method::GET && {
        let mut s = state.lock().expect("state");
        let fail = s.faults.forwarded_failures > 0;
        s.faults.forwarded_failures = s.faults.forwarded_failures.saturating_sub(1);
        fail
    };
    if !fail {
        return next.run(request).await;
    }
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::from_u16(595).expect("595");
    let reason = "Errors during connection establishment, proxy handshake: No route to host";
    response.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(reason.as_bytes()));
    response
}

/// With `reason_only`, errors as PVE 8.0-8.3 sent them: the text in the reason phrase only.
async fn old_errors(
    AxState(state): AxState<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let reason_only = state.lock().expect("state").faults.reason_only;
    if !reason_only || response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let message = value["message"].as_str().unwrap_or_default().trim().to_owned();
    if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(message) {
        parts.extensions.insert(reason);
    }
    let body = if parts.status == StatusCode::UNAUTHORIZED { String::new() } else { r#"{"data":null}"#.to_owned() };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

fn data(value: Value) -> Response {
    axum::Json(json!({ "data": value })).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "data": null, "message": format!("{message}\n") }))).into_response()
}

fn param_errors(errors: BTreeMap<String, String>) -> Response {
    let body = json!({ "data": null, "errors": errors, "message": "Parameter verification failed.\n" });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

async fn auth(headers: HeaderMap, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let want = format!("PVEAPIToken={TOKEN_ID}={SECRET}");
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        None => error(StatusCode::UNAUTHORIZED, "No ticket"),
        Some(got) if got != want => error(StatusCode::UNAUTHORIZED, "invalid token value!"),
        Some(_) => next.run(request).await,
    }
}

fn record(state: &Shared, line: String) -> std::sync::MutexGuard<'_, State> {
    let mut s = state.lock().expect("state");
    s.requests.push(line);
    s
}

fn check(endpoint: &str, params: &Params) -> Result<(), Response> {
    schema::Schema::load().check(endpoint, params).map_err(param_errors)
}

async fn resources(AxState(state): AxState<Shared>, Query(q): Query<Params>) -> Response {
    if let Err(r) = check("GET /cluster/resources", &q) {
        return r;
    }
    let s = record(&state, "GET /cluster/resources".into());
    let want = q.get("type").map(String::as_str);
    let mut items = Vec::new();
    for n in &s.nodes {
        let vms: u64 = s.vms.values().filter(|v| v.node == n.name && v.running).map(|v| memory_bytes(&v.config)).sum();
        let used = vms + n.arc;
        if want.is_none() || want == Some("node") {
            let status = if n.online { "online" } else { "offline" };
            items.push(json!({ "id": format!("node/{}", n.name), "type": "node", "node": n.name, "status": status,
                "maxmem": n.maxmem, "mem": used, "maxcpu": 8, "cpu": 0.01, "level": "", "uptime": 1000 }));
        }
        if want.is_none() || want == Some("storage") {
            for st in &n.storages {
                items.push(json!({ "id": format!("storage/{}/{st}", n.name), "type": "storage", "node": n.name,
                    "storage": st, "status": "available", "content": "images,rootdir", "plugintype": "lvmthin",
                    "maxdisk": 500 * GIB, "disk": 0, "shared": 0 }));
            }
        }
    }
    if want.is_none() || want == Some("vm") {
        for (vmid, vm) in &s.vms {
            let mut item = json!({ "id": format!("qemu/{vmid}"), "type": "qemu", "vmid": vmid, "node": vm.node,
                "name": vm.config.get("name").cloned().unwrap_or_default(),
                "status": resource_status(&s, *vmid, vm), "template": 0,
                "maxmem": memory_bytes(&vm.config), "mem": 0, "maxcpu": 1, "cpu": 0, "uptime": 0 });
            if let Some(tags) = vm.config.get("tags") {
                item["tags"] = json!(tags);
            }
            if let Some(lock) = &vm.lock {
                item["lock"] = json!(lock);
            }
            items.push(item);
        }
    }
    items.retain(|item| !s.faults.hidden.iter().any(|t| item["type"] == t.as_str()));
    data(Value::Array(items))
}

fn resource_status(s: &State, vmid: u32, vm: &PveVm) -> &'static str {
    let running = if s.faults.stale_resources { s.reported.get(&vmid).copied() } else { Some(vm.running) };
    match running {
        Some(true) => "running",
        Some(false) => "stopped",
        None => "unknown",
    }
}

/// `GET /nodes/{node}/qemu/{vmid}/status/current`: the VM's state now, from its QEMU process.
async fn current(AxState(state): AxState<Shared>, UrlPath((node, vmid)): UrlPath<(String, u32)>) -> Response {
    let params = Params::from([("node".into(), node.clone()), ("vmid".into(), vmid.to_string())]);
    if let Err(r) = check("GET /nodes/{node}/qemu/{vmid}/status/current", &params) {
        return r;
    }
    let s = record(&state, format!("GET /nodes/{node}/qemu/{vmid}/status/current"));
    let vm = match s.vms.get(&vmid).filter(|v| v.node == node) {
        Some(vm) => vm,
        None => return no_config(&node, vmid),
    };
    let ha = if s.faults.ha_managed {
        json!({ "managed": 1, "state": if vm.running { "started" } else { "stopped" } })
    } else {
        json!({ "managed": 0 })
    };
    let mut body = json!({ "vmid": vmid, "name": vm.config.get("name"), "ha": ha,
        "status": if vm.running { "running" } else { "stopped" }, "cpus": 1, "maxmem": memory_bytes(&vm.config) });
    if vm.running {
        body["qmpstatus"] = json!(vm.qmp.clone().unwrap_or_else(|| "running".into()));
        body["pid"] = json!(4242 + vmid);
    } else {
        body["qmpstatus"] = json!("stopped");
    }
    if let Some(lock) = &vm.lock {
        body["lock"] = json!(lock);
    }
    data(body)
}

/// A `POST .../status/{verb}` on one VM: its parameters checked against the schema, the
/// request recorded, the VM looked up (refused as Proxmox refuses: unknown, or locked).
fn status_request<'a>(
    state: &'a Shared,
    verb: &str,
    node: &str,
    vmid: u32,
    mut params: Params,
) -> Result<(std::sync::MutexGuard<'a, State>, PveVm), Response> {
    params.extend([("node".into(), node.to_owned()), ("vmid".into(), vmid.to_string())]);
    check(&format!("POST /nodes/{{node}}/qemu/{{vmid}}/status/{verb}"), &params)?;
    let s = record(state, format!("POST /nodes/{node}/qemu/{vmid}/status/{verb}"));
    let vm = lookup(&s, node, vmid)?;
    Ok((s, vm))
}

/// `POST .../status/resume`: a paused or suspended VM runs on.
async fn resume(
    AxState(state): AxState<Shared>,
    UrlPath((node, vmid)): UrlPath<(String, u32)>,
    Form(params): Form<Params>,
) -> Response {
    let (mut s, vm) = match status_request(&state, "resume", &node, vmid, params) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let shared = state.clone();
    let upid = spawn_task(&state, &mut s, &node, "qmresume", &vmid.to_string(), async move {
        if !vm.running {
            return Err(format!("VM {vmid} not running"));
        }
        if let Some(vm) = shared.lock().expect("state").vms.get_mut(&vmid) {
            vm.qmp = None;
        }
        Ok(())
    });
    data(json!(upid))
}

fn memory_bytes(config: &Params) -> u64 {
    config.get("memory").and_then(|m| m.trim_start_matches("current=").parse::<u64>().ok()).unwrap_or(512) * 1024 * 1024
}

async fn nextid(AxState(state): AxState<Shared>, Query(q): Query<Params>) -> Response {
    if let Err(r) = check("GET /cluster/nextid", &q) {
        return r;
    }
    let mut s = record(&state, "GET /cluster/nextid".into());
    if let Some(want) = q.get("vmid").and_then(|v| v.parse::<u32>().ok()) {
        if s.vms.contains_key(&want) {
            return param_errors(BTreeMap::from([("vmid".into(), format!("VM {want} already exists"))]));
        }
        return data(json!(want.to_string()));
    }
    let id = (100u32..).find(|id| !s.vms.contains_key(id)).unwrap_or(100);
    if s.faults.steal_ids > 0 {
        s.faults.steal_ids -= 1;
        let node = s.nodes[0].name.clone();
        let config = Params::from([("name".into(), "someone-else".into()), ("memory".into(), "512".into())]);
        s.vms.insert(id, PveVm { node, config, running: false, lock: None, qmp: None });
    }
    data(json!(id.to_string()))
}

async fn network(
    AxState(state): AxState<Shared>,
    UrlPath(node): UrlPath<String>,
    Query(mut q): Query<Params>,
) -> Response {
    q.insert("node".into(), node.clone());
    if let Err(r) = check("GET /nodes/{node}/network", &q) {
        return r;
    }
    let s = record(&state, format!("GET /nodes/{node}/network"));
    if s.faults.network_forbidden {
        return error(StatusCode::FORBIDDEN, &format!("Permission check failed (/nodes/{node}, Sys.Audit)"));
    }
    let Some(n) = s.nodes.iter().find(|n| n.name == node) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("hostname lookup '{node}' failed - unknown node"));
    };
    let items: Vec<Value> = n
        .bridges
        .iter()
        .enumerate()
        .map(|(i, b)| {
            json!({ "iface": b, "type": "bridge", "active": 1, "autostart": 1, "method": "manual",
            "families": ["inet"], "priority": i + 3, "bridge_ports": "eno1", "bridge_stp": "off", "bridge_fd": "0" })
        })
        .collect();
    data(Value::Array(items))
}

/// Starts a task on `node`; `work` runs after a short delay (never, with `hang_tasks`) and its
/// error becomes the task's exit status.
fn spawn_task<F>(state: &Shared, s: &mut State, node: &str, ty: &str, id: &str, work: F) -> String
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    s.seq += 1;
    let upid = format!(
        "UPID:{node}:{:08X}:{:08X}:{:08X}:{ty}:{id}:{TOKEN_ID}:",
        4000 + s.seq,
        9000 + s.seq,
        1_700_000_000 + s.seq
    );
    s.tasks.insert(upid.clone(), Task { node: node.into(), ty: ty.into(), id: id.into(), exitstatus: None });
    let hang = s.faults.hang_tasks;
    let time = s.faults.slow_tasks.get(ty).copied().or(s.faults.task_time).unwrap_or(Duration::from_millis(300));
    let (state, key) = (state.clone(), upid.clone());
    tokio::spawn(async move {
        if hang {
            return;
        }
        tokio::time::sleep(time).await;
        let result = work.await;
        let mut s = state.lock().expect("state");
        if let Some(task) = s.tasks.get_mut(&key) {
            task.exitstatus = Some(result.err().unwrap_or_else(|| "OK".into()));
        }
    });
    upid
}

/// A start, shutdown or stop task (`ty`). For an HA-managed VM it is the `hastart`/`hastop`
/// request instead, which ends at once: the HA manager's LRM does `work` a second later.
fn power_task<F>(state: &Shared, s: &mut State, node: &str, ty: &str, vmid: u32, work: F) -> String
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    if !s.faults.ha_managed {
        return spawn_task(state, s, node, ty, &vmid.to_string(), work);
    }
    let ha = if ty == "qmstart" { "hastart" } else { "hastop" };
    spawn_task(state, s, node, ha, &vmid.to_string(), async move {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = work.await;
        });
        Ok(())
    })
}

async fn task_status(AxState(state): AxState<Shared>, UrlPath((node, upid)): UrlPath<(String, String)>) -> Response {
    let s = record(&state, format!("GET /nodes/{node}/tasks/{upid}/status"));
    let Some(task) = s.tasks.get(&upid).filter(|t| t.node == node) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("no such task '{upid}'"));
    };
    let mut body = json!({ "upid": upid, "node": task.node, "pid": 4000, "pstart": 9000, "starttime": 1_700_000_000,
        "type": task.ty, "id": task.id, "user": TOKEN_ID,
        "status": if task.exitstatus.is_some() { "stopped" } else { "running" } });
    if let Some(exit) = &task.exitstatus {
        body["exitstatus"] = json!(exit);
    }
    data(body)
}

async fn config(AxState(state): AxState<Shared>, UrlPath((node, vmid)): UrlPath<(String, u32)>) -> Response {
    let s = record(&state, format!("GET /nodes/{node}/qemu/{vmid}/config"));
    match s.vms.get(&vmid).filter(|v| v.node == node) {
        Some(vm) => data(serde_json::to_value(&vm.config).unwrap_or_default()),
        None => no_config(&node, vmid),
    }
}

fn no_config(node: &str, vmid: u32) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"),
    )
}

async fn create(
    AxState(state): AxState<Shared>,
    UrlPath(node): UrlPath<String>,
    Form(mut params): Form<Params>,
) -> Response {
    params.insert("node".into(), node.clone());
    if let Err(r) = check("POST /nodes/{node}/qemu", &params) {
        return r;
    }
    params.remove("node");
    let mut s = record(&state, format!("POST /nodes/{node}/qemu"));
    if s.faults.tags_need_sys_modify && params.contains_key("tags") {
        return error(StatusCode::FORBIDDEN, "Permission check failed (/, Sys.Modify)");
    }
    let Some(host) = s.nodes.iter().find(|n| n.name == node) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("hostname lookup '{node}' failed - unknown node"));
    };
    let Some(vmid) = params.remove("vmid").and_then(|v| v.parse::<u32>().ok()) else {
        return param_errors(BTreeMap::from([("vmid".into(), "property is missing and it is not optional".into())]));
    };
    if let Some(vm) = s.vms.get(&vmid) {
        let msg = format!("unable to create VM {vmid} - VM {vmid} already exists on node '{}'", vm.node);
        return error(StatusCode::INTERNAL_SERVER_ERROR, &msg);
    }
    for (key, value) in &params {
        let disk = key.strip_prefix("scsi").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if disk || key == "efidisk0" {
            let storage = value.split([':', ',']).next().unwrap_or("");
            if !host.storages.iter().any(|s| s == storage) {
                return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("storage '{storage}' does not exist"));
            }
        }
    }
    if let Some(order) = params.get("boot").and_then(|b| b.strip_prefix("order="))
        && let Some(missing) = order.split(';').find(|d| !params.contains_key(*d))
    {
        let msg = format!("invalid bootorder: device '{missing}' does not exist'");
        return param_errors(BTreeMap::from([("boot".into(), msg)]));
    }
    s.vms.insert(
        vmid,
        PveVm { node: node.clone(), config: params.clone(), running: false, lock: Some("create".into()), qmp: None },
    );
    let fail = s.faults.fail_create.take();
    let backing = s.backing.as_ref().map(|b| (b.qemu.clone(), spec_of(&params, &b.bridges)));
    let shared = state.clone();
    let upid = spawn_task(&state, &mut s, &node, "qmcreate", &vmid.to_string(), async move {
        let result = match (fail, backing) {
            (Some(msg), _) => Err(format!("unable to create VM {vmid} - {msg}")),
            (None, Some((qemu, spec))) => qemu.create(&spec?).await.map(|_| ()).map_err(|e| e.to_string()),
            (None, None) => Ok(()),
        };
        // As qemu-server does: a failed create removes its config again; a finished one drops
        // the lock.
        let mut s = shared.lock().expect("state");
        match (&result, s.faults.fail_create_keeps_config) {
            (Err(_), false) => drop(s.vms.remove(&vmid)),
            _ => {
                if let Some(vm) = s.vms.get_mut(&vmid) {
                    vm.lock = None;
                }
            }
        }
        result
    });
    data(json!(upid))
}

/// The slipway owner a VM's config carries in its tags, its node being the VM's name.
fn owner_of(config: &Params) -> Result<Owner, String> {
    let tags = config.get("tags").map(String::as_str).unwrap_or("");
    let mut owner = Owner::from_tags(tags.split(';')).ok_or("no slipway tags")?;
    owner.node = config.get("name").ok_or("no name")?.parse().map_err(|e: BadValue| e.to_string())?;
    Ok(owner)
}

/// The local VM behind a Proxmox config: name, tags, cores, memory, disks, NICs, firmware.
fn spec_of(config: &Params, bridges: &BTreeMap<String, String>) -> Result<VmSpec, String> {
    let owner = owner_of(config)?;
    let mut disks = Vec::new();
    let mut nics = Vec::new();
    for i in 0..31 {
        if let Some(scsi) = config.get(&format!("scsi{i}")) {
            let size = scsi.split(',').next().and_then(|f| f.split(':').nth(1)).and_then(|s| s.parse().ok());
            disks.push(Disk { storage: None, size_gib: size.ok_or(format!("scsi{i}: {scsi}"))? });
        }
        if let Some(net) = config.get(&format!("net{i}")) {
            let mut nic = Nic { bridge: None, vlan: None, mac: MacAddr([2, 0, 0, 0, 0, 0]), model: NicModel::Virtio };
            for part in net.split(',') {
                match part.split_once('=') {
                    Some(("virtio", mac)) => nic.mac = mac.parse().map_err(|e: BadValue| e.to_string())?,
                    Some(("e1000", mac)) => {
                        (nic.model, nic.mac) = (NicModel::E1000, mac.parse().map_err(|e: BadValue| e.to_string())?)
                    }
                    Some(("bridge", b)) => nic.bridge = Some(bridges.get(b).cloned().unwrap_or_else(|| b.to_owned())),
                    Some(("tag", t)) => nic.vlan = t.parse().ok(),
                    _ => {}
                }
            }
            nics.push(nic);
        }
    }
    let firmware = if config.get("bios").map(String::as_str) == Some("ovmf") { Firmware::Uefi } else { Firmware::Bios };
    Ok(VmSpec {
        owner,
        cores: config.get("cores").and_then(|c| c.parse().ok()).unwrap_or(1),
        // What qemu-server starts a VM with when its config names no CPU: kvm64 (x86-64-v1).
        cpu: Some(config.get("cpu").cloned().unwrap_or_else(|| "kvm64".into())),
        memory_mib: config.get("memory").and_then(|m| m.parse().ok()).unwrap_or(512),
        disks,
        nics,
        firmware,
        placement: Placement::default(),
    })
}

/// The VM for a request on it, refused as Proxmox refuses: unknown, or locked.
fn lookup(s: &State, node: &str, vmid: u32) -> Result<PveVm, Response> {
    let vm = s.vms.get(&vmid).filter(|v| v.node == node).ok_or_else(|| no_config(node, vmid))?;
    if let Some(lock) = &vm.lock {
        return Err(error(StatusCode::INTERNAL_SERVER_ERROR, &format!("VM is locked ({lock})")));
    }
    Ok(vm.clone())
}

fn set_running(state: &Shared, vmid: u32, running: bool) {
    if let Some(vm) = state.lock().expect("state").vms.get_mut(&vmid) {
        vm.running = running;
        vm.qmp = None;
    }
}

async fn start(
    AxState(state): AxState<Shared>,
    UrlPath((node, vmid)): UrlPath<(String, u32)>,
    Form(params): Form<Params>,
) -> Response {
    let (mut s, vm) = match status_request(&state, "start", &node, vmid, params) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let host = s.nodes.iter().find(|n| n.name == node).map(|n| (n.bridges.clone(), n.maxmem));
    let used: u64 = s.vms.values().filter(|v| v.node == node && v.running).map(|v| memory_bytes(&v.config)).sum();
    let backing = s.backing.as_ref().map(|b| b.qemu.clone());
    let (shared, host_name) = (state.clone(), node.clone());
    let upid = power_task(&state, &mut s, &node, "qmstart", vmid, async move {
        if vm.running {
            return Err(format!("VM {vmid} already running"));
        }
        let (bridges, maxmem) = host.ok_or("unknown node")?;
        for (key, net) in vm.config.iter().filter(|(k, _)| k.starts_with("net")) {
            let bridge = net.split(',').find_map(|p| p.strip_prefix("bridge=")).unwrap_or("");
            if !bridges.iter().any(|b| b == bridge) {
                return Err(format!("{key}: bridge '{bridge}' does not exist"));
            }
        }
        if used + memory_bytes(&vm.config) > maxmem {
            return Err(format!("start failed: VM {vmid} needs more memory than node {host_name} has free"));
        }
        if let Some(qemu) = backing {
            qemu.start(&owner_of(&vm.config)?).await.map_err(|e| e.to_string())?;
        }
        set_running(&shared, vmid, true);
        Ok(())
    });
    data(json!(upid))
}

async fn stop(
    AxState(state): AxState<Shared>,
    UrlPath((node, vmid)): UrlPath<(String, u32)>,
    Form(params): Form<Params>,
) -> Response {
    power_off(state, node, vmid, params, "stop", Duration::ZERO).await
}

async fn shutdown(
    AxState(state): AxState<Shared>,
    UrlPath((node, vmid)): UrlPath<(String, u32)>,
    Form(params): Form<Params>,
) -> Response {
    let timeout =
        params.get("timeout").and_then(|t| t.parse().ok()).map_or(Duration::from_secs(180), Duration::from_secs);
    power_off(state, node, vmid, params, "shutdown", timeout).await
}

async fn power_off(state: Shared, node: String, vmid: u32, params: Params, verb: &str, timeout: Duration) -> Response {
    let (mut s, vm) = match status_request(&state, verb, &node, vmid, params) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let backing = s.backing.as_ref().map(|b| b.qemu.clone());
    let shared = state.clone();
    let ty = if verb == "stop" { "qmstop" } else { "qmshutdown" };
    let upid = power_task(&state, &mut s, &node, ty, vmid, async move {
        if let Some(qemu) = backing {
            qemu.shutdown(&owner_of(&vm.config)?, timeout).await.map_err(|e| e.to_string())?;
        }
        set_running(&shared, vmid, false);
        Ok(())
    });
    data(json!(upid))
}

async fn destroy(
    AxState(state): AxState<Shared>,
    UrlPath((node, vmid)): UrlPath<(String, u32)>,
    Query(mut params): Query<Params>,
) -> Response {
    params.extend([("node".into(), node.clone()), ("vmid".into(), vmid.to_string())]);
    if let Err(r) = check("DELETE /nodes/{node}/qemu/{vmid}", &params) {
        return r;
    }
    let mut s = record(&state, format!("DELETE /nodes/{node}/qemu/{vmid}"));
    let vm = match lookup(&s, &node, vmid) {
        Ok(vm) => vm,
        Err(r) => return r,
    };
    if vm.running {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("VM {vmid} is running - destroy failed"));
    }
    if s.faults.ha_managed && params.get("purge").map(String::as_str) != Some("1") {
        let msg = format!("unable to remove VM {vmid} - used in HA resources and purge parameter not set.");
        return error(StatusCode::INTERNAL_SERVER_ERROR, &msg);
    }
    let backing = s.backing.as_ref().map(|b| b.qemu.clone());
    let shared = state.clone();
    let offline = s.faults.offline_storages.iter().find(|(n, _)| *n == node).map(|(_, st)| st.clone());
    let unreferenced = params.get("destroy-unreferenced-disks").map(String::as_str) == Some("1");
    let upid = spawn_task(&state, &mut s, &node, "qmdestroy", &vmid.to_string(), async move {
        // Proxmox activates every storage of the node to look for unreferenced disks, after
        // the VM's own disks are gone.
        if let (true, Some(storage)) = (unreferenced, offline) {
            return Err(format!("storage '{storage}' is not online"));
        }
        if let Some(qemu) = backing
            && let Ok(owner) = owner_of(&vm.config)
        {
            qemu.delete(&owner).await.map_err(|e| e.to_string())?;
        }
        shared.lock().expect("state").vms.remove(&vmid);
        Ok(())
    });
    data(json!(upid))
}
