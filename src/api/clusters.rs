//! Defined clusters: plan (a dry run), apply a definition, status, retry.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::ApiState;
use super::error::{ApiError, Body, ErrorBody};
use super::objects::path_name;
use crate::cluster::control::{ControlError, Status};
use crate::cluster::{Definition, Plan};
use crate::inventory::{Kind, Problem};

fn definition_for(name: &str, definition: Definition) -> Result<Definition, ApiError> {
    let name = path_name(name)?;
    if definition.name != name {
        return Err(ApiError::bad(
            "name",
            format!("name: the body defines {} but the path names {name}", definition.name),
        ));
    }
    Ok(definition)
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Invalid(problems) => ApiError::Invalid(
                problems
                    .into_iter()
                    .map(|p| Problem {
                        kind: Kind::Cluster,
                        name: String::new(),
                        field: p.field,
                        value: p.value,
                        message: p.message,
                    })
                    .collect(),
            ),
            ControlError::Busy(_) | ControlError::Declared { .. } => ApiError::Conflict(e.to_string()),
            ControlError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ControlError::Store(e) => e.into(),
            ControlError::Task(e) => ApiError::Internal(e),
            ControlError::Upstream(e) => ApiError::Upstream(e),
        }
    }
}

/// What a plan or an apply answers: every node with its MAC, address and VM, and what changes.
#[derive(Debug, Serialize)]
pub struct PlanView(Plan);

impl axum::response::IntoResponse for PlanView {
    fn into_response(self) -> axum::response::Response {
        Json(self.0).into_response()
    }
}

/// The plan of a definition against what exists: nothing is changed.
#[utoipa::path(post, path = "/api/v1/clusters/{name}/plan", tag = "clusters", params(("name" = String, Path)),
    request_body(content = Definition, description = "a cluster definition (JSON; YAML too, sent with Content-Type: application/yaml)"),
    responses((status = 200, description = "the plan: cluster, nodes (MAC, address, VM, foreseen host), changes, warnings", body = Plan), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn plan(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Body(definition): Body<Definition>,
) -> Result<PlanView, ApiError> {
    let definition = definition_for(&name, definition)?;
    Ok(PlanView(s.clusters.plan(&definition).await?))
}

/// Store a definition: the cluster, its nodes' reservations and their first phase, in one
/// transaction; the engine then creates and boots the VMs. Applies are serialised.
#[utoipa::path(put, path = "/api/v1/clusters/{name}/definition", tag = "clusters", operation_id = "apply_cluster", params(("name" = String, Path)),
    request_body(content = Definition, description = "a cluster definition (JSON; YAML too, sent with Content-Type: application/yaml)"),
    responses((status = 200, description = "the plan applied", body = Plan), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn apply(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Body(definition): Body<Definition>,
) -> Result<PlanView, ApiError> {
    let definition = definition_for(&name, definition)?;
    Ok(PlanView(s.clusters.apply(definition).await?))
}

/// The stored definition.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/definition", tag = "clusters", params(("name" = String, Path)),
    responses((status = 200, description = "the definition as applied", body = Definition), (status = 404, body = ErrorBody)))]
pub async fn get_definition(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Definition>, ApiError> {
    let name = path_name(&name)?;
    Ok(Json(s.clusters.definition(name.as_str()).await?))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// `true`: leave the VMs running; only slipway's records of them go.
    keep_vms: Option<bool>,
}

#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Removing {
    /// The nodes now leaving (Draining -> ShuttingDown -> Deleting -> gone).
    pub nodes: Vec<String>,
}

/// Delete a defined cluster: every node drains from the load balancers, its VM is shut down
/// and deleted (unless `keep_vms`), its reservation and names go; the cluster and its
/// definition go with the last node.
#[utoipa::path(delete, path = "/api/v1/clusters/{name}/definition", tag = "clusters", params(("name" = String, Path), DeleteQuery),
    responses((status = 200, body = Removing), (status = 404, body = ErrorBody), (status = 409, description = "a profile or pool names the cluster, or the config file defines it", body = ErrorBody)))]
pub async fn delete_definition(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<DeleteQuery>,
) -> Result<Json<Removing>, ApiError> {
    let name = path_name(&name)?;
    Ok(Json(Removing { nodes: s.clusters.delete(name.as_str(), q.keep_vms.unwrap_or(false)).await? }))
}

/// The cluster's phase and every node's: time in phase, deadline, VM, last error.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/status", tag = "clusters", operation_id = "cluster_status", params(("name" = String, Path)),
    responses((status = 200, body = Status), (status = 404, body = ErrorBody)))]
