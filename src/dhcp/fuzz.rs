//! The packet decision path as one function of bytes, for the fuzzer (`fuzz/`) and for the
//! randomised test that runs in CI: decode, decide against a fixed lab, encode the reply.

use std::sync::OnceLock;
use std::time::Duration;

use super::decide::{Context, decide};
use super::leases::LeaseTable;
use super::message;
use crate::boot::BootSettings;
use crate::inventory::{AddrRange, Inventory, Name, Timestamp};

struct Lab {
    inventory: Inventory,
    leases: LeaseTable,
    network: Name,
    boot: BootSettings,
}

/// The shared lab (`inventory::lab`) with a pool of four (so the fuzzer reaches exhaustion),
/// the options a network may add, and a reserved node outside any cluster.
fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let inventory = crate::inventory::lab::Lab::okd()
            .network(|n| {
                n.pool = Some(AddrRange { start: [10, 1, 107, 100].into(), end: [10, 1, 107, 103].into() });
                n.mtu = Some(1500);
                n.ntp_servers = vec![[10, 1, 107, 1].into()];
                n.search_domains = vec!["lab.example".parse().expect("a domain")];
            })
            .node(crate::inventory::lab::node("n0", "52:54:00:00:00:0a", "10.1.107.20", None, None))
            .build();
        let boot = BootSettings { tftp: true, http_port: Some(8080), ..BootSettings::default() };
        Lab { inventory, leases: LeaseTable::default(), network: "cluster".parse().expect("a name"), boot }
    })
}

/// The same lab as a proxyDHCP network (another server owns addressing).
fn proxy_lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let base = lab();
        let mut inventory = base.inventory.clone();
        for net in inventory.networks.values_mut() {
            net.proxy = true;
            net.pool = None;
        }
        Lab { inventory, leases: LeaseTable::default(), network: base.network.clone(), boot: base.boot.clone() }
    })
}

/// Decodes, decides and encodes one datagram (the transaction ID's first byte picks the proxyDHCP lab
/// and port 4011 by its low bits). Panics only on a bug.
pub fn decide_datagram(data: &[u8]) {
    let lab = if data.get(4).is_some_and(|b| b & 2 == 2) { proxy_lab() } else { lab() };
    let Ok(request) = message::parse(data) else { return };
    let ctx = Context {
        now: Timestamp::from_unix_millis(1_800_000_000_000),
        server_ip: [10, 1, 107, 1].into(),
        network: Some(&lab.network),
        boot: &lab.boot,
        offer_hold: Duration::from_secs(60),
        decline_hold: Duration::from_secs(600),
        max_hops: 16,
        pxe_port: data.get(4).is_some_and(|b| b & 1 == 1),
    };
    let decision = decide(&lab.inventory, &lab.leases, &request, &ctx);
    if let Some(reply) = decision.reply {
        assert!(message::encode(&reply.message).is_some(), "a decided reply must encode");
    }
}

#[cfg(test)]
mod tests {
    use dhcproto::Encodable;
    use dhcproto::v4::{self, DhcpOption, MessageType};

    use super::*;

    /// xorshift64*: deterministic, so a failure reproduces.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Inputs the fuzzer once crashed on, kept so they never come back.
    #[test]
    fn known_fuzzer_findings_do_not_panic() {
        decide_datagram(include_bytes!("../../tests/fixtures/dhcp/fuzz-crash-1.bin"));
    }

    /// Valid requests of every kind, then hundreds of thousands of mutations of them (bytes
    /// flipped, truncated, extended, option lengths garbled): nothing panics.
    #[test]
    fn random_datagrams_never_panic_the_decision_path() {
        let kinds = [
            MessageType::Discover,
            MessageType::Request,
            MessageType::Decline,
            MessageType::Release,
            MessageType::Inform,
        ];
        let mut seeds = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let mut m = v4::Message::new(
                [0, 0, 0, 0].into(),
                [0, 0, 0, 0].into(),
                [0, 0, 0, 0].into(),
                [0, 0, 0, 0].into(),
                &[0x52, 0x54, 0, 0, 0, 1],
            );
            m.opts_mut().insert(DhcpOption::MessageType(*kind));
            m.opts_mut().insert(DhcpOption::RequestedIpAddress([10, 1, 107, 10 + i as u8].into()));
            m.opts_mut().insert(DhcpOption::ClientIdentifier(vec![1, 0x52, 0x54, 0, 0, 0, 1]));
            m.opts_mut().insert(DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007".to_vec()));
            m.opts_mut().insert(DhcpOption::Hostname("h".repeat(70)));
            seeds.push(m.to_vec().expect("encode"));
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for seed in &seeds {
            decide_datagram(seed);
        }
        for _ in 0..200_000 {
            let mut bytes = seeds[(next(&mut state) % seeds.len() as u64) as usize].clone();
            let edits = 1 + next(&mut state) % 8;
            for _ in 0..edits {
                let pos = (next(&mut state) % bytes.len().max(1) as u64) as usize;
                match next(&mut state) % 4 {
                    0 => bytes[pos] = next(&mut state) as u8,
                    1 => bytes.truncate(pos),
                    2 => bytes.extend((0..next(&mut state) % 64).map(|_| next(&mut state) as u8)),
                    _ => bytes[pos] ^= 1 << (next(&mut state) % 8),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            decide_datagram(&bytes);
        }
    }
}
