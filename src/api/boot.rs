//! Boot state over HTTP: a node's boot timeline, and asking for a reinstall (an installed node
//! boots its disk until then).

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use crate::boot::select::{self, Machine};
use crate::boot::timeline::{self, Timeline};
use crate::inventory::{Name, Node, Timestamp};
use crate::store::events::{EventKind, Filter, Source, Subject};

/// How many of a node's newest events the timeline reads.
const TIMELINE_EVENTS: usize = 500;

fn node(s: &ApiState, name: &str) -> Result<Node, ApiError> {
    s.store.snapshot().nodes.get(name).cloned().ok_or_else(|| ApiError::NotFound(format!("no node named {name}")))
}

/// A node's boot steps with times, and where its latest boot stopped.
#[utoipa::path(get, path = "/api/v1/nodes/{name}/timeline", tag = "boot", params(("name" = String, Path)),
    responses((status = 200, body = Timeline), (status = 404, body = ErrorBody)))]
pub async fn get_timeline(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Timeline>, ApiError> {
    let node = node(&s, &name)?;
    let filter = Filter { node: Some(node.name.clone()), ..Filter::default() };
    let log = s.events.clone();
    let events = tokio::task::spawn_blocking(move || log.query(&filter, TIMELINE_EVENTS))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let inv = s.store.snapshot();
    let profile = select::select(&inv, &Machine { node: Some(&node), mac: Some(node.mac), arch: None });
    Ok(Json(timeline::timeline(&node, profile, &events)))
}

/// The answer to a reinstall request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Reinstall {
    pub node: Name,
    /// When the node had reported an installed system, if it had.
    pub was_installed: Option<Timestamp>,
}

/// Boot the node's profile again on its next network boot, even though it reported an
/// installed system. A node of a k3s cluster has its Node object deleted first (`502` naming
/// why when the cluster's API cannot do it; nothing changes then).
#[utoipa::path(post, path = "/api/v1/nodes/{name}/reinstall", tag = "boot", params(("name" = String, Path)),
    responses((status = 200, body = Reinstall), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn reinstall(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Reinstall>, ApiError> {
    let node = node(&s, &name)?;
    // k3s refuses a node that comes back under its name while its Node object is there.
    crate::cluster::k3s::drive::forget_node(&s.clusters, &node).await.map_err(|e| {
        ApiError::Upstream(format!(
            "cannot delete Node {} from its cluster's API ({e}); reinstalled, k3s would refuse it (Node password rejected): delete it yourself (kubectl delete node {}), then reinstall",
            node.name, node.name
        ))
    })?;
    let store = s.store.clone();
    let key = node.name.to_string();
    let was_installed = tokio::task::spawn_blocking(move || store.set_installed(&key, None))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    s.events.append(
        Source::Api,
        Subject { node: Some(node.name.clone()), mac: Some(node.mac) },
        EventKind::ReinstallRequested,
    );
    tracing::info!(node = %node.name, "reinstall requested");
    Ok(Json(Reinstall { node: node.name, was_installed }))
}

/// The answer to an Ignition upload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IgnitionUpload {
    pub cluster: Name,
    /// `bootstrap`, `master` or `worker`, as `openshift-install` names the files.
    pub role: String,
    /// The Ignition spec version the config declares.
    pub version: String,
    pub bytes: u64,
}

/// Largest Ignition config accepted (OKD's bootstrap.ign is a few hundred KiB).
pub const MAX_IGNITION: usize = 32 << 20;

/// Upload `openshift-install`'s Ignition config for a role of an OKD cluster (`bootstrap`,
/// `master`, `worker`). It is checked against its Ignition spec, stored with mode 0600, and
/// served (with slipway's hostname and phone-home added) to that cluster's nodes of that role.
/// One whose short-lived certificates have expired is refused; its age counts from when they
/// were made.
#[utoipa::path(put, path = "/api/v1/clusters/{name}/ignition/{role}", tag = "boot",
    params(("name" = String, Path), ("role" = String, Path, description = "bootstrap, master or worker")),
    request_body(content = String, content_type = "application/vnd.coreos.ignition+json"),
    responses((status = 200, body = IgnitionUpload), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn put_ignition(
    State(s): State<ApiState>,
    Path((name, role)): Path<(String, String)>,
    super::error::Raw(body): super::error::Raw,
) -> Result<Json<IgnitionUpload>, ApiError> {
    use crate::inventory::{ClusterKind, Role};
    let inv = s.store.snapshot();
    let cluster =
        inv.clusters.get(name.as_str()).ok_or_else(|| ApiError::NotFound(format!("no cluster named {name}")))?;
    if cluster.kind != ClusterKind::Okd {
        return Err(ApiError::Conflict(format!(
            "cluster {name} is not an OKD cluster: its nodes get Ignition rendered from templates, not uploads"
        )));
    }
    let role = match role.as_str() {
        "bootstrap" => Role::Bootstrap,
        "master" | "control-plane" => Role::ControlPlane,
        "worker" => Role::Worker,
        other => {
            return Err(ApiError::bad(
                "role",
                format!("role: '{}' is not bootstrap, master or worker", crate::inventory::types::shown(other)),
            ));
        }
    };
    let version = crate::boot::ignition::check_upload(&body).map_err(|e| ApiError::bad("body", e.to_string()))?;
    // Its short-lived certificates date it: one that has expired serves no node.
    let validity = serde_json::from_slice(&body).ok().and_then(|v| crate::boot::ignition::certs::short_lived(&v));
    if let Some(v) = validity.filter(|v| v.expires <= std::time::SystemTime::now()) {
        let age = v.made.elapsed().unwrap_or_default().as_secs() / 3600;
        return Err(ApiError::bad(
            "body",
            format!(
                "body: its certificates expired at {} (made {age} h ago; the installer's expire after 24 h): run openshift-install create ignition-configs again and upload that",
                humantime::format_rfc3339_seconds(v.expires)
            ),
        ));
    }
    let made = validity.map(|v| v.made);
    let dir = s.store.files();
    let (cluster_name, bytes) = (cluster.name.clone(), body.len() as u64);
    let key = cluster_name.to_string();
    tokio::task::spawn_blocking(move || crate::store::uploads::put(&dir, &key, role, &body, made))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::writing("the Ignition config", e))?;
    let role_name = crate::store::uploads::okd_name(role).to_string();
    s.events.append(
        Source::Api,
        Subject::default(),
        EventKind::IgnitionUploaded {
            cluster: cluster_name.clone(),
            role: role_name.clone(),
            version: version.clone(),
            bytes,
        },
    );
    tracing::info!(cluster = %cluster_name, role = %role_name, %version, bytes, "Ignition config uploaded");
    Ok(Json(IgnitionUpload { cluster: cluster_name, role: role_name, version, bytes }))
}
