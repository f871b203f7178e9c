//! Unauthenticated probes: `/healthz` (process alive), `/readyz` (listeners bound, store open)
//! and `/metrics` (Prometheus text format).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

use super::ApiState;
use crate::readiness::Listener;

pub async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Debug, Serialize)]
pub struct ReadyBody {
    ready: bool,
    store: bool,
    listeners: Vec<Listener>,
}

pub async fn readyz(State(s): State<ApiState>) -> impl IntoResponse {
    let store = s.store.is_healthy();
    let ready = store && s.readiness.all_bound() && !s.shutdown.is_cancelled();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(ReadyBody { ready, store, listeners: s.readiness.listeners() }))
}

pub async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.encode())
}
