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
/// installed system.
#[utoipa::path(post, path = "/api/v1/nodes/{name}/reinstall", tag = "boot", params(("name" = String, Path)),
    responses((status = 200, body = Reinstall), (status = 404, body = ErrorBody)))]
pub async fn reinstall(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Reinstall>, ApiError> {
    let node = node(&s, &name)?;
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
