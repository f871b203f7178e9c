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
use hickory_server::net::xfer::Protocol;

use crate::service::RunError;
use crate::sockets;

/// Forwarded queries in flight, per socket.
const MAX_FORWARDS: usize = 1024;
/// Datagrams taken per `recvmmsg`.
const BATCH: usize = 32;
/// Largest query read (queries are small; anything longer is cut and fails to decode).
const MAX_QUERY: usize = 4096;

/// Serves one socket until `shutdown`; ends early only when the socket itself breaks.
pub async fn serve(
    socket: Arc<UdpSocket>,
    responder: Arc<Responder>,
    forwarder: Arc<Forwarder>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
    let mut bufs = vec![[0u8; MAX_QUERY]; BATCH];
    let mut received: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
    loop {
        received.clear();
        tokio::select! {
            got = crate::udp::recv_batch(&socket, &mut bufs, &mut received) => if let Err(e) = got {
                let e = sockets::received("DNS UDP", socket.local_addr(), e)?;
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            },
            _ = shutdown.cancelled() => return Ok(()),
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
    let Some(request) = decode(data, src, Protocol::Udp) else {
        if let Some(reply) = formerr(data) {
            send(socket, &reply, src).await;
        }
        return;
    };
    let limit = udp_limit(&request);
    match responder.plan(&request, src) {
        Plan::Reply { meta, answer } => {
            let sections = answer.as_ref().map(Sections::from).unwrap_or_default();
            if let Some(reply) = emit(&request, meta, sections, limit) {
                send(socket, &reply, src).await;
            }
        }
        Plan::Forward { mut meta, query, dnssec_ok } => {
            let Ok(permit) = forwards.clone().try_acquire_owned() else {
                meta.response_code = ResponseCode::ServFail;
                responder.metrics.forwarded(false);
                if let Some(reply) = emit(&request, meta, Sections::default(), limit) {
                    send(socket, &reply, src).await;
                }
                return;
            };
            let (socket, responder, forwarder) = (socket.clone(), responder.clone(), forwarder.clone());
            tokio::spawn(
                async move {
                    let _permit = permit;
                    if let Some(bytes) = forwarder.answer(&responder, &request, meta, &query, dnssec_ok, limit).await {
                        send(&socket, &bytes, src).await;
                    }
                }
                .in_current_span(),
            );
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