pub async fn status(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Status>, ApiError> {
    let name = path_name(&name)?;
    Ok(Json(s.clusters.status(name.as_str()).await?))
}

#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    /// The node group whose count changes.
    pub group: String,
    pub count: u32,
}

/// Change one node group's count: the stored definition with that count, applied again (read
/// and applied under the apply lock: concurrent scales of different groups both count). New
/// nodes go through every phase; leaving ones (the highest-numbered) drain, shut down and go.
#[utoipa::path(post, path = "/api/v1/clusters/{name}/scale", tag = "clusters", params(("name" = String, Path)),
    request_body = Scale,
    responses((status = 200, description = "the plan applied", body = Plan), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn scale(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Body(scale): Body<Scale>,
) -> Result<PlanView, ApiError> {
    let name = path_name(&name)?;
    Ok(PlanView(s.clusters.scale(name.as_str(), &scale.group, scale.count).await?))
}

#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Retried {
    /// The failed nodes put back into the phase they failed in.
    pub resumed: Vec<String>,
}

/// Resume every failed node of the cluster in the phase it failed in, with a fresh deadline.
#[utoipa::path(post, path = "/api/v1/clusters/{name}/retry", tag = "clusters", params(("name" = String, Path)),
    responses((status = 200, body = Retried), (status = 404, body = ErrorBody)))]
pub async fn retry(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Retried>, ApiError> {
    let name = path_name(&name)?;
    Ok(Json(Retried { resumed: s.clusters.retry(name.as_str()).await? }))
}

/// The answer to a kubeconfig upload: who slipway acts as, until when.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct KubeconfigUpload {
    pub cluster: String,
    /// The API server the kubeconfig names (slipway itself goes through `api-int`).
    pub server: String,
    /// The client certificate's subject CN (`system:admin` for the installer's).
    pub user: String,
    /// When the client certificate expires.
    pub expires: crate::inventory::Timestamp,
}

/// Largest kubeconfig accepted (the installer's is about 9 KiB).
pub const MAX_KUBECONFIG: usize = 1 << 20;

/// Upload `openshift-install`'s `auth/kubeconfig` for an OKD cluster: slipway follows the
/// install through the cluster's API with it (mutual TLS with its client certificate) and
/// approves kubelet CSRs. Stored with mode 0600, never logged, never served.
#[utoipa::path(put, path = "/api/v1/clusters/{name}/kubeconfig", tag = "clusters", params(("name" = String, Path)),
    request_body(content = String, content_type = "application/yaml", description = "the installer's auth/kubeconfig"),
    responses((status = 200, body = KubeconfigUpload), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn put_kubeconfig(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    super::error::Raw(body): super::error::Raw,
) -> Result<Json<KubeconfigUpload>, ApiError> {
    let name = path_name(&name)?;
    let inv = s.store.snapshot();
    let cluster = inv.clusters.get(&name).ok_or_else(|| ApiError::NotFound(format!("no cluster named {name}")))?;
    if cluster.kind != crate::inventory::ClusterKind::Okd {
        return Err(ApiError::Conflict(format!(
            "cluster {name} is not an OKD cluster: slipway makes a k3s cluster's kubeconfig itself"
        )));
    }
    if body.len() > MAX_KUBECONFIG {
        return Err(ApiError::bad(
            "body",
            format!("body: {} bytes, more than a kubeconfig's {MAX_KUBECONFIG}", body.len()),
        ));
    }
    let config = crate::kube::config::parse(&body).map_err(|e| ApiError::bad(&e.field, e.to_string()))?;
    let (user, expires) = config.identity().map_err(|e| ApiError::bad(&e.field, e.to_string()))?;
    let expires = crate::inventory::Timestamp(expires);
    if expires.0 <= std::time::SystemTime::now() {
        return Err(ApiError::bad(
            "client-certificate-data",
            "client-certificate-data: the client certificate has expired",
        ));
    }
    let dir = s.store.files();
    let key = name.to_string();
    tokio::task::spawn_blocking(move || crate::store::uploads::put_kubeconfig(&dir, &key, &body))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::writing("the kubeconfig", e))?;
    let details =
        crate::store::events::EventKind::KubeconfigUploaded { cluster: name.clone(), user: user.clone(), expires };
    s.events.append(crate::store::events::Source::Api, crate::store::events::Subject::default(), details);
    tracing::info!(cluster = %name, %user, "kubeconfig uploaded");
    Ok(Json(KubeconfigUpload { cluster: name.to_string(), server: config.server, user, expires }))
}

/// A cluster's admin kubeconfig as stored.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StoredKubeconfig {
    pub cluster: String,
    /// The document (YAML): k3s's, pointed at `https://api.<zone>:6443`; OKD's as uploaded.
    pub kubeconfig: String,
}

