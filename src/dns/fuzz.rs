//! The request path as one function of bytes, for the fuzzer (`fuzz/`) and the randomised test
//! in CI: the UDP loop's decode, plan and emit, against a fixed lab.

use std::net::SocketAddr;
use std::sync::OnceLock;

use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use tokio::sync::watch;

use super::Settings;
use super::respond::{Metrics, Plan, Responder, Sections, decode, emit, formerr, udp_limit};
use super::zones::{ZoneSet, build};
use crate::inventory::Inventory;

/// The shared lab (`inventory::lab`) with a worker and a node outside any cluster, ingress on its
/// own address, and an extra zone with static records.
pub fn lab() -> (Inventory, Settings) {
    use crate::inventory::Role;
    use crate::inventory::lab::{Lab, node};
    let inventory = Lab::okd()
        .node(node("worker-0", "52:54:00:00:01:11", "10.1.107.21", Some("prod"), Some(Role::Worker)))
        .node(node("builder", "52:54:00:00:02:00", "10.1.107.30", None, None))
        .cluster(|c| c.ingress_address = [192, 0, 2, 11].into())
        .build();
    let record = |name, rtype, value, ttl| match super::records::parse(name, rtype, value, ttl) {
        Ok(record) => record,
        Err(e) => panic!("the lab's record {name} is valid: {e:?}"),
    };
    let settings = Settings {
        nameserver: Some([10, 1, 107, 1].into()),
        zones: vec![super::records::parse_name("static.example").expect("a zone name")],
        records: vec![
            record("registry.lab.example", "A", "10.1.107.5", 60),
            record("www.static.example", "CNAME", "registry.lab.example", 60),
            record("loop.static.example", "CNAME", "loop.static.example", 60),
            record("_etcd-server-ssl._tcp.prod.lab.example", "SRV", "0 10 2380 master-0.prod.lab.example", 300),
            record("static.example", "TXT", "hello", 60),
        ],
        allow_recursion: super::Acl::default_for(inventory.networks.values().map(|n| n.cidr)),
        ..Settings::default()
    };
    (inventory, settings)
}

fn responder() -> &'static Responder {
    static RESPONDER: OnceLock<(watch::Sender<Arc<ZoneSet>>, Responder)> = OnceLock::new();
    &RESPONDER
        .get_or_init(|| {
            let (inventory, settings) = lab();
            let (tx, rx) = watch::channel(Arc::new(build(&inventory, &settings, 2_000_000_000)));
            (tx, Responder::new(rx, settings.allow_recursion, true, Metrics::default(), None))
        })
        .1
}

/// Decodes, decides and encodes one datagram exactly as the UDP loop does (a forwarded query is
/// answered as if the upstream failed); returns the answer's bytes, if any. Panics only on a bug.
pub fn answer_datagram(data: &[u8], recursion_allowed: bool) -> Option<Vec<u8>> {
    // The lab's recursion list is its network, 10.1.107.0/24.
    let src: SocketAddr = if recursion_allowed { ([10, 1, 107, 50], 5353) } else { ([192, 0, 2, 99], 5353) }.into();
    if let Some(reply) = responder().fast(data, src) {
        return Some(reply);
    }
    slow_path(data, src)
}

