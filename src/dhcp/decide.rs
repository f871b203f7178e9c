//! The DHCP decision: given the inventory, the lease table and one request, what to answer and
//! which lease changes to make. Pure: time, the receiving address and settings come in as
//! arguments; nothing here touches a socket, a clock or the disk.

use std::net::Ipv4Addr;
use std::str::FromStr;

use dhcproto::v4::{self, DhcpOption, MessageType};

pub use super::decision::{Context, Decision, Destination, Ignore, Outcome, Reply};
use super::decision::{IPXE_NO_PXEDHCP, base, boot_options};
use super::leases::{ClientKey, LeaseTable, hex};
use super::message::{Kind, Request};
use crate::inventory::{Inventory, Lease, LeaseState, Network, Node, Timestamp};

/// Which address the client should have on this network, and why.
enum Address<'a> {
    Reserved(&'a Node),
    Pool(Ipv4Addr),
}

impl Address<'_> {
    fn ip(&self) -> Ipv4Addr {
        match self {
            Address::Reserved(n) => n.ipv4,
            Address::Pool(ip) => *ip,
        }
    }
}

/// Decides the answer to `req`.
pub fn decide(inv: &Inventory, leases: &LeaseTable, req: &Request, ctx: &Context<'_>) -> Decision {
    if req.hops > ctx.max_hops {
        return Decision::ignore(Ignore::TooManyHops(req.hops));
    }
    let network = if req.giaddr.is_unspecified() {
        match ctx.network.and_then(|n| inv.networks.get(n)) {
            Some(net) => net,
            None => return Decision::ignore(Ignore::NoNetwork),
        }
    } else {
        match inv.network_containing(req.giaddr) {
            Some(net) => net,
            None => return Decision::ignore(Ignore::UnknownRelay(req.giaddr)),
        }
    };
    if network.proxy {
        let mut decision = super::proxy::decide(req, ctx);
        decision.network = Some(network.name.clone());
        decision.node = inv.node_by_mac(req.mac).map(|n| n.name.clone());
        return decision;
    }
    let key = ClientKey::of(req.client_id.as_deref(), req.mac);
    if let Some(held) = leases.of_client(&network.name, &key)
        && held.mac != req.mac
        && held.is_active(ctx.now)
        && matches!(key, ClientKey::Id(_))
    {
        return Decision::ignore(Ignore::DuplicateClientId);
    }
    let node = inv.node_by_mac(req.mac).filter(|n| inv.network_of(n).is_some_and(|net| net.name == network.name));
    let mut decision = match req.kind {
        Kind::Discover => discover(inv, leases, req, ctx, network, node, &key),
        Kind::Request => request(inv, leases, req, ctx, network, node, &key),
        Kind::Decline => decline(leases, req, ctx, network, &key),
        Kind::Release => release(leases, req, ctx, network, &key),
        Kind::Inform => inform(inv, req, ctx, network, node),
    };
    decision.network = Some(network.name.clone());
    decision.node = node.map(|n| n.name.clone());
    decision
}

/// The address to offer: the reservation, else the client's current lease, else the address it
/// asks for, else a free one.
fn choose<'a>(
    leases: &LeaseTable,
    req: &Request,
    ctx: &Context<'_>,
    network: &Network,
    node: Option<&'a Node>,
    key: &ClientKey,
) -> Result<Address<'a>, Ignore> {
    if let Some(node) = node {
        return Ok(Address::Reserved(node));
    }
    let Some(pool) = network.pool else { return Err(Ignore::UnknownClient) };
    let usable = |ip: Ipv4Addr| pool.contains(ip) && leases.available_to(ip, &network.name, key, ctx.now);
    if let Some(l) = leases.of_client(&network.name, key)
        && l.state != LeaseState::Released
        && usable(l.ip)
    {
        return Ok(Address::Pool(l.ip));
    }
    if let Some(ip) = req.requested_ip.filter(|ip| usable(*ip)) {
        return Ok(Address::Pool(ip));
    }
    leases
        .free_address(&pool, &network.name, key, seed(key), ctx.now)
        .map(Address::Pool)
        .ok_or_else(|| Ignore::PoolExhausted(network.name.clone()))
}

/// Whether `ip` may be acknowledged for this client.
fn allowed(
    leases: &LeaseTable,
    ctx: &Context<'_>,
    network: &Network,
    node: Option<&Node>,
    key: &ClientKey,
    ip: Ipv4Addr,
) -> bool {
    match node {
        Some(node) => node.ipv4 == ip,
        None => {
            network.pool.is_some_and(|pool| pool.contains(ip)) && leases.available_to(ip, &network.name, key, ctx.now)
        }
    }
}

