//! From a decoded request to the bytes of the answer: the glue between `answer` (pure) and the
//! transports. The UDP loop, the TCP handler and the fuzz target all go through `plan` and
//! `emit`, so what is fuzzed is what is served.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use hickory_server::zone_handler::{MessageRequest, MessageResponseBuilder};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::answer::{Answer, Question, Recursion, answer};
use super::{Acl, EDNS_PAYLOAD, ZoneSet};
use crate::store::events::{EventKind, EventLog, Source, Subject};
use crate::throttle::Throttle;

/// One refused-query event per client per this interval (metrics count them all).
const REFUSED_EVENT_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    qtype: &'static str,
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Query types and response codes with a counter handle kept at hand (the rest go through the
/// family's map): counting a common query takes no lock and no hashing.
const COMMON_TYPES: [RecordType; 10] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::PTR,
    RecordType::SRV,
    RecordType::SOA,
    RecordType::NS,
    RecordType::CNAME,
    RecordType::TXT,
    RecordType::ANY,
    RecordType::HTTPS,
];
const COMMON_CODES: [ResponseCode; 6] = [
    ResponseCode::NoError,
    ResponseCode::NXDomain,
    ResponseCode::Refused,
    ResponseCode::ServFail,
    ResponseCode::FormErr,
    ResponseCode::NotImp,
];

/// DNS counters, shared by every transport.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    queries: Family<QueryLabels, Counter>,
    forwarded: Family<ResultLabel, Counter>,
    refused: Counter,
    common: Arc<[[OnceLock<Counter>; COMMON_CODES.len()]; COMMON_TYPES.len()]>,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("dns_queries", "DNS queries answered, by query type and response code", self.queries.clone());
        registry.register("dns_forwarded", "DNS queries forwarded upstream, by result", self.forwarded.clone());
        registry.register(
            "dns_refused",
            "DNS queries refused (outside our zones, recursion not allowed)",
            self.refused.clone(),
        );
    }

    pub fn count(&self, qtype: RecordType, rcode: ResponseCode) {
        let labels = || QueryLabels { qtype: qtype.into(), rcode: rcode_name(rcode) };
        let t = COMMON_TYPES.iter().position(|t| *t == qtype);
        let c = COMMON_CODES.iter().position(|c| *c == rcode);
        match (t, c) {
            (Some(t), Some(c)) => {
                self.common[t][c].get_or_init(|| self.queries.get_or_create(&labels()).clone()).inc();
            }
            _ => {
                self.queries.get_or_create(&labels()).inc();
            }
        }
    }

    pub fn forwarded(&self, ok: bool) {
        self.forwarded.get_or_create(&ResultLabel { result: if ok { "answered" } else { "failed" } }).inc();
    }
}

/// The response code as dig prints it (`NOERROR`, `NXDOMAIN`, ...).
fn rcode_name(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "OTHER",
    }
}

/// What to send back for one request.
#[derive(Debug)]
pub enum Plan {
    /// Answer now: our zones, REFUSED, NOTIMP, FORMERR or BADVERS.
    Reply { meta: Metadata, answer: Option<super::ZoneAnswer> },
    /// Ask the upstream resolvers, then answer with `meta` and their records.
    Forward { meta: Metadata, query: Query, dnssec_ok: bool },
}

/// The request-independent state every transport shares.
#[derive(Debug)]
pub struct Responder {
    pub zones: watch::Receiver<Arc<ZoneSet>>,
    pub recursion: Acl,
    /// An upstream is configured.
    pub can_forward: bool,
    pub metrics: Metrics,
    pub events: Option<EventLog>,
    /// When each client last produced a refused-query event.
    refused_seen: Throttle<IpAddr>,
}

impl Responder {
    pub fn new(
        zones: watch::Receiver<Arc<ZoneSet>>,
        recursion: Acl,
        can_forward: bool,
        metrics: Metrics,
        events: Option<EventLog>,
    ) -> Responder {
        Responder {
            zones,
            recursion,
            can_forward,
            metrics,
            events,
            refused_seen: Throttle::new(REFUSED_EVENT_EVERY, 4096),
        }
    }

    /// The answer to a common query straight from the pre-encoded zones (see `fast`), counted;
    /// `None` sends the query down the full path.
    pub fn fast(&self, data: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        let recursion_available = self.can_forward && self.recursion.allows(src.ip());
        let response = self.zones.borrow().prepared.respond(data, recursion_available)?;
        self.metrics.count(response.qtype, ResponseCode::NoError);
        Some(response.bytes)
    }

