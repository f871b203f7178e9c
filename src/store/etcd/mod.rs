//! etcd v3 through its JSON gateway (`POST /v3/...` on the client port, HTTP/1.1, mutual TLS):
//! the shared store of an HA pair or trio. Over reqwest, which slipway has anyway: no gRPC
//! stack and no `protoc` to build (the etcd-client crate needs both; the verdict is in the
//! README's development notes). Measured against Debian 12's etcd 3.4.23; 3.5+ serve the same
//! paths and names.
//!
//! Owns the protocol only: keys, values, revisions, leases, watches. What is stored under which
//! key, leadership and fencing are the backend's. Each call goes to the endpoint that answered
//! last and on to the next when one cannot be reached or has no leader; streams (watch,
//! keepalive) ask for a leader (`Grpc-Metadata-Hasleader`), so a member cut off from the
//! others ends them instead of going quietly stale.

pub mod leader;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use wire::{B64, Int, KeyValue, StreamLine};

/// Where etcd is and how to prove who slipway is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Client URLs of the members, `https://10.0.0.5:2379`.
    pub endpoints: Vec<String>,
    /// The CA that signed the members' certificates (only it is trusted).
    pub ca: PathBuf,
    /// slipway's client certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How long one unary call may take on one member.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd client setup: {0}")]
    Setup(String),
    #[error("no etcd member answered ({tried}): {last}")]
    Unreachable { tried: String, last: String },
    /// etcd answered with an error (`code` is gRPC's: 5 not found, 9 failed precondition, 14
    /// unavailable...).
    #[error("etcd: {message} (code {code})")]
    Server { code: i32, message: String },
    /// The revision asked for was compacted away: read everything again.
    #[error("etcd: revision {0} was compacted")]
    Compacted(i64),
    #[error("etcd: unexpected answer: {0}")]
    Decode(String),
}

impl EtcdError {
    /// Whether another member may answer where this one did not.
    fn try_next(&self) -> bool {
        matches!(self, EtcdError::Unreachable { .. } | EtcdError::Server { code: 14 | 4, .. })
    }
}

/// gRPC's code for "unavailable" (no leader, no quorum, member stopping).
const UNAVAILABLE: i32 = 14;

/// A handle to the cluster; cheap to clone.
#[derive(Clone, Debug)]
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Arc<Vec<String>>,
    /// The endpoint that answered last.
    current: Arc<AtomicUsize>,
    timeout: Duration,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Put(KeyValue),
    /// The key, and the revision that deleted it.
    Delete {
        key: Vec<u8>,
        revision: i64,
    },
}

/// What one message of a watch says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Changes (one transaction's, in order), and the revision they bring the store to.
    Changes { revision: i64, changes: Vec<Change> },
    /// Nothing changed up to `revision` (the watch is alive).
    Progress { revision: i64 },
}

