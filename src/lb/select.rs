//! Backend selection for a new connection (pure): round-robin, least-connections, or a hash of
//! the client's address. Only usable backends (healthy, not draining) are candidates, minus the
//! ones this connection already failed to reach.

use std::net::{IpAddr, SocketAddr};

use crate::inventory::Algorithm;

/// A backend as selection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub addr: SocketAddr,
    /// Healthy and still in its pool.
    pub usable: bool,
    /// Connections open to it now.
    pub active: usize,
}

/// Picks a backend. `turn` advances once per connection (round-robin position, tie-breaker);
/// `tried` are backends this connection already failed to reach.
pub fn select(
    algorithm: Algorithm,
    candidates: &[Candidate],
    turn: u64,
    client: IpAddr,
    tried: &[SocketAddr],
) -> Option<SocketAddr> {
    let usable: Vec<&Candidate> = candidates.iter().filter(|c| c.usable && !tried.contains(&c.addr)).collect();
    if usable.is_empty() {
        return None;
    }
    let start = (turn % usable.len() as u64) as usize;
    let rotated = usable[start..].iter().chain(&usable[..start]);
    match algorithm {
        Algorithm::RoundRobin => Some(usable[start].addr),
        Algorithm::LeastConnections => rotated.min_by_key(|c| c.active).map(|c| c.addr),
        // Rendezvous hashing: the same client goes to the same backend while it stays usable,
        // and a backend that leaves moves only its own clients.
        Algorithm::SourceHash => usable.iter().max_by_key(|c| score(client, c.addr)).map(|c| c.addr),
    }
}

/// FNV-1a over the client and backend addresses: stable across restarts and machines.
fn score(client: IpAddr, backend: SocketAddr) -> u64 {
    let mut bytes = Vec::with_capacity(40);
    match client {
        IpAddr::V4(v4) => bytes.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes.extend_from_slice(&v6.octets()),
    }
    match backend.ip() {
        IpAddr::V4(v4) => bytes.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes.extend_from_slice(&v6.octets()),
    }
    bytes.extend_from_slice(&backend.port().to_be_bytes());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short keys: finish with a multiply-xorshift.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn backends(n: u8) -> Vec<Candidate> {
        (1..=n).map(|i| Candidate { addr: SocketAddr::from(([10, 0, 0, i], 6443)), usable: true, active: 0 }).collect()
    }

    fn client(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a01_0000 + i))
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let b = backends(3);
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        for turn in 0..300 {
            *seen.entry(select(Algorithm::RoundRobin, &b, turn, client(1), &[]).expect("one")).or_default() += 1;
        }
        assert_eq!(seen.values().copied().collect::<Vec<_>>(), [100, 100, 100]);
    }

    #[test]
    fn least_connections_picks_the_idlest() {
        let mut b = backends(3);
        b[0].active = 5;
        b[1].active = 1;
        b[2].active = 3;
        for turn in 0..5 {
            assert_eq!(select(Algorithm::LeastConnections, &b, turn, client(1), &[]), Some(b[1].addr));
        }
    }

    #[test]
    fn source_hash_is_stable_and_moves_only_the_clients_of_a_removed_backend() {
        let b = backends(4);
        let before: Vec<SocketAddr> =
            (0..1000).map(|i| select(Algorithm::SourceHash, &b, u64::from(i), client(i), &[]).expect("one")).collect();
        let again: Vec<SocketAddr> =
            (0..1000).map(|i| select(Algorithm::SourceHash, &b, 7, client(i), &[]).expect("one")).collect();
        assert_eq!(before, again, "the turn does not matter, only the client");
        let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
        before.iter().for_each(|a| *counts.entry(*a).or_default() += 1);
        assert!(counts.values().all(|&c| (150..=350).contains(&c)), "roughly even: {counts:?}");
        let mut fewer = b.clone();
        fewer[2].usable = false;
        for (i, old) in before.iter().enumerate() {
            let new = select(Algorithm::SourceHash, &fewer, 0, client(i as u32), &[]).expect("one");
            if *old != b[2].addr {
                assert_eq!(new, *old, "client {i} stays put");
            } else {
                assert_ne!(new, b[2].addr);
            }
        }
    }

    #[test]
    fn unusable_and_already_tried_backends_are_skipped() {
        let mut b = backends(3);
        b[0].usable = false;
        let tried = [b[1].addr];
        for algorithm in [Algorithm::RoundRobin, Algorithm::LeastConnections, Algorithm::SourceHash] {
            assert_eq!(select(algorithm, &b, 0, client(1), &tried), Some(b[2].addr));
        }
        assert_eq!(select(Algorithm::RoundRobin, &b, 0, client(1), &[b[1].addr, b[2].addr]), None);
    }
}
