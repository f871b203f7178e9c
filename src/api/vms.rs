//! The VMs slipway owns, as each configured hypervisor reports them.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use crate::hypervisor::Vm;

/// How long one hypervisor may take to list its VMs.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// Every slipway-owned VM found, and the hypervisors that could not be asked.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VmList {
    pub vms: Vec<Vm>,
    /// One line per hypervisor that failed, naming it and why.
    pub errors: Vec<String>,
}

/// List slipway-owned VMs on every configured hypervisor, with their state.
#[utoipa::path(get, path = "/api/v1/vms", tag = "vms",
    responses((status = 200, body = VmList), (status = 404, body = ErrorBody)))]
pub async fn list_vms(State(s): State<ApiState>) -> Result<Json<VmList>, ApiError> {
    if s.hypervisors.is_empty() {
        return Err(ApiError::NotFound("no hypervisors: the config has no [[hypervisors]] entry".into()));
    }
    let lists = futures_util::future::join_all(s.hypervisors.iter().map(|h| async move {
        match tokio::time::timeout(LIST_TIMEOUT, h.list()).await {
            Ok(Ok(vms)) => Ok(vms),
            Ok(Err(e)) => Err(format!("{}: {e}", h.name())),
            Err(_) => Err(format!("{}: no answer within {}s", h.name(), LIST_TIMEOUT.as_secs())),
        }
    }))
    .await;
    let mut out = VmList { vms: Vec::new(), errors: Vec::new() };
    for list in lists {
        match list {
            Ok(vms) => out.vms.extend(vms),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list a hypervisor's VMs");
                out.errors.push(e);
            }
        }
    }
    out.vms.sort_by(|a, b| (&a.cluster, &a.name).cmp(&(&b.cluster, &b.name)));
    Ok(Json(out))
}
