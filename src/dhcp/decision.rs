//! What a DHCP decision is made of (the request's context, the reply, the outcome, why nothing
//! is answered) and the reply pieces both `decide` and proxyDHCP (`proxy`) build with. Pure.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{self, DhcpOption, Flags, MessageType, Opcode};

use super::message::Request;
use crate::boot::{BootAnswer, BootSettings, dhcp_answer};
use crate::inventory::{Lease, Name, Timestamp};

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
    pub(crate) fn ignore(why: Ignore) -> Decision {
        Decision::of(None, None, Outcome::Ignored(why))
    }

    /// A decision; `decide` fills in the network and node afterwards.
    pub(crate) fn of(reply: Option<Reply>, lease: Option<Lease>, outcome: Outcome) -> Decision {
        Decision { reply, lease, network: None, node: None, outcome }
    }
}

/// The reply skeleton: header fields copied from the request, message type and server id.
pub(crate) fn base(req: &Request, kind: MessageType, server: Ipv4Addr) -> v4::Message {
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

/// Option 43 with PXE_DISCOVERY_CONTROL (tag 6) = 8: "boot from the file in this packet, no
/// boot server discovery"; PXE ROMs also need it before they accept a proxy offer.
pub(crate) const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];

/// Option 175 (iPXE's encapsulated options) holding 176 (`no-pxedhcp`) = 1. iPXE holds a
/// DHCPOFFER for ProxyDHCP offers until it has one, the offer says there are none, or 2 s pass
/// (3 s in practice, with its timer's granularity; iPXE `src/net/udp/dhcp.c`,
/// `dhcp_discovery_rx`, `DHCP_DISC_PROXY_TIMEOUT_SEC`): slipway's offer to iPXE carries its
/// boot script, so there is nothing to wait for.
pub(crate) const IPXE_NO_PXEDHCP: [u8; 3] = [176, 1, 1];

/// The boot answer for a firmware or iPXE client: next server, file name and vendor class.
/// Returns whether there was anything to offer.
pub(crate) fn boot_options(m: &mut v4::Message, req: &Request, ctx: &Context<'_>) -> bool {
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
