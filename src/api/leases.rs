//! DHCP leases over HTTP: list with state and owning node, and release.

use std::net::Ipv4Addr;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use crate::inventory::{Lease, Name, Timestamp};
use crate::store::events::{EventKind, Source, Subject};

/// A lease as shown to operators: whether it still holds its address, and whose node it is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeaseView {
    #[serde(flatten)]
    pub lease: Lease,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<Name>,
}

/// List leases, ordered by address.
#[utoipa::path(get, path = "/api/v1/leases", tag = "leases", responses((status = 200, body = Vec<LeaseView>)))]
pub async fn list_leases(State(s): State<ApiState>) -> Result<Json<Vec<LeaseView>>, ApiError> {
    let store = s.store.clone();
    let leases =
        tokio::task::spawn_blocking(move || store.leases()).await.map_err(|e| ApiError::Internal(e.to_string()))??;
    let inv = s.store.snapshot();
    let now = Timestamp::now();
    Ok(Json(
        leases
            .into_iter()
            .map(|lease| LeaseView {
                active: lease.is_active(now),
                node: inv.node_by_mac(lease.mac).map(|n| n.name.clone()),
                lease,
            })
            .collect(),
    ))
}

/// Release the lease on an address so it can be handed out again.
#[utoipa::path(delete, path = "/api/v1/leases/{ip}", tag = "leases", params(("ip" = String, Path)),
    responses((status = 200, body = LeaseView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn release_lease(State(s): State<ApiState>, Path(ip): Path<String>) -> Result<Json<LeaseView>, ApiError> {
    let ip: Ipv4Addr = ip.parse().map_err(|_| {
        ApiError::bad("ip", format!("ip: '{}' is not an IPv4 address", crate::inventory::types::shown(&ip)))
    })?;
    // With DHCP running, its lease owner releases (so its table and the store agree).
    let lease = match s.running.get().dhcp {
        Some(dhcp) => dhcp.release(ip).await?,
        None => {
            let store = s.store.clone();
            tokio::task::spawn_blocking(move || store.release_lease(ip, Timestamp::now()))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))??
        }
    };
    let node = s.store.snapshot().node_by_mac(lease.mac).map(|n| n.name.clone());
    s.events.append(Source::Api, Subject { node: node.clone(), mac: Some(lease.mac) }, EventKind::LeaseReleased { ip });
    tracing::info!(%ip, mac = %lease.mac, "lease released through the API");
    Ok(Json(LeaseView { active: false, node, lease }))
}
