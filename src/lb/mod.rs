//! The L4 load balancer: frontends (TCP listeners) forward to pools of backends that are either
//! listed or derived from a cluster's nodes, and follow the inventory without a restart.
//!
//! `members` (pure) says which addresses a pool holds in an inventory snapshot; `select` (pure)
//! picks a backend for a new connection; `health` (pure) turns check results into up/down with
//! rise and fall; `check` runs the TCP and HTTPS checks; `proxy` copies bytes between a client
//! and its backend; `server` is the adapter that owns the listeners and the live pool state.
//!
//! pingora-load-balancing is not used: it has no least-connections selection, its HTTPS health
//! check needs pingora's own TLS connector stack, and the per-backend connection counts and
//! drain state that selection needs are ours anyway — so selection and checks are small code of
//! our own here, with rustls (already in the tree) for HTTPS checks.

pub mod check;
pub mod health;
pub mod members;
pub mod proxy;
pub mod select;
pub mod server;

use std::time::Duration;

/// Timeouts shared by every frontend (`[lb]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Time to open a backend connection before the next healthy backend is tried.
    pub connect_timeout: Duration,
    /// A connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// Connections to a backend that left its pool may continue this long.
    pub drain_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(3600),
            drain_timeout: Duration::from_secs(3600),
        }
    }
}