impl Etcd {
    pub fn new(settings: &Settings) -> Result<Etcd, EtcdError> {
        if settings.endpoints.is_empty() {
            return Err(EtcdError::Setup("no endpoints".into()));
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| EtcdError::Setup(format!("cannot read {}: {e}", path.display())))
        };
        let ca = reqwest::Certificate::from_pem_bundle(&read(&settings.ca)?)
            .map_err(|e| EtcdError::Setup(format!("CA {}: {e}", settings.ca.display())))?;
        let mut pem = read(&settings.cert)?;
        pem.extend_from_slice(b"\n");
        pem.extend_from_slice(&read(&settings.key)?);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| EtcdError::Setup(format!("client certificate {}: {e}", settings.cert.display())))?;
        let http = reqwest::Client::builder()
            .tls_certs_only(ca)
            .identity(identity)
            .connect_timeout(settings.timeout)
            .tcp_keepalive(Duration::from_secs(15))
            .build()
            .map_err(|e| EtcdError::Setup(e.to_string()))?;
        let endpoints = settings.endpoints.iter().map(|e| e.trim_end_matches('/').to_owned()).collect();
        Ok(Etcd { http, endpoints: Arc::new(endpoints), current: Arc::default(), timeout: settings.timeout })
    }

    /// A unary call: the member that answered last first, then each other once.
    async fn call<Q: Serialize, A: DeserializeOwned>(&self, path: &str, request: &Q) -> Result<A, EtcdError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..self.endpoints.len() {
            let at = (start + i) % self.endpoints.len();
            match self.call_at(at, path, request).await {
                Err(e) if e.try_next() => failures.push((at, e)),
                done => {
                    self.current.store(at, Ordering::Relaxed);
                    return done;
                }
            }
        }
        // Each member's reason, so a timeout on the one live member is not hidden behind the
        // refusals of the dead ones.
        let each: Vec<String> = failures
            .iter()
            .map(|(at, e)| match e {
                EtcdError::Unreachable { last, .. } => format!("{}: {last}", self.endpoints[*at]),
                e => format!("{}: {e}", self.endpoints[*at]),
            })
            .collect();
        match failures.pop() {
            Some((_, e @ EtcdError::Server { .. })) if failures.is_empty() => Err(e),
            _ => Err(EtcdError::Unreachable { tried: self.endpoints.join(", "), last: each.join("; ") }),
        }
    }

    /// A unary call to member `at` only.
    async fn call_at<Q: Serialize, A: DeserializeOwned>(
        &self,
        at: usize,
        path: &str,
        request: &Q,
    ) -> Result<A, EtcdError> {
        let url = format!("{}{path}", self.endpoints[at]);
        match self.http.post(&url).timeout(self.timeout).json(request).send().await {
            Ok(response) => answer(response).await,
            Err(e) => Err(EtcdError::Unreachable { tried: url, last: crate::causes::chain(&e) }),
        }
    }

    /// Each configured member's own status (or why it did not answer), asked at once.
    pub async fn statuses(&self) -> Vec<(String, Result<wire::StatusResponse, EtcdError>)> {
        let asks = (0..self.endpoints.len()).map(|at| async move {
            let status = self.call_at(at, "/v3/maintenance/status", &serde_json::json!({})).await;
            (self.endpoints[at].clone(), status)
        });
        futures_util::future::join_all(asks).await
    }

    /// The value of `key`, with its revisions.
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, EtcdError> {
        let request = wire::RangeRequest { key: B64(key.to_vec()), ..Default::default() };
        let answer: wire::RangeResponse = self.call("/v3/kv/range", &request).await?;
        Ok(answer.kvs.into_iter().next())
    }

    /// Every key under `prefix`, and the revision they were read at.
    pub async fn prefix(&self, prefix: &[u8]) -> Result<(i64, Vec<KeyValue>), EtcdError> {
        let request =
            wire::RangeRequest { key: B64(prefix.to_vec()), range_end: Some(B64(prefix_end(prefix))), revision: None };
        let answer: wire::RangeResponse = self.call("/v3/kv/range", &request).await?;
        Ok((answer.header.revision.0, answer.kvs))
    }

    /// Sets `key`; bound to `lease` (it goes with the lease) when given. The store's revision after.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: Option<i64>) -> Result<i64, EtcdError> {
        let request = wire::PutRequest { key: B64(key.to_vec()), value: B64(value.to_vec()), lease: lease.map(Int) };
        let answer: wire::PutResponse = self.call("/v3/kv/put", &request).await?;
        Ok(answer.header.revision.0)
    }

    /// Removes `key`; whether it was there.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, EtcdError> {
        let request = wire::DeleteRangeRequest { key: B64(key.to_vec()), range_end: None };
        let answer: wire::DeleteRangeResponse = self.call("/v3/kv/deleterange", &request).await?;
        Ok(answer.deleted.0 > 0)
    }

    /// Runs a transaction: `success` if every compare holds, else `failure`.
    pub async fn txn(&self, request: &wire::TxnRequest) -> Result<wire::TxnResponse, EtcdError> {
        self.call("/v3/kv/txn", request).await
    }

    /// A new lease of `ttl`: its ID and the TTL etcd gave.
    pub async fn grant(&self, ttl: Duration) -> Result<(i64, Duration), EtcdError> {
        let request = wire::LeaseGrantRequest { ttl: Int(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1)) };
        let answer: wire::LeaseGrantResponse = self.call("/v3/lease/grant", &request).await?;
        Ok((answer.id.0, Duration::from_secs(answer.ttl.0.max(0).unsigned_abs())))
    }

    /// Renews lease `id`: its TTL from now, or `None` when it is gone (expired or revoked).
    pub async fn keepalive(&self, id: i64) -> Result<Option<Duration>, EtcdError> {
        let line: wire::LeaseKeepAliveResponse =
            self.first_line("/v3/lease/keepalive", &wire::LeaseId { id: Int(id) }).await?;
        Ok((line.ttl.0 > 0).then(|| Duration::from_secs(line.ttl.0.unsigned_abs())))
    }

    /// Ends lease `id` now (its keys go with it). A lease already gone is not an error.
    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        match self.call::<_, serde_json::Value>("/v3/lease/revoke", &wire::LeaseId { id: Int(id) }).await {
            Ok(_) | Err(EtcdError::Server { code: 5, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Drops the history before `revision` (watches from before it then see `Compacted`).
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let request = serde_json::json!({ "revision": revision.to_string(), "physical": true });
        self.call::<_, serde_json::Value>("/v3/kv/compaction", &request).await.map(drop)
    }

    /// The status of the member that answers (its version, the leader it follows, errors).
    pub async fn status(&self) -> Result<wire::StatusResponse, EtcdError> {
        self.call("/v3/maintenance/status", &serde_json::json!({})).await
    }

    /// The first message of a gateway stream (a keepalive's answer), asking for a leader.
    async fn first_line<Q: Serialize, A: DeserializeOwned + Default>(
        &self,
        path: &str,
        request: &Q,
    ) -> Result<A, EtcdError> {
        let mut stream = self.stream(path, request).await?;
        let line = tokio::time::timeout(self.timeout, stream.line())
            .await
            .map_err(|_| EtcdError::Server { code: 4, message: format!("no answer within {:?}", self.timeout) })??;
        line.ok_or_else(|| EtcdError::Decode(format!("{path}: the stream ended without an answer")))
    }

    /// Opens a gateway stream on the first member that takes it.
    async fn stream<Q: Serialize>(&self, path: &str, request: &Q) -> Result<Lines, EtcdError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for i in 0..self.endpoints.len() {
            let at = (start + i) % self.endpoints.len();
            let url = format!("{}{path}", self.endpoints[at]);
            let sent = self.http.post(&url).header("Grpc-Metadata-Hasleader", "true").json(request).send().await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(Lines { response, buffer: Vec::new() });
                }
                Ok(response) => match answer::<serde_json::Value>(response).await {
                    Err(e) if e.try_next() => last = e.to_string(),
                    Err(e) => return Err(e),
                    Ok(_) => last = "an error status with a body".into(),
                },
                Err(e) => last = crate::causes::chain(&e),
            }
        }
        Err(EtcdError::Unreachable { tried: self.endpoints.join(", "), last })
    }

    /// Watches every key under `prefix` from revision `from` on (inclusive). Returns once a
    /// member confirmed the watch (a member without a leader refuses it). When `from` was
    /// compacted away, etcd confirms the watch first and says so after: the first `next` is
    /// `Compacted`.
    pub async fn watch(&self, prefix: &[u8], from: i64) -> Result<Watch, EtcdError> {
        let request = wire::WatchRequest {
            create_request: wire::WatchCreate {
                key: B64(prefix.to_vec()),
                range_end: Some(B64(prefix_end(prefix))),
                start_revision: Int(from),
                progress_notify: true,
            },
        };
        let mut watch = Watch { lines: self.stream("/v3/watch", &request).await?, pending: None };
        let first = tokio::time::timeout(self.timeout, watch.lines.line::<wire::WatchResponse>()).await;
        match first {
            Err(_) => {
                Err(EtcdError::Server { code: 4, message: format!("no watch confirmed within {:?}", self.timeout) })
            }
            Ok(Err(e)) => Err(e),
            Ok(Ok(None)) => Err(EtcdError::Server { code: UNAVAILABLE, message: "the watch ended at once".into() }),
            Ok(Ok(Some(message))) => {
                if message.compact_revision.0 > 0 {
                    return Err(EtcdError::Compacted(message.compact_revision.0));
                }
                if !message.created {
                    watch.pending = Some(message);
                }
                Ok(watch)
            }
        }
    }
}

