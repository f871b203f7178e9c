//! Static records from the config (`[[dns.records]]`): text in, a checked record out.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record};

/// The record types a static record may have.
pub const TYPES: &[&str] = &["A", "AAAA", "CNAME", "PTR", "SRV", "TXT"];

/// A name that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum BadName {
    #[error("empty name")]
    Empty,
    #[error("not a DNS name: {0}")]
    Syntax(#[from] hickory_proto::ProtoError),
}

/// A fully qualified, lower-cased DNS name; the error says what is wrong with it.
pub fn parse_name(text: &str) -> Result<Name, BadName> {
    if text.is_empty() {
        return Err(BadName::Empty);
    }
    let mut name = Name::from_ascii(text)?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// Parses one static record. `rtype` is one of [`TYPES`] (any case); `value` is the record's data
/// in zone-file form (`10 5 6443 api.example.` for SRV: priority, weight, port, target).
pub fn parse(owner: &str, rtype: &str, value: &str, ttl: u32) -> Result<Record, RecordError> {
    let name = parse_name(owner).map_err(|e| RecordError::Name(e.to_string()))?;
    let bad = |why: &str| RecordError::Value(format!("not a valid {} value: {why}", rtype.to_uppercase()));
    let data = match rtype.to_ascii_uppercase().as_str() {
        "A" => RData::A(A(value.parse::<Ipv4Addr>().map_err(|_| bad("expected an IPv4 address"))?)),
        "AAAA" => RData::AAAA(AAAA(value.parse::<Ipv6Addr>().map_err(|_| bad("expected an IPv6 address"))?)),
        "CNAME" => RData::CNAME(CNAME(parse_name(value).map_err(|e| bad(&e.to_string()))?)),
        "PTR" => RData::PTR(PTR(parse_name(value).map_err(|e| bad(&e.to_string()))?)),
        "TXT" => {
            if value.len() > 4000 {
                return Err(bad("longer than 4000 bytes"));
            }
            let chunks = value.as_bytes().chunks(255).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            RData::TXT(TXT::new(chunks))
        }
        "SRV" => {
            let parts: Vec<&str> = value.split_whitespace().collect();
            let [priority, weight, port, target] = parts[..] else {
                return Err(bad("expected \"PRIORITY WEIGHT PORT TARGET\""));
            };
            let num = |s: &str| s.parse::<u16>().map_err(|_| bad(&format!("{s:?} is not a number 0-65535")));
            RData::SRV(SRV::new(
                num(priority)?,
                num(weight)?,
                num(port)?,
                parse_name(target).map_err(|e| bad(&e.to_string()))?,
            ))
        }
        _ => return Err(RecordError::Type(format!("unknown record type; expected one of {}", TYPES.join(", ")))),
    };
    Ok(Record::from_rdata(name, ttl, data))
}

/// Which part of a static record is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    Name(String),
    Type(String),
    Value(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_static_type_parses_from_zone_file_text() {
        let srv = parse("_etcd-server-ssl._tcp.prod.lab.example", "srv", "0 10 2380 etcd-0.prod.lab.example", 60);
        let srv = srv.expect("srv");
        assert_eq!(srv.data.to_string(), "0 10 2380 etcd-0.prod.lab.example.");
        assert!(parse("registry.lab.example", "A", "10.1.107.5", 60).is_ok());
        assert!(parse("registry.lab.example", "AAAA", "fd00::5", 60).is_ok());
        assert!(parse("www.lab.example", "CNAME", "registry.lab.example", 60).is_ok());
        assert!(parse("5.107.1.10.in-addr.arpa", "PTR", "registry.lab.example", 60).is_ok());
        assert!(parse("lab.example", "TXT", "v=spf1 -all", 60).is_ok());
    }

    #[test]
    fn bad_static_records_say_which_part_is_wrong() {
        assert!(matches!(parse("", "A", "10.0.0.1", 60), Err(RecordError::Name(_))));
        assert!(matches!(parse("a..b", "A", "10.0.0.1", 60), Err(RecordError::Name(_))));
        assert!(matches!(parse("a.example", "MX", "10 mail", 60), Err(RecordError::Type(_))));
        assert!(matches!(parse("a.example", "A", "10.0.0.300", 60), Err(RecordError::Value(_))));
        assert!(matches!(parse("a.example", "SRV", "1 2 3", 60), Err(RecordError::Value(_))));
        assert!(matches!(parse("a.example", "SRV", "1 2 70000 t.example", 60), Err(RecordError::Value(_))));
    }
}
