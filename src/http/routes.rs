//! The boot service's routes. Each handler finds the machine by the connection's source address
//! (never by a header or a query parameter), asks `boot` for the answer and records the step in
//! the event log, which is the node's boot timeline.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use tower_http::services::ServeDir;

use super::Settings;
use crate::boot::access::{self, Refusal};
use crate::boot::select::{self, Machine};
use crate::boot::{cloudinit, ignition, script};
use crate::inventory::{ClusterKind, ConfigKind, Inventory, MacAddr, Name, Node, Timestamp};
use crate::listen::Connection;
use crate::store::Store;
use crate::store::events::{EventKind, EventLog, Source, Subject};
use crate::throttle::Throttle;

/// Bytes per read when streaming an image: every read of a tokio file is a trip to the blocking
/// pool, so big reads keep a multi-GiB rootfs download near the disk's speed.
const FILE_CHUNK: usize = 1 << 20;

/// OKD's installer certificates in Ignition configs are valid for 24 hours.
const STALE_UPLOAD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[derive(Clone, Debug)]
pub struct BootState {
    pub store: Store,
    pub events: EventLog,
    pub settings: Arc<Settings>,
    /// Boot scripts recorded per address (see `SCRIPT_EVENT_INTERVAL`).
    pub script_events: Arc<Throttle<Ipv4Addr>>,
    /// Refused configs recorded per node and kind: Ignition retries a 500 every few seconds.
    pub refusals: Arc<Throttle<(Name, ConfigKind)>>,
    /// When a k3s node may fetch its config.
    pub admission: Option<Arc<dyn crate::boot::k3s::Admission>>,
    /// k3s nodes told to wait, recorded once a minute each (they ask every few seconds).
    pub waits: Arc<Throttle<Name>>,
}

impl BootState {
    pub fn new(store: Store, events: EventLog, settings: Arc<Settings>) -> BootState {
        BootState {
            store,
            events,
            settings,
            script_events: Arc::new(Throttle::new(SCRIPT_EVENT_INTERVAL, SCRIPT_EVENT_ADDRESSES)),
            refusals: Arc::new(Throttle::new(REFUSAL_EVENT_INTERVAL, SCRIPT_EVENT_ADDRESSES)),
            admission: None,
            waits: Arc::new(Throttle::new(REFUSAL_EVENT_INTERVAL, SCRIPT_EVENT_ADDRESSES)),
        }
    }
}

/// A refused config is recorded (and logged) at most once per node and kind in this interval.
const REFUSAL_EVENT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// A boot script is recorded at most once per address in this interval: a real machine asks
/// once per boot (or once per retry, 10 s apart), while a client looping on the URL must not
/// flood the event log and push real history out of it.
const SCRIPT_EVENT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
/// Addresses remembered for that; the map is cleared when it grows past this.
const SCRIPT_EVENT_ADDRESSES: usize = 65_536;

pub fn router(state: BootState) -> Router {
    let images = Router::new()
        .fallback_service(
            ServeDir::new(&state.settings.images)
                .append_index_html_on_directories(false)
                .with_buf_chunk_size(FILE_CHUNK),
        )
        .layer(middleware::from_fn_with_state(state.clone(), record_fetch));
    let ipxe =
        ServeDir::new(&state.settings.ipxe).append_index_html_on_directories(false).with_buf_chunk_size(FILE_CHUNK);
    Router::new()
        .route("/boot.ipxe", get(boot_script))
        .route("/ignition", get(ignition_config))
        .route("/nocloud/{node}/{doc}", get(nocloud))
        .route("/phone-home", post(phone_home))
        .route("/k3s/config", get(k3s_config))
        .nest("/images", images)
        .nest_service("/ipxe", ipxe)
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(crate::listen::BODY_TIMEOUT))
        .with_state(state)
}

/// The machine behind a source address: its node (reserved address), else the MAC of its lease.
struct Asker<'a> {
    ip: Ipv4Addr,
    node: Option<&'a Node>,
    mac: Option<MacAddr>,
}

