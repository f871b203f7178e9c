//! The one lab inventory every unit test and fuzz harness starts from, and a builder to vary
//! it: network `cluster` (interface `eth1`, 10.1.107.0/24, gateway and DNS .1, domain
//! `lab.example`, reservations .10-.99, pool .100-.199), OKD cluster `prod` (API 192.0.2.10,
//! internal API 10.1.107.1, ingress 192.0.2.10), `bootstrap` (.10) and `master-0` (.11).
//! Compiled for tests and fuzzing only.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::{AddrRange, Cluster, ClusterKind, Inventory, Name, Network, Node, Origin, Role};

fn name(s: &str) -> Name {
    s.parse().expect("a lab name")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("a lab address")
}

/// The lab, being varied.
#[derive(Clone, Debug)]
pub struct Lab(Inventory);

impl Lab {
    /// The lab as described above.
    pub fn okd() -> Lab {
        let mut inv = Inventory::default();
        let net = Network {
            name: name("cluster"),
            interface: "eth1".into(),
            cidr: "10.1.107.0/24".parse().expect("cidr"),
            gateway: Some(ip("10.1.107.1")),
            dns_servers: vec![ip("10.1.107.1")],
            domain: Some("lab.example".parse().expect("domain")),
            static_range: Some(AddrRange { start: ip("10.1.107.10"), end: ip("10.1.107.99") }),
            pool: Some(AddrRange { start: ip("10.1.107.100"), end: ip("10.1.107.199") }),
            lease_time: Duration::from_secs(3600),
            authoritative: true,
            proxy: false,
            probe: false,
            mtu: None,
            ntp_servers: vec![],
            search_domains: vec![],
            routes: vec![],
        };
        inv.networks.insert(net.name.clone(), net);
        let cluster = Cluster {
            name: name("prod"),
            kind: ClusterKind::Okd,
            base_domain: "lab.example".parse().expect("domain"),
            network: name("cluster"),
            api_address: ip("192.0.2.10"),
            api_int_address: ip("10.1.107.1"),
            ingress_address: ip("192.0.2.10"),
            origin: Origin::Api,
        };
        inv.clusters.insert(cluster.name.clone(), cluster);
        Lab(inv)
            .node(node("bootstrap", "52:54:00:00:00:01", "10.1.107.10", Some("prod"), Some(Role::Bootstrap)))
            .node(node("master-0", "52:54:00:00:00:02", "10.1.107.11", Some("prod"), Some(Role::ControlPlane)))
    }

    /// Adds (or replaces) a node.
    pub fn node(mut self, node: Node) -> Lab {
        self.0.nodes.insert(node.name.clone(), node);
        self
    }

    /// Changes the network.
    pub fn network(mut self, change: impl FnMut(&mut Network)) -> Lab {
        self.0.networks.values_mut().for_each(change);
        self
    }

    /// Changes the cluster.
    pub fn cluster(mut self, change: impl FnMut(&mut Cluster)) -> Lab {
        self.0.clusters.values_mut().for_each(change);
        self
    }

    /// The inventory, indexed.
    pub fn build(mut self) -> Inventory {
        self.0.reindex();
        self.0
    }
}

/// The lab as described above.
pub fn lab() -> Inventory {
    Lab::okd().build()
}

/// A node created through the API.
pub fn node(n: &str, mac: &str, addr: &str, cluster: Option<&str>, role: Option<Role>) -> Node {
    Node {
        name: name(n),
        cluster: cluster.map(name),
        role,
        mac: mac.parse().expect("mac"),
        ipv4: ip(addr),
        hostname: None,
        profile: None,
        labels: BTreeMap::new(),
        dhcp: Default::default(),
        origin: Origin::Api,
        retiring: false,
        taints: vec![],
    }
}
