//! proxyDHCP (PXE specification 2.1, section 2.2.5): another DHCP server owns addressing on the
//! network; slipway answers network-booting firmware and iPXE with boot information only —
//! never an address, never a lease. A DISCOVER on port 67 gets an OFFER with no `yiaddr`; a
//! REQUEST (or INFORM) to the boot-server port 4011 gets an ACK, sent back to where it came from.
//! Everything else is left to the other server.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, MessageType};

use super::decision::{Context, Decision, Destination, Ignore, Outcome, PXE_VENDOR_OPTIONS, Reply, base, boot_options};
use super::message::{Kind, Request};

/// Decides the answer of a proxyDHCP server to `req`.
pub fn decide(req: &Request, ctx: &Context<'_>) -> Decision {
    if !req.boot.wants_boot() {
        return Decision::ignore(Ignore::NotBooting);
    }
    let (kind, to) = match (req.kind, ctx.pxe_port) {
        (Kind::Discover, false) if req.giaddr.is_unspecified() => (MessageType::Offer, Destination::Broadcast),
        (Kind::Discover, false) => (MessageType::Offer, Destination::Relay(req.giaddr)),
        (Kind::Request | Kind::Inform, true) => (MessageType::Ack, Destination::Source),
        _ => return Decision::ignore(Ignore::ProxyOnly),
    };
    let mut m = base(req, kind, ctx.server_ip);
    m.set_yiaddr(Ipv4Addr::UNSPECIFIED);
    if ctx.pxe_port {
        m.set_ciaddr(req.ciaddr);
    }
    if !boot_options(&mut m, req, ctx) {
        return Decision::ignore(Ignore::NoBootFile);
    }
    let opts = m.opts_mut();
    // A proxy offer is recognised by the vendor class; iPXE and HTTP boot answers carry their own.
    if opts.get(dhcproto::v4::OptionCode::ClassIdentifier).is_none() {
        opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
    }
    if matches!(opts.get(dhcproto::v4::OptionCode::ClassIdentifier), Some(DhcpOption::ClassIdentifier(v)) if v == b"PXEClient")
    {
        opts.insert(DhcpOption::VendorExtensions(PXE_VENDOR_OPTIONS.to_vec()));
    }
    let outcome = Outcome::Proxied(if kind == MessageType::Offer { "offer" } else { "ack" });
    Decision::of(Some(Reply { message: m, to }), None, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::{BootClient, BootSettings};
    use crate::inventory::{MacAddr, Timestamp};
    use dhcproto::v4::OptionCode;
    use std::time::Duration;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 107, 1);

    fn request(kind: Kind, boot: BootClient) -> Request {
        let mut r = Request::plain(kind, "52:54:00:00:00:99".parse::<MacAddr>().expect("mac"));
        r.broadcast = true;
        r.boot = boot;
        r
    }

    fn pxe_bios() -> BootClient {
        BootClient { arch: Some(0), vendor_class: Some(b"PXEClient:Arch:00000:UNDI:002001".to_vec()), is_ipxe: false }
    }

    fn run(req: &Request, pxe_port: bool) -> Decision {
        let boot = BootSettings { tftp: true, http_port: Some(8080), ..BootSettings::default() };
        let ctx = Context {
            now: Timestamp::from_unix_millis(1_800_000_000_000),
            server_ip: SERVER,
            network: None,
            boot: &boot,
            offer_hold: Duration::from_secs(60),
            decline_hold: Duration::from_secs(600),
            max_hops: 16,
            pxe_port,
        };
        decide(req, &ctx)
    }

    #[test]
    fn firmware_pxe_gets_a_proxy_offer_with_the_boot_file_and_no_address() {
        let d = run(&request(Kind::Discover, pxe_bios()), false);
        assert_eq!(d.outcome, Outcome::Proxied("offer"));
        assert!(d.lease.is_none(), "proxyDHCP never leases");
        let reply = d.reply.expect("an offer");
        let m = &reply.message;
        assert_eq!(reply.to, Destination::Broadcast);
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.siaddr(), SERVER);
        assert_eq!(m.fname_str().and_then(Result::ok).map(|f| f.trim_end_matches('\0')), Some("undionly.kpxe"));
        assert_eq!(
            m.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        assert_eq!(m.opts().get(OptionCode::VendorExtensions), Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255])));
        assert_eq!(m.opts().get(OptionCode::ServerIdentifier), Some(&DhcpOption::ServerIdentifier(SERVER)));
        assert!(m.opts().get(OptionCode::SubnetMask).is_none() && m.opts().get(OptionCode::Router).is_none());
        assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
    }

    #[test]
    fn a_boot_server_request_on_4011_gets_an_ack_sent_back_to_its_source() {
        let mut req = request(Kind::Request, pxe_bios());
        req.ciaddr = Ipv4Addr::new(10, 1, 107, 150);
        let d = run(&req, true);
        assert_eq!(d.outcome, Outcome::Proxied("ack"));
        let reply = d.reply.expect("an ack");
        assert_eq!(reply.to, Destination::Source);
        assert_eq!(reply.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(reply.message.ciaddr(), Ipv4Addr::new(10, 1, 107, 150));
        assert_eq!(reply.message.opts().msg_type(), Some(MessageType::Ack));
    }

    #[test]
    fn ipxe_gets_its_script_url_from_the_proxy() {
        let ipxe = BootClient { is_ipxe: true, ..pxe_bios() };
        let d = run(&request(Kind::Discover, ipxe), false);
        let reply = d.reply.expect("an offer");
        assert_eq!(
            reply.message.opts().get(OptionCode::BootfileName),
            Some(&DhcpOption::BootfileName(b"http://10.1.107.1:8080/boot.ipxe".to_vec()))
        );
        assert_eq!(reply.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn operating_systems_and_address_requests_are_left_to_the_other_server() {
        let os = BootClient::default();
        assert_eq!(run(&request(Kind::Discover, os), false).outcome, Outcome::Ignored(Ignore::NotBooting));
        assert_eq!(run(&request(Kind::Request, pxe_bios()), false).outcome, Outcome::Ignored(Ignore::ProxyOnly));
        assert_eq!(run(&request(Kind::Release, pxe_bios()), false).outcome, Outcome::Ignored(Ignore::ProxyOnly));
        assert_eq!(run(&request(Kind::Discover, pxe_bios()), true).outcome, Outcome::Ignored(Ignore::ProxyOnly));
    }

    #[test]
    fn without_a_boot_file_for_the_client_there_is_no_offer() {
        let arm = BootClient { arch: Some(11), vendor_class: Some(b"PXEClient:Arch:00011".to_vec()), is_ipxe: false };
        assert_eq!(run(&request(Kind::Discover, arm), false).outcome, Outcome::Ignored(Ignore::NoBootFile));
    }
}