impl BootState {
    fn asker<'a>(&self, inv: &'a Inventory, peer: IpAddr) -> Option<Asker<'a>> {
        let IpAddr::V4(ip) = peer.to_canonical() else {
            return None;
        };
        if let Some(node) = inv.node_by_ip(ip) {
            return Some(Asker { ip, node: Some(node), mac: Some(node.mac) });
        }
        if inv.network_containing(ip).is_none() {
            return Some(Asker { ip, node: None, mac: None });
        }
        let lease = self.store.lease(ip).ok().flatten().filter(|l| l.is_active(Timestamp::now()));
        let node = lease.as_ref().and_then(|l| inv.node_by_mac(l.mac));
        Some(Asker { ip, node, mac: lease.map(|l| l.mac) })
    }

    /// Whether a boot script served to `ip` now should be recorded.
    fn script_event_due(&self, ip: Ipv4Addr) -> bool {
        self.script_events.due(ip)
    }

    fn record(&self, node: Option<&Node>, mac: Option<MacAddr>, kind: EventKind) {
        let subject = Subject { node: node.map(|n| n.name.clone()), mac: node.map(|n| n.mac).or(mac) };
        self.events.append(Source::Http, subject, kind);
    }

    /// The uploaded OKD config for the node's cluster and role, if any; an upload older than 24
    /// hours is still served, with a warning event (its certificates expire).
    async fn okd_upload(&self, inv: &Inventory, node: &Node) -> Result<Option<String>, Response> {
        let (Some(cluster), Some(role)) = (node.cluster.as_ref().and_then(|c| inv.clusters.get(c)), node.role) else {
            return Ok(None);
        };
        if cluster.kind != crate::inventory::ClusterKind::Okd {
            return Ok(None);
        }
        let dir = self.store.files();
        let key = cluster.name.to_string();
        let found = tokio::task::spawn_blocking(move || crate::store::uploads::get(&dir, &key, role)).await;
        let (text, uploaded) = match found {
            Ok(Ok(Some(found))) => found,
            Ok(Ok(None)) => return Ok(None),
            _ => {
                tracing::warn!(cluster = %cluster.name, "ignition: cannot read the uploaded config");
                return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
            }
        };
        let age = uploaded.elapsed().unwrap_or_default();
        if age > STALE_UPLOAD {
            let role_name = crate::store::uploads::okd_name(role).to_string();
            let age_hours = age.as_secs() / 3600;
            tracing::warn!(cluster = %cluster.name, role = %role_name, age_hours, "serving an OKD Ignition config older than 24 h: its certificates have expired; run openshift-install create ignition-configs again and upload");
            self.record(
                Some(node),
                None,
                EventKind::IgnitionStale { cluster: cluster.name.clone(), role: role_name, age_hours },
            );
        }
        Ok(Some(text))
    }

    /// For a node of a cluster: its cluster's public key and the host key slipway made for the
    /// node, both made on first use. A key that cannot be made or read refuses the config.
    async fn ssh_keys(
        &self,
        inv: &Inventory,
        node: &Node,
        config: ConfigKind,
    ) -> Result<Option<(String, crate::ssh::keys::HostKey)>, Response> {
        let Some(cluster) = node.cluster.as_ref().filter(|c| inv.clusters.contains_key(*c)) else {
            return Ok(None);
        };
        let (dir, cluster, name) = (self.store.files(), cluster.to_string(), node.name.to_string());
        let made = tokio::task::spawn_blocking(move || {
            Ok::<_, crate::ssh::keys::KeyError>((
                crate::ssh::keys::client_public(&dir, &cluster)?,
                crate::ssh::keys::host(&dir, &cluster, &name)?,
            ))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|made| made.map_err(|e| format!("its SSH keys: {e}")));
        match made {
            Ok(keys) => Ok(Some(keys)),
            Err(e) => Err(self.refused(node, config, &e)),
        }
    }

    /// Notes that `node` was served the host key slipway made for it (from now on pinned).
    async fn host_key_delivered(&self, node: &Node) {
        let Some(cluster) = &node.cluster else { return };
        let (dir, cluster, name) = (self.store.files(), cluster.to_string(), node.name.to_string());
        let noted = tokio::task::spawn_blocking(move || crate::ssh::keys::delivered(&dir, &cluster, &name)).await;
        if !matches!(noted, Ok(Ok(()))) {
            // Not pinned: slipway will not log in to it (fails closed).
            tracing::warn!(node = %node.name, "ignition: cannot note the host key as served");
        }
    }

    /// The operator's template `dir/name` (first that exists), read from disk.
    async fn template(&self, dir: &str, names: &[String]) -> Result<Option<String>, Response> {
        let Some(root) = &self.settings.templates else {
            return Ok(None);
        };
        for name in names {
            let path = root.join(dir).join(name);
            match tokio::fs::read_to_string(&path).await {
                Ok(text) => return Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read a template");
                    return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
                }
            }
        }
        Ok(None)
    }
}

