//! Table tests for `answer` against the fixed lab of `dns::fuzz`.

use std::net::Ipv4Addr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, RecordType};

use super::*;
use crate::dns::fuzz::lab;
use crate::dns::zones::{build, next_serial, reverse_zones};
use crate::inventory::{Inventory, Node, Origin};

const ASKER: Recursion = Recursion { allowed: true, desired: true };
const STRANGER: Recursion = Recursion { allowed: false, desired: true };

fn zones() -> ZoneSet {
    let (inv, settings) = lab();
    build(&inv, &settings, 100)
}

fn ask(zones: &ZoneSet, name: &str, qtype: RecordType, recursion: Recursion) -> Answer {
    let name = LowerName::new(&Name::from_ascii(name).expect("name"));
    answer(zones, &Question { name: &name, qtype, qclass: DNSClass::IN }, recursion)
}

fn zone_answer(answer: Answer) -> ZoneAnswer {
    match answer {
        Answer::Zone(z) => z,
        other => panic!("expected an answer from our zones, got {other:?}"),
    }
}

/// The data of every answer record, as zone-file text.
fn data(zones: &ZoneSet, name: &str, qtype: RecordType) -> Vec<String> {
    let z = zone_answer(ask(zones, name, qtype, STRANGER));
    assert_eq!(z.rcode, ResponseCode::NoError, "{name} {qtype}");
    z.answers.iter().map(|r| r.data.to_string()).collect()
}

fn is_negative(answer: Answer, rcode: ResponseCode, zone: &str) {
    let z = zone_answer(answer);
    assert_eq!(z.rcode, rcode);
    assert!(z.answers.is_empty());
    assert_eq!(z.authority.len(), 1, "SOA in authority");
    assert_eq!(z.authority[0].record_type(), RecordType::SOA);
    assert_eq!(z.authority[0].name.to_string(), zone);
    assert!(z.authority[0].ttl <= 30, "negative TTL is the SOA minimum");
}

#[test]
fn api_api_int_and_ingress_names_answer_with_their_load_balancer_addresses() {
    let z = zones();
    assert_eq!(data(&z, "api.prod.lab.example.", RecordType::A), ["192.0.2.10"]);
    assert_eq!(data(&z, "api-int.prod.lab.example.", RecordType::A), ["10.1.107.1"]);
    assert_eq!(data(&z, "API.Prod.LAB.example.", RecordType::A), ["192.0.2.10"], "names are case-insensitive");
}

#[test]
fn any_name_under_apps_matches_the_wildcard_with_the_asked_owner_name() {
    let z = zones();
    for name in
        ["foo.apps.prod.lab.example.", "a.b.apps.prod.lab.example.", "console-openshift-console.apps.prod.lab.example."]
    {
        let answer = zone_answer(ask(&z, name, RecordType::A, STRANGER));
        assert_eq!(answer.answers.len(), 1, "{name}");
        assert_eq!(answer.answers[0].name.to_string(), name, "synthesised with the asked name");
        assert_eq!(answer.answers[0].data.to_string(), "192.0.2.11");
    }
}

#[test]
fn the_wildcard_parent_exists_but_holds_no_address() {
    is_negative(
        ask(&zones(), "apps.prod.lab.example.", RecordType::A, STRANGER),
        ResponseCode::NoError,
        "prod.lab.example.",
    );
}

#[test]
fn nodes_answer_in_their_cluster_zone_or_their_network_domain() {
    let z = zones();
    assert_eq!(data(&z, "master-0.prod.lab.example.", RecordType::A), ["10.1.107.11"]);
    assert_eq!(data(&z, "bootstrap.prod.lab.example.", RecordType::A), ["10.1.107.10"]);
    assert_eq!(data(&z, "builder.lab.example.", RecordType::A), ["10.1.107.30"]);
}

