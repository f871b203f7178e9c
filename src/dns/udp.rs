//! The UDP loop: one task per socket waits for readiness like any tokio socket, then takes every
//! waiting datagram in one `recvmmsg` (`crate::udp`), answers the common ones from the
//! pre-encoded zones (the fast path) and sends those answers in one `sendmmsg`; everything else
//! takes the full path inline. No task per query: only forwarded queries get a task of their own, at most
//! `MAX_FORWARDS` at a time (beyond that the client gets SERVFAIL at once instead of the daemon
//! queueing without bound).

use std::net::SocketAddr;
use std::sync::Arc;
use tracing::Instrument;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::forward::Forwarder;
use super::respond::{Plan, Responder, Sections, decode, emit, formerr, udp_limit};
use hickory_proto::op::ResponseCode;

/// Forwarded queries in flight, per socket.
const MAX_FORWARDS: usize = 1024;
/// Datagrams taken per `recvmmsg`.
const BATCH: usize = 32;
/// Largest query read (queries are small; anything longer is cut and fails to decode).
const MAX_QUERY: usize = 4096;

/// Serves one socket until `shutdown`.
pub async fn serve(
    socket: Arc<UdpSocket>,
    responder: Arc<Responder>,
    forwarder: Arc<Forwarder>,
    shutdown: CancellationToken,
) {
    let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
    let mut bufs = vec![[0u8; MAX_QUERY]; BATCH];
    let mut received: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
    loop {
        received.clear();
        tokio::select! {
            got = crate::udp::recv_batch(&socket, &mut bufs, &mut received) => if let Err(e) = got {
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            },
            _ = shutdown.cancelled() => break,
        }
        for (i, &(n, src)) in received.iter().enumerate() {
            let buf = &bufs[i][..n];
            if let Some(reply) = responder.fast(buf, src) {
                if src.port() != 0 {
                    replies.push((reply, src));
                }
                continue;
            }
            slow(&socket, &responder, &forwarder, &forwards, buf, src).await;
        }
        crate::udp::send_all(&socket, &replies, "DNS").await;
        replies.clear();
    }
}

/// The full path for one datagram: decode, plan, and answer (or forward on a task of its own).
async fn slow(
    socket: &Arc<UdpSocket>,
    responder: &Arc<Responder>,
    forwarder: &Arc<Forwarder>,
    forwards: &Arc<Semaphore>,
    data: &[u8],
    src: SocketAddr,
) {
    {
        let buf = data;
        let n = data.len();
        let Some(request) = decode(&buf[..n], src) else {
            if let Some(reply) = formerr(&buf[..n]) {
                send(socket, &reply, src).await;
            }
            return;
        };
        match responder.plan(&request, src) {
            Plan::Reply { meta, answer } => {
                let sections = answer.as_ref().map(Sections::from).unwrap_or_default();
                if let Some(reply) = emit(&request, meta, sections, udp_limit(&request)) {
                    send(socket, &reply, src).await;
                }
            }
            Plan::Forward { mut meta, query, dnssec_ok } => {
                let Ok(permit) = forwards.clone().try_acquire_owned() else {
                    meta.response_code = ResponseCode::ServFail;
                    responder.metrics.forwarded(false);
                    if let Some(reply) = emit(&request, meta, Sections::default(), udp_limit(&request)) {
                        send(socket, &reply, src).await;
                    }
                    return;
                };
                let (socket, responder, forwarder) = (socket.clone(), responder.clone(), forwarder.clone());
                tokio::spawn(
                    async move {
                        let _permit = permit;
                        let reply = forwarder.resolve(&query, dnssec_ok).await;
                        let qtype = query.query_type();
                        let bytes = match &reply {
                            Ok(reply) => {
                                meta.response_code = reply.metadata.response_code;
                                let sections = Sections {
                                    answers: &reply.answers,
                                    authority: &reply.authorities,
                                    additionals: &reply.additionals,
                                };
                                emit(&request, meta, sections, udp_limit(&request))
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, name = %query.name(), "forwarding failed");
                                meta.response_code = ResponseCode::ServFail;
                                emit(&request, meta, Sections::default(), udp_limit(&request))
                            }
                        };
                        responder.metrics.forwarded(reply.is_ok());
                        responder.metrics.count(qtype, meta.response_code);
                        if let Some(bytes) = bytes {
                            send(&socket, &bytes, src).await;
                        }
                    }
                    .in_current_span(),
                );
            }
        }
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    // Port 0 cannot be answered; hickory drops those too.
    if to.port() == 0 {
        return;
    }
    if let Err(e) = socket.send_to(bytes, to).await {
        tracing::debug!(error = %e, %to, "UDP send failed");
    }
}