/// An open watch. Dropping it closes the connection, which is how etcd's gateway cancels one.
#[derive(Debug)]
pub struct Watch {
    lines: Lines,
    /// A message read while confirming the watch, not yet handed out.
    pending: Option<wire::WatchResponse>,
}

impl Watch {
    /// The next message: `None` when the stream ended (reconnect from the last revision + 1);
    /// `Compacted` when the start was compacted away (read everything again); an error when
    /// the member lost its leader.
    pub async fn next(&mut self) -> Result<Option<Seen>, EtcdError> {
        loop {
            let message = match self.pending.take() {
                Some(message) => message,
                None => match self.lines.line::<wire::WatchResponse>().await? {
                    Some(message) => message,
                    None => return Ok(None),
                },
            };
            if message.compact_revision.0 > 0 {
                return Err(EtcdError::Compacted(message.compact_revision.0));
            }
            if message.canceled {
                return Err(EtcdError::Server { code: UNAVAILABLE, message: message.cancel_reason });
            }
            if message.created {
                continue;
            }
            let revision = message.header.revision.0;
            if message.events.is_empty() {
                return Ok(Some(Seen::Progress { revision }));
            }
            let changes = message
                .events
                .into_iter()
                .map(|e| match e.kind.as_deref() {
                    Some("DELETE") => Change::Delete { key: e.kv.key.0, revision: e.kv.mod_revision.0 },
                    _ => Change::Put(e.kv),
                })
                .collect();
            return Ok(Some(Seen::Changes { revision, changes }));
        }
    }
}

