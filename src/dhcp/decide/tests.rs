use crate::boot::BootSettings;
use crate::inventory::Name;
use dhcproto::v4::Opcode;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, MessageType, OptionCode};

use super::*;
use crate::boot::BootClient;
use crate::inventory::{AddrRange, MacAddr, Role, Route};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 107, 1);
const NODE_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x02]);
const STRANGER: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0x99, 0x01]);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

fn now() -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000)
}

/// The lab inventory (master-0 = 52:54:00:00:00:02 at 10.1.107.11 in cluster prod), with
/// network options set and the pool switched on or off.
fn inventory(pool: bool) -> Inventory {
    let mut inv = crate::inventory::lab::lab();
    let net = inv.networks.get_mut("cluster").expect("network");
    if !pool {
        net.pool = None;
    }
    net.mtu = Some(9000);
    net.ntp_servers = vec![ip("10.1.107.1")];
    net.search_domains = vec!["lab.example".parse().expect("domain")];
    net.routes = vec![Route { to: "192.0.2.0/24".parse().expect("net"), via: ip("10.1.107.1") }];
    inv.reindex();
    inv
}

fn boot() -> BootSettings {
    BootSettings { tftp: true, http_port: Some(8080), ..BootSettings::default() }
}

fn req(kind: Kind, mac: MacAddr) -> Request {
    Request::plain(kind, mac)
}

fn run(inv: &Inventory, leases: &LeaseTable, r: &Request) -> Decision {
    run_with(inv, leases, r, &boot())
}

/// `run` with other boot settings.
fn run_with(inv: &Inventory, leases: &LeaseTable, r: &Request, boot: &BootSettings) -> Decision {
    let network: Name = "cluster".parse().expect("name");
    let ctx = Context {
        now: now(),
        server_ip: SERVER,
        network: Some(&network),
        boot,
        offer_hold: Duration::from_secs(60),
        decline_hold: Duration::from_secs(600),
        max_hops: 4,
        pxe_port: false,
    };
    decide(inv, leases, r, &ctx)
}

fn reply(d: &Decision) -> &v4::Message {
    &d.reply.as_ref().expect("a reply").message
}

fn opt(d: &Decision, code: OptionCode) -> Option<&DhcpOption> {
    reply(d).opts().get(code)
}

/// Runs DISCOVER then REQUEST (SELECTING) for `mac`, applying each lease change.
fn dora(inv: &Inventory, leases: &mut LeaseTable, mac: MacAddr) -> Ipv4Addr {
    let offer = run(inv, leases, &req(Kind::Discover, mac));
    let Outcome::Offered(offered) = offer.outcome else { panic!("no offer: {:?}", offer.outcome) };
    leases.put(offer.lease.expect("offer lease"));
    let mut r = req(Kind::Request, mac);
    r.server_id = Some(SERVER);
    r.requested_ip = Some(offered);
    let ack = run(inv, leases, &r);
    assert_eq!(ack.outcome, Outcome::Acked(offered));
    leases.put(ack.lease.expect("ack lease"));
    offered
}

