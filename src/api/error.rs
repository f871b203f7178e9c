//! API errors: a JSON body for the client with a stable `error` code and a message; internal
//! detail goes to the log only.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::inventory::{ChangeError, Problem};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{message}")]
    BadRequest { field: Option<String>, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    ReadOnly(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
    #[error("internal error")]
    Internal(String),
    /// Something slipway depends on did not answer (a cluster's API): 502.
    #[error("{0}")]
    Upstream(String),
    /// The token may not do this (a read-only token and a write): 403.
    #[error("{0}")]
    Forbidden(String),
    /// The caller's address presented wrong tokens too often: 429 for this long.
    #[error("too many requests with a wrong token from this address; try again in {} s", .0.as_secs().max(1))]
    Backoff(std::time::Duration),
    /// The disk under the state directory is full: 507. Nothing was changed.
    #[error("the disk holding slipway's state directory is full ({0}); nothing was changed: free space and try again")]
    NoSpace(String),
    /// The request body is over the limit: 413.
    #[error("{0}")]
    TooLarge(String),
    /// A reloaded config file with problems: 422, each problem listed. Nothing was changed.
    #[error("the config file was not applied ({} problem(s)); the running config stays: {}", .0.len(), .0.join("; "))]
    ConfigRefused(Vec<String>),
    /// The daemon cannot do this now (it is stopping): 503.
    #[error("{0}")]
    Unavailable(String),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable code: unauthorized, bad_request, not_found, method_not_allowed, conflict, read_only,
    /// invalid, upstream, too_large, insufficient_storage, forbidden, too_many_failures,
    /// config_refused, unavailable, internal.
    pub error: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
    /// A refused config reload's problems, each as `file:line: field = value: message`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl ApiError {
    pub fn bad(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest { field: Some(field.to_owned()), message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let mut retry_after = None;
        let mut reasons = Vec::new();
        let (status, error, field, problems) = match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None, vec![]),
            ApiError::BadRequest { field, .. } => (StatusCode::BAD_REQUEST, "bad_request", field, vec![]),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None, vec![]),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", None, vec![]),
            ApiError::ReadOnly(_) => (StatusCode::METHOD_NOT_ALLOWED, "read_only", None, vec![]),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None, vec![]),
            ApiError::Invalid(problems) => {
                let field = problems.first().map(|p| p.field.clone());
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid", field, problems)
            }
            ApiError::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream", None, vec![]),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", None, vec![]),
            ApiError::NoSpace(_) => (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", None, vec![]),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None, vec![]),
            ApiError::ConfigRefused(problems) => {
                reasons = problems;
                (StatusCode::UNPROCESSABLE_ENTITY, "config_refused", None, vec![])
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None, vec![]),
            ApiError::Backoff(wait) => {
                retry_after = Some(wait.as_secs().max(1));
                (StatusCode::TOO_MANY_REQUESTS, "too_many_failures", None, vec![])
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "admin API request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", None, vec![])
            }
        };
        let mut response = (status, Json(ErrorBody { error, message, field, problems, reasons })).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            ChangeError::AlreadyExists { .. } | ChangeError::Declared { .. } => ApiError::Conflict(e.to_string()),
            ChangeError::ReadOnly { .. } => ApiError::ReadOnly(e.to_string()),
            ChangeError::Invalid(problems) => ApiError::Invalid(problems),
        }
    }
}

impl ApiError {
    /// A failed file write: `NoSpace` when the disk is full, else `Internal` saying `what`.
    pub fn writing(what: &str, e: std::io::Error) -> ApiError {
        match crate::store::disk_full(&e) {
            true => ApiError::NoSpace(format!("cannot store {what}: {e}")),
            false => ApiError::Internal(format!("cannot store {what}: {e}")),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Change(e) => e.into(),
            StoreError::NoLease(_) => ApiError::NotFound(e.to_string()),
            // etcd unreachable, without quorum, or this instance not leading: try again.
            StoreError::Shared(_) => ApiError::Unavailable(e.to_string()),
            full if full.is_disk_full() => ApiError::NoSpace(full.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// A request body as bytes; one over the limit is 413 with an `ErrorBody`, like every error.
#[derive(Debug)]
pub struct Raw(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Raw {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(req, state).await.map(Raw).map_err(|e| {
            let message = format!("cannot read the request body: {e}");
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(message)
            } else {
                ApiError::BadRequest { field: None, message }
            }
        })
    }
}

/// A JSON request body whose errors name the offending field (`nodes[0].mac`); a YAML body is
/// taken too when its `Content-Type` says YAML (`application/yaml`, `application/x-yaml`,
/// `text/yaml`). A body that is not JSON (or YAML) at all names the field `body`.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let yaml = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("yaml"));
        let Raw(bytes) = Raw::from_request(req, state).await?;
        decode(&bytes, yaml).map(Body)
    }
}

/// A request body as `T`, from JSON (or YAML when `yaml`), with the error naming the field.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], yaml: bool) -> Result<T, ApiError> {
    let named = |path: String, inner: String, syntax: bool| {
        let field = if path != "." {
            path
        } else if syntax {
            "body".to_owned()
        } else {
            return ApiError::BadRequest { field: None, message: inner };
        };
        ApiError::BadRequest { message: format!("{field}: {inner}"), field: Some(field) }
    };
    if yaml {
        let de = serde_norway::Deserializer::from_slice(bytes);
        return serde_path_to_error::deserialize(de)
            .map_err(|e| named(e.path().to_string(), format!("not valid YAML here: {}", e.inner()), true));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let syntax = e.inner().is_syntax() || e.inner().is_eof();
        let hint = if syntax && e.path().to_string() == "." {
            " (send Content-Type: application/yaml for a YAML body)"
        } else {
            ""
        };
        named(e.path().to_string(), format!("{}{hint}", e.inner()), syntax)
    })?;
    de.end().map_err(|e| ApiError::BadRequest {
        field: Some("body".into()),
        message: format!("body: trailing data after the JSON: {e}"),
    })?;
    Ok(value)
}
