//! `POST /api/v1/reload`: the config file read again and applied without a restart (what
//! SIGHUP and `slipway reload` do), and the handles to the services a reload may rebind.
//!
//! The API does not reload anything itself: it asks the daemon's wiring (which owns the
//! services) through a channel and answers with what the wiring says.

use std::sync::{Arc, RwLock};

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use utoipa::ToSchema;

use super::ApiState;
use super::error::{ApiError, ErrorBody};

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reloaded {
    /// The config file read.
    pub file: String,
    /// What changed, one line each (`node worker-3 created`, `dns rebound`); empty when the
    /// file says what was in force already.
    pub changed: Vec<String>,
}

/// Why a reload was refused: every problem found. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub Vec<String>);

/// What the wiring answers a reload request with.
pub type Outcome = Result<Reloaded, Refused>;
/// A reload request: the wiring answers on the enclosed channel when it is done.
pub type Request = oneshot::Sender<Outcome>;

/// Where the API sends reload requests.
#[derive(Clone, Debug)]
pub struct Reloader(pub mpsc::Sender<Request>);

/// Read the config file again and apply it: inventory objects, cluster definitions, tokens,
/// event retention and the services whose settings changed (rebound; the others keep
/// serving). A config with any problem is refused whole (422, every problem listed) and the
/// running one stays; so is a change only a restart can make (the state directory, the admin
/// listener, the hypervisors).
#[utoipa::path(post, path = "/api/v1/reload", tag = "daemon",
    responses((status = 200, body = Reloaded), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn reload(State(s): State<ApiState>) -> Result<Json<Reloaded>, ApiError> {
    let Some(Reloader(requests)) = &s.reloader else {
        return Err(ApiError::Unavailable("this daemon cannot reload its config".into()));
    };
    let (tx, rx) = oneshot::channel();
    let stopping = || ApiError::Unavailable("the daemon is stopping".into());
    requests.send(tx).await.map_err(|_| stopping())?;
    match rx.await.map_err(|_| stopping())? {
        Ok(done) => Ok(Json(done)),
        Err(Refused(problems)) => Err(ApiError::ConfigRefused(problems)),
    }
}

/// Handles to the running services the API reads, replaced when a reload rebinds one.
#[derive(Clone, Debug, Default)]
pub struct Running(Arc<RwLock<Handles>>);

#[derive(Clone, Debug, Default)]
pub struct Handles {
    /// The running DHCP server's lease owner, when DHCP is served.
    pub dhcp: Option<crate::dhcp::server::Handle>,
    /// The zones the running DNS server answers from, when DNS is served.
    pub dns: Option<tokio::sync::watch::Receiver<Arc<crate::dns::ZoneSet>>>,
    /// The running load balancer, when frontends are configured.
    pub lb: Option<Arc<crate::lb::server::State>>,
}

impl Running {
    /// The handles now.
    pub fn get(&self) -> Handles {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Changes the handles (a service bound, rebound or gone).
    pub fn update(&self, change: impl FnOnce(&mut Handles)) {
        change(&mut self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}