#[test]
fn a_reserved_node_is_offered_its_address_name_and_network_options() {
    let d = run(&inventory(false), &LeaseTable::default(), &req(Kind::Discover, NODE_MAC));
    assert_eq!(d.outcome, Outcome::Offered(ip("10.1.107.11")));
    assert_eq!(d.node.as_ref().map(Name::as_str), Some("master-0"));
    let m = reply(&d);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!((m.yiaddr(), m.xid(), m.opcode()), (ip("10.1.107.11"), 42, Opcode::BootReply));
    assert_eq!(
        d.reply.as_ref().map(|r| r.to),
        Some(Destination::Broadcast),
        "no address yet, no broadcast flag: still reachable"
    );
    assert_eq!(opt(&d, OptionCode::Hostname), Some(&DhcpOption::Hostname("master-0".into())));
    assert_eq!(
        opt(&d, OptionCode::DomainName),
        Some(&DhcpOption::DomainName("prod.lab.example".into())),
        "a cluster node's domain is its zone"
    );
    assert_eq!(opt(&d, OptionCode::ServerIdentifier), Some(&DhcpOption::ServerIdentifier(SERVER)));
    assert_eq!(opt(&d, OptionCode::SubnetMask), Some(&DhcpOption::SubnetMask(ip("255.255.255.0"))));
    assert_eq!(opt(&d, OptionCode::Router), Some(&DhcpOption::Router(vec![ip("10.1.107.1")])));
    assert_eq!(opt(&d, OptionCode::DomainNameServer), Some(&DhcpOption::DomainNameServer(vec![ip("10.1.107.1")])));
    assert_eq!(opt(&d, OptionCode::AddressLeaseTime), Some(&DhcpOption::AddressLeaseTime(3600)));
    assert_eq!(opt(&d, OptionCode::Renewal), Some(&DhcpOption::Renewal(1800)));
    assert_eq!(opt(&d, OptionCode::Rebinding), Some(&DhcpOption::Rebinding(3150)));
    assert_eq!(opt(&d, OptionCode::InterfaceMtu), Some(&DhcpOption::InterfaceMtu(9000)));
    assert_eq!(opt(&d, OptionCode::NtpServers), Some(&DhcpOption::NtpServers(vec![ip("10.1.107.1")])));
    assert!(matches!(opt(&d, OptionCode::DomainSearch), Some(DhcpOption::DomainSearch(list)) if list.len() == 1));
    assert!(
        matches!(opt(&d, OptionCode::ClasslessStaticRoute), Some(DhcpOption::ClasslessStaticRoute(r)) if r.len() == 1)
    );
    let lease = d.lease.as_ref().expect("offer held");
    assert_eq!((lease.state, lease.expires), (LeaseState::Offered, Timestamp(now().0 + Duration::from_secs(60))));
}

#[test]
fn a_nodes_own_dhcp_options_replace_its_networks() {
    let mut inv = inventory(false);
    let node = inv.nodes.get_mut("master-0").expect("node");
    node.dhcp.mtu = Some(1450);
    node.dhcp.dns_servers = Some(vec![ip("10.1.107.53")]);
    node.dhcp.routes = Some(vec![]);
    inv.reindex();
    let d = run(&inv, &LeaseTable::default(), &req(Kind::Discover, NODE_MAC));
    assert_eq!(opt(&d, OptionCode::InterfaceMtu), Some(&DhcpOption::InterfaceMtu(1450)));
    assert_eq!(opt(&d, OptionCode::DomainNameServer), Some(&DhcpOption::DomainNameServer(vec![ip("10.1.107.53")])));
    assert_eq!(opt(&d, OptionCode::ClasslessStaticRoute), None, "an empty list switches the network's routes off");
    assert_eq!(
        opt(&d, OptionCode::NtpServers),
        Some(&DhcpOption::NtpServers(vec![ip("10.1.107.1")])),
        "what the node does not set comes from the network"
    );
}

#[test]
fn an_unknown_machine_gets_nothing_when_the_pool_is_off() {
    let d = run(&inventory(false), &LeaseTable::default(), &req(Kind::Discover, STRANGER));
    assert_eq!(d.outcome, Outcome::Ignored(Ignore::UnknownClient));
    assert!(d.reply.is_none() && d.lease.is_none());
}

#[test]
fn an_unknown_machine_gets_a_pool_address_and_keeps_it() {
    let inv = inventory(true);
    let mut leases = LeaseTable::default();
    let first = dora(&inv, &mut leases, STRANGER);
    assert!(inv.networks["cluster"].pool.expect("pool").contains(first));
    assert_eq!(dora(&inv, &mut leases, STRANGER), first, "the same client gets the same address back");
    let other = dora(&inv, &mut leases, MacAddr([0x52, 0x54, 0, 0, 0x99, 0x02]));
    assert_ne!(other, first, "another client never gets a held address");
}

