//! `get dns`: the zones slipway's DNS server answers from, as a table, JSON, or RFC 1035
//! zone-file text that `named-checkzone` and `kzonecheck` read.

use reqwest::Method;

use super::client::{Client, ClientError};
use super::table::render;
use super::{GetOutput, encode, print_json};
use crate::api::dns::ZoneView;

pub async fn get(client: &Client, zone: Option<&str>, format: GetOutput) -> Result<(), ClientError> {
    let query = zone.map(|z| format!("?zone={}", encode(z))).unwrap_or_default();
    let zones: Vec<ZoneView> = client.json(Method::GET, &format!("/api/v1/dns{query}"), None::<&()>).await?;
    match format {
        GetOutput::Json => print_json(&zones),
        GetOutput::Zone => {
            let files: Vec<String> = zones.iter().map(zone_file).collect();
            crate::out!("{}", files.join("\n"));
        }
        GetOutput::Table => {
            let rows: Vec<Vec<String>> = zones
                .iter()
                .flat_map(|z| {
                    z.records.iter().map(|r| {
                        vec![z.zone.clone(), r.name.clone(), r.rtype.clone(), r.ttl.to_string(), r.value.clone()]
                    })
                })
                .collect();
            crate::out!("{}", render(&["ZONE", "NAME", "TYPE", "TTL", "VALUE"], &rows));
        }
    }
    Ok(())
}

/// One zone as a master file: `$ORIGIN`, the SOA first, then the apex's NS records, then the
/// rest in the server's order; every owner name absolute, class IN, TTLs explicit.
pub fn zone_file(zone: &ZoneView) -> String {
    let mut out = format!("; {} (serial {}), as slipway serves it\n$ORIGIN {}.\n", zone.zone, zone.serial, zone.zone);
    let rank = |t: &str| match t {
        "SOA" => 0,
        "NS" => 1,
        _ => 2,
    };
    let mut records: Vec<_> = zone.records.iter().collect();
    records.sort_by_key(|r| rank(&r.rtype));
    for r in records {
        out.push_str(&format!("{} {} IN {} {}\n", r.name, r.ttl, r.rtype, r.value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::dns::RecordView;

    fn record(name: &str, rtype: &str, value: &str) -> RecordView {
        RecordView { name: name.into(), rtype: rtype.into(), ttl: 300, value: value.into() }
    }

    #[test]
    fn a_zone_file_starts_with_its_origin_and_soa_and_names_every_owner_in_full() {
        let zone = ZoneView {
            zone: "prod.lab.example".into(),
            serial: 7,
            records: vec![
                record("api.prod.lab.example.", "A", "192.0.2.10"),
                record("prod.lab.example.", "NS", "ns.prod.lab.example."),
                record(
                    "prod.lab.example.",
                    "SOA",
                    "ns.prod.lab.example. hostmaster.prod.lab.example. 7 3600 600 86400 60",
                ),
                record("txt.prod.lab.example.", "TXT", "\"a b\""),
            ],
        };
        let text = zone_file(&zone);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "$ORIGIN prod.lab.example.");
        assert!(lines[2].starts_with("prod.lab.example. 300 IN SOA ns.prod.lab.example. "), "{text}");
        assert_eq!(lines[3], "prod.lab.example. 300 IN NS ns.prod.lab.example.");
        assert_eq!(lines[4], "api.prod.lab.example. 300 IN A 192.0.2.10");
        assert_eq!(lines[5], "txt.prod.lab.example. 300 IN TXT \"a b\"");
    }
}
