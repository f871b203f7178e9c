//! The running services, each known by its name: the one that ends first is named with its
//! error, and the daemon stops with a failure.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::readiness::Readiness;
use crate::service::{RunError, Service};

type Running = Pin<Box<dyn Future<Output = Result<(), RunError>> + Send>>;
type Start = Box<dyn FnOnce(CancellationToken) -> Running + Send>;

/// Bound services waiting for `start`, then running.
#[derive(Default)]
pub struct Services {
    readiness: Readiness,
    bound: Vec<(&'static str, Start)>,
    running: JoinSet<Result<(), RunError>>,
    names: HashMap<Id, &'static str>,
}

/// How a service ended without being asked to.
#[derive(Debug)]
pub struct Ended {
    pub name: &'static str,
    /// `None`: it returned without an error (still not expected before shutdown).
    pub error: Option<String>,
}

impl Services {
    /// The listeners bound so far (and marked ready).
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Takes a bound service; its listeners count as bound from now on.
    pub fn add<S: Service>(&mut self, service: S) {
        for (what, addr) in service.listeners() {
            self.readiness.bound(&what, addr);
        }
        let span = service.span();
        self.bound.push((S::NAME, Box::new(move |shutdown| Box::pin(service.run(shutdown).instrument(span)))));
    }

    /// Runs every bound service until `shutdown`.
    pub fn start(&mut self, shutdown: &CancellationToken) {
        for (name, start) in self.bound.drain(..) {
            let handle = self.running.spawn(start(shutdown.clone()));
            self.names.insert(handle.id(), name);
        }
    }

    /// The next service to end (a panic counts as ending); pending forever when none runs.
    pub async fn next(&mut self) -> Ended {
        let Some(ended) = self.running.join_next_with_id().await else { return std::future::pending().await };
        let (id, error) = match ended {
            Ok((id, result)) => (id, result.err().map(|e| e.to_string())),
            Err(e) => (e.id(), Some(format!("panicked: {e}"))),
        };
        Ended { name: self.names.get(&id).copied().unwrap_or("a service"), error }
    }

    /// Waits for every service to end, logging any that fails while stopping.
    pub async fn all_stopped(&mut self) {
        while let Some(ended) = self.running.join_next_with_id().await {
            if let Ok((id, Err(e))) = ended {
                let service = self.names.get(&id).copied().unwrap_or("a service");
                tracing::warn!(service, error = %e, "a service failed while stopping");
            }
        }
    }

    pub fn abort_all(&mut self) {
        self.running.abort_all();
    }
}
