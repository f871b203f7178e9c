//! DHCPv4: reservations for known nodes, an optional dynamic pool, network-boot answers, relays,
//! and proxyDHCP (boot answers only) on networks where another server owns addressing.
//!
//! `message` turns datagrams into plain requests; `decide` (pure) answers them from the
//! inventory snapshot and the lease table; `server` is the socket adapter that persists lease
//! changes (group commit) before any reply that depends on them leaves.

pub mod decide;
pub mod decision;
#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod leases;
pub mod message;
pub mod probe;
pub mod proxy;
pub mod ra;
pub mod server;