#[test]
fn an_ack_is_a_bound_lease_that_must_be_persisted() {
    let inv = inventory(false);
    let mut r = req(Kind::Request, NODE_MAC);
    r.server_id = Some(SERVER);
    r.requested_ip = Some(ip("10.1.107.11"));
    r.hostname = Some("localhost".into());
    let d = run(&inv, &LeaseTable::default(), &r);
    assert_eq!(d.outcome, Outcome::Acked(ip("10.1.107.11")));
    assert_eq!(reply(&d).opts().msg_type(), Some(MessageType::Ack));
    let lease = d.lease.expect("lease");
    assert_eq!(
        (lease.state, lease.expires, lease.mac),
        (LeaseState::Bound, Timestamp(now().0 + Duration::from_secs(3600)), NODE_MAC)
    );
}

#[test]
fn a_request_naming_another_server_is_left_alone() {
    let mut r = req(Kind::Request, NODE_MAC);
    r.server_id = Some(ip("10.1.107.250"));
    r.requested_ip = Some(ip("10.1.107.11"));
    assert_eq!(
        run(&inventory(false), &LeaseTable::default(), &r).outcome,
        Outcome::Ignored(Ignore::OtherServer(ip("10.1.107.250")))
    );
}

#[test]
fn a_node_asking_for_an_address_that_is_not_its_own_gets_a_broadcast_nak() {
    for server_id in [Some(SERVER), None] {
        let mut r = req(Kind::Request, NODE_MAC);
        r.server_id = server_id;
        r.requested_ip = Some(ip("10.1.107.12"));
        let d = run(&inventory(false), &LeaseTable::default(), &r);
        assert_eq!(
            d.outcome,
            Outcome::Naked(ip("10.1.107.12"), "address not available to this client"),
            "{server_id:?}"
        );
        assert_eq!(reply(&d).opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(d.reply.as_ref().map(|r| r.to), Some(Destination::Broadcast));
        assert!(d.lease.is_none());
    }
}

#[test]
fn init_reboot_from_another_network_is_naked() {
    let mut r = req(Kind::Request, NODE_MAC);
    r.requested_ip = Some(ip("192.168.5.20"));
    assert_eq!(
        run(&inventory(false), &LeaseTable::default(), &r).outcome,
        Outcome::Naked(ip("192.168.5.20"), "address not on this network")
    );
}

#[test]
fn a_non_authoritative_server_stays_silent_instead_of_naking() {
    let mut inv = inventory(true);
    inv.networks.get_mut("cluster").expect("net").authoritative = false;
    let mut r = req(Kind::Request, STRANGER);
    r.requested_ip = Some(ip("192.168.5.20"));
    assert_eq!(run(&inv, &LeaseTable::default(), &r).outcome, Outcome::Ignored(Ignore::NotAuthoritative));
}

#[test]
fn an_unknown_client_rebooting_with_the_pool_off_is_ignored() {
    let mut r = req(Kind::Request, STRANGER);
    r.requested_ip = Some(ip("10.1.107.150"));
    assert_eq!(run(&inventory(false), &LeaseTable::default(), &r).outcome, Outcome::Ignored(Ignore::UnknownClient));
}

#[test]
fn a_pool_address_held_by_another_client_is_naked() {
    let inv = inventory(true);
    let mut leases = LeaseTable::default();
    let held = dora(&inv, &mut leases, STRANGER);
    let mut r = req(Kind::Request, MacAddr([0x52, 0x54, 0, 0, 0x99, 0x02]));
    r.requested_ip = Some(held);
    assert_eq!(run(&inv, &leases, &r).outcome, Outcome::Naked(held, "address not available to this client"));
}

#[test]
fn renewing_is_acked_unicast_to_the_client() {
    let inv = inventory(true);
    let mut leases = LeaseTable::default();
    let held = dora(&inv, &mut leases, STRANGER);
    let mut r = req(Kind::Request, STRANGER);
    r.ciaddr = held;
    let d = run(&inv, &leases, &r);
    assert_eq!(d.outcome, Outcome::Acked(held));
    assert_eq!(d.reply.as_ref().map(|r| r.to), Some(Destination::Unicast(held)));
    assert_eq!(reply(&d).ciaddr(), held);
}

#[test]
fn relayed_requests_are_answered_to_the_relay_with_option_82_echoed() {
    let inv = inventory(false);
    let mut r = req(Kind::Discover, NODE_MAC);
    r.giaddr = ip("10.1.107.254");
    r.hops = 1;
    r.relay_info = Some(DhcpOption::RelayAgentInformation(Default::default()));
    let network: Name = "elsewhere".parse().expect("name");
    let boot = boot();
    let ctx = Context {
        now: now(),
        server_ip: SERVER,
        network: Some(&network),
        boot: &boot,
        offer_hold: Duration::from_secs(60),
        decline_hold: Duration::from_secs(60),
        max_hops: 4,
        pxe_port: false,
    };
    let d = decide(&inv, &LeaseTable::default(), &r, &ctx);
    assert_eq!(
        d.outcome,
        Outcome::Offered(ip("10.1.107.11")),
        "the relay's subnet picks the network, not the interface"
    );
    assert_eq!(d.reply.as_ref().map(|r| r.to), Some(Destination::Relay(ip("10.1.107.254"))));
    assert_eq!(reply(&d).giaddr(), ip("10.1.107.254"));
    assert!(opt(&d, OptionCode::RelayAgentInformation).is_some());
}

#[test]
fn relays_from_unknown_subnets_and_too_many_hops_are_dropped() {
    let mut r = req(Kind::Discover, NODE_MAC);
    r.giaddr = ip("172.16.0.1");
    assert_eq!(
        run(&inventory(false), &LeaseTable::default(), &r).outcome,
        Outcome::Ignored(Ignore::UnknownRelay(ip("172.16.0.1")))
    );
    let mut r = req(Kind::Discover, NODE_MAC);
    r.hops = 5;
    assert_eq!(run(&inventory(false), &LeaseTable::default(), &r).outcome, Outcome::Ignored(Ignore::TooManyHops(5)));
}

#[test]
fn a_declined_address_is_quarantined_and_not_offered_again() {
    let inv = inventory(true);
    let mut leases = LeaseTable::default();
    let bad = dora(&inv, &mut leases, STRANGER);
    let mut r = req(Kind::Decline, STRANGER);
    r.requested_ip = Some(bad);
    r.server_id = Some(SERVER);
    let d = run(&inv, &leases, &r);
    assert_eq!(d.outcome, Outcome::Declined(bad));
    assert!(d.reply.is_none());
    let lease = d.lease.expect("declined lease");
    assert_eq!((lease.state, lease.expires), (LeaseState::Declined, Timestamp(now().0 + Duration::from_secs(600))));
    leases.put(lease);
    let next = run(&inv, &leases, &req(Kind::Discover, STRANGER));
    assert!(matches!(next.outcome, Outcome::Offered(ip) if ip != bad), "{:?}", next.outcome);
}

#[test]
fn a_release_frees_the_address_and_a_foreign_release_is_ignored() {
    let inv = inventory(true);
    let mut leases = LeaseTable::default();
    let held = dora(&inv, &mut leases, STRANGER);
    let mut foreign = req(Kind::Release, MacAddr([0x52, 0x54, 0, 0, 0x99, 0x03]));
    foreign.ciaddr = held;
    assert_eq!(run(&inv, &leases, &foreign).outcome, Outcome::Ignored(Ignore::NotHeld(held)));
    let mut r = req(Kind::Release, STRANGER);
    r.ciaddr = held;
    let d = run(&inv, &leases, &r);
    assert_eq!(d.outcome, Outcome::Released(held));
    let lease = d.lease.expect("lease");
    assert_eq!((lease.state, lease.expires), (LeaseState::Released, now()));
}

#[test]
fn inform_gets_options_but_no_address_or_lease() {
    let mut r = req(Kind::Inform, NODE_MAC);
    r.ciaddr = ip("10.1.107.11");
    let d = run(&inventory(false), &LeaseTable::default(), &r);
    assert_eq!(d.outcome, Outcome::Informed);
    assert_eq!(d.reply.as_ref().map(|r| r.to), Some(Destination::Unicast(ip("10.1.107.11"))));
    assert_eq!(reply(&d).yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&d, OptionCode::AddressLeaseTime).is_none());
    assert!(opt(&d, OptionCode::DomainNameServer).is_some());
    assert!(d.lease.is_none());
}

