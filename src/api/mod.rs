//! The admin API (axum): JSON CRUD for the inventory, leases, the event log, probes and
//! metrics. Handlers validate input and call the store; they hold no state of their own.
//!
//! Every route is registered through one `OpenApiRouter`, so the OpenAPI document at
//! `/api/v1/openapi.json` is generated from the same list that routes requests, and every path
//! under `/api` passes the bearer-token check, routed or not.

pub mod auth;
pub mod backoff;
pub mod boot;
pub mod clusters;
pub mod dns;
pub mod error;
pub mod events;
#[cfg(any(test, fuzzing))]
pub mod fuzz;
mod health;
pub mod keys;
pub mod lb;
pub mod leases;
pub mod members;
pub mod objects;
pub mod page;
pub mod reload;
pub mod server;
pub mod vms;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::metrics::{Metrics, RequestLabels};
use crate::readiness::Readiness;
use crate::store::Store;
use crate::store::events::EventLog;
pub use auth::Token;
use error::ApiError;

/// What the handlers need. Cheap to clone (every field is a handle).
#[derive(Clone, Debug)]
pub struct ApiState {
    pub store: Store,
    pub events: EventLog,
    /// The tokens the API accepts (re-read on SIGHUP).
    pub keys: Arc<keys::Keys>,
    /// Addresses backing off after wrong tokens.
    pub backoff: Arc<backoff::Backoff>,
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    /// The running DHCP, DNS and load-balancer services' handles (a reload may replace them).
    pub running: reload::Running,
    /// Where `POST /api/v1/reload` asks the daemon to reload; `None` in tests without one.
    pub reloader: Option<reload::Reloader>,
    /// The configured hypervisors, for `GET /api/v1/vms`.
    pub hypervisors: Vec<Arc<dyn crate::hypervisor::Hypervisor>>,
    /// Defined clusters: plan, apply, status, retry.
    pub clusters: crate::cluster::Clusters,
    /// Cancelled when the daemon stops; long-lived responses (event follow) end on it.
    pub shutdown: CancellationToken,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "slipway admin API", description = "Inventory, leases and events of a slipway daemon. Every /api/ route needs `Authorization: Bearer <token>`."),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every `/api` route, with its OpenAPI description.
fn api_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(objects::list_nodes, objects::create_node))
        .routes(routes!(objects::get_node, objects::put_node, objects::delete_node))
        .routes(routes!(objects::list_clusters, objects::create_cluster))
        .routes(routes!(objects::get_cluster, objects::put_cluster, objects::delete_cluster))
        .routes(routes!(objects::list_profiles, objects::create_profile))
        .routes(routes!(objects::get_profile, objects::put_profile, objects::delete_profile))
        .routes(routes!(boot::get_timeline))
        .routes(routes!(boot::reinstall))
        .routes(routes!(boot::put_ignition))
        .routes(routes!(objects::list_networks))
        .routes(routes!(objects::get_network))
        .routes(routes!(objects::apply))
        .routes(routes!(clusters::plan))
        .routes(routes!(clusters::apply, clusters::get_definition, clusters::delete_definition))
        .routes(routes!(clusters::status))
        .routes(routes!(clusters::retry))
        .routes(routes!(clusters::scale))
        .routes(routes!(clusters::put_kubeconfig, clusters::get_kubeconfig))
        .routes(routes!(clusters::list_csrs))
        .routes(routes!(clusters::approve_csr))
        .routes(routes!(clusters::remove_bootstrap))
        .routes(routes!(clusters::gather_bootstrap))
        .routes(routes!(leases::list_leases))
        .routes(routes!(leases::release_lease))
        .routes(routes!(events::list_events))
        .routes(routes!(dns::list_zones))
        .routes(routes!(lb::status))
        .routes(routes!(vms::list_vms))
        .routes(routes!(reload::reload))
        .routes(routes!(members::members))
        .routes(routes!(openapi_json))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
}

/// The OpenAPI document of the admin API.
pub fn openapi() -> OpenApi {
    described(api_routes().split_for_parts().1)
}