    /// Decides what a request gets. Counts it in the metrics (forwarded ones when they finish).
    pub fn plan(&self, request: &MessageRequest, src: SocketAddr) -> Plan {
        let mut meta = Metadata::response_from_request(&request.metadata);
        let refuse = |mut meta: Metadata, rcode: ResponseCode| {
            meta.response_code = rcode;
            Plan::Reply { meta, answer: None }
        };
        // An opcode we do not implement, whatever the message holds (RFC 8906 section 8.1.4).
        if request.metadata.op_code != OpCode::Query {
            return refuse(meta, ResponseCode::NotImp);
        }
        // No question, or more than one: exactly one is allowed (RFC 9619).
        let [query] = request.queries.queries() else {
            return refuse(meta, ResponseCode::FormErr);
        };
        // Only EDNS version 0 exists: any other gets BADVERS with our OPT of version 0 and no
        // answer (RFC 6891 section 6.1.3).
        if request.edns.as_ref().is_some_and(|e| e.version() != 0) {
            self.metrics.count(query.query_type(), ResponseCode::BADVERS);
            return refuse(meta, ResponseCode::BADVERS);
        }
        let recursion =
            Recursion { allowed: self.recursion.allows(src.ip()), desired: request.metadata.recursion_desired };
        meta.recursion_available = recursion.allowed && self.can_forward;
        let question = Question { name: query.name(), qtype: query.query_type(), qclass: query.query_class() };
        let qtype = query.query_type();
        let decided = {
            let zones = self.zones.borrow();
            answer(&zones, &question, recursion)
        };
        match decided {
            Answer::Zone(z) => {
                meta.authoritative = true;
                meta.response_code = z.rcode;
                self.metrics.count(qtype, z.rcode);
                Plan::Reply { meta, answer: Some(z) }
            }
            Answer::Forward if self.can_forward => Plan::Forward {
                meta,
                query: query.original().clone(),
                dnssec_ok: request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
            },
            // Nowhere to forward to, or not allowed: names outside our zones are refused.
            Answer::Forward | Answer::Refused => {
                meta.response_code = ResponseCode::Refused;
                self.metrics.count(qtype, ResponseCode::Refused);
                self.metrics.refused.inc();
                self.note_refused(src.ip(), query.name());
                Plan::Reply { meta, answer: None }
            }
        }
    }

    /// A refused query becomes an event at most once a minute per client, so a scan or a
    /// misconfigured host cannot flood the event log.
    fn note_refused(&self, client: IpAddr, name: &hickory_proto::rr::LowerName) {
        let Some(events) = &self.events else { return };
        if !self.refused_seen.due(client) {
            return;
        }
        events.append(
            Source::Dns,
            Subject::default(),
            EventKind::DnsRefused { client: client.to_string(), name: name.to_string() },
        );
    }
}

/// The records of an answer, by section.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sections<'a> {
    pub answers: &'a [Record],
    pub authority: &'a [Record],
    pub additionals: &'a [Record],
}

impl<'a> From<&'a super::ZoneAnswer> for Sections<'a> {
    fn from(z: &'a super::ZoneAnswer) -> Self {
        Sections { answers: &z.answers, authority: &z.authority, additionals: &z.additionals }
    }
}

/// The largest answer a client may get over UDP: its EDNS buffer (at most ours), else 512.
pub fn udp_limit(request: &MessageRequest) -> u16 {
    request.edns.as_ref().map_or(512, |e| e.max_payload().clamp(512, EDNS_PAYLOAD))
}

/// Encodes an answer of at most `max` bytes. One that does not fit is sent truncated as
/// resolvers expect (RFC 2181 section 9, RFC 6891 section 7): TC set, the header and the
/// question, no records but the OPT when the query had EDNS, and nothing after them, so the
/// client retries over TCP. When even the questions do not fit (a refused message carrying many
/// long ones), the header alone goes, TC set. `None` only if an answer cannot be written at
/// all, which the adapters treat as "no answer".
pub fn emit(request: &MessageRequest, meta: Metadata, sections: Sections<'_>, max: u16) -> Option<Vec<u8>> {
    let whole = encode(request, meta, sections)?;
    if whole.len() <= usize::from(max) {
        return Some(whole);
    }
    let mut meta = meta;
    meta.truncation = true;
    match encode(request, meta, Sections::default()) {
        Some(truncated) if truncated.len() <= usize::from(max) => Some(truncated),
        _ => Some(header_only(&meta)),
    }
}

/// A 12-byte answer: `meta`'s header with no section at all (the response code's low bits).
fn header_only(meta: &Metadata) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    out[..2].copy_from_slice(&meta.id.to_be_bytes());
    out[2] = 0x80
        | (u8::from(meta.op_code) & 0x0f) << 3
        | u8::from(meta.authoritative) << 2
        | u8::from(meta.truncation) << 1
        | u8::from(meta.recursion_desired);
    out[3] = u8::from(meta.recursion_available) << 7 | (meta.response_code.low() & 0x0f);
    out
}

fn encode(request: &MessageRequest, meta: Metadata, sections: Sections<'_>) -> Option<Vec<u8>> {
    let edns = response_edns(request);
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(e) = &edns {
        builder.edns(e);
    }
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    let message = builder.build(meta, sections.answers, sections.authority, [], sections.additionals);
    match message.destructive_emit(&mut encoder) {
        Ok(_) => Some(bytes),
        Err(e) => {
            tracing::debug!(error = %e, "cannot encode a DNS answer");
            None
        }
    }
}

/// The OPT record of an answer: present when the query had one, version 0, advertising 1232
/// bytes, the query's DO bit copied (RFC 3225), no other flag and no option echoed.
pub fn response_edns(request: &MessageRequest) -> Option<Edns> {
    request.edns.as_ref().map(|asked| {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD).set_version(0).set_dnssec_ok(asked.flags().dnssec_ok);
        e
    })
}

/// A query we can answer: decodes, and is not itself a response (no reflection).
pub fn decode(data: &[u8], src: SocketAddr, protocol: Protocol) -> Option<Request> {
    let request = Request::from_bytes(data.to_vec(), src, protocol).ok()?;
    (request.metadata.message_type == MessageType::Query).then_some(request)
}

/// The answer to a datagram that did not decode: FORMERR with its ID, or nothing when it is too
/// short to have a header or is itself a response.
pub fn formerr(data: &[u8]) -> Option<Vec<u8>> {
    let header: [u8; 12] = data.get(..12)?.try_into().ok()?;
    if header[2] & 0x80 != 0 {
        return None;
    }
    let mut out = vec![0u8; 12];
    out[..2].copy_from_slice(&header[..2]);
    out[2] = 0x80 | (header[2] & 0x79); // QR, the opcode and RD
    out[3] = ResponseCode::FormErr.low();
    Some(out)
}
