//! Forwarding to the upstream resolvers: UDP from a fresh random port with a random ID, the
//! answer accepted only when its ID and question match; TCP when the answer comes back truncated;
//! the next upstream when one times out, fails or answers SERVFAIL.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::LowerName;
use hickory_server::zone_handler::MessageRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use super::EDNS_PAYLOAD;
use super::respond::{Responder, Sections, emit};

/// How long one upstream gets to answer one query (per transport).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolver is configured")]
    NoUpstream,
    #[error("upstream {upstream}: {reason}")]
    Upstream { upstream: SocketAddr, reason: Failure },
}

/// Why one upstream gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("cannot encode the query: {0}")]
    Encode(hickory_proto::ProtoError),
    #[error("{step} over {transport}: {source}")]
    Io { step: &'static str, transport: &'static str, source: std::io::Error },
    #[error("no answer over {transport} within {after:?}")]
    Timeout { transport: &'static str, after: Duration },
    #[error("malformed answer over TCP: {0}")]
    Malformed(hickory_proto::serialize::binary::DecodeError),
    #[error("the TCP answer does not match the question")]
    Mismatch,
    #[error("answered SERVFAIL")]
    ServFail,
}

fn io(step: &'static str, transport: &'static str) -> impl FnOnce(std::io::Error) -> Failure {
    move |source| Failure::Io { step, transport, source }
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
            let fail = |reason| ForwardError::Upstream { upstream, reason };
            match self.ask(upstream, query, dnssec_ok).await.map_err(fail) {
                Ok(reply) if reply.metadata.response_code == ResponseCode::ServFail => {
                    last = ForwardError::Upstream { upstream, reason: Failure::ServFail };
                }
                Ok(reply) => return Ok(reply),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Resolves a planned forward and encodes the answer to `request` in at most `max` bytes:
    /// the upstream's records and response code, or SERVFAIL when none answers; counted.
    pub async fn answer(
        &self,
        responder: &Responder,
        request: &MessageRequest,
        mut meta: Metadata,
        query: &Query,
        dnssec_ok: bool,
        max: u16,
    ) -> Option<Vec<u8>> {
        let reply = self.resolve(query, dnssec_ok).await;
        let bytes = match &reply {
            Ok(reply) => {
                meta.response_code = reply.metadata.response_code;
                let sections = Sections {
                    answers: &reply.answers,
                    authority: &reply.authorities,
                    additionals: &reply.additionals,
                };
                emit(request, meta, sections, max)
            }
            Err(e) => {
                tracing::debug!(error = %e, name = %query.name(), "forwarding failed");
                meta.response_code = ResponseCode::ServFail;
                emit(request, meta, Sections::default(), max)
            }
        };
        responder.metrics.forwarded(reply.is_ok());
        responder.metrics.count(query.query_type(), meta.response_code);
        bytes
    }

    async fn ask(&self, upstream: SocketAddr, query: &Query, dnssec_ok: bool) -> Result<Message, Failure> {
        let mut request = Message::new(rand_id(), MessageType::Query, OpCode::Query);
        request.metadata.recursion_desired = true;
        request.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD).set_dnssec_ok(dnssec_ok);
        request.set_edns(edns);
        let bytes = request.to_vec().map_err(Failure::Encode)?;

        let reply = self.over_udp(upstream, &request, &bytes).await?;
        if !reply.metadata.truncation {
            return Ok(reply);
        }
        self.over_tcp(upstream, &request, &bytes).await
    }

    async fn over_udp(&self, upstream: SocketAddr, request: &Message, bytes: &[u8]) -> Result<Message, Failure> {
        let local: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let socket = UdpSocket::bind(local).await.map_err(io("cannot open a socket", "UDP"))?;
        socket.connect(upstream).await.map_err(io("cannot reach the upstream", "UDP"))?;
        socket.send(bytes).await.map_err(io("cannot send", "UDP"))?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0u8; 65_535];
        loop {
            let n = match timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => return Err(Failure::Timeout { transport: "UDP", after: self.timeout }),
                Ok(Err(e)) => return Err(io("receive failed", "UDP")(e)),
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

    async fn over_tcp(&self, upstream: SocketAddr, request: &Message, bytes: &[u8]) -> Result<Message, Failure> {
        let deadline = Instant::now() + self.timeout;
        let exchange = async {
            let mut stream = TcpStream::connect(upstream).await.map_err(io("cannot connect", "TCP"))?;
            // A query of one question is far below the 64 KiB a length prefix allows.
            let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(bytes);
            stream.write_all(&framed).await.map_err(io("send failed", "TCP"))?;
            let len = stream.read_u16().await.map_err(io("receive failed", "TCP"))?;
            let mut buf = vec![0u8; usize::from(len)];
            stream.read_exact(&mut buf).await.map_err(io("receive failed", "TCP"))?;
            let reply = Message::from_vec(&buf).map_err(Failure::Malformed)?;
            if answers(request, &reply) { Ok(reply) } else { Err(Failure::Mismatch) }
        };
        timeout_at(deadline, exchange).await.map_err(|_| Failure::Timeout { transport: "TCP", after: self.timeout })?
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
