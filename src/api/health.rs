//! Unauthenticated probes: `/healthz` (process alive), `/readyz` (listeners bound, store open)
//! and `/metrics` (Prometheus text format).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

use super::ApiState;
use crate::readiness::Listener;

/// Whether the process is alive (no token).
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadyBody {
    ready: bool,
    store: bool,
    /// Whether this instance leads (always, on the embedded store).
    leading: bool,
    listeners: Vec<Listener>,
}

/// `/readyz?role=leader`: ready only on the leading instance.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ReadyQuery {
    /// `leader`: also require that this instance leads (keepalived's check for the address DHCP
    /// answers from, which must follow the leader).
    role: Option<String>,
}

/// Whether every listener is bound and the store is open (no token); with `?role=leader`, also
/// whether this instance leads.
#[utoipa::path(get, path = "/readyz", tag = "meta", security(()), params(ReadyQuery),
    responses((status = 200, description = "ready", body = ReadyBody), (status = 503, description = "not ready", body = ReadyBody),
        (status = 400, description = "an unknown role", body = super::error::ErrorBody)))]
pub async fn readyz(
    State(s): State<ApiState>,
    Query(q): Query<ReadyQuery>,
) -> Result<impl IntoResponse, super::error::ApiError> {
    let needs_lead = match q.role.as_deref() {
        None => false,
        Some("leader") => true,
        Some(other) => {
            return Err(super::error::ApiError::BadRequest {
                field: Some("role".into()),
                message: format!("role={other}: the only role is `leader`"),
            });
        }
    };
    let store = s.store.is_healthy();
    let leading = s.store.term().is_some();
    let ready = store && s.readiness.all_bound() && !s.shutdown.is_cancelled() && (leading || !needs_lead);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, Json(ReadyBody { ready, store, leading, listeners: s.readiness.listeners() })))
}

/// Every metric, in Prometheus's text format (no token).
#[utoipa::path(get, path = "/metrics", tag = "meta", security(()),
    responses((status = 200, description = "Prometheus text format 0.0.4, or OpenMetrics 1.0 when the Accept header asks for it", content((String = "text/plain; version=0.0.4"), (String = "application/openmetrics-text; version=1.0.0")))))]
pub async fn metrics(State(s): State<ApiState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if crate::metrics::wants_openmetrics(accept) {
        let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        ([(header::CONTENT_TYPE, kind)], s.metrics.encode())
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.encode_text())
    }
}
