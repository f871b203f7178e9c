//! DHCP leases as plain data. Leases live in the store, not in the inventory snapshot: they
//! change per packet, while the snapshot changes when an operator or the lifecycle acts.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::types::{MacAddr, Name, Timestamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseState {
    /// Offered, not yet requested; held briefly so two clients are not offered one address.
    Offered,
    /// Acknowledged: the client owns the address until `expires`.
    Bound,
    /// Given back by the client or an operator; reusable.
    Released,
    /// The client reported the address in use by someone else; not offered until `expires`.
    Declined,
}

/// One address binding on a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Lease {
    #[schema(value_type = String, example = "10.1.107.100")]
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub network: Name,
    pub state: LeaseState,
    pub expires: Timestamp,
    pub updated: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// DHCP option 61, hex encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl Lease {
    /// Whether the lease still holds its address at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        matches!(self.state, LeaseState::Offered | LeaseState::Bound | LeaseState::Declined) && self.expires > now
    }
}
