//! Which backend addresses a pool holds in an inventory snapshot (pure).

use std::net::SocketAddr;

use crate::inventory::{Backends, Inventory, Members, Pool, Role};

/// The pool's backends: its list, or the cluster nodes that serve it. Control-plane pools
/// (6443, 22623) are the bootstrap and control-plane nodes; router pools (80, 443) are the
/// workers, or the control-plane nodes when the cluster has no workers. Sorted, no duplicates.
pub fn backends(inv: &Inventory, pool: &Pool) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = match &pool.backends {
        Backends::Static { addresses } => addresses.clone(),
        Backends::Cluster { cluster, members, port } => {
            // A retiring node (being removed) takes no new connections.
            let nodes: Vec<_> =
                inv.nodes.values().filter(|n| n.cluster.as_ref() == Some(cluster) && !n.retiring).collect();
            let with = |roles: &[Role]| -> Vec<SocketAddr> {
                nodes
                    .iter()
                    .filter(|n| n.role.is_some_and(|r| roles.contains(&r)))
                    .map(|n| SocketAddr::from((n.ipv4, *port)))
                    .collect()
            };
            match members {
                Members::ControlPlane => with(&[Role::Bootstrap, Role::ControlPlane]),
                Members::Routers => {
                    let workers = with(&[Role::Worker]);
                    if workers.is_empty() { with(&[Role::ControlPlane]) } else { workers }
                }
            }
        }
    };
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Algorithm, HealthCheck, Name};

    fn pool(members: Members, port: u16) -> Pool {
        Pool {
            name: "p".parse().expect("name"),
            algorithm: Algorithm::RoundRobin,
            backends: Backends::Cluster { cluster: "prod".parse::<Name>().expect("name"), members, port },
            check: HealthCheck::default(),
        }
    }

    fn lab() -> Inventory {
        let (inv, _) = crate::dns::fuzz::lab();
        inv
    }

    #[test]
    fn the_api_pool_is_bootstrap_and_control_plane() {
        let addrs: Vec<String> =
            backends(&lab(), &pool(Members::ControlPlane, 6443)).iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["10.1.107.10:6443", "10.1.107.11:6443"]);
    }

    #[test]
    fn removing_the_bootstrap_node_removes_it_from_the_api_pool() {
        let mut inv = lab();
        inv.nodes.remove("bootstrap");
        inv.reindex();
        let addrs: Vec<String> =
            backends(&inv, &pool(Members::ControlPlane, 22623)).iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["10.1.107.11:22623"]);
    }

    #[test]
    fn routers_are_workers_or_else_the_control_plane() {
        let mut inv = lab();
        let addrs: Vec<String> = backends(&inv, &pool(Members::Routers, 443)).iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["10.1.107.21:443"]);
        inv.nodes.remove("worker-0");
        inv.reindex();
        let addrs: Vec<String> = backends(&inv, &pool(Members::Routers, 443)).iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["10.1.107.11:443"], "a compact cluster routes on its masters");
    }

    #[test]
    fn a_static_pool_is_its_list() {
        let mut p = pool(Members::Routers, 80);
        p.backends = Backends::Static {
            addresses: vec!["127.0.0.2:80".parse().expect("addr"), "127.0.0.1:80".parse().expect("addr")],
        };
        let addrs: Vec<String> = backends(&lab(), &p).iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["127.0.0.1:80", "127.0.0.2:80"]);
    }
}
