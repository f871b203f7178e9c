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
            // Split by bytes: a character across a 255-byte boundary stays whole on the wire.
            RData::TXT(TXT::from_bytes(value.as_bytes().chunks(255).collect()))
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

/// A record's data in zone-file (presentation) form: TXT as quoted character-strings with `"`,
/// `\\` and bytes outside printable ASCII escaped (RFC 1035 section 5.1); the rest as hickory
/// writes them (names absolute).
pub fn presentation(data: &RData) -> String {
    let RData::TXT(txt) = data else {
        return data.to_string();
    };
    let mut out = String::new();
    for (i, chunk) in txt.txt_data.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push('"');
        for &b in chunk.iter() {
            match b {
                b'"' | b'\\' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                0x20..=0x7e => out.push(char::from(b)),
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out.push('"');
    }
    out
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
    fn txt_data_is_written_as_quoted_strings_and_long_text_splits_by_bytes() {
        let txt = parse("lab.example", "TXT", r#"say "hi" \ ok"#, 60).expect("txt");
        assert_eq!(presentation(&txt.data), r#""say \"hi\" \\ ok""#);
        // 254 ASCII bytes, then a two-byte character across the 255-byte boundary: kept whole.
        let long = format!("{}é", "a".repeat(254));
        let txt = parse("lab.example", "TXT", &long, 60).expect("txt");
        let RData::TXT(t) = &txt.data else { panic!("TXT") };
        let bytes: Vec<u8> = t.txt_data.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(bytes, long.as_bytes());
        assert_eq!(presentation(&txt.data), format!("\"{}\\195\" \"\\169\"", "a".repeat(254)));
        let a = parse("x.lab.example", "A", "10.0.0.1", 60).expect("a");
        assert_eq!(presentation(&a.data), "10.0.0.1");
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
