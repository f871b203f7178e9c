//! The running services, each known by its name and the config section it comes from: the one
//! that ends first is named with its error, and the daemon stops with a failure. A reload
//! retires the services of a changed section (each stops as at shutdown) and starts the ones
//! bound in their place.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::readiness::Readiness;
use crate::service::{RunError, Service};

type Running = Pin<Box<dyn Future<Output = Result<(), RunError>> + Send>>;
type Start = Box<dyn FnOnce(CancellationToken) -> Running + Send>;

/// A bound service waiting for `start`.
struct Bound {
    name: &'static str,
    section: &'static str,
    listeners: Vec<(String, SocketAddr)>,
    start: Start,
}

/// A started service.
struct Task {
    name: &'static str,
    section: &'static str,
    listeners: Vec<(String, SocketAddr)>,
    /// Cancels this service alone (a child of the daemon's shutdown).
    stop: CancellationToken,
    abort: tokio::task::AbortHandle,
}

/// Bound services waiting for `start`, then running.
#[derive(Default)]
pub struct Services {
    readiness: Readiness,
    bound: Vec<Bound>,
    running: JoinSet<Result<(), RunError>>,
    tasks: HashMap<Id, Task>,
    /// Services that ended on their own while a section was being retired, told by `next`.
    ended: VecDeque<Ended>,
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

    /// Takes a bound service of config section `section`; its listeners count as bound from now on.
    pub fn add<S: Service>(&mut self, section: &'static str, service: S) {
        let listeners = service.listeners();
        for (what, addr) in &listeners {
            self.readiness.bound(what, *addr);
        }
        let span = service.span();
        let start: Start = Box::new(move |shutdown| Box::pin(service.run(shutdown).instrument(span)));
        self.bound.push(Bound { name: S::NAME, section, listeners, start });
    }

    /// Runs every service bound since the last call until `shutdown` (or its section is retired).
    pub fn start(&mut self, shutdown: &CancellationToken) {
        for Bound { name, section, listeners, start } in self.bound.drain(..) {
            let stop = shutdown.child_token();
            let abort = self.running.spawn(start(stop.clone()));
            self.tasks.insert(abort.id(), Task { name, section, listeners, stop, abort });
        }
    }

    /// Drops the services bound and not started (a reload that was refused after binding).
    pub fn unbind(&mut self) {
        for bound in self.bound.drain(..) {
            for (what, addr) in &bound.listeners {
                self.readiness.forget(what, *addr);
            }
        }
    }

    /// Stops the running services of `section` as at shutdown and waits up to `grace` for them,
    /// their listeners closed when they end. False when one did not end in time (it is aborted,
    /// but one on a thread of its own may still hold its sockets).
    pub async fn retire(&mut self, section: &str, grace: Duration) -> bool {
        let mut leaving: Vec<Id> = Vec::new();
        for (id, task) in self.tasks.iter().filter(|(_, t)| t.section == section) {
            task.stop.cancel();
            leaving.push(*id);
        }
        let deadline = tokio::time::Instant::now() + grace;
        while leaving.iter().any(|id| self.tasks.contains_key(id)) {
            match tokio::time::timeout_at(deadline, self.running.join_next_with_id()).await {
                Ok(Some(ended)) => {
                    let (id, error) = outcome(ended);
                    let Some(task) = self.tasks.remove(&id) else { continue };
                    self.forget(&task);
                    if leaving.contains(&id) {
                        if let Some(error) = error {
                            tracing::warn!(service = task.name, %error, "a service failed while stopping for a reload");
                        }
                    } else {
                        self.ended.push_back(Ended { name: task.name, error });
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::error!(section, "services did not stop in time for the reload");
                    for id in &leaving {
                        if let Some(task) = self.tasks.get(id) {
                            task.abort.abort();
                        }
                    }
                    return false;
                }
            }
        }
        true
    }

    /// The next service to end (a panic counts as ending); pending forever when none runs.
    pub async fn next(&mut self) -> Ended {
        if let Some(ended) = self.ended.pop_front() {
            return ended;
        }
        let Some(ended) = self.running.join_next_with_id().await else { return std::future::pending().await };
        let (id, error) = outcome(ended);
        let task = self.tasks.remove(&id);
        if let Some(task) = &task {
            self.forget(task);
        }
        Ended { name: task.map_or("a service", |t| t.name), error }
    }

    fn forget(&self, task: &Task) {
        for (what, addr) in &task.listeners {
            self.readiness.forget(what, *addr);
        }
    }

    /// Waits for every service to end, logging any that fails while stopping.
    pub async fn all_stopped(&mut self) {
        while let Some(ended) = self.running.join_next_with_id().await {
            if let Ok((id, Err(e))) = ended {
                let service = self.tasks.get(&id).map_or("a service", |t| t.name);
                tracing::warn!(service, error = %e, "a service failed while stopping");
            }
        }
    }

    pub fn abort_all(&mut self) {
        self.running.abort_all();
    }
}

type Joined = Result<(Id, Result<(), RunError>), tokio::task::JoinError>;

fn outcome(ended: Joined) -> (Id, Option<String>) {
    match ended {
        Ok((id, result)) => (id, result.err().map(|e| e.to_string())),
        Err(e) if e.is_cancelled() => (e.id(), Some("aborted".into())),
        Err(e) => (e.id(), Some(format!("panicked: {e}"))),
    }
}
