//! The UDP loop: one task per socket waits for readiness like any tokio socket, then takes every
//! waiting datagram in one `recvmmsg`, answers the common ones from the pre-encoded zones (the
//! fast path) and sends those answers in one `sendmmsg`; everything else takes the full path
//! inline. No task per query: only forwarded queries get a task of their own, at most
//! `MAX_FORWARDS` at a time (beyond that the client gets SERVFAIL at once instead of the daemon
//! queueing without bound).

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tokio::io::Interest;

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
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; MAX_QUERY]; BATCH];
    let mut received: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(BATCH);
    let mut replies: Vec<(Vec<u8>, SockaddrStorage)> = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            ready = socket.readable() => if let Err(e) = ready {
                tracing::debug!(error = %e, "DNS: UDP socket not readable");
                continue;
            },
            _ = shutdown.cancelled() => break,
        }
        received.clear();
        let got = socket.try_io(Interest::READABLE, || {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs.iter_mut().map(|b| [IoSliceMut::new(&mut b[..])]).collect();
            // The headers hold raw pointers (not Send): made per batch, never held across an await.
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
            let msgs = recvmmsg(fd, &mut headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                .map_err(std::io::Error::from)?;
            received.extend(msgs.filter_map(|m| Some((m.bytes, m.address?))));
            Ok(())
        });
        if let Err(e) = got {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                tracing::debug!(error = %e, "DNS: UDP receive failed");
            }
            continue;
        }
        for (i, &(n, addr)) in received.iter().enumerate() {
            let Some(src) = socket_addr(&addr) else { continue };
            let buf = &bufs[i];
            let n = n.min(MAX_QUERY);
            if let Some(reply) = responder.fast(&buf[..n], src) {
                replies.push((reply, addr));
                continue;
            }
            slow(&socket, &responder, &forwarder, &forwards, &buf[..n], src).await;
        }
        send_all(&socket, &mut replies).await;
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
                tokio::spawn(async move {
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
                });
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
        tracing::debug!(error = %e, %to, "DNS: UDP send failed");
    }
}

/// Sends every reply with as few `sendmmsg` calls as the socket allows, waiting for room when
/// its buffer is full (bounded: three waits, then the rest is dropped, as UDP may).
async fn send_all(socket: &UdpSocket, replies: &mut Vec<(Vec<u8>, SockaddrStorage)>) {
    let fd = socket.as_raw_fd();
    let mut start = 0;
    let mut waits = 0;
    while start < replies.len() {
        let batch = &replies[start..];
        let sent = socket.try_io(Interest::WRITABLE, || {
            let slices: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
            let addrs: Vec<Option<SockaddrStorage>> = batch.iter().map(|(_, a)| Some(*a)).collect();
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(batch.len(), None);
            let sent = sendmmsg(fd, &mut headers, &slices, &addrs, [], MsgFlags::MSG_DONTWAIT)
                .map_err(std::io::Error::from)?;
            Ok(sent.count())
        });
        match sent {
            Ok(n) => start += n.max(1),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && waits < 3 => {
                waits += 1;
                let _ = tokio::time::timeout(std::time::Duration::from_millis(10), socket.writable()).await;
            }
            Err(e) => {
                // One bad destination (or a full buffer) must not hold up the rest.
                tracing::debug!(error = %e, "DNS: UDP send failed");
                start += 1;
            }
        }
    }
    replies.clear();
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    let v6 = addr.as_sockaddr_in6()?;
    Some(SocketAddr::V6(SocketAddrV6::new(v6.ip(), v6.port(), v6.flowinfo(), v6.scope_id())))
}