#[test]
fn reverse_lookups_name_nodes_api_and_api_int() {
    let z = zones();
    assert_eq!(data(&z, "11.107.1.10.in-addr.arpa.", RecordType::PTR), ["master-0.prod.lab.example."]);
    assert_eq!(data(&z, "30.107.1.10.in-addr.arpa.", RecordType::PTR), ["builder.lab.example."]);
    assert_eq!(data(&z, "1.107.1.10.in-addr.arpa.", RecordType::PTR), ["api-int.prod.lab.example."]);
    assert_eq!(data(&z, "10.2.0.192.in-addr.arpa.", RecordType::PTR), ["api.prod.lab.example."]);
}

#[test]
fn the_public_api_address_does_not_make_slipway_claim_its_whole_network() {
    let z = zones();
    assert_eq!(ask(&z, "99.2.0.192.in-addr.arpa.", RecordType::PTR, ASKER), Answer::Forward);
    assert_eq!(ask(&z, "99.2.0.192.in-addr.arpa.", RecordType::PTR, STRANGER), Answer::Refused);
}

#[test]
fn an_unknown_address_in_a_provisioning_network_is_nxdomain() {
    is_negative(
        ask(&zones(), "200.107.1.10.in-addr.arpa.", RecordType::PTR, ASKER),
        ResponseCode::NXDomain,
        "107.1.10.in-addr.arpa.",
    );
}

#[test]
fn unknown_names_in_our_zones_are_nxdomain_with_the_soa() {
    is_negative(
        ask(&zones(), "nope.prod.lab.example.", RecordType::A, ASKER),
        ResponseCode::NXDomain,
        "prod.lab.example.",
    );
}

#[test]
fn a_name_without_the_asked_type_is_nodata() {
    is_negative(
        ask(&zones(), "master-0.prod.lab.example.", RecordType::AAAA, ASKER),
        ResponseCode::NoError,
        "prod.lab.example.",
    );
}

#[test]
fn the_apex_has_soa_and_ns_with_glue() {
    let z = zones();
    let soa = data(&z, "prod.lab.example.", RecordType::SOA);
    assert_eq!(soa, ["ns.prod.lab.example. hostmaster.prod.lab.example. 100 3600 600 86400 30"]);
    let ns = zone_answer(ask(&z, "prod.lab.example.", RecordType::NS, STRANGER));
    assert_eq!(ns.answers[0].data.to_string(), "ns.prod.lab.example.");
    assert_eq!(ns.additionals.len(), 1, "glue");
    assert_eq!(ns.additionals[0].data.to_string(), "10.1.107.1");
}

#[test]
fn static_records_answer_and_cnames_are_followed_inside_our_zones() {
    let z = zones();
    assert_eq!(data(&z, "registry.lab.example.", RecordType::A), ["10.1.107.5"]);
    assert_eq!(data(&z, "www.static.example.", RecordType::A), ["registry.lab.example.", "10.1.107.5"]);
    assert_eq!(data(&z, "static.example.", RecordType::TXT), ["hello"]);
    let srv = zone_answer(ask(&z, "_etcd-server-ssl._tcp.prod.lab.example.", RecordType::SRV, STRANGER));
    assert_eq!(srv.answers[0].data.to_string(), "0 10 2380 master-0.prod.lab.example.");
    assert_eq!(srv.answers[0].ttl, 300);
}

#[test]
fn a_cname_loop_ends() {
    let answers = data(&zones(), "loop.static.example.", RecordType::A);
    assert!(!answers.is_empty() && answers.len() <= MAX_CNAME_CHAIN);
}

#[test]
fn any_returns_every_record_at_the_name() {
    let types: Vec<RecordType> = zone_answer(ask(&zones(), "prod.lab.example.", RecordType::ANY, STRANGER))
        .answers
        .iter()
        .map(|r| r.record_type())
        .collect();
    assert_eq!(types, [RecordType::NS, RecordType::SOA]);
}

#[test]
fn other_names_are_forwarded_only_for_allowed_clients_that_asked_for_recursion() {
    let z = zones();
    assert_eq!(ask(&z, "example.org.", RecordType::A, ASKER), Answer::Forward);
    assert_eq!(ask(&z, "example.org.", RecordType::A, STRANGER), Answer::Refused);
    assert_eq!(ask(&z, "example.org.", RecordType::A, Recursion { allowed: true, desired: false }), Answer::Refused);
}