/// `doc` with a description on every response, which OpenAPI requires (a route that names only a
/// status and a body gets the status's reason phrase: `OK`, `Not Found`, ...), and the answers
/// every route under `/api` may give besides its own: 401 without the token, 500 when the store
/// fails, 413 for a body over the limit, 507 for a write when the disk is full, 403 for a write
/// with a read-only token, and 429 while the caller's address backs off after wrong tokens.
fn described(mut doc: OpenApi) -> OpenApi {
    for (path, item) in doc.paths.paths.iter_mut() {
        let guarded = path.starts_with("/api/");
        // (the operation, whether it writes)
        let operations = [
            (&mut item.get, false),
            (&mut item.put, true),
            (&mut item.post, true),
            (&mut item.delete, true),
            (&mut item.options, false),
            (&mut item.head, false),
            (&mut item.patch, true),
            (&mut item.trace, false),
        ];
        for (operation, writes) in operations.into_iter().filter_map(|(o, w)| Some((o.as_mut()?, w))) {
            // Every body slipway takes is required (a handler reads it whole).
            if let Some(utoipa::openapi::RefOr::T(body)) = operation.request_body.as_mut() {
                body.required = Some(utoipa::openapi::Required::True);
            }
            let common = [
                (guarded, "401"),
                (guarded, "500"),
                (operation.request_body.is_some(), "413"),
                (guarded && writes, "507"),
                (guarded && writes, "403"),
                (guarded, "429"),
            ];
            for (_, code) in common.into_iter().filter(|(applies, _)| *applies) {
                operation.responses.responses.entry(code.to_owned()).or_insert_with(|| error_response(code));
            }
            for (code, response) in operation.responses.responses.iter_mut() {
                if let utoipa::openapi::RefOr::T(response) = response
                    && response.description.is_empty()
                {
                    let reason = code.parse::<u16>().ok().and_then(|c| axum::http::StatusCode::from_u16(c).ok());
                    response.description = reason.and_then(|r| r.canonical_reason()).unwrap_or("the answer").to_owned();
                }
            }
        }
    }
    doc
}

/// An error answer: its reason phrase, an `ErrorBody`.
fn error_response(code: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let reason = code.parse::<u16>().ok().and_then(|c| axum::http::StatusCode::from_u16(c).ok());
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    ResponseBuilder::new()
        .description(reason.and_then(|r| r.canonical_reason()).unwrap_or("error"))
        .content("application/json", content)
        .build()
        .into()
}

/// Serve this API's OpenAPI document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
async fn openapi_json() -> impl IntoResponse {
    axum::Json(openapi())
}

/// The whole admin HTTP surface, ready to serve: `/api`, the public probes outside it
/// (`/healthz`, `/readyz`, `/metrics`: no token) and the status page's files (`/ui/`: no data,
/// no token; the page reads `/api` with the token the operator gives it).
pub fn router(state: ApiState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    api.merge(page::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(boot::MAX_IGNITION))
        .layer(middleware::from_fn(declared_size))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(crate::listen::BODY_TIMEOUT))
        .layer(middleware::from_fn_with_state(state.clone(), auth::require_token))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A body declared larger than any route takes is refused before a byte of it is read (the
/// limit alone would read up to it first).
async fn declared_size(request: Request, next: Next) -> Result<Response, ApiError> {
    let declared = request.headers().get(axum::http::header::CONTENT_LENGTH);
    let declared = declared.and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(bytes) = declared.filter(|n| *n > boot::MAX_IGNITION as u64) {
        return Err(ApiError::TooLarge(format!(
            "the body is {bytes} bytes; the admin API takes at most {} (an Ignition config)",
            boot::MAX_IGNITION
        )));
    }
    Ok(next.run(request).await)
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!("{} is not allowed on {}", request.method(), request.uri().path()))
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!("no route for {} {}", request.method(), request.uri().path()))
}

/// One span per request; counts requests by route and status; records every write to `/api`
/// in the audit trail.
async fn observe(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let write =
        !matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS);
    let audited = write.then(|| {
        let client = request.extensions().get::<crate::listen::Connection>().map(|c| c.peer.ip().to_string());
        (request.uri().path().to_owned(), client.unwrap_or_else(|| "unknown".into()))
    });
    let method = request.method().to_string();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!("api", %method, path = %request.uri().path());
    let started = Instant::now();
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| tracing::debug!(status, elapsed_ms = started.elapsed().as_millis() as u64, "request"));
    if let Some((path, client)) = audited.filter(|(path, _)| path.starts_with("/api/")) {
        audit(&state, &method, &path, client, &response);
    }
    state.metrics.api_requests.get_or_create(&RequestLabels { method, route, status }).inc();
    response
}

/// One `audit` event for a write: what it named, what came of it, who asked.
fn audit(state: &ApiState, method: &str, path: &str, client: String, response: &Response) {
    let status = response.status();
    let outcome = match status.as_u16() {
        200..=399 => "done",
        401 => "unauthenticated",
        400..=499 => "refused",
        _ => "failed",
    };
    let token = response.extensions().get::<auth::Caller>().map_or("none", |c| c.0.as_str());
    let object = path.strip_prefix("/api/v1/").unwrap_or(path);
    tracing::info!(method, object, status = status.as_u16(), %client, token, "audit");
    let details = crate::store::events::EventKind::Audit {
        method: method.to_owned(),
        object: crate::inventory::types::shown(object),
        status: status.as_u16(),
        outcome: outcome.to_owned(),
        client,
        token: token.to_owned(),
    };
    state.events.append(crate::store::events::Source::Api, crate::store::events::Subject::default(), details);
}

#[cfg(test)]
mod tests;
