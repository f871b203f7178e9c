//! The inventory: slipway's one source of truth, as plain data.
//!
//! Networks, clusters, nodes, boot profiles and load-balancer pools. An `Inventory` is an
//! immutable snapshot: writers build a new one with [`Inventory::apply`] (pure, validated) and
//! the store publishes it; readers (DHCP, DNS, boot, LB, API) hold an `Arc<Inventory>` and never
//! lock. This module does no I/O.

mod change;
mod lease;
mod model;
mod redeclare;
pub mod types;
mod validate;

pub use change::{Action, ChangeError, Object, Op, Outcome};
pub use lease::{Lease, LeaseState};
pub use model::*;
pub use redeclare::Redeclared;
pub use types::{BadValue, DomainName, MacAddr, Name, Timestamp};
pub use validate::{Problem, validate, validate_ranked};

#[cfg(any(test, fuzzing))]
pub mod lab;