#[test]
fn our_zones_answer_clients_outside_the_recursion_list() {
    assert!(matches!(ask(&zones(), "api.prod.lab.example.", RecordType::A, STRANGER), Answer::Zone(_)));
}

#[test]
fn zone_transfers_and_other_classes_are_refused() {
    let z = zones();
    assert_eq!(ask(&z, "prod.lab.example.", RecordType::AXFR, ASKER), Answer::Refused);
    assert_eq!(ask(&z, "example.org.", RecordType::AXFR, ASKER), Answer::Refused);
    let name = LowerName::new(&Name::from_ascii("api.prod.lab.example.").expect("name"));
    let chaos = Question { name: &name, qtype: RecordType::A, qclass: DNSClass::CH };
    assert_eq!(answer(&z, &chaos, ASKER), Answer::Refused);
}

#[test]
fn a_new_node_answers_after_a_rebuild_and_the_serial_increases() {
    let (mut inv, settings) = lab();
    let before = build(&inv, &settings, next_serial(0, 1_800_000_000));
    is_negative(
        ask(&before, "worker-1.prod.lab.example.", RecordType::A, ASKER),
        ResponseCode::NXDomain,
        "prod.lab.example.",
    );
    add_node(&mut inv, "worker-1", [10, 1, 107, 22].into());
    let after = build(&inv, &settings, next_serial(before.serial, 1_800_000_000));
    assert!(after.serial > before.serial, "same second, still a higher serial");
    assert_eq!(data(&after, "worker-1.prod.lab.example.", RecordType::A), ["10.1.107.22"]);
    assert_eq!(data(&after, "22.107.1.10.in-addr.arpa.", RecordType::PTR), ["worker-1.prod.lab.example."]);
    let soa = after.zone_for(&LowerName::new(&Name::from_ascii("prod.lab.example.").expect("name"))).expect("zone");
    assert!(matches!(&soa.soa().data, RData::SOA(s) if s.serial == after.serial));
}

#[test]
fn a_new_cluster_gets_its_own_zone() {
    let (mut inv, settings) = lab();
    let mut cluster = inv.clusters.values().next().expect("a cluster").clone();
    cluster.name = "dev".parse().expect("name");
    inv.clusters.insert(cluster.name.clone(), cluster);
    let z = build(&inv, &settings, 1);
    assert_eq!(data(&z, "api.dev.lab.example.", RecordType::A), ["192.0.2.10"]);
}

#[test]
fn dhcp_hostnames_and_dns_names_agree() {
    let (inv, settings) = lab();
    let z = build(&inv, &settings, 1);
    for node in inv.nodes.values() {
        let fqdn = inv.fqdn(node).expect("every lab node has a name");
        assert!(fqdn.starts_with(&format!("{}.", node.hostname())), "option 12 is the first label of the A name");
        assert_eq!(data(&z, &format!("{fqdn}."), RecordType::A), [node.ipv4.to_string()]);
    }
}

#[test]
fn reverse_zones_are_octet_aligned_and_bounded() {
    let names = |cidr: &str| -> Vec<String> {
        reverse_zones(cidr.parse().expect("cidr")).iter().map(|n| n.to_string()).collect()
    };
    assert_eq!(names("10.1.107.0/24"), ["107.1.10.in-addr.arpa."]);
    assert_eq!(names("10.1.0.0/16"), ["1.10.in-addr.arpa."]);
    assert_eq!(names("10.1.96.0/20").len(), 16);
    assert_eq!(names("10.1.96.0/20")[0], "96.1.10.in-addr.arpa.");
    assert!(names("10.1.107.64/26").is_empty(), "narrower than /24: single-name zones only");
}

fn add_node(inv: &mut Inventory, name: &str, ip: Ipv4Addr) {
    let mut node: Node = inv.nodes.values().find(|n| n.cluster.is_some()).expect("a cluster node").clone();
    node.name = name.parse().expect("name");
    node.ipv4 = ip;
    node.mac = "52:54:00:00:09:09".parse().expect("mac");
    node.hostname = None;
    node.origin = Origin::Api;
    inv.nodes.insert(node.name.clone(), node);
    inv.reindex();
}