#[test]
fn an_exhausted_pool_is_reported_not_a_crash() {
    let mut inv = inventory(true);
    inv.networks.get_mut("cluster").expect("net").pool =
        Some(AddrRange { start: ip("10.1.107.100"), end: ip("10.1.107.101") });
    let mut leases = LeaseTable::default();
    dora(&inv, &mut leases, MacAddr([2, 0, 0, 0, 0, 1]));
    dora(&inv, &mut leases, MacAddr([2, 0, 0, 0, 0, 2]));
    let d = run(&inv, &leases, &req(Kind::Discover, MacAddr([2, 0, 0, 0, 0, 3])));
    assert_eq!(d.outcome, Outcome::Ignored(Ignore::PoolExhausted("cluster".parse().expect("name"))));
}

#[test]
fn a_client_id_in_use_by_another_mac_is_refused() {
    let inv = inventory(true);
    let mut leases = LeaseTable::default();
    let mut first = req(Kind::Discover, STRANGER);
    first.client_id = Some(vec![0xff, 1, 2, 3]);
    let offer = run(&inv, &leases, &first);
    leases.put(offer.lease.clone().expect("lease"));
    let mut clone = req(Kind::Discover, MacAddr([0x52, 0x54, 0, 0, 0x99, 0x07]));
    clone.client_id = Some(vec![0xff, 1, 2, 3]);
    assert_eq!(run(&inv, &leases, &clone).outcome, Outcome::Ignored(Ignore::DuplicateClientId));
    assert_eq!(
        reply(&offer).opts().get(OptionCode::ClientIdentifier),
        Some(&DhcpOption::ClientIdentifier(vec![0xff, 1, 2, 3])),
        "option 61 echoed"
    );
}