fn base_url(conn: &Connection) -> String {
    format!("http://{}", conn.local)
}

fn ipxe(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

#[derive(Deserialize)]
struct ScriptQuery {
    arch: Option<String>,
}

async fn boot_script(
    State(s): State<BootState>,
    Extension(conn): Extension<Connection>,
    Query(q): Query<ScriptQuery>,
) -> Response {
    ipxe(s.script(&conn, q.arch))
}

impl BootState {
    /// The iPXE script for the machine behind `conn` (`arch` unset: the probe that asks iPXE for
    /// it), recording the step at most once per `SCRIPT_EVENT_INTERVAL`.
    pub(super) fn script(&self, conn: &Connection, arch: Option<String>) -> String {
        let server = base_url(conn);
        let Some(arch) = arch.filter(|a| !a.is_empty()) else {
            return script::probe(&server);
        };
        let inv = self.store.snapshot();
        let Some(asker) = self.asker(&inv, conn.peer.ip()) else {
            return script::nothing(&server, "slipway boots IPv4 machines only");
        };
        if let Some(node) = asker.node
            && self.store.installed(node.name.as_str()).is_some()
        {
            if self.script_event_due(asker.ip) {
                self.record(Some(node), asker.mac, EventKind::BootScriptServed { profile: None });
            }
            return script::local_disk(node);
        }
        let machine = Machine { node: asker.node, mac: asker.mac, arch: Some(&arch) };
        let Some(profile) = select::select(&inv, &machine) else {
            let who = asker.mac.map_or(asker.ip.to_string(), |m| format!("{} ({m})", asker.ip));
            tracing::info!(ip = %asker.ip, "boot script: no profile names or matches this machine");
            return script::nothing(
                &server,
                &format!("no profile for {who}; add it as a node or configure a default profile"),
            );
        };
        if asker.node.is_none()
            && let Some(var) = script::needs_node(profile)
        {
            let who = asker.mac.map_or(asker.ip.to_string(), |m| format!("{} ({m})", asker.ip));
            tracing::info!(ip = %asker.ip, profile = %profile.name, "boot script: the profile needs a node");
            return script::nothing(
                &server,
                &format!(
                    "{who} is not a node, and profile {} needs one ({{{{{var}}}}}); add it as a node",
                    profile.name
                ),
            );
        }
        let vars = script::variables(&inv, asker.node, asker.ip, asker.mac, Some(profile), &server);
        match script::boot(profile, &vars) {
            Ok(text) => {
                if self.script_event_due(asker.ip) {
                    self.record(
                        asker.node,
                        asker.mac,
                        EventKind::BootScriptServed { profile: Some(profile.name.clone()) },
                    );
                }
                text
            }
            Err(e) => {
                tracing::warn!(profile = %profile.name, error = %e, "boot script: the profile cannot be rendered");
                script::nothing(&server, &format!("profile {} cannot be rendered; see the slipway log", profile.name))
            }
        }
    }

    /// Records a config served to `node`, and the additions its own config took the place of.
    fn served(&self, node: &Node, config: ConfigKind, left_out: Vec<String>) {
        if !left_out.is_empty() {
            tracing::info!(node = %node.name, ?config, ?left_out, "config served without some of slipway's additions");
            self.record(Some(node), None, EventKind::ConfigAdditionsLeftOut { config, left_out });
        }
        self.record(Some(node), None, EventKind::ConfigFetched { config });
    }

    /// Answers 500 for a config that cannot be served, and records why (never its values), at
    /// most once a minute per node and kind: Ignition retries every few seconds.
    fn refused(&self, node: &Node, config: ConfigKind, problem: &dyn std::fmt::Display) -> Response {
        if self.refusals.due((node.name.clone(), config)) {
            let problem = problem.to_string();
            tracing::warn!(node = %node.name, ?config, %problem, "config not served: it would be invalid");
            self.record(Some(node), None, EventKind::ConfigRefused { config, problem });
        }
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }

    /// Records an image sent (whole or in part) to the machine behind `conn`.
    pub(super) fn record_file(&self, conn: &Connection, path: String, bytes: u64) {
        let inv = self.store.snapshot();
        if let Some(asker) = self.asker(&inv, conn.peer.ip()) {
            self.record(asker.node, asker.mac, EventKind::FileFetched { path, bytes });
        }
    }
}

/// Answers a refused config request: no body that could carry a document.
fn refuse(r: Refusal, conn: &Connection, what: &str) -> Response {
    tracing::info!(peer = %conn.peer, local = %conn.local, ?r, "{what}: refused");
    StatusCode::from_u16(r.status()).unwrap_or(StatusCode::NOT_FOUND).into_response()
}

async fn nocloud(
    State(s): State<BootState>,
    Extension(conn): Extension<Connection>,
    UrlPath((name, doc)): UrlPath<(String, String)>,
) -> Response {
    let inv = s.store.snapshot();
    let node = match access::config_node(&inv, conn.local.ip(), conn.peer.ip(), Some(&name)) {
        Ok(node) => node,
        Err(r) => return refuse(r, &conn, "cloud-init"),
    };
    let Some(doc) = cloudinit::Document::parse(&doc) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let profile = select::select(&inv, &Machine { node: Some(node), mac: Some(node.mac), arch: None });
    let vars = script::variables(&inv, Some(node), node.ipv4, None, profile, &base_url(&conn));
    let mut files = Vec::new();
    let (template, keys) = if doc == cloudinit::Document::UserData {
        let role = node.role.map(|r| format!("{}.user-data", r.as_str()));
        let template = match s
            .template("cloud-init", &role.into_iter().chain(["user-data".to_string()]).collect::<Vec<_>>())
            .await
        {
            Ok(t) => t,
            Err(resp) => return resp,
        };
        // A k3s node without a template of the operator's gets slipway's own.
        let k3s = node.cluster.as_ref().and_then(|c| inv.clusters.get(c)).is_some_and(|c| c.kind == ClusterKind::K3s);
        let template = template.or_else(|| k3s.then(|| cloudinit::K3S_USER_DATA.to_owned()));
        // A k3s first server writes its cluster's at-install add-ons into k3s's own directory.
        if let Some(admission) = s.admission.as_ref().filter(|_| k3s) {
            match admission.install_files(node).await {
                Ok(f) => files = f,
                Err(e) => return s.refused(node, ConfigKind::CloudInit, &e),
            }
        }
        match s.ssh_keys(&inv, node, ConfigKind::CloudInit).await {
            Ok(keys) => (template, keys),
            Err(resp) => return resp,
        }
    } else {
        (None, None)
    };
    let access = keys.as_ref().map(|(key, host)| cloudinit::Access {
        key,
        host_key: crate::boot::ignition::HostKeyFiles { private: &host.private, public: &host.public },
    });
    match cloudinit::render(doc, &vars, &s.settings.ssh_keys, access, &files, template.as_deref()) {
        Ok(rendered) => {
            if doc == cloudinit::Document::UserData {
                if rendered.access {
                    s.host_key_delivered(node).await;
                }
                s.served(node, ConfigKind::CloudInit, rendered.left_out);
            }
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], rendered.body).into_response()
        }
        Err(e) => s.refused(node, ConfigKind::CloudInit, &e),
    }
}

