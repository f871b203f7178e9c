//! The DHCP decision: given the inventory, the lease table and one request, what to answer and
//! which lease changes to make. Pure: time, the receiving address and settings come in as
//! arguments; nothing here touches a socket, a clock or the disk.

use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use dhcproto::v4::{self, DhcpOption, Flags, MessageType, Opcode};

use super::leases::{ClientKey, LeaseTable, hex};
use super::message::{Kind, Request};
use crate::boot::{BootAnswer, BootSettings, dhcp_answer};
use crate::inventory::{Inventory, Lease, LeaseState, Name, Network, Node, Timestamp};

/// The fixed facts of one request: when, where it arrived, and the boot and timing settings.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub now: Timestamp,
    /// Our address on the interface the request arrived on (option 54, siaddr).
    pub server_ip: Ipv4Addr,
    /// The network of that interface (for requests that did not come through a relay).
    pub network: Option<&'a Name>,
    pub boot: &'a BootSettings,
    /// How long an offered address is held for the client.
    pub offer_hold: Duration,
    /// How long a declined address stays out of use.
    pub decline_hold: Duration,
    /// Requests relayed through more hops are dropped.
    pub max_hops: u8,
    /// The request arrived on the PXE boot-server port 4011 (proxyDHCP networks only).
    pub pxe_port: bool,
}

/// Where a reply goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// To the relay agent, port 67.
    Relay(Ipv4Addr),
    /// To a client that has an address, port 68.
    Unicast(Ipv4Addr),
    /// To 255.255.255.255:68 on the receiving interface: the client has no address yet.
    Broadcast,
    /// Back to the address and port the request came from (PXE boot-server requests on 4011).
    Source,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub message: v4::Message,
    pub to: Destination,
}

/// Why a request gets no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignore {
    TooManyHops(u8),
    /// Relayed from a subnet no network covers.
    UnknownRelay(Ipv4Addr),
    /// Arrived on an interface that serves no network.
    NoNetwork,
    /// Not a reserved node and the network has no pool.
    UnknownClient,
    PoolExhausted(Name),
    /// The client chose another server's offer.
    OtherServer(Ipv4Addr),
    /// Another hardware address holds an active lease under this client identifier.
    DuplicateClientId,
    /// Not authoritative, and the request is not ours to refuse.
    NotAuthoritative,
    /// Release or decline of an address the client does not hold.
    NotHeld(Ipv4Addr),
    /// proxyDHCP: the client is not network-booting firmware or iPXE.
    NotBooting,
    /// proxyDHCP: the boot settings have no file for this client.
    NoBootFile,
    /// proxyDHCP: addressing belongs to another server; this message is not for us.
    ProxyOnly,
}

impl std::fmt::Display for Ignore {
    /// Words for an operator (the `reason` of a `dhcp_ignored` event).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ignore::TooManyHops(hops) => write!(f, "relayed through {hops} hops, more than allowed"),
            Ignore::UnknownRelay(ip) => write!(f, "relayed from {ip}, which no network's cidr covers"),
            Ignore::NoNetwork => f.write_str("arrived on an interface no network uses"),
            Ignore::UnknownClient => f.write_str("not a known node, and the network has no pool"),
            Ignore::PoolExhausted(network) => write!(f, "the pool of network {network} is exhausted"),
            Ignore::OtherServer(ip) => write!(f, "the client chose the offer of server {ip}"),
            Ignore::DuplicateClientId => {
                f.write_str("another hardware address holds an active lease under this client identifier")
            }
            Ignore::NotAuthoritative => f.write_str("not authoritative for this request"),
            Ignore::NotHeld(ip) => write!(f, "releases or declines {ip}, which the client does not hold"),
            Ignore::NotBooting => f.write_str("proxyDHCP: not network-booting firmware or iPXE"),
            Ignore::NoBootFile => f.write_str("proxyDHCP: no boot file for this client's architecture"),
            Ignore::ProxyOnly => f.write_str("proxyDHCP: addressing is another server's"),
        }
    }
}

/// What happened, for events and counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Offered(Ipv4Addr),
    Acked(Ipv4Addr),
    Naked(Ipv4Addr, &'static str),
    Informed,
    /// proxyDHCP: boot information only (`offer` or `ack`).
    Proxied(&'static str),
    Released(Ipv4Addr),
    Declined(Ipv4Addr),
    Ignored(Ignore),
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub reply: Option<Reply>,
    /// The lease change to apply; persisted before the reply is sent unless it is an offer.
    pub lease: Option<Lease>,
    pub network: Option<Name>,
    /// The node the client is, when it is one.
    pub node: Option<Name>,
    pub outcome: Outcome,
}

impl Decision {
    pub(super) fn ignore(why: Ignore) -> Decision {
        Decision::of(None, None, Outcome::Ignored(why))
    }

    /// A decision; `decide` fills in the network and node afterwards.
    pub(super) fn of(reply: Option<Reply>, lease: Option<Lease>, outcome: Outcome) -> Decision {
        Decision { reply, lease, network: None, node: None, outcome }
    }
}

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

/// The reply skeleton: header fields copied from the request, message type and server id.
pub(super) fn base(req: &Request, kind: MessageType, server: Ipv4Addr) -> v4::Message {
    // With the request's xid: `Message::new` would draw a random one from a CSPRNG first.
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut m = v4::Message::new_with_id(req.xid, unspecified, unspecified, unspecified, req.giaddr, &req.mac.0);
    m.set_opcode(Opcode::BootReply).set_hops(req.hops);
    if req.broadcast {
        m.set_flags(Flags::default().set_broadcast());
    }
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    if let Some(id) = &req.client_id {
        m.opts_mut().insert(DhcpOption::ClientIdentifier(id.clone()));
    }
    if let Some(info) = &req.relay_info {
        m.opts_mut().insert(info.clone());
    }
    m
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
    boot_options(&mut m, req, ctx);
    m
}

/// Option 43 with PXE_DISCOVERY_CONTROL (tag 6) = 8: "boot from the file in this packet, no
/// boot server discovery"; PXE ROMs also need it before they accept a proxy offer.
pub(super) const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];

/// The boot answer for a firmware or iPXE client: next server, file name and vendor class.
/// Returns whether there was anything to offer.
pub(super) fn boot_options(m: &mut v4::Message, req: &Request, ctx: &Context<'_>) -> bool {
    match dhcp_answer(&req.boot, ctx.boot, ctx.server_ip) {
        BootAnswer::None => return false,
        BootAnswer::Tftp { server, file } => {
            m.set_siaddr(server);
            if file.len() <= 127 {
                m.set_fname_str(&file);
            }
            m.opts_mut().insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
            // Without option 43 UEFI firmware (EDK2/OVMF) takes a PXEClient offer for a BINL
            // one and asks a boot server on port 4011 before it uses the file named here.
            m.opts_mut().insert(DhcpOption::VendorExtensions(PXE_VENDOR_OPTIONS.to_vec()));
        }
        BootAnswer::HttpBoot { url } => {
            if url.len() <= 127 {
                m.set_fname_str(&url);
            }
            m.opts_mut().insert(DhcpOption::BootfileName(url.into_bytes()));
            m.opts_mut().insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
        }
        BootAnswer::IpxeScript { url } => {
            m.set_siaddr(ctx.server_ip);
            if url.len() <= 127 {
                m.set_fname_str(&url);
            }
            m.opts_mut().insert(DhcpOption::BootfileName(url.into_bytes()));
        }
    }
    true
}

#[cfg(test)]
mod tests;
