//! Batched UDP on tokio sockets, shared by the DHCP and DNS servers: every waiting datagram in
//! one `recvmmsg`, every reply of a batch in one `sendmmsg`. Knows nothing about protocols.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Waits until `socket` is readable, then takes up to `bufs.len()` waiting datagrams in one
/// `recvmmsg`, appending (length, source) to `received` (lengths are capped at the buffer size:
/// a longer datagram arrives cut). A batch that does not fill `bufs` drained the socket, and the
/// socket's readiness is cleared with it, which saves the empty `recvmmsg` that would otherwise
/// end every wake-up (a datagram that arrives meanwhile wakes the socket again).
pub async fn recv_batch<const N: usize>(
    socket: &UdpSocket,
    bufs: &mut [[u8; N]],
    received: &mut Vec<(usize, SocketAddr)>,
) -> std::io::Result<()> {
    socket.readable().await?;
    let fd = socket.as_raw_fd();
    let want = bufs.len();
    let got = socket.try_io(Interest::READABLE, || {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs.iter_mut().map(|b| [IoSliceMut::new(&mut b[..])]).collect();
        // The headers hold raw pointers (not Send): made per batch, never held across an await.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(want, None);
        let msgs =
            recvmmsg(fd, &mut headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None).map_err(std::io::Error::from)?;
        let mut taken = 0;
        for m in msgs {
            taken += 1;
            if let Some(from) = m.address.as_ref().and_then(socket_addr) {
                received.push((m.bytes.min(N), from));
            }
        }
        // Counted before any is filtered out: only a short batch means the queue is empty.
        if taken < want {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    match got {
        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => Err(e),
        _ => Ok(()),
    }
}

/// Sends every reply with as few `sendmmsg` calls as the socket allows, waiting for room when
/// its buffer is full (bounded: three waits, then the rest is dropped, as UDP may). Replies to
/// port 0 cannot be delivered and are skipped.
pub async fn send_all<B: AsRef<[u8]>>(socket: &UdpSocket, replies: &[(B, SocketAddr)], what: &str) {
    let fd = socket.as_raw_fd();
    let mut start = 0;
    let mut waits = 0;
    while start < replies.len() {
        let batch = &replies[start..];
        let sent = socket.try_io(Interest::WRITABLE, || {
            let slices: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|(b, _)| [IoSlice::new(b.as_ref())]).collect();
            let addrs: Vec<Option<SockaddrStorage>> =
                batch.iter().map(|(_, a)| (a.port() != 0).then(|| SockaddrStorage::from(*a))).collect();
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(batch.len(), None);
            let sent = sendmmsg(fd, &mut headers, &slices, &addrs, [], MsgFlags::MSG_DONTWAIT)
                .map_err(std::io::Error::from)?;
            Ok(sent.count())
        });
        match sent {
            Ok(n) => start += n.max(1),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && waits < 3 => {
                waits += 1;
                let _ = tokio::time::timeout(Duration::from_millis(10), socket.writable()).await;
            }
            Err(e) => {
                // One bad destination (or a full buffer) must not hold up the rest.
                tracing::debug!(error = %e, to = %batch[0].1, "{what}: UDP send failed");
                start += 1;
            }
        }
    }
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    let v6 = addr.as_sockaddr_in6()?;
    Some(SocketAddr::V6(SocketAddrV6::new(v6.ip(), v6.port(), v6.flowinfo(), v6.scope_id())))
}
