//! The fast path for the common query: one question for a name and type slipway holds records
//! for, over UDP, with at most an EDNS OPT record. The answer section is encoded once, when the
//! zones are built (owner names as a pointer to the question), so answering is a lookup and a
//! few copies — no message decoding, no record cloning. Anything else (wildcards, CNAMEs,
//! negative answers, other classes or opcodes, answers too large for the client) returns `None`
//! and takes the full path; a test checks that both paths give the same answer.

use std::collections::HashMap;

use hickory_proto::rr::{LowerName, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::EDNS_PAYLOAD;

/// Pre-encoded answer sections, keyed by the lower-case wire name followed by the query type.
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    answers: HashMap<Box<[u8]>, Answer>,
}

#[derive(Clone, Debug)]
struct Answer {
    count: u16,
    bytes: Box<[u8]>,
}

/// What `respond` produced: the bytes to send and the query type (for the counters).
#[derive(Debug)]
pub struct Response {
    pub bytes: Vec<u8>,
    pub qtype: RecordType,
}

impl Prepared {
    /// Adds the positive answers at one name: one entry per record type present, unless the
    /// name holds a CNAME (answers then need the chain; the full path does that) or the type
    /// needs additional records (NS glue).
    pub fn add(&mut self, owner: &LowerName, records: &[Record]) {
        if records.iter().any(|r| r.record_type() == RecordType::CNAME) {
            return;
        }
        let wire = wire_name(owner);
        let mut types: Vec<RecordType> = records.iter().map(Record::record_type).collect();
        types.dedup();
        for rtype in types {
            if rtype == RecordType::NS {
                continue;
            }
            let set: Vec<&Record> = records.iter().filter(|r| r.record_type() == rtype).collect();
            if let Some(answer) = encode_set(&set) {
                let mut key = wire.to_vec();
                key.extend_from_slice(&u16::from(rtype).to_be_bytes());
                self.answers.insert(key.into_boxed_slice(), answer);
            }
        }
    }

    /// Answers `query` when it is the common case; `recursion_available` sets RA.
    pub fn respond(&self, query: &[u8], recursion_available: bool) -> Option<Response> {
        let q = parse(query)?;
        let answer = self.answers.get(&q.key[..q.key_len])?;
        let opt_len = if q.edns { OPT.len() } else { 0 };
        let size = q.question_end + answer.bytes.len() + opt_len;
        if size > usize::from(q.limit) {
            return None;
        }
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&query[..2]);
        out.push(0x80 | 0x04 | (query[2] & 0x01)); // QR, AA, the client's RD
        out.push(if recursion_available { 0x80 } else { 0 }); // RA; RCODE NOERROR
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&answer.count.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, u8::from(q.edns)]);
        out.extend_from_slice(&query[12..q.question_end]);
        out.extend_from_slice(&answer.bytes);
        if q.edns {
            out.extend_from_slice(&OPT);
            // The query's DO bit, copied (RFC 3225); no other flag is echoed.
            out[size - 4] = q.dnssec_ok;
        }
        Some(Response { bytes: out, qtype: RecordType::from(q.qtype) })
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

/// Our OPT record: root owner, type 41, payload 1232, version 0, no flags (DO is copied in
/// from the query), no options.
const OPT: [u8; 11] = {
    let p = EDNS_PAYLOAD.to_be_bytes();
    [0, 0, 41, p[0], p[1], 0, 0, 0, 0, 0, 0]
};

/// A question in the common shape.
struct Query {
    /// The lower-case wire name followed by the query type: the lookup key.
    key: [u8; 257],
    key_len: usize,
    qtype: u16,
    question_end: usize,
    edns: bool,
    /// The query's DO bit in place (0x80) or 0.
    dnssec_ok: u8,
    /// The largest answer the client accepts over UDP.
    limit: u16,
}

/// Reads a standard query with one question of class IN, no answer or authority records and at
/// most one additional record, an EDNS version 0 OPT. Anything else is `None`.
fn parse(data: &[u8]) -> Option<Query> {
    let header = data.get(..12)?;
    // QR = 0, OPCODE = 0, TC = 0; Z = 0 and no RCODE bits in a query.
    if header[2] & 0xfa != 0 || header[3] & 0x4f != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let additional = count(10);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || additional > 1 {
        return None;
    }
    let mut name = [0u8; 257];
    let mut at = 12;
    let mut len = 0;
    loop {
        let label = usize::from(*data.get(at)?);
        if label == 0 {
            name[len] = 0;
            len += 1;
            at += 1;
            break;
        }
        // No compression pointers in a question we take; labels at most 63 bytes.
        if label > 63 || len + label + 2 > 255 {
            return None;
        }
        name[len] = label as u8;
        let bytes = data.get(at + 1..at + 1 + label)?;
        for (i, b) in bytes.iter().enumerate() {
            name[len + 1 + i] = b.to_ascii_lowercase();
        }
        len += label + 1;
        at += label + 1;
    }
    let fixed = data.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    if u16::from_be_bytes([fixed[2], fixed[3]]) != 1 || matches!(qtype, 255 | 252 | 251 | 41) {
        return None;
    }
    name[len..len + 2].copy_from_slice(&fixed[..2]);
    let question_end = at + 4;
    let (edns, dnssec_ok, limit) = if additional == 1 {
        let opt = data.get(question_end..)?;
        // Root owner, type OPT, payload, extended RCODE 0, version 0, flags, no options.
        if opt.len() != 11 || opt[0] != 0 || opt[1..3] != [0, 41] || opt[5] != 0 || opt[6] != 0 {
            return None;
        }
        let payload = u16::from_be_bytes([opt[3], opt[4]]);
        (true, opt[7] & 0x80, payload.clamp(512, EDNS_PAYLOAD))
    } else {
        if data.len() != question_end {
            return None;
        }
        (false, 0, 512)
    };
    Some(Query { key: name, key_len: len + 2, qtype, question_end, edns, dnssec_ok, limit })
}

/// `owner` in wire format, lower case.
fn wire_name(owner: &LowerName) -> Box<[u8]> {
    let mut out = Vec::with_capacity(64);
    for label in owner.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out.into_boxed_slice()
}

/// The answer section for one record set, each owner a pointer to the question name (offset 12).
fn encode_set(set: &[&Record]) -> Option<Answer> {
    let mut bytes = Vec::new();
    for record in set {
        let mut rdata = Vec::new();
        let mut encoder = BinEncoder::new(&mut rdata);
        // No name compression inside RDATA: these bytes are spliced into other messages.
        encoder.set_canonical_form(true);
        record.data.emit(&mut encoder).ok()?;
        bytes.extend_from_slice(&[0xc0, 0x0c]);
        bytes.extend_from_slice(&u16::from(record.record_type()).to_be_bytes());
        bytes.extend_from_slice(&u16::from(record.dns_class).to_be_bytes());
        bytes.extend_from_slice(&record.ttl.to_be_bytes());
        bytes.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes());
        bytes.extend_from_slice(&rdata);
    }
    Some(Answer { count: u16::try_from(set.len()).ok()?, bytes: bytes.into_boxed_slice() })
}
