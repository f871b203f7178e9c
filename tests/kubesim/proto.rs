//! Reads the Kubernetes protobuf encoding of a CertificateSigningRequest (what `kubectl
//! certificate approve` PUTs: `application/vnd.kubernetes.protobuf`) into the JSON shape the
//! stand-in keeps: the `k8s\0` envelope (`runtime.Unknown`: typeMeta 1, raw 2), then the
//! object (metadata 1: name 1, resourceVersion 6; status 3: conditions 1: type 1, reason 2,
//! message 3, status 6). Field numbers from k8s.io/api certificates/v1 generated.proto.

use serde_json::{Value, json};

/// The fields of one message: (field number, wire value).
fn fields(mut bytes: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut bytes)?),
            1 => Field::Fixed(take(&mut bytes, 8)?),
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                Field::Bytes(take(&mut bytes, len)?)
            }
            5 => Field::Fixed(take(&mut bytes, 4)?),
            _ => return None,
        };
        out.push((key >> 3, field));
    }
    Some(out)
}

enum Field<'a> {
    Varint(#[allow(dead_code)] u64),
    Fixed(#[allow(dead_code)] &'a [u8]),
    Bytes(&'a [u8]),
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(head)
}

fn bytes_of<'a>(fields: &[(u64, Field<'a>)], number: u64) -> impl Iterator<Item = &'a [u8]> {
    fields.iter().filter(move |(n, _)| *n == number).filter_map(|(_, f)| match f {
        Field::Bytes(b) => Some(*b),
        _ => None,
    })
}

fn text(fields: &[(u64, Field<'_>)], number: u64) -> Option<String> {
    bytes_of(fields, number).last().map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The CSR in a protobuf body, or `None` when it is not one.
pub fn csr(body: &[u8]) -> Option<Value> {
    let envelope = fields(body.strip_prefix(b"k8s\0")?)?;
    let type_meta = fields(bytes_of(&envelope, 1).next()?)?;
    let raw = fields(bytes_of(&envelope, 2).next()?)?;
    let meta = fields(bytes_of(&raw, 1).next().unwrap_or_default())?;
    let status = fields(bytes_of(&raw, 3).next().unwrap_or_default())?;
    let mut conditions = Vec::new();
    for c in bytes_of(&status, 1) {
        let c = fields(c)?;
        conditions
            .push(json!({ "type": text(&c, 1), "reason": text(&c, 2), "message": text(&c, 3), "status": text(&c, 6) }));
    }
    Some(json!({
        "apiVersion": text(&type_meta, 1), "kind": text(&type_meta, 2),
        "metadata": { "name": text(&meta, 1), "resourceVersion": text(&meta, 6) },
        "status": { "conditions": conditions },
    }))
}