/// A gateway stream's messages: one JSON object per line, whatever the chunks.
#[derive(Debug)]
struct Lines {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Lines {
    /// The next message's result; `None` at the end of the stream; the stream's own error as one.
    async fn line<T: DeserializeOwned + Default>(&mut self) -> Result<Option<T>, EtcdError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let parsed: StreamLine<T> =
                    serde_json::from_slice(&line).map_err(|e| EtcdError::Decode(e.to_string()))?;
                if let Some(e) = parsed.error {
                    let code = if e.grpc_code != 0 { e.grpc_code } else { e.code };
                    return Err(EtcdError::Server { code, message: e.message });
                }
                return Ok(Some(parsed.result.unwrap_or_default()));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(EtcdError::Unreachable {
                        tried: "the open stream".into(),
                        last: crate::causes::chain(&e),
                    });
                }
            }
        }
    }
}

/// A unary answer: the decoded body, or the error etcd named.
async fn answer<A: DeserializeOwned>(response: reqwest::Response) -> Result<A, EtcdError> {
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| EtcdError::Unreachable { tried: String::new(), last: crate::causes::chain(&e) })?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| EtcdError::Decode(e.to_string()));
    }
    let error: wire::ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|_| wire::ErrorBody {
        code: if status.as_u16() == 503 { UNAVAILABLE } else { 2 },
        message: String::from_utf8_lossy(&body).trim().to_owned(),
        error: String::new(),
    });
    let message = if error.message.is_empty() { error.error } else { error.message };
    if error.code == 11 {
        return Err(EtcdError::Compacted(0));
    }
    Err(EtcdError::Server { code: error.code, message })
}

/// The end of etcd's range for every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefixs_range_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"/slipway/"), b"/slipway0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), [0]);
    }
}
