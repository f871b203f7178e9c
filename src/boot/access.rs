//! Who may fetch a node's config document (Ignition, cloud-init): only the node itself, asking
//! from its reserved address, to an address of slipway's inside the node's own network. Pure.
//! Addresses only: which interface a packet came in on is not known here (Linux takes a
//! packet for any local address on any interface), so the README asks for reverse-path
//! filtering and no route into the provisioning network from the public side.
//!
//! The request's TCP source address is the only identity: query parameters and headers such as
//! `X-Forwarded-For` are never consulted, so a machine cannot ask for another node's config.

use std::net::IpAddr;

use crate::inventory::{Inventory, Node};

/// Why a config request is refused. Every refusal is answered without a byte of the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request was sent to an address of slipway's outside the node's network (the public
    /// side): answered as if nothing were there (404).
    PublicSide,
    /// The source address is no node's reserved address (404).
    UnknownMachine,
    /// A node asked for another node's document (403).
    NotYours,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::PublicSide | Refusal::UnknownMachine => 404,
            Refusal::NotYours => 403,
        }
    }
}

/// The node a config request may be answered for: the node whose reserved address is `peer`,
/// reached on `local` inside that node's network; `asked_for` (a node name from the URL), when
/// given, must be that same node.
pub fn config_node<'a>(
    inv: &'a Inventory,
    local: IpAddr,
    peer: IpAddr,
    asked_for: Option<&str>,
) -> Result<&'a Node, Refusal> {
    let IpAddr::V4(local) = local.to_canonical() else {
        return Err(Refusal::PublicSide);
    };
    if inv.network_containing(local).is_none() {
        return Err(Refusal::PublicSide);
    }
    let IpAddr::V4(peer) = peer.to_canonical() else {
        return Err(Refusal::UnknownMachine);
    };
    let node = inv.node_by_ip(peer).ok_or(Refusal::UnknownMachine)?;
    if !inv.network_of(node).is_some_and(|n| n.cidr.contains(&local)) {
        return Err(Refusal::PublicSide);
    }
    match asked_for {
        Some(name) if name != node.name.as_str() => Err(Refusal::NotYours),
        _ => Ok(node),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test input")
    }

    #[test]
    fn a_node_gets_its_own_document_from_its_reserved_address() {
        let inv = super::super::script::tests::inventory();
        let node = config_node(&inv, ip("10.1.107.1"), ip("10.1.107.20"), Some("w0")).expect("test input");
        assert_eq!(node.name.as_str(), "w0");
        assert_eq!(
            config_node(&inv, ip("10.1.107.1"), ip("::ffff:10.1.107.20"), None).expect("test input").name.as_str(),
            "w0"
        );
    }

    #[test]
    fn every_other_asker_is_refused() {
        let inv = super::super::script::tests::inventory();
        let cases = [
            ("192.0.2.1", "10.1.107.20", Some("w0"), Refusal::PublicSide),
            ("::1", "10.1.107.20", None, Refusal::PublicSide),
            ("10.1.107.1", "10.1.107.21", Some("w0"), Refusal::UnknownMachine),
            ("10.1.107.1", "10.1.107.20", Some("w1"), Refusal::NotYours),
            ("10.1.107.1", "fe80::1", None, Refusal::UnknownMachine),
        ];
        for (local, peer, asked, want) in cases {
            assert_eq!(
                config_node(&inv, ip(local), ip(peer), asked).map(|n| n.name.to_string()),
                Err(want),
                "{local} {peer} {asked:?}"
            );
        }
        assert_eq!(Refusal::NotYours.status(), 403);
        assert_eq!(Refusal::PublicSide.status(), 404);
    }
}
