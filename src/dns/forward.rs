//! Forwarding to the upstream resolvers: UDP from a fresh random port with a random ID, the
//! answer accepted only when its ID and question match; TCP when the answer comes back truncated;
//! the next upstream when one times out, fails or answers SERVFAIL.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::LowerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use super::EDNS_PAYLOAD;

/// How long one upstream gets to answer one query (per transport).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolver is configured")]
    NoUpstream,
    #[error("upstream {upstream}: {reason}")]
    Upstream { upstream: SocketAddr, reason: String },
}

/// The upstream resolvers, tried in order.
#[derive(Clone, Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder { upstreams, timeout: UPSTREAM_TIMEOUT }
    }

    /// No upstream is configured: names outside our zones cannot be resolved.
    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// Resolves one question; returns the upstream's answer (its records and response code).
    #[tracing::instrument(name = "forward", skip_all, fields(name = %query.name(), qtype = %query.query_type()))]
    pub async fn resolve(&self, query: &Query, dnssec_ok: bool) -> Result<Message, ForwardError> {
        let mut last = ForwardError::NoUpstream;
        for &upstream in &self.upstreams {
            let fail = |reason: String| ForwardError::Upstream { upstream, reason };
            match self.ask(upstream, query, dnssec_ok).await.map_err(fail) {
                Ok(reply) if reply.metadata.response_code == ResponseCode::ServFail => {
                    last = ForwardError::Upstream { upstream, reason: "answered SERVFAIL".into() };
                }
                Ok(reply) => return Ok(reply),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn ask(&self, upstream: SocketAddr, query: &Query, dnssec_ok: bool) -> Result<Message, String> {
        let mut request = Message::new(rand_id(), MessageType::Query, OpCode::Query);
        request.metadata.recursion_desired = true;
        request.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD).set_dnssec_ok(dnssec_ok);
        request.set_edns(edns);
        let bytes = request.to_vec().map_err(|e| format!("cannot encode the query: {e}"))?;

        let reply = self.over_udp(upstream, &request, &bytes).await?;
        if !reply.metadata.truncation {
            return Ok(reply);
        }
        self.over_tcp(upstream, &request, &bytes).await
    }

    async fn over_udp(&self, upstream: SocketAddr, request: &Message, bytes: &[u8]) -> Result<Message, String> {
        let local: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let socket = UdpSocket::bind(local).await.map_err(|e| format!("cannot open a UDP socket: {e}"))?;
        socket.connect(upstream).await.map_err(|e| format!("cannot reach: {e}"))?;
        socket.send(bytes).await.map_err(|e| format!("cannot send: {e}"))?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0u8; 65_535];
        loop {
            let n = match timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => return Err(format!("no answer over UDP within {:?}", self.timeout)),
                Ok(Err(e)) => return Err(format!("receive failed: {e}")),
                Ok(Ok(n)) => n,
            };
            // Anything that is not the answer to this question is ignored (spoofing, stale replies).
            if let Ok(reply) = Message::from_vec(&buf[..n])
                && answers(request, &reply)
            {
                return Ok(reply);
            }
        }
    }

    async fn over_tcp(&self, upstream: SocketAddr, request: &Message, bytes: &[u8]) -> Result<Message, String> {
        let deadline = Instant::now() + self.timeout;
        let exchange = async {
            let mut stream = TcpStream::connect(upstream).await.map_err(|e| format!("cannot connect over TCP: {e}"))?;
            let len = u16::try_from(bytes.len()).map_err(|_| "query too long".to_owned())?;
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(bytes);
            stream.write_all(&framed).await.map_err(|e| format!("TCP send failed: {e}"))?;
            let len = stream.read_u16().await.map_err(|e| format!("TCP receive failed: {e}"))?;
            let mut buf = vec![0u8; usize::from(len)];
            stream.read_exact(&mut buf).await.map_err(|e| format!("TCP receive failed: {e}"))?;
            let reply = Message::from_vec(&buf).map_err(|e| format!("malformed answer over TCP: {e}"))?;
            if answers(request, &reply) { Ok(reply) } else { Err("TCP answer does not match the question".into()) }
        };
        timeout_at(deadline, exchange).await.map_err(|_| format!("no answer over TCP within {:?}", self.timeout))?
    }
}

/// The reply answers the request: a response with the same ID and the same question.
fn answers(request: &Message, reply: &Message) -> bool {
    reply.metadata.message_type == MessageType::Response
        && reply.metadata.id == request.metadata.id
        && reply.queries.len() == request.queries.len()
        && reply.queries.iter().zip(&request.queries).all(|(a, b)| {
            a.query_type() == b.query_type()
                && a.query_class() == b.query_class()
                && LowerName::new(a.name()) == LowerName::new(b.name())
        })
}

fn rand_id() -> u16 {
    let mut bytes = [0u8; 2];
    // The OS random source; if it fails, a clock-derived ID still varies per query.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        return (nanos ^ (nanos >> 16)) as u16;
    }
    u16::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Name, RecordType};

    fn question(name: &str) -> Query {
        Query::query(Name::from_ascii(name).expect("name"), RecordType::A)
    }

    #[test]
    fn only_a_response_with_the_same_id_and_question_is_accepted() {
        let mut request = Message::new(7, MessageType::Query, OpCode::Query);
        request.add_query(question("example.org."));
        let mut reply = request.clone().into_response();
        assert!(answers(&request, &reply));
        reply.queries = vec![question("EXAMPLE.org.")];
        assert!(answers(&request, &reply), "0x20 case changes are the same question");
        reply.queries = vec![question("evil.example.")];
        assert!(!answers(&request, &reply));
        let mut other_id = request.clone().into_response();
        other_id.metadata.id = 8;
        assert!(!answers(&request, &other_id));
        assert!(!answers(&request, &request), "a query is not an answer");
    }

    #[test]
    fn query_ids_vary() {
        let ids: std::collections::HashSet<u16> = (0..64).map(|_| rand_id()).collect();
        assert!(ids.len() > 32);
    }
}