/// The full path alone (decode, plan, emit), for comparing with the fast path.
pub fn slow_path(data: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    let Some(request) = decode(data, src, hickory_server::net::xfer::Protocol::Udp) else { return formerr(data) };
    let (meta, sections) = match responder().plan(&request, src) {
        Plan::Reply { meta, answer } => (meta, answer),
        Plan::Forward { mut meta, .. } => {
            meta.response_code = ResponseCode::ServFail;
            (meta, None)
        }
    };
    let sections = sections.as_ref().map(Sections::from).unwrap_or_default();
    let bytes = emit(&request, meta, sections, udp_limit(&request));
    assert!(bytes.is_some(), "a decided answer must encode");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::net::SocketAddr;

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
        m.to_vec().expect("encodes")
    }

    /// Found by the fuzzer: an IQUERY carrying eight long questions. Its NOTIMP cannot echo them
    /// in 512 bytes; it goes as a header alone, TC set.
    #[test]
    fn a_refusal_whose_questions_do_not_fit_goes_as_a_header_alone() {
        let mut data = vec![0x0a, 0x0a, 0x0a, 0x01, 0x00, 0x08, 0, 0, 0, 0, 0, 0];
        for _ in 0..8 {
            for _ in 0..3 {
                data.push(63);
                data.extend(std::iter::repeat_n(b'a', 63));
            }
            data.extend([0, 0, 1, 0, 1]);
        }
        let bytes = answer_datagram(&data, false).expect("an answer");
        assert!(bytes.len() <= 512, "{} bytes", bytes.len());
        let reply = Message::from_vec(&bytes).expect("decodes");
        assert_eq!(reply.metadata.id, 0x0a0a);
        assert_eq!(reply.metadata.response_code, hickory_proto::op::ResponseCode::NotImp);
        assert!(reply.metadata.truncation && reply.queries.is_empty());
        // The fuzzer's own input too.
        let found = include_bytes!("../../fuzz/regressions/dns_answer-75378e31.bin");
        assert!(answer_datagram(found, false).is_some() && answer_datagram(found, true).is_some());
    }

    #[test]
    fn a_query_through_the_whole_path_gets_an_answer_that_decodes() {
        let bytes = answer_datagram(&query("api.prod.lab.example.", RecordType::A), false).expect("answered");
        let reply = Message::from_vec(&bytes).expect("decodes");
        assert_eq!(reply.answers.len(), 1);
        assert!(reply.metadata.authoritative);
    }

    /// Every name slipway holds, every common type, both letter cases, with and without EDNS
    /// (DO set or not), AD set or not, recursion allowed or not: where the fast path answers, its answer is the
    /// full path's, field by field.
    #[test]
    fn the_fast_path_answers_exactly_as_the_full_path() {
        let zones = responder().zones.borrow().clone();
        let types = [
            RecordType::A,
            RecordType::AAAA,
            RecordType::PTR,
            RecordType::SRV,
            RecordType::TXT,
            RecordType::SOA,
            RecordType::NS,
            RecordType::CNAME,
            RecordType::MX,
        ];
        let mut fast_answers = 0;
        for zone in zones.zones() {
            for record in zone.records() {
                for qtype in types {
                    for (upper, edns, ad, allowed, dnssec_ok) in [
                        (false, false, false, true, false),
                        (true, true, true, false, false),
                        (false, true, false, false, true),
                    ] {
                        let name = if upper { record.name.to_string().to_uppercase() } else { record.name.to_string() };
                        let mut m = Message::query();
                        m.add_query(Query::query(Name::from_ascii(&name).expect("name"), qtype));
                        m.metadata.recursion_desired = true;
                        m.metadata.authentic_data = ad;
                        if edns {
                            let mut e = hickory_proto::op::Edns::new();
                            e.set_max_payload(4096).set_dnssec_ok(dnssec_ok);
                            m.set_edns(e);
                        }
                        let bytes = m.to_vec().expect("encodes");
                        let src: SocketAddr =
                            if allowed { ([10, 1, 107, 50], 5353) } else { ([192, 0, 2, 99], 5353) }.into();
                        let Some(fast) = responder().fast(&bytes, src) else { continue };
                        fast_answers += 1;
                        let slow = slow_path(&bytes, src).expect("the full path answers too");
                        let (fast, slow) =
                            (Message::from_vec(&fast).expect("fast"), Message::from_vec(&slow).expect("slow"));
                        assert_eq!(fast.metadata, slow.metadata, "{name} {qtype}");
                        assert_eq!(fast.queries, slow.queries, "{name} {qtype}");
                        assert_eq!(fast.answers, slow.answers, "{name} {qtype}");
                        assert_eq!(fast.authorities, slow.authorities, "{name} {qtype}");
                        assert_eq!(fast.additionals, slow.additionals, "{name} {qtype}");
                        assert_eq!(fast.edns, slow.edns, "{name} {qtype}");
                    }
                }
            }
        }
        assert!(fast_answers >= 30, "the fast path answered only {fast_answers} queries");
    }

    #[test]
    fn queries_outside_the_common_shape_take_the_full_path() {
        let src: SocketAddr = ([10, 1, 107, 50], 5353).into();
        let plain = query("master-0.prod.lab.example.", RecordType::A);
        assert!(responder().fast(&plain, src).is_some());
        for other in [
            query("foo.apps.prod.lab.example.", RecordType::A), // wildcard
            query("nope.prod.lab.example.", RecordType::A),     // NXDOMAIN
            query("www.static.example.", RecordType::A),        // CNAME chain
            query("master-0.prod.lab.example.", RecordType::ANY),
            query("prod.lab.example.", RecordType::NS), // glue
        ] {
            assert!(responder().fast(&other, src).is_none());
        }
        let mut trailing = plain.clone();
        trailing.push(0);
        assert!(responder().fast(&trailing, src).is_none(), "trailing bytes");
        let mut response = plain.clone();
        response[2] |= 0x80;
        assert!(responder().fast(&response, src).is_none(), "a response is not a query");
    }

    /// A deterministic mutation run over seed queries (the fuzzer's work, in small, in the suite).
    #[test]
    fn mutated_queries_never_panic() {
        let seeds = [
            query("api.prod.lab.example.", RecordType::A),
            query("a.b.apps.prod.lab.example.", RecordType::ANY),
            query("11.107.1.10.in-addr.arpa.", RecordType::PTR),
            query("www.static.example.", RecordType::A),
            query("loop.static.example.", RecordType::A),
            query("example.org.", RecordType::AAAA),
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..100_000 {
            let mut data = seeds[i % seeds.len()].clone();
            for _ in 0..(next() % 8 + 1) {
                let r = next();
                let at = (r >> 8) as usize % (data.len() + 1);
                match r % 4 {
                    0 if at < data.len() => data[at] = (r >> 32) as u8,
                    1 => data.insert(at, (r >> 40) as u8),
                    2 if at < data.len() => {
                        data.remove(at);
                    }
                    _ => data.truncate(at),
                }
            }
            answer_datagram(&data, i % 2 == 0);
        }
    }
}
