//! Batched UDP on tokio sockets, shared by the DHCP and DNS servers: every waiting datagram in
//! one `recvmmsg`, every reply of a batch in one `sendmmsg`, and (for protocols whose messages
//! may end in zero padding) the replies to one destination in one segmentation-offload send.
//! Knows nothing about protocols.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, sendmsg};
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

/// Most zero bytes a reply is padded with to join a group.
const MAX_PAD: usize = 64;
/// Most datagrams per segmentation-offload send (the kernel's limit on older versions).
const MAX_SEGMENTS: usize = 64;
/// Most bytes per segmentation-offload send (one IP packet before it is cut).
const MAX_GROUP_BYTES: usize = 60 << 10;
/// Largest reply sent with segmentation offload: a segment must fit the link's MTU.
const MAX_SEGMENT: usize = 1200;
static ZEROS: [u8; MAX_PAD] = [0; MAX_PAD];

/// Replies that leave in one segmentation-offload send: all to `to`, each but the last padded
/// with zeros to `size` bytes (the kernel cuts the send every `size` bytes).
#[derive(Debug, PartialEq, Eq)]
struct Group {
    to: SocketAddr,
    size: usize,
    /// Indices into the replies, longest first.
    members: Vec<usize>,
}

/// Groups replies (length, destination) by destination, longest first, each group's replies
/// within [`MAX_PAD`] bytes of its longest and within the kernel's limits.
fn groups(replies: &[(usize, SocketAddr)]) -> Vec<Group> {
    let mut order: Vec<usize> = (0..replies.len()).collect();
    order.sort_unstable_by(|&a, &b| replies[a].1.cmp(&replies[b].1).then(replies[b].0.cmp(&replies[a].0)));
    let mut out: Vec<Group> = Vec::new();
    for i in order {
        let (len, to) = replies[i];
        match out.last_mut() {
            Some(g)
                if g.to == to
                    && g.size - len <= MAX_PAD
                    && g.members.len() < MAX_SEGMENTS
                    && (g.members.len() + 1) * g.size <= MAX_GROUP_BYTES =>
            {
                g.members.push(i)
            }
            _ => out.push(Group { to, size: len, members: vec![i] }),
        }
    }
    out
}

/// Sends every reply, those to one destination together with UDP segmentation offload (one
/// pass through the network stack per group instead of per datagram; replies to one relay or
/// to the broadcast address share a group). A reply may leave padded with up to 64 zero bytes,
/// so only for protocols where trailing zeros are padding (DHCP: after the end option). Where
/// the kernel refuses offload, `offload` turns off and the replies go out one by one through
/// [`send_all`]. Returns how many segmentation-offload sends were made.
pub async fn send_grouped<B: AsRef<[u8]>>(
    socket: &UdpSocket,
    replies: &[(B, SocketAddr)],
    offload: &AtomicBool,
    what: &str,
) -> usize {
    let mut offloaded = 0;
    let mut single: Vec<(&[u8], SocketAddr)> = Vec::new();
    let lens: Vec<(usize, SocketAddr)> = replies.iter().map(|(b, to)| (b.as_ref().len(), *to)).collect();
    for group in groups(&lens) {
        let members = || group.members.iter().map(|&i| (replies[i].0.as_ref(), replies[i].1));
        if group.members.len() < 2
            || group.size > MAX_SEGMENT
            || group.to.port() == 0
            || !offload.load(Ordering::Relaxed)
        {
            single.extend(members());
            continue;
        }
        match send_group(socket, &group, replies).await {
            Ok(()) => offloaded += 1,
            Err(e) => {
                tracing::debug!(error = %e, to = %group.to, "{what}: no UDP segmentation offload; sending datagram by datagram");
                offload.store(false, Ordering::Relaxed);
                single.extend(members());
            }
        }
    }
    if !single.is_empty() {
        send_all(socket, &single, what).await;
    }
    offloaded
}

