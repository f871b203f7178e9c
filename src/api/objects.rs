//! Inventory objects over HTTP: nodes, clusters and profiles (read/write), networks (read),
//! and `apply` for a whole manifest in one transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::error::{ApiError, Body, ErrorBody};
use crate::inventory::{Action, Cluster, Inventory, Kind, Name, Network, Node, Object, Op, Outcome, Profile};
use crate::store::events::Source;

/// Objects the API can write, with their place in the inventory.
pub trait Resource: Serialize + DeserializeOwned + Clone + Send + 'static {
    const KIND: Kind;
    fn all(inv: &Inventory) -> &BTreeMap<Name, Self>;
    fn name(&self) -> &Name;
    fn into_object(self) -> Object;
}

impl Resource for Node {
    const KIND: Kind = Kind::Node;
    fn all(inv: &Inventory) -> &BTreeMap<Name, Self> {
        &inv.nodes
    }
    fn name(&self) -> &Name {
        &self.name
    }
    fn into_object(self) -> Object {
        Object::Node(self)
    }
}

impl Resource for Cluster {
    const KIND: Kind = Kind::Cluster;
    fn all(inv: &Inventory) -> &BTreeMap<Name, Self> {
        &inv.clusters
    }
    fn name(&self) -> &Name {
        &self.name
    }
    fn into_object(self) -> Object {
        Object::Cluster(self)
    }
}

impl Resource for Profile {
    const KIND: Kind = Kind::Profile;
    fn all(inv: &Inventory) -> &BTreeMap<Name, Self> {
        &inv.profiles
    }
    fn name(&self) -> &Name {
        &self.name
    }
    fn into_object(self) -> Object {
        Object::Profile(self)
    }
}

/// A set of objects applied together: created or replaced in one transaction.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub profiles: Vec<Profile>,
    #[serde(default)]
    pub nodes: Vec<Node>,
}

impl Manifest {
    /// Its objects as one change: each created or replaced, clusters first, then profiles, then nodes.
    pub fn into_ops(self) -> Vec<Op> {
        let clusters = self.clusters.into_iter().map(Object::Cluster);
        let profiles = self.profiles.into_iter().map(Object::Profile);
        clusters.chain(profiles).chain(self.nodes.into_iter().map(Object::Node)).map(Op::Put).collect()
    }
}

/// Parses a name from a URL path segment, naming the parameter on failure.
pub fn path_name(name: &str) -> Result<Name, ApiError> {
    name.parse().map_err(|e: crate::inventory::BadValue| ApiError::bad("name", format!("name: {e}")))
}

/// Commits a change off the async threads and records what changed in the event log.
pub async fn commit(state: &ApiState, ops: Vec<Op>) -> Result<(Arc<Inventory>, Vec<Outcome>), ApiError> {
    let store = state.store.clone();
    let (inv, outcomes) = tokio::task::spawn_blocking(move || store.apply(&ops))
        .await
        .map_err(|e| ApiError::Internal(format!("store task: {e}")))??;
    state.events.inventory_changed(Source::Api, &inv, &outcomes);
    Ok((inv, outcomes))
}

async fn list<T: Resource>(state: &ApiState) -> Json<Vec<T>> {
    Json(T::all(&state.store.snapshot()).values().cloned().collect())
}

async fn get<T: Resource>(state: &ApiState, name: &str) -> Result<Json<T>, ApiError> {
    let name = path_name(name)?;
    T::all(&state.store.snapshot())
        .get(&name)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("{} {name} does not exist", T::KIND)))
}

async fn create<T: Resource>(state: &ApiState, object: T) -> Result<(StatusCode, Json<T>), ApiError> {
    let name = object.name().clone();
    let (inv, _) = commit(state, vec![Op::Create(object.into_object())]).await?;
    let stored = T::all(&inv)
        .get(&name)
        .cloned()
        .ok_or_else(|| ApiError::Internal(format!("{} {name} missing after create", T::KIND)))?;
    Ok((StatusCode::CREATED, Json(stored)))
}

async fn put<T: Resource>(state: &ApiState, name: &str, object: T) -> Result<(StatusCode, Json<T>), ApiError> {
    let name = path_name(name)?;
    if *object.name() != name {
        return Err(ApiError::bad("name", format!("name: the body names {} but the path names {name}", object.name())));
    }
    let (inv, outcomes) = commit(state, vec![Op::Put(object.into_object())]).await?;
    let status = if outcomes[0].action == Action::Created { StatusCode::CREATED } else { StatusCode::OK };
    let stored = T::all(&inv)
        .get(&name)
        .cloned()
        .ok_or_else(|| ApiError::Internal(format!("{} {name} missing after put", T::KIND)))?;
    Ok((status, Json(stored)))
}

async fn delete<T: Resource>(state: &ApiState, name: &str) -> Result<StatusCode, ApiError> {
    commit(state, vec![Op::Delete(T::KIND, path_name(name)?)]).await?;
    Ok(StatusCode::NO_CONTENT)
}

// Nodes.

/// List nodes.
#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes", responses((status = 200, body = Vec<Node>)))]
pub async fn list_nodes(State(s): State<ApiState>) -> Json<Vec<Node>> {
    list(&s).await
}

/// Get one node.
#[utoipa::path(get, path = "/api/v1/nodes/{name}", tag = "nodes", params(("name" = String, Path)),
    responses((status = 200, body = Node), (status = 404, body = ErrorBody)))]
