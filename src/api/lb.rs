//! The load balancer's live state: frontends, pools, backend health and traffic.

use axum::Json;
use axum::extract::State;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use crate::lb::server::Status;

/// Frontends with their open connections; pools with each backend's state (`up`, `down`,
/// `draining`), open and total connections and bytes.
#[utoipa::path(get, path = "/api/v1/lb", tag = "lb",
    responses((status = 200, body = Status), (status = 404, body = ErrorBody)))]
pub async fn status(State(s): State<ApiState>) -> Result<Json<Status>, ApiError> {
    match s.running.get().lb {
        Some(lb) => Ok(Json(lb.status())),
        None => Err(ApiError::NotFound("the load balancer is not running: the config has no [[lb.frontends]]".into())),
    }
}