/// One segmentation-offload send of a group, waiting (bounded) for room in the socket buffer.
async fn send_group<B: AsRef<[u8]>>(
    socket: &UdpSocket,
    group: &Group,
    replies: &[(B, SocketAddr)],
) -> std::io::Result<()> {
    let mut iov = Vec::with_capacity(group.members.len() * 2);
    for (n, &i) in group.members.iter().enumerate() {
        let bytes = replies[i].0.as_ref();
        iov.push(IoSlice::new(bytes));
        if n + 1 < group.members.len() && bytes.len() < group.size {
            iov.push(IoSlice::new(&ZEROS[..group.size - bytes.len()]));
        }
    }
    let size = u16::try_from(group.size).unwrap_or(u16::MAX);
    let to = SockaddrStorage::from(group.to);
    let fd = socket.as_raw_fd();
    let mut waits = 0;
    loop {
        let sent = socket.try_io(Interest::WRITABLE, || {
            let cmsg = [ControlMessage::UdpGsoSegments(&size)];
            sendmsg(fd, &iov, &cmsg, MsgFlags::MSG_DONTWAIT, Some(&to)).map_err(std::io::Error::from)
        });
        match sent {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && waits < 3 => {
                waits += 1;
                let _ = tokio::time::timeout(Duration::from_millis(10), socket.writable()).await;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // The socket stayed full: dropped, as UDP may (the clients retry).
                tracing::debug!(to = %group.to, dropped = group.members.len(), "UDP send buffer full");
                return Ok(());
            }
            other => return other.map(drop),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 1, 0, 2], port))
    }

    #[test]
    fn replies_to_one_destination_group_longest_first_and_split_at_the_limits() {
        // Two destinations; one reply too short to be padded to the others' size.
        let replies = [(300, at(67)), (310, at(67)), (200, at(68)), (305, at(67)), (240, at(67))];
        let got = groups(&replies);
        assert_eq!(
            got,
            vec![
                Group { to: at(67), size: 310, members: vec![1, 3, 0] },
                Group { to: at(67), size: 240, members: vec![4] },
                Group { to: at(68), size: 200, members: vec![2] },
            ]
        );
        // 100 equal replies: groups of at most MAX_SEGMENTS.
        let many = vec![(300, at(67)); 100];
        let sizes: Vec<usize> = groups(&many).iter().map(|g| g.members.len()).collect();
        assert_eq!(sizes, vec![MAX_SEGMENTS, 100 - MAX_SEGMENTS]);
        // Large replies: a group stays under MAX_GROUP_BYTES.
        let large = vec![(1400, at(67)); 100];
        assert!(groups(&large).iter().all(|g| g.members.len() * g.size <= MAX_GROUP_BYTES));
        assert_eq!(groups(&large).iter().map(|g| g.members.len()).sum::<usize>(), 100);
    }

    /// Replies of 200..=209 bytes (each filled with its own number) to `a`, two more to `b`.
    fn replies(a: SocketAddr, b: SocketAddr) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut out: Vec<(Vec<u8>, SocketAddr)> = (0..10u8).map(|i| (vec![i + 1; 200 + usize::from(i)], a)).collect();
        out.push((vec![100; 150], b));
        out.push((vec![101; 150], b));
        out
    }

    /// Receives `n` datagrams from `socket`.
    async fn receive(socket: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..n {
            let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
                .await
                .expect("a datagram within 5 s")
                .expect("recv");
            got.push(buf[..len].to_vec());
        }
        got
    }

    /// Each datagram is one reply followed only by zeros; returns the replies found.
    fn unpadded(datagrams: Vec<Vec<u8>>, sent: &[(Vec<u8>, SocketAddr)]) -> Vec<Vec<u8>> {
        datagrams
            .into_iter()
            .map(|d| {
                let reply =
                    sent.iter().map(|(r, _)| r).find(|r| d.starts_with(r)).expect("datagram starts with a reply");
                assert!(d[reply.len()..].iter().all(|b| *b == 0), "padding is zeros");
                reply.clone()
            })
            .collect()
    }

    /// Sends `replies(a, b)` with offload on or off; returns what `a` and `b` received (sorted,
    /// with padding taken off when offload is on), what was sent (sorted), the offload sends made and
    /// the flag afterwards.
    async fn exchange(on: bool) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, usize, bool) {
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let sender = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let sent = replies(a.local_addr().expect("addr"), b.local_addr().expect("addr"));
        let offload = AtomicBool::new(on);
        let sends = send_grouped(&sender, &sent, &offload, "test").await;
        let mut got = receive(&a, 10).await;
        got.extend(receive(&b, 2).await);
        if on {
            got = unpadded(got, &sent);
        }
        got.sort();
        let mut want: Vec<Vec<u8>> = sent.into_iter().map(|(r, _)| r).collect();
        want.sort();
        (got, want, sends, offload.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn grouped_replies_arrive_as_separate_datagrams_each_padded_with_zeros_only() {
        let (got, want, sends, still_on) = exchange(true).await;
        assert_eq!((sends, still_on), (2, true), "one offload send per destination");
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn without_offload_replies_leave_one_by_one_unpadded() {
        let (got, want, sends, _) = exchange(false).await;
        assert_eq!(sends, 0);
        assert_eq!(got, want, "exact bytes, no padding");
    }
}