/// The cluster's admin kubeconfig: for k3s, the one slipway read from the first server (over
/// SSH) and pointed at the load balancer; for OKD, the uploaded one. Admin only (it is the
/// cluster's admin credential); never logged.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/kubeconfig", tag = "clusters", params(("name" = String, Path)),
    responses((status = 200, body = StoredKubeconfig), (status = 404, body = ErrorBody)))]
pub async fn get_kubeconfig(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<StoredKubeconfig>, ApiError> {
    let name = path_name(&name)?;
    if !s.store.snapshot().clusters.contains_key(&name) {
        return Err(ApiError::NotFound(format!("no cluster named {name}")));
    }
    let (dir, key) = (s.store.files(), name.to_string());
    let found = tokio::task::spawn_blocking(move || crate::store::uploads::get_kubeconfig(&dir, &key))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("cannot read the kubeconfig: {e}")))?;
    let bytes = found.ok_or_else(|| {
        ApiError::NotFound(format!(
            "cluster {name} has no kubeconfig yet (k3s: read from its first server once it runs; OKD: upload auth/kubeconfig)"
        ))
    })?;
    Ok(Json(StoredKubeconfig { cluster: name.to_string(), kubeconfig: String::from_utf8_lossy(&bytes).into_owned() }))
}

/// The cluster's CSRs, each pending kubelet CSR with slipway's verdict (`approve: ...` or
/// `leave: ...`), read from the cluster's API.
#[utoipa::path(get, path = "/api/v1/clusters/{name}/csrs", tag = "clusters", params(("name" = String, Path)),
    responses((status = 200, body = Vec<crate::cluster::okd::manual::CsrView>), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn list_csrs(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<crate::cluster::okd::manual::CsrView>>, ApiError> {
    let name = path_name(&name)?;
    Ok(Json(crate::cluster::okd::manual::list(&s.clusters, name.as_str()).await?))
}

/// Approve a pending CSR by name: the operator's decision, whatever slipway's checks say
/// (recorded as such in the event log).
#[utoipa::path(post, path = "/api/v1/clusters/{name}/csrs/{csr}/approve", tag = "clusters",
    params(("name" = String, Path), ("csr" = String, Path)),
    responses((status = 200, body = crate::cluster::okd::manual::CsrView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn approve_csr(
    State(s): State<ApiState>,
    Path((name, csr)): Path<(String, String)>,
) -> Result<Json<crate::cluster::okd::manual::CsrView>, ApiError> {
    let name = path_name(&name)?;
    if csr.is_empty() || csr.len() > 253 || !csr.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c)) {
        return Err(ApiError::bad("csr", format!("csr: '{}' is not a CSR name", crate::inventory::types::shown(&csr))));
    }
    Ok(Json(crate::cluster::okd::manual::approve(&s.clusters, name.as_str(), &csr).await?))
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Remove it even though etcd has not let go of the bootstrap member yet.
    #[serde(default)]
    pub force: bool,
}

/// Remove an OKD cluster's bootstrap node now (drained from the pools, shut down, deleted).
/// Refused until etcd has removed its bootstrap member, unless `force`.
#[utoipa::path(post, path = "/api/v1/clusters/{name}/bootstrap/remove", tag = "clusters",
    params(("name" = String, Path), RemoveQuery),
    responses((status = 200, body = Removing), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn remove_bootstrap(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<RemoveQuery>,
) -> Result<Json<Removing>, ApiError> {
    let name = path_name(&name)?;
    let nodes = crate::cluster::okd::manual::remove_bootstrap(&s.clusters, name.as_str(), query.force).await?;
    Ok(Json(Removing { nodes }))
}

/// What the bootstrap node said.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Diagnostics {
    pub commands: Vec<crate::store::events::CommandOutput>,
}

/// Read an OKD cluster's bootstrap diagnostics now over SSH (as `core`, the node's host key
/// pinned): the last lines of the bootkube and release-image journals and the failed units.
/// Also recorded as a `node_diagnostics` event. 502 names why the node could not be read
/// (unreachable, a host key other than the one slipway made, the key refused).
#[utoipa::path(post, path = "/api/v1/clusters/{name}/bootstrap/gather", tag = "clusters",
    params(("name" = String, Path)),
    responses((status = 200, body = Diagnostics), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn gather_bootstrap(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Diagnostics>, ApiError> {
    let name = path_name(&name)?;
    let commands = crate::cluster::okd::manual::gather(&s.clusters, name.as_str()).await?;
    Ok(Json(Diagnostics { commands }))
}
