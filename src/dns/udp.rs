//! The UDP loop: one thread per socket takes every waiting datagram in one `recvmmsg`, decides
//! each through the `Responder`, and sends all the answers in one `sendmmsg` — a few system calls
//! per batch instead of two per query, and no task per query. Only forwarded queries go to the
//! async runtime, at most `MAX_FORWARDS` at a time (beyond that the client gets SERVFAIL at
//! once instead of the daemon queueing without bound).

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::forward::Forwarder;
use super::respond::{Plan, Responder, Sections, decode, emit, formerr, udp_limit};

/// Forwarded queries in flight, per socket.
const MAX_FORWARDS: usize = 1024;
/// Datagrams taken per `recvmmsg`.
const BATCH: usize = 32;
/// Largest query read (EDNS queries are small; anything longer is cut and fails to decode).
const MAX_QUERY: usize = 4096;
/// How often the loop looks at the shutdown token while idle, in milliseconds.
const IDLE_POLL_MS: u16 = 200;

/// Serves one non-blocking socket until `shutdown`. Blocking: run it on its own thread.
pub fn serve(
    socket: std::net::UdpSocket,
    responder: Arc<Responder>,
    forwarder: Arc<Forwarder>,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
) {
    let forward_socket = match socket.try_clone().and_then(|s| {
        let _guard = runtime.enter();
        tokio::net::UdpSocket::from_std(s)
    }) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "DNS: cannot share the UDP socket with the forwarder");
            return;
        }
    };
    let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; MAX_QUERY]; BATCH];
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut received: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(BATCH);
    let mut replies: Vec<(Vec<u8>, SockaddrStorage)> = Vec::with_capacity(BATCH);

    while !shutdown.is_cancelled() {
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, IDLE_POLL_MS) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "DNS: cannot wait on the UDP socket");
                return;
            }
        }
        received.clear();
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs.iter_mut().map(|b| [IoSliceMut::new(&mut b[..])]).collect();
            match recvmmsg(fd, &mut recv_headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None) {
                Ok(msgs) => received.extend(msgs.filter_map(|m| Some((m.bytes, m.address?)))),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS: UDP receive failed");
                    continue;
                }
            }
        }

        for (i, &(len, addr)) in received.iter().enumerate() {
            let Some(src) = socket_addr(&addr) else { continue };
            // Port 0 cannot be answered; hickory drops those too.
            if src.port() == 0 {
                continue;
            }
            let data = &bufs[i][..len.min(MAX_QUERY)];
            let Some(request) = decode(data, src) else {
                if let Some(reply) = formerr(data) {
                    replies.push((reply, addr));
                }
                continue;
            };
            match responder.plan(&request, src) {
                Plan::Reply { meta, answer } => {
                    let sections = answer.as_ref().map(Sections::from).unwrap_or_default();
                    if let Some(reply) = emit(&request, meta, sections, udp_limit(&request)) {
                        replies.push((reply, addr));
                    }
                }
                Plan::Forward { mut meta, query, dnssec_ok } => {
                    let Ok(permit) = forwards.clone().try_acquire_owned() else {
                        meta.response_code = ResponseCode::ServFail;
                        responder.metrics.forwarded(false);
                        if let Some(reply) = emit(&request, meta, Sections::default(), udp_limit(&request)) {
                            replies.push((reply, addr));
                        }
                        continue;
                    };
                    let (socket, responder, forwarder) = (forward_socket.clone(), responder.clone(), forwarder.clone());
                    runtime.spawn(async move {
                        let _permit = permit;
                        let reply = forwarder.resolve(&query, dnssec_ok).await;
                        let qtype: &'static str = query.query_type().into();
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
                        if let Some(bytes) = bytes
                            && let Err(e) = socket.send_to(&bytes, src).await
                        {
                            tracing::debug!(error = %e, %src, "DNS: UDP send failed");
                        }
                    });
                }
            }
        }
        send_all(&socket, &mut send_headers, &mut replies);
    }
}

/// Sends every reply with as few `sendmmsg` calls as the socket allows; waits briefly when its
/// buffer is full, and drops what still does not fit (the client retries, as over any UDP).
fn send_all(
    socket: &std::net::UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    replies: &mut Vec<(Vec<u8>, SockaddrStorage)>,
) {
    let mut start = 0;
    let mut stalls = 0;
    while start < replies.len() {
        let batch = &replies[start..];
        let slices: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> = batch.iter().map(|(_, a)| Some(*a)).collect();
        match sendmmsg(socket.as_raw_fd(), headers, &slices, &addrs, [], MsgFlags::MSG_DONTWAIT) {
            Ok(sent) => {
                let n = sent.count();
                start += n.max(1);
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::ENOBUFS) if stalls < 3 => {
                stalls += 1;
                let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(&mut fds, 10u8);
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
