//! etcd v3's JSON gateway messages (etcd 3.4's grpc-gateway v1, the same names on 3.5+): proto
//! field names, 64-bit integers as strings, bytes as padded base64, zero values left out (so
//! every field has a default: a failed txn has no `succeeded`, a PUT event no `type`, an
//! expired lease's keepalive no `TTL`). Requests are typed structs: the gateway silently drops
//! a field it does not know, which in a compare would turn a fence into nothing.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes as etcd's JSON carries them: standard base64 with padding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<B64, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text).map(B64).map_err(serde::de::Error::custom)
    }
}

/// A 64-bit integer as etcd's JSON carries it: a string on output (numbers are taken too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Int(pub i64);

impl Serialize for Int {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Int, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Number(i64),
            Unsigned(u64),
        }
        match Either::deserialize(d)? {
            Either::Text(t) => t.parse::<i64>().or_else(|_| t.parse::<u64>().map(|u| u as i64)).map(Int),
            Either::Number(n) => Ok(Int(n)),
            Either::Unsigned(u) => Ok(Int(u as i64)),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Header {
    pub revision: Int,
    pub member_id: Int,
    pub raft_term: Int,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct KeyValue {
    pub key: B64,
    pub value: B64,
    pub create_revision: Int,
    pub mod_revision: Int,
    pub version: Int,
    pub lease: Int,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RangeRequest {
    pub key: B64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_end: Option<B64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<Int>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RangeResponse {
    pub header: Header,
    pub kvs: Vec<KeyValue>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PutRequest {
    pub key: B64,
    pub value: B64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<Int>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct PutResponse {
    pub header: Header,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DeleteRangeRequest {
    pub key: B64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_end: Option<B64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteRangeResponse {
    pub header: Header,
    pub deleted: Int,
}

/// One compare of a txn: `target` names the field the value is in.
#[derive(Clone, Debug, Serialize)]
pub struct Compare {
    pub key: B64,
    pub target: &'static str,
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mod_revision: Option<Int>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_revision: Option<Int>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Int>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<Int>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<B64>,
}

impl Compare {
    /// `key` holds `value`; with `None`, `key` does not exist.
    pub fn holds(key: &[u8], value: Option<&[u8]>) -> Compare {
        match value {
            None => Compare::created_at(key, 0),
            Some(value) => Compare {
                key: B64(key.to_vec()),
                target: "VALUE",
                result: "EQUAL",
                mod_revision: None,
                create_revision: None,
                version: None,
                lease: None,
                value: Some(B64(value.to_vec())),
            },
        }
    }

    /// `key` was created at `revision` (0: `key` does not exist).
    pub fn created_at(key: &[u8], revision: i64) -> Compare {
        Compare {
            key: B64(key.to_vec()),
            target: "CREATE",
            result: "EQUAL",
            mod_revision: None,
            create_revision: Some(Int(revision)),
            version: None,
            lease: None,
            value: None,
        }
    }

    /// `key` was last changed at `revision` (0: `key` does not exist).
    pub fn modified_at(key: &[u8], revision: i64) -> Compare {
        Compare {
            key: B64(key.to_vec()),
            target: "MOD",
            result: "EQUAL",
            mod_revision: Some(Int(revision)),
            create_revision: None,
            version: None,
            lease: None,
            value: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestOp {
    RequestRange(RangeRequest),
    RequestPut(PutRequest),
    RequestDeleteRange(DeleteRangeRequest),
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseOp {
    ResponseRange(RangeResponse),
    ResponsePut(PutResponse),
    ResponseDeleteRange(DeleteRangeResponse),
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct TxnResponse {
    pub header: Header,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LeaseGrantRequest {
    #[serde(rename = "TTL")]
    pub ttl: Int,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaseGrantResponse {
    pub header: Header,
    #[serde(rename = "ID")]
    pub id: Int,
    #[serde(rename = "TTL")]
    pub ttl: Int,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LeaseId {
    #[serde(rename = "ID")]
    pub id: Int,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct LeaseKeepAliveResponse {
    pub header: Header,
    #[serde(rename = "ID")]
    pub id: Int,
    /// 0 (left out): the lease is gone.
    #[serde(rename = "TTL")]
    pub ttl: Int,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct StatusResponse {
    pub header: Header,
    pub version: String,
    /// The member the cluster follows; 0 (left out) without a leader.
    pub leader: Int,
    #[serde(rename = "dbSize")]
    pub db_size: Int,
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct WatchCreate {
    pub key: B64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_end: Option<B64>,
    pub start_revision: Int,
    pub progress_notify: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct WatchRequest {
    pub create_request: WatchCreate,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Event {
    /// "DELETE", or left out for a PUT.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub kv: KeyValue,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct WatchResponse {
    pub header: Header,
    pub created: bool,
    pub canceled: bool,
    pub compact_revision: Int,
    pub cancel_reason: String,
    pub events: Vec<Event>,
}

/// One line of a gateway stream: a result, or the error that ends it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct StreamLine<T> {
    pub result: Option<T>,
    pub error: Option<StreamError>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct StreamError {
    pub grpc_code: i32,
    pub code: i32,
    pub message: String,
}

/// A unary call's error body (`error` is there on 3.4 only).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    pub code: i32,
    pub message: String,
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_shapes_decode_with_zero_values_left_out() {
        // As etcd 3.4.23 answered: a failed txn has no `succeeded`; a PUT event no `type`.
        let failed: TxnResponse = serde_json::from_str(
            r#"{"header":{"cluster_id":"1","member_id":"2","revision":"4","raft_term":"2"},"responses":[{"response_range":{"header":{"revision":"4"},"kvs":[{"key":"L3NsaXB3YXkvYQ==","create_revision":"2","mod_revision":"3","version":"2","value":"aGVsbG8y"}],"count":"1"}}]}"#,
        )
        .expect("txn");
        assert!(!failed.succeeded);
        assert_eq!(failed.header.revision, Int(4));
        let ResponseOp::ResponseRange(range) = &failed.responses[0] else { panic!("a range") };
        assert_eq!(range.kvs[0].key.0, b"/slipway/a");
        assert_eq!(range.kvs[0].mod_revision, Int(3));
        let line: StreamLine<WatchResponse> = serde_json::from_str(
            r#"{"result":{"header":{"revision":"11"},"events":[{"kv":{"key":"L3NsaXB3YXkvdzE=","value":"b25l","mod_revision":"10"}},{"type":"DELETE","kv":{"key":"L3NsaXB3YXkvdzE=","mod_revision":"11"}}]}}"#,
        )
        .expect("watch");
        let events = line.result.expect("result").events;
        assert_eq!((events[0].kind.as_deref(), events[1].kind.as_deref()), (None, Some("DELETE")));
        let gone: StreamLine<LeaseKeepAliveResponse> =
            serde_json::from_str(r#"{"result":{"header":{"revision":"3"},"ID":"999"}}"#).expect("keepalive");
        assert_eq!(gone.result.expect("result").ttl, Int(0), "an expired lease has no TTL");
        // Lease IDs above 2^53 go out as strings, whole.
        let id = LeaseId { id: Int(3_656_819_851_176_284_434) };
        assert_eq!(serde_json::to_string(&id).expect("json"), r#"{"ID":"3656819851176284434"}"#);
        let compare = Compare {
            key: B64(b"k".to_vec()),
            target: "MOD",
            result: "EQUAL",
            mod_revision: Some(Int(3)),
            create_revision: None,
            version: None,
            lease: None,
            value: None,
        };
        assert_eq!(
            serde_json::to_string(&compare).expect("json"),
            r#"{"key":"aw==","target":"MOD","result":"EQUAL","mod_revision":"3"}"#
        );
    }
}
