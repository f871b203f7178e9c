//! The DNS decision: one question against the zone set, as plain data in and out.
//!
//! Our zones answer everyone; names outside them are forwarded only for clients the recursion
//! list allows and only when they asked for recursion; everyone else gets REFUSED.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

use super::zones::{Zone, ZoneSet};

/// How many CNAMEs inside our own zones an answer follows.
const MAX_CNAME_CHAIN: usize = 8;

/// The question, as the adapter decoded it.
#[derive(Clone, Copy, Debug)]
pub struct Question<'a> {
    pub name: &'a LowerName,
    pub qtype: RecordType,
    pub qclass: DNSClass,
}

/// What the client may ask of slipway besides its zones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recursion {
    /// The client's address is on the recursion list.
    pub allowed: bool,
    /// The query had RD set.
    pub desired: bool,
}

/// What to do with a question.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// An authoritative answer from our zones.
    Zone(ZoneAnswer),
    /// Ask the upstream resolvers.
    Forward,
    /// Not ours and not allowed (or not asked) to recurse; or a zone transfer.
    Refused,
}

/// An authoritative answer: NOERROR with records, NODATA (NOERROR, SOA in authority) or
/// NXDOMAIN (SOA in authority).
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneAnswer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Answer {
    /// The response code the client will see (forwarded answers report their own).
    pub fn rcode(&self) -> Option<ResponseCode> {
        match self {
            Answer::Zone(z) => Some(z.rcode),
            Answer::Forward => None,
            Answer::Refused => Some(ResponseCode::Refused),
        }
    }
}

/// Decides one question.
pub fn answer(zones: &ZoneSet, q: &Question<'_>, recursion: Recursion) -> Answer {
    let Some(zone) = zones.zone_for(q.name) else {
        let forwardable = !matches!(q.qtype, RecordType::AXFR | RecordType::IXFR);
        return if recursion.allowed && recursion.desired && forwardable { Answer::Forward } else { Answer::Refused };
    };
    if q.qclass != DNSClass::IN && q.qclass != DNSClass::ANY {
        return Answer::Refused;
    }
    if matches!(q.qtype, RecordType::AXFR | RecordType::IXFR) {
        return Answer::Refused;
    }
    let mut answers = Vec::new();
    let mut name = q.name.clone();
    let mut zone = zone;
    for _ in 0..MAX_CNAME_CHAIN {
        match lookup(zone, &name) {
            Found::Records(set) => {
                let wanted: Vec<Record> = set.iter().filter(|r| matches(r, q.qtype)).cloned().collect();
                let cname = set.iter().find(|r| r.record_type() == RecordType::CNAME);
                match (wanted.is_empty(), cname) {
                    (true, Some(cname)) => {
                        answers.push(owned(cname, &name));
                        let RData::CNAME(target) = &cname.data else { break };
                        let target = LowerName::new(&target.0);
                        match zones.zone_for(&target) {
                            Some(next) => {
                                zone = next;
                                name = target;
                                continue;
                            }
                            None => break,
                        }
                    }
                    (true, None) if answers.is_empty() => return negative(zone, ResponseCode::NoError),
                    _ => answers.extend(wanted.iter().map(|r| owned(r, &name))),
                }
                break;
            }
            Found::Nothing if answers.is_empty() => return negative(zone, ResponseCode::NXDomain),
            Found::Nothing => break,
        }
    }
    let additionals = glue(zones, &answers);
    Answer::Zone(ZoneAnswer { rcode: ResponseCode::NoError, answers, authority: Vec::new(), additionals })
}

enum Found<'z> {
    Records(&'z [Record]),
    Nothing,
}

/// RFC 1034 4.3.2 with RFC 4592 wildcards: an existing name (even an empty non-terminal) is
/// never covered by a wildcard; otherwise `*.<closest encloser>` answers.
fn lookup<'z>(zone: &'z Zone, name: &LowerName) -> Found<'z> {
    if let Some(set) = zone.at(name) {
        return Found::Records(set);
    }
    let mut encloser = name.base_name();
    while zone.apex.zone_of(&encloser) {
        if zone.at(&encloser).is_some() {
            let Some(wildcard) = wildcard_of(&encloser) else { return Found::Nothing };
            return match zone.at(&wildcard) {
                Some(set) => Found::Records(set),
                None => Found::Nothing,
            };
        }
        if encloser.is_root() {
            break;
        }
        encloser = encloser.base_name();
    }
    Found::Nothing
}

/// `*.<encloser>`.
fn wildcard_of(encloser: &LowerName) -> Option<LowerName> {
    let star = Name::from_ascii("*").ok()?;
    Some(LowerName::new(&star.append_domain(&Name::from(encloser)).ok()?))
}

fn matches(record: &Record, qtype: RecordType) -> bool {
    qtype == RecordType::ANY || record.record_type() == qtype
}

/// The record with the question's owner name (wildcard synthesis keeps the asked name).
fn owned(record: &Record, owner: &LowerName) -> Record {
    let mut r = record.clone();
    if LowerName::new(&r.name) != *owner {
        r.name = owner.into();
    }
    r
}

fn negative(zone: &Zone, rcode: ResponseCode) -> Answer {
    let mut soa = zone.soa().clone();
    if let RData::SOA(s) = &soa.data {
        soa.ttl = soa.ttl.min(s.minimum);
    }
    Answer::Zone(ZoneAnswer { rcode, answers: Vec::new(), authority: vec![soa], additionals: Vec::new() })
}

/// Addresses of the name servers in an NS answer, when we hold them.
fn glue(zones: &ZoneSet, answers: &[Record]) -> Vec<Record> {
    let mut out = Vec::new();
    for ns in answers.iter().filter_map(|r| if let RData::NS(ns) = &r.data { Some(ns) } else { None }) {
        let target = LowerName::new(&ns.0);
        if let Some(set) = zones.zone_for(&target).and_then(|z| z.at(&target)) {
            out.extend(set.iter().filter(|r| r.record_type() == RecordType::A).cloned());
        }
    }
    out
}

#[cfg(test)]
mod tests;
