//! Readiness: which listeners the daemon promised and whether each is bound.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use utoipa::ToSchema;

/// One promised listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Listener {
    pub service: String,
    #[schema(value_type = String)]
    pub address: SocketAddr,
    pub bound: bool,
}

/// Shared record of listeners; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    listeners: Arc<Mutex<Vec<Listener>>>,
}

impl Readiness {
    /// Declares a listener the daemon will bind.
    pub fn expect(&self, service: &str, address: SocketAddr) {
        self.lock().push(Listener { service: service.into(), address, bound: false });
    }

    /// Marks a declared listener bound (with the address it actually got).
    pub fn bound(&self, service: &str, address: SocketAddr) {
        let mut list = self.lock();
        match list.iter_mut().find(|l| l.service == service && !l.bound) {
            Some(l) => {
                l.address = address;
                l.bound = true;
            }
            None => list.push(Listener { service: service.into(), address, bound: true }),
        }
    }

    /// Forgets a listener that closed for good (its service retired by a reload).
    pub fn forget(&self, service: &str, address: SocketAddr) {
        self.lock().retain(|l| !(l.service == service && l.address == address));
    }

    pub fn listeners(&self) -> Vec<Listener> {
        self.lock().clone()
    }

    /// True when every declared listener is bound.
    pub fn all_bound(&self) -> bool {
        self.lock().iter().all(|l| l.bound)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Listener>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }
}