#[test]
fn a_node_arriving_on_another_network_is_a_stranger_there() {
    let mut inv = inventory(false);
    let mut other = inv.networks["cluster"].clone();
    other.name = "other".parse().expect("name");
    other.cidr = "10.9.0.0/24".parse().expect("cidr");
    other.static_range = None;
    other.pool = None;
    other.gateway = None;
    other.routes = vec![];
    inv.networks.insert(other.name.clone(), other);
    let network: Name = "other".parse().expect("name");
    let boot = boot();
    let ctx = Context {
        now: now(),
        server_ip: ip("10.9.0.1"),
        network: Some(&network),
        boot: &boot,
        offer_hold: Duration::from_secs(60),
        decline_hold: Duration::from_secs(60),
        max_hops: 4,
        pxe_port: false,
    };
    let d = decide(&inv, &LeaseTable::default(), &req(Kind::Discover, NODE_MAC), &ctx);
    assert_eq!(d.outcome, Outcome::Ignored(Ignore::UnknownClient));
}

#[test]
fn firmware_pxe_gets_next_server_and_the_ipxe_binary() {
    let mut r = req(Kind::Discover, NODE_MAC);
    r.boot =
        BootClient { arch: Some(0), vendor_class: Some(b"PXEClient:Arch:00000:UNDI:002001".to_vec()), is_ipxe: false };
    let d = run(&inventory(false), &LeaseTable::default(), &r);
    let m = reply(&d);
    assert_eq!(m.siaddr(), SERVER);
    assert_eq!(m.fname_str().and_then(Result::ok).map(|f| f.trim_end_matches('\0')), Some("undionly.kpxe"));
    assert_eq!(opt(&d, OptionCode::ClassIdentifier), Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec())));
}