pub async fn get_node(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Node>, ApiError> {
    get(&s, &name).await
}

/// Create a node; 409 if one with this name exists.
#[utoipa::path(post, path = "/api/v1/nodes", tag = "nodes", request_body = Node,
    responses((status = 201, body = Node), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_node(
    State(s): State<ApiState>,
    Body(node): Body<Node>,
) -> Result<(StatusCode, Json<Node>), ApiError> {
    create(&s, node).await
}

/// Create or replace a node.
#[utoipa::path(put, path = "/api/v1/nodes/{name}", tag = "nodes", params(("name" = String, Path)), request_body = Node,
    responses((status = 200, body = Node), (status = 201, body = Node), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_node(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Body(node): Body<Node>,
) -> Result<(StatusCode, Json<Node>), ApiError> {
    put(&s, &name, node).await
}

/// Delete a node.
#[utoipa::path(delete, path = "/api/v1/nodes/{name}", tag = "nodes", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_node(State(s): State<ApiState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    delete::<Node>(&s, &name).await
}

// Clusters.

/// List clusters.
#[utoipa::path(get, path = "/api/v1/clusters", tag = "clusters", responses((status = 200, body = Vec<Cluster>)))]
pub async fn list_clusters(State(s): State<ApiState>) -> Json<Vec<Cluster>> {
    list(&s).await
}

/// Get one cluster.
#[utoipa::path(get, path = "/api/v1/clusters/{name}", tag = "clusters", params(("name" = String, Path)),
    responses((status = 200, body = Cluster), (status = 404, body = ErrorBody)))]
pub async fn get_cluster(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Cluster>, ApiError> {
    get(&s, &name).await
}

/// Create a cluster; 409 if one with this name exists.
#[utoipa::path(post, path = "/api/v1/clusters", tag = "clusters", request_body = Cluster,
    responses((status = 201, body = Cluster), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_cluster(
    State(s): State<ApiState>,
    Body(c): Body<Cluster>,
) -> Result<(StatusCode, Json<Cluster>), ApiError> {
    create(&s, c).await
}

/// Create or replace a cluster.
#[utoipa::path(put, path = "/api/v1/clusters/{name}", tag = "clusters", params(("name" = String, Path)), request_body = Cluster,
    responses((status = 200, body = Cluster), (status = 201, body = Cluster), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_cluster(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Body(c): Body<Cluster>,
) -> Result<(StatusCode, Json<Cluster>), ApiError> {
    put(&s, &name, c).await
}

/// Delete a cluster (refused while nodes belong to it).
#[utoipa::path(delete, path = "/api/v1/clusters/{name}", tag = "clusters", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn delete_cluster(State(s): State<ApiState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    delete::<Cluster>(&s, &name).await
}

// Profiles.

/// List boot profiles.
#[utoipa::path(get, path = "/api/v1/profiles", tag = "profiles", responses((status = 200, body = Vec<Profile>)))]
pub async fn list_profiles(State(s): State<ApiState>) -> Json<Vec<Profile>> {
    list(&s).await
}

/// Get one boot profile.
#[utoipa::path(get, path = "/api/v1/profiles/{name}", tag = "profiles", params(("name" = String, Path)),
    responses((status = 200, body = Profile), (status = 404, body = ErrorBody)))]
pub async fn get_profile(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Profile>, ApiError> {
    get(&s, &name).await
}

/// Create a boot profile; 409 if one with this name exists.
#[utoipa::path(post, path = "/api/v1/profiles", tag = "profiles", request_body = Profile,
    responses((status = 201, body = Profile), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_profile(
    State(s): State<ApiState>,
    Body(p): Body<Profile>,
) -> Result<(StatusCode, Json<Profile>), ApiError> {
    create(&s, p).await
}

/// Create or replace a boot profile.
#[utoipa::path(put, path = "/api/v1/profiles/{name}", tag = "profiles", params(("name" = String, Path)), request_body = Profile,
    responses((status = 200, body = Profile), (status = 201, body = Profile), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_profile(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Body(p): Body<Profile>,
) -> Result<(StatusCode, Json<Profile>), ApiError> {
    put(&s, &name, p).await
}

/// Delete a boot profile (refused while nodes use it).
#[utoipa::path(delete, path = "/api/v1/profiles/{name}", tag = "profiles", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn delete_profile(State(s): State<ApiState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    delete::<Profile>(&s, &name).await
}

// Networks (declared in the config file; read-only here).

/// List networks.
#[utoipa::path(get, path = "/api/v1/networks", tag = "networks", responses((status = 200, body = Vec<Network>)))]
pub async fn list_networks(State(s): State<ApiState>) -> Json<Vec<Network>> {
    Json(s.store.snapshot().networks.values().cloned().collect())
}

/// Get one network.
#[utoipa::path(get, path = "/api/v1/networks/{name}", tag = "networks", params(("name" = String, Path)),
    responses((status = 200, body = Network), (status = 404, body = ErrorBody)))]
pub async fn get_network(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Network>, ApiError> {
    let name = path_name(&name)?;
    s.store
        .snapshot()
        .networks
        .get(&name)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("network {name} does not exist")))
}

/// Create or replace every object of a manifest in one transaction: all or nothing.
#[utoipa::path(post, path = "/api/v1/apply", tag = "apply", request_body = Manifest,
    responses((status = 200, body = Vec<Outcome>), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn apply(State(s): State<ApiState>, Body(manifest): Body<Manifest>) -> Result<Json<Vec<Outcome>>, ApiError> {
    let (_, outcomes) = commit(&s, manifest.into_ops()).await?;
    Ok(Json(outcomes))
}