async fn ignition_config(State(s): State<BootState>, Extension(conn): Extension<Connection>) -> Response {
    let inv = s.store.snapshot();
    let node = match access::config_node(&inv, conn.local.ip(), conn.peer.ip(), None) {
        Ok(node) => node,
        Err(r) => return refuse(r, &conn, "ignition"),
    };
    let profile = select::select(&inv, &Machine { node: Some(node), mac: Some(node.mac), arch: None });
    let vars = script::variables(&inv, Some(node), node.ipv4, None, profile, &base_url(&conn));
    let upload = match s.okd_upload(&inv, node).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    let template = match upload {
        Some(_) => None,
        None => {
            let names: Vec<String> = node
                .role
                .map(|r| format!("{}.ign", r.as_str()))
                .into_iter()
                .chain(["default.ign".to_string()])
                .collect();
            match s.template("ignition", &names).await {
                Ok(t) => t,
                Err(resp) => return resp,
            }
        }
    };
    let base = match (&upload, &template) {
        (Some(text), _) => ignition::Base::Verbatim(text),
        (None, Some(text)) => ignition::Base::Template(text),
        (None, None) => ignition::Base::Empty,
    };
    let keys = match s.ssh_keys(&inv, node, ConfigKind::Ignition).await {
        Ok(keys) => keys,
        Err(resp) => return resp,
    };
    let additions = ignition::Additions {
        ssh_keys: &s.settings.ssh_keys,
        cluster_key: keys.as_ref().map(|(client, _)| client.as_str()),
        host_key: keys.as_ref().map(|(_, k)| ignition::HostKeyFiles { private: &k.private, public: &k.public }),
    };
    match ignition::render(base, &vars, &additions) {
        Ok(rendered) => {
            if rendered.merged.contains(&ignition::fragments::HOST_KEY) {
                s.host_key_delivered(node).await;
            }
            s.served(node, ConfigKind::Ignition, rendered.left_out);
            ([(header::CONTENT_TYPE, "application/vnd.coreos.ignition+json")], rendered.body).into_response()
        }
        Err(e) => s.refused(node, ConfigKind::Ignition, &e),
    }
}