#[test]
fn ipxe_gets_the_boot_script_url_so_there_is_no_chainload_loop() {
    let mut r = req(Kind::Discover, NODE_MAC);
    r.boot =
        BootClient { arch: Some(0), vendor_class: Some(b"PXEClient:Arch:00000:UNDI:002001".to_vec()), is_ipxe: true };
    let d = run(&inventory(false), &LeaseTable::default(), &r);
    assert_eq!(
        opt(&d, OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(b"http://10.1.107.1:8080/boot.ipxe".to_vec()))
    );
}

/// iPXE leaves discovery at the first offer that carries 175.176 (`no-pxedhcp`) instead of
/// waiting for ProxyDHCP offers; nothing else is told so.
#[test]
fn ipxe_is_told_not_to_wait_for_proxydhcp_and_nothing_else_is() {
    let with = |client: BootClient, kind: Kind, boot_on: bool| {
        let mut r = req(kind, NODE_MAC);
        r.boot = client;
        if kind == Kind::Request {
            r.server_id = Some(SERVER);
            r.requested_ip = Some(ip("10.1.107.11"));
        }
        let settings = if boot_on { boot() } else { BootSettings { http_port: None, ..boot() } };
        let d = run_with(&inventory(false), &LeaseTable::default(), &r, &settings);
        let bytes = crate::dhcp::message::encode(reply(&d)).expect("encodes");
        bytes.windows(5).any(|w| w == [175, 3, 176, 1, 1])
    };
    let ipxe =
        BootClient { arch: Some(0), vendor_class: Some(b"PXEClient:Arch:00000:UNDI:002001".to_vec()), is_ipxe: true };
    let firmware = BootClient { is_ipxe: false, ..ipxe.clone() };
    assert!(with(ipxe.clone(), Kind::Discover, true), "the offer to iPXE");
    assert!(with(ipxe.clone(), Kind::Request, true), "and its ack");
    assert!(!with(ipxe, Kind::Discover, false), "iPXE slipway does not boot may have a ProxyDHCP elsewhere");
    assert!(!with(firmware, Kind::Discover, true), "firmware PXE");
    assert!(!with(BootClient::default(), Kind::Discover, true), "an ordinary client");
}

#[test]
fn uefi_http_boot_gets_a_url_and_httpclient_echoed() {
    let mut r = req(Kind::Discover, NODE_MAC);
    r.boot = BootClient {
        arch: Some(16),
        vendor_class: Some(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()),
        is_ipxe: false,
    };
    let d = run(&inventory(false), &LeaseTable::default(), &r);
    assert_eq!(opt(&d, OptionCode::ClassIdentifier), Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec())));
    assert_eq!(
        opt(&d, OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(b"http://10.1.107.1:8080/ipxe/snponly.efi".to_vec()))
    );
}

#[test]
fn the_broadcast_flag_is_echoed() {
    let mut r = req(Kind::Discover, NODE_MAC);
    r.broadcast = true;
    assert!(reply(&run(&inventory(false), &LeaseTable::default(), &r)).flags().broadcast());
}

#[test]
fn node_role_does_not_matter_for_addressing() {
    let mut inv = inventory(false);
    let mut w = crate::inventory::lab::node("w0", "52:54:00:00:00:30", "10.1.107.30", Some("prod"), Some(Role::Worker));
    w.hostname = Some("worker-zero".parse().expect("name"));
    inv.nodes.insert(w.name.clone(), w);
    inv.reindex();
    let d = run(&inv, &LeaseTable::default(), &req(Kind::Discover, MacAddr([0x52, 0x54, 0, 0, 0, 0x30])));
    assert_eq!(d.outcome, Outcome::Offered(ip("10.1.107.30")));
    assert_eq!(opt(&d, OptionCode::Hostname), Some(&DhcpOption::Hostname("worker-zero".into())));
}