/// FNV-1a of the client key: where in the pool this client's search starts.
fn seed(key: &ClientKey) -> u64 {
    let bytes: &[u8] = match key {
        ClientKey::Id(id) => id,
        ClientKey::Mac(mac) => &mac.0,
    };
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn discover(
    inv: &Inventory,
    leases: &LeaseTable,
    req: &Request,
    ctx: &Context<'_>,
    network: &Network,
    node: Option<&Node>,
    key: &ClientKey,
) -> Decision {
    let address = match choose(leases, req, ctx, network, node, key) {
        Ok(a) => a,
        Err(why) => return Decision::ignore(why),
    };
    let ip = address.ip();
    let lease = lease(req, network, ip, LeaseState::Offered, Timestamp(ctx.now.0 + ctx.offer_hold), ctx.now);
    let message = answer(inv, req, ctx, network, node, MessageType::Offer, Some(ip));
    Decision::of(Some(Reply { to: destination(req, false), message }), Some(lease), Outcome::Offered(ip))
}

fn request(
    inv: &Inventory,
    leases: &LeaseTable,
    req: &Request,
    ctx: &Context<'_>,
    network: &Network,
    node: Option<&Node>,
    key: &ClientKey,
) -> Decision {
    if let Some(server) = req.server_id
        && server != ctx.server_ip
    {
        return Decision::ignore(Ignore::OtherServer(server));
    }
    // SELECTING and INIT-REBOOT name the address in option 50; RENEWING and REBINDING in ciaddr.
    let Some(ip) = req.requested_ip.or((!req.ciaddr.is_unspecified()).then_some(req.ciaddr)) else {
        return nak(req, ctx, Ipv4Addr::UNSPECIFIED, "no address requested");
    };
    if allowed(leases, ctx, network, node, key, ip) {
        let expires = Timestamp(ctx.now.0 + network.lease_time);
        let lease = lease(req, network, ip, LeaseState::Bound, expires, ctx.now);
        let message = answer(inv, req, ctx, network, node, MessageType::Ack, Some(ip));
        return Decision::of(Some(Reply { to: destination(req, false), message }), Some(lease), Outcome::Acked(ip));
    }
    // Not this client's address. Unknown clients on a network without a pool get silence (as
    // with `deny unknown-clients`); otherwise an authoritative server refuses, as does any
    // server the client selected. A non-authoritative one leaves it to whoever owns it.
    if node.is_none() && network.pool.is_none() && req.server_id.is_none() {
        return Decision::ignore(Ignore::UnknownClient);
    }
    if network.authoritative || req.server_id.is_some() {
        let why = if network.cidr.contains(&ip) {
            "address not available to this client"
        } else {
            "address not on this network"
        };
        return nak(req, ctx, ip, why);
    }
    Decision::ignore(Ignore::NotAuthoritative)
}

fn nak(req: &Request, ctx: &Context<'_>, ip: Ipv4Addr, why: &'static str) -> Decision {
    let mut message = base(req, MessageType::Nak, ctx.server_ip);
    message.opts_mut().insert(DhcpOption::Message(why.into()));
    Decision::of(Some(Reply { to: destination(req, true), message }), None, Outcome::Naked(ip, why))
}

/// A client found its address in use by someone else: keep it out of use for a while.
fn decline(leases: &LeaseTable, req: &Request, ctx: &Context<'_>, network: &Network, key: &ClientKey) -> Decision {
    let Some(ip) = req.requested_ip.filter(|ip| network.cidr.contains(ip)) else {
        return Decision::ignore(Ignore::NotHeld(req.requested_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)));
    };
    if !leases.available_to(ip, &network.name, key, ctx.now) {
        return Decision::ignore(Ignore::NotHeld(ip));
    }
    let lease = lease(req, network, ip, LeaseState::Declined, Timestamp(ctx.now.0 + ctx.decline_hold), ctx.now);
    Decision::of(None, Some(lease), Outcome::Declined(ip))
}

fn release(leases: &LeaseTable, req: &Request, ctx: &Context<'_>, network: &Network, key: &ClientKey) -> Decision {
    let ip = req.ciaddr;
    match leases.of_client(&network.name, key) {
        Some(l) if l.ip == ip && l.mac == req.mac => {
            let mut released = l.clone();
            released.state = LeaseState::Released;
            released.expires = ctx.now;
            released.updated = ctx.now;
            Decision::of(None, Some(released), Outcome::Released(ip))
        }
        _ => Decision::ignore(Ignore::NotHeld(ip)),
    }
}

fn inform(inv: &Inventory, req: &Request, ctx: &Context<'_>, network: &Network, node: Option<&Node>) -> Decision {
    let message = answer(inv, req, ctx, network, node, MessageType::Ack, None);
    let to =
        if req.giaddr.is_unspecified() { Destination::Unicast(req.ciaddr) } else { Destination::Relay(req.giaddr) };
    Decision::of(Some(Reply { message, to }), None, Outcome::Informed)
}