/// A k3s node's `config.yaml` once it is its turn (`200`); `503` with `Retry-After` and the
/// reason until then; `404` for a node of no k3s cluster. Only to the node itself.
async fn k3s_config(State(s): State<BootState>, Extension(conn): Extension<Connection>) -> Response {
    let inv = s.store.snapshot();
    let node = match access::config_node(&inv, conn.local.ip(), conn.peer.ip(), None) {
        Ok(node) => node,
        Err(r) => return refuse(r, &conn, "k3s config"),
    };
    let Some(admission) = &s.admission else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match admission.config(node).await {
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Ok(Some(crate::boot::k3s::Answer::Config(body))) => {
            tracing::info!(node = %node.name, "k3s config served: the node starts k3s");
            s.record(Some(node), None, EventKind::K3sConfigServed);
            ([(header::CONTENT_TYPE, "application/yaml")], body.to_string()).into_response()
        }
        Ok(Some(crate::boot::k3s::Answer::Joined)) => (
            StatusCode::GONE,
            "this node joined its cluster: its k3s config is not served again (reinstall it to join anew)\n",
        )
            .into_response(),
        Ok(Some(crate::boot::k3s::Answer::Wait(why))) => {
            if s.waits.due(node.name.clone()) {
                tracing::debug!(node = %node.name, %why, "k3s config: not the node's turn");
            }
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
        Err(e) => {
            tracing::warn!(node = %node.name, error = %e, "k3s config cannot be made");
            (StatusCode::INTERNAL_SERVER_ERROR, "slipway cannot make this node's k3s config; see its log\n")
                .into_response()
        }
    }
}

/// A node reports that it is up. Its profile says whether that means "installed" (the next
/// network boot then boots the disk).
async fn phone_home(State(s): State<BootState>, Extension(conn): Extension<Connection>) -> Response {
    let inv = s.store.snapshot();
    let node = match access::config_node(&inv, conn.local.ip(), conn.peer.ip(), None) {
        Ok(node) => node,
        Err(r) => return refuse(r, &conn, "phone-home"),
    };
    let profile = select::select(&inv, &Machine { node: Some(node), mac: Some(node.mac), arch: None });
    if profile.is_some_and(|p| p.installs) {
        let store = s.store.clone();
        let name = node.name.to_string();
        let marked = tokio::task::spawn_blocking(move || store.set_installed(&name, Some(Timestamp::now()))).await;
        if !matches!(marked, Ok(Ok(_))) {
            tracing::warn!(node = %node.name, "phone-home: cannot record the installation");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    tracing::info!(node = %node.name, ip = %node.ipv4, "phone-home");
    s.record(Some(node), None, EventKind::PhoneHome { ip: node.ipv4 });
    StatusCode::NO_CONTENT.into_response()
}

/// Records a served image (`200` or `206`) as a boot step of the machine that fetched it.
async fn record_fetch(
    State(s): State<BootState>,
    Extension(conn): Extension<Connection>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().trim_start_matches('/').to_string();
    let response = next.run(req).await;
    if matches!(response.status(), StatusCode::OK | StatusCode::PARTIAL_CONTENT) {
        let bytes = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        s.record_file(&conn, path, bytes);
    }
    response
}
