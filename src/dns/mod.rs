//! Authoritative DNS for the cluster zones, and forwarding for everything else.
//!
//! `zones::build` turns an inventory snapshot into a [`ZoneSet`] (a pure function; the node
//! names are the same ones DHCP hands out as option 12), `answer::answer` decides a question
//! against it (pure), `forward` asks the upstream resolvers, `udp` and `tcp` are the socket
//! adapters (hickory-proto and hickory-server's message types; slipway's own loops), and
//! `server` ties them together and rebuilds the zones whenever the inventory changes. Nothing here writes to the store except events.

pub mod answer;
pub mod fast;
pub mod forward;
#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod records;
pub mod respond;
pub mod server;
mod tcp;
mod udp;
pub mod zones;

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::rr::{Name, Record};
use ipnet::IpNet;

pub use answer::{Answer, ZoneAnswer, answer};
pub use zones::{ZoneSet, build};

/// EDNS buffer size slipway advertises and honours (DNS flag day 2020).
pub const EDNS_PAYLOAD: u16 = 1232;

/// What the `[dns]` section adds to what the inventory implies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// TTL of every generated record.
    pub ttl: u32,
    /// The address of `ns.<zone>` (glue), when slipway listens on a specific IPv4 address.
    pub nameserver: Option<Ipv4Addr>,
    /// Extra zones slipway is authoritative for, holding only static records.
    pub zones: Vec<Name>,
    /// Static records from the config; each lies in a zone slipway serves.
    pub records: Vec<Record>,
    /// Who may use slipway as a resolver for names outside its zones.
    pub allow_recursion: Acl,
}

impl Settings {
    /// The address `ns.<zone>` gets among the ones DNS listens on: the first specific IPv4
    /// address off loopback, else the first on loopback (a server reached only there); none when
    /// it listens only on the unspecified address.
    pub fn nameserver_of(listen: &[std::net::SocketAddr]) -> Option<Ipv4Addr> {
        let v4 = || {
            listen.iter().filter_map(|a| match a.ip() {
                std::net::IpAddr::V4(v4) if !v4.is_unspecified() => Some(v4),
                _ => None,
            })
        };
        v4().find(|ip| !ip.is_loopback()).or_else(|| v4().next())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings { ttl: 60, nameserver: None, zones: Vec::new(), records: Vec::new(), allow_recursion: Acl::default() }
    }
}

/// Source networks allowed recursion. An address that matches no entry is refused (unlike
/// hickory's own access list, which allows it: hickory #3670).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl(pub Vec<IpNet>);

impl Acl {
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Loopback plus every provisioning network: the default when the config names none.
    pub fn default_for(networks: impl IntoIterator<Item = ipnet::Ipv4Net>) -> Acl {
        #[allow(clippy::unwrap_used)] // constants that parse
        let mut nets: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        nets.extend(networks.into_iter().map(IpNet::V4));
        Acl(nets)
    }
}