fn lease(
    req: &Request,
    network: &Network,
    ip: Ipv4Addr,
    state: LeaseState,
    expires: Timestamp,
    now: Timestamp,
) -> Lease {
    Lease {
        ip,
        mac: req.mac,
        network: network.name.clone(),
        state,
        expires,
        updated: now,
        hostname: req.hostname.clone().filter(|h| h.len() <= 63),
        client_id: req.client_id.as_deref().map(hex),
    }
}

/// RFC 2131 section 4.1: relays get the reply; clients with an address get it unicast; the
/// rest (and every NAK) get it broadcast.
fn destination(req: &Request, is_nak: bool) -> Destination {
    if !req.giaddr.is_unspecified() {
        Destination::Relay(req.giaddr)
    } else if !is_nak && !req.ciaddr.is_unspecified() {
        Destination::Unicast(req.ciaddr)
    } else {
        Destination::Broadcast
    }
}

/// An OFFER or ACK: the address (none for INFORM), the network's options, the node's name and
/// the boot answer.
fn answer(
    inv: &Inventory,
    req: &Request,
    ctx: &Context<'_>,
    network: &Network,
    node: Option<&Node>,
    kind: MessageType,
    ip: Option<Ipv4Addr>,
) -> v4::Message {
    let mut m = base(req, kind, ctx.server_ip);
    match ip {
        Some(ip) => {
            m.set_yiaddr(ip);
            if req.kind == Kind::Request {
                m.set_ciaddr(req.ciaddr);
            }
            let secs = u32::try_from(network.lease_time.as_secs()).unwrap_or(u32::MAX);
            m.opts_mut().insert(DhcpOption::AddressLeaseTime(secs));
            m.opts_mut().insert(DhcpOption::Renewal(secs / 2));
            m.opts_mut().insert(DhcpOption::Rebinding(secs / 8 * 7));
        }
        None => {
            m.set_ciaddr(req.ciaddr);
        }
    }
    let opts = m.opts_mut();
    opts.insert(DhcpOption::SubnetMask(network.cidr.netmask()));
    opts.insert(DhcpOption::BroadcastAddr(network.cidr.broadcast()));
    if let Some(gw) = network.gateway {
        opts.insert(DhcpOption::Router(vec![gw]));
    }
    // A node's own DHCP options replace its network's, one by one.
    let own = node.map(|n| &n.dhcp);
    let dns_servers = own.and_then(|o| o.dns_servers.as_ref()).unwrap_or(&network.dns_servers);
    if !dns_servers.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(dns_servers.clone()));
    }
    let cluster = node.and_then(|n| n.cluster.as_ref()).and_then(|c| inv.clusters.get(c));
    let domain = cluster.map(|c| c.zone()).or_else(|| network.domain.as_ref().map(ToString::to_string));
    if let Some(domain) = domain {
        opts.insert(DhcpOption::DomainName(domain));
    }
    if let Some(node) = node {
        opts.insert(DhcpOption::Hostname(node.hostname().to_string()));
    }
    if let Some(mtu) = own.and_then(|o| o.mtu).or(network.mtu) {
        opts.insert(DhcpOption::InterfaceMtu(mtu));
    }
    let ntp = own.and_then(|o| o.ntp_servers.as_ref()).unwrap_or(&network.ntp_servers);
    if !ntp.is_empty() {
        opts.insert(DhcpOption::NtpServers(ntp.clone()));
    }
    let search_domains = own.and_then(|o| o.search_domains.as_ref()).unwrap_or(&network.search_domains);
    let search: Vec<dhcproto::Name> =
        search_domains.iter().filter_map(|d| dhcproto::Name::from_str(&format!("{d}.")).ok()).collect();
    if !search.is_empty() {
        opts.insert(DhcpOption::DomainSearch(search));
    }
    let routes = own.and_then(|o| o.routes.as_ref()).unwrap_or(&network.routes);
    if !routes.is_empty() {
        opts.insert(DhcpOption::ClasslessStaticRoute(routes.iter().map(|r| (r.to, r.via)).collect()));
    }
    // An iPXE client slipway boots is told not to wait for ProxyDHCP offers. Not when slipway
    // has no boot answer for it: another server on the network may be its ProxyDHCP.
    if boot_options(&mut m, req, ctx) && req.boot.is_ipxe {
        let encapsulated = v4::UnknownOption::new(v4::OptionCode::Unknown(175), IPXE_NO_PXEDHCP.to_vec());
        m.opts_mut().insert(DhcpOption::Unknown(encapsulated));
    }
    m
}

#[cfg(test)]
mod tests;
