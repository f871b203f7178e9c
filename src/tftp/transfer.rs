//! One read transfer on its own UDP socket (the transfer's TID), connected to the client: the
//! OACK when options were taken, then windows of DATA blocks (RFC 7440), each answered by an
//! ACK of the last block the client holds in order. A timeout resends the window from the first
//! unacknowledged block, at most `RETRIES` times in a row. Block numbers roll over past 65535, as
//! iPXE, atftp and tftp-hpa expect.
//!
//! A lone transfer is a chain of round trips (window out, ACK back), so its rate is set by how
//! soon the server turns an ACK into the next window: it sends datagram by datagram and polls
//! briefly for the ACK before it waits ([`Peer::receive`]). Transfers that share the server
//! send with segmentation offload and wait at once: then the cost per datagram is what limits.

use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, sendmmsg, sendmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::packet::{self, Negotiated, Packet};

/// Consecutive timeouts before the transfer is given up.
pub const RETRIES: u32 = 5;
/// File bytes read per disk read.
const CHUNK: usize = 256 << 10;
/// Most DATA packets per segmentation-offload send (the whole must stay under 64 KiB).
const GSO_SEGMENTS: usize = 32;
/// How long a lone transfer polls for the ACK before it waits (see [`Peer::receive`]).
const SPIN: Duration = Duration::from_micros(100);
/// Windows sent without polling after an ACK took longer than `SPIN`.
const COOLING: u32 = 64;
/// What a send with segmentation offload fails with where the path cannot do it (EMSGSIZE: the
/// path MTU shrank below a block during the transfer).
const NO_OFFLOAD: [Errno; 5] = [Errno::EIO, Errno::EINVAL, Errno::EMSGSIZE, Errno::ENOPROTOOPT, Errno::EOPNOTSUPP];

/// What a transfer sends.
#[derive(Debug)]
pub enum Source {
    Bytes(Vec<u8>),
    File { file: Arc<std::fs::File>, len: u64 },
}

impl Source {
    pub fn len(&self) -> u64 {
        match self {
            Source::Bytes(b) => b.len() as u64,
            Source::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("no answer after {RETRIES} retries")]
    Timeout,
    #[error("the client sent error {code}: {message}")]
    Client { code: u16, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The file's bytes around the window being sent, read `CHUNK` at a time off the runtime.
struct Reader {
    source: Source,
    buf: Vec<u8>,
    start: u64,
}

impl Reader {
    async fn range(&mut self, offset: u64, len: usize) -> std::io::Result<&[u8]> {
        let Source::File { file, len: size } = &self.source else {
            let Source::Bytes(bytes) = &self.source else { unreachable!("two variants") };
            let from = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
            return Ok(&bytes[from..(from + len).min(bytes.len())]);
        };
        let end = offset + len as u64;
        let held = self.start..self.start + self.buf.len() as u64;
        if offset < held.start || end.min(*size) > held.end {
            let want = usize::try_from((*size).saturating_sub(offset)).unwrap_or(CHUNK).min(CHUNK.max(len));
            let (file, mut buf) = (file.clone(), std::mem::take(&mut self.buf));
            buf.resize(want, 0);
            self.buf = tokio::task::spawn_blocking(move || {
                let mut filled = 0;
                while filled < buf.len() {
                    match file.read_at(&mut buf[filled..], offset + filled as u64)? {
                        0 => break,
                        n => filled += n,
                    }
                }
                buf.truncate(filled);
                Ok::<_, std::io::Error>(buf)
            })
            .await
            .map_err(std::io::Error::other)??;
            self.start = offset;
        }
        let from = usize::try_from(offset - self.start).unwrap_or(usize::MAX).min(self.buf.len());
        Ok(&self.buf[from..(from + len).min(self.buf.len())])
    }
}

/// Sends `source` to the socket's peer; returns the bytes sent. `crowded()` says whether other
/// transfers share the server (asked once per window).
pub async fn send(
    socket: &UdpSocket,
    source: Source,
    n: Negotiated,
    oack: Option<Vec<u8>>,
    crowded: impl Fn() -> bool,
) -> Result<u64, TransferError> {
    let size = source.len();
    let blksize = n.blksize as u64;
    // The last block is shorter than blksize, possibly empty.
    let blocks = size / blksize + 1;
    let mut reader = Reader { source, buf: Vec::new(), start: 0 };
    let mut peer = Peer { socket, timeout: n.timeout, inbox: vec![0u8; 1024], cooling: 0 };
    if let Some(oack) = oack {
        peer.send_oack(&oack).await?;
    }
    let segment = 4 + n.blksize;
    let mut window = Vec::with_capacity(segment * usize::from(n.windowsize));
    let mut gso = true;
    let mut acked: u64 = 0;
    let mut retries = 0;
    while acked < blocks {
        let last = (acked + u64::from(n.windowsize)).min(blocks);
        window.clear();
        for block in acked + 1..=last {
            let data = reader.range((block - 1) * blksize, n.blksize).await?;
            let at = window.len();
            window.resize(at + 4, 0);
            packet::data_header(&mut window[at..], (block & 0xffff) as u16);
            window.extend_from_slice(data);
        }
        let alone = !crowded();
        send_window(socket, &window, segment, &mut gso, !alone).await?;
        match peer.next_ack(Some(acked), last, alone).await? {
            Some(block) => {
                acked = block;
                retries = 0;
            }
            None => {
                retries += 1;
                if retries > RETRIES {
                    return Err(TransferError::Timeout);
                }
            }
        }
    }
    Ok(size)
}

/// Sends a window of DATA packets laid end to end in `window` (each `segment` bytes, the last
/// possibly shorter). With `offload`, a group of packets per system call that the kernel cuts
/// into datagrams (UDP segmentation offload: one pass through the stack per group). Without,
/// or where the kernel refuses offload (`gso` then stays off for the transfer), the datagrams
/// go out one by one from one `sendmmsg`, so the client is woken by the first while the rest
/// are still being sent.
async fn send_window(
    socket: &UdpSocket,
    window: &[u8],
    segment: usize,
    gso: &mut bool,
    offload: bool,
) -> std::io::Result<()> {
    let size = u16::try_from(segment).unwrap_or(u16::MAX);
    for group in window.chunks(segment * GSO_SEGMENTS) {
        if offload && *gso && group.len() > segment {
            let iov = [IoSlice::new(group)];
            let cmsg = [ControlMessage::UdpGsoSegments(&size)];
            let sent = writing(socket, || {
                sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map_err(std::io::Error::from)
            })
            .await;
            match sent {
                Ok(_) => continue,
                // No offload on this path (EIO from a device or route that cannot, EMSGSIZE
                // when a block no longer fits the MTU, EINVAL or ENOPROTOOPT from an older
                // kernel): plain datagrams, which IP may fragment, from here on.
                Err(e) if e.raw_os_error().map(Errno::from_raw).is_some_and(|errno| NO_OFFLOAD.contains(&errno)) => {
                    tracing::debug!(error = %e, "no UDP segmentation offload, sending datagram by datagram");
                    *gso = false;
                }
                Err(e) => return Err(e),
            }
        }
        let packets: Vec<[IoSlice<'_>; 1]> = group.chunks(segment).map(|p| [IoSlice::new(p)]).collect();
        let mut start = 0;
        while start < packets.len() {
            let rest = &packets[start..];
            let sent = writing(socket, || {
                let mut headers = MultiHeaders::<()>::preallocate(rest.len(), None);
                let addrs = vec![None; rest.len()];
                let sent = sendmmsg(socket.as_raw_fd(), &mut headers, rest, &addrs, [], MsgFlags::empty())?;
                Ok(sent.count())
            })
            .await?;
            start += sent.max(1);
        }
    }
    Ok(())
}

/// Runs a non-blocking send on `socket` once it is writable, waiting again while it would block.
async fn writing<T>(socket: &UdpSocket, mut send: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        socket.writable().await?;
        match socket.try_io(Interest::WRITABLE, &mut send) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => return other,
        }
    }
}

/// The client's side of the transfer: where ACKs come from.
struct Peer<'a> {
    socket: &'a UdpSocket,
    timeout: Duration,
    inbox: Vec<u8>,
    /// Windows left before polling is tried again (see [`Peer::receive`]).
    cooling: u32,
}

impl Peer<'_> {
    /// Sends the OACK until the client acknowledges it with ACK 0.
    async fn send_oack(&mut self, oack: &[u8]) -> Result<(), TransferError> {
        for _ in 0..=RETRIES {
            self.socket.send(oack).await?;
            if self.next_ack(None, 0, false).await?.is_some() {
                return Ok(());
            }
        }
        Err(TransferError::Timeout)
    }

    /// Receives the next datagram; with `spin`, polls for it for up to `SPIN` first. A task
    /// that waits lets its core sleep, and on a virtual machine waking a sleeping core for the
    /// ACK costs a trip through the host: measured over veth (32 MiB, one client), ~130 MiB/s
    /// waiting against ~290 MiB/s polling (20-150 µs polls all did). When the ACK takes longer
    /// than `SPIN` (a slower client, a longer path), polling stops for `COOLING` windows, so
    /// such a client costs at most one `SPIN` of CPU per `COOLING` windows. Polling holds the
    /// runtime thread, which is why only a lone transfer does it.
    async fn receive(&mut self, spin: bool) -> std::io::Result<usize> {
        if spin && self.cooling == 0 {
            let start = Instant::now();
            // Straight to the socket: tokio's `try_recv` answers from the readiness the reactor
            // last saw, which does not change while this thread polls.
            while start.elapsed() < SPIN {
                match nix::sys::socket::recv(self.socket.as_raw_fd(), &mut self.inbox, MsgFlags::MSG_DONTWAIT) {
                    Err(Errno::EAGAIN | Errno::EINTR) => std::hint::spin_loop(),
                    other => return other.map_err(std::io::Error::from),
                }
            }
            self.cooling = COOLING;
        }
        self.cooling = self.cooling.saturating_sub(1);
        self.socket.recv(&mut self.inbox).await
    }

    /// Waits for an ACK that moves past `acked` (`None`: the OACK, answered by ACK 0) up to
    /// `last`, mapping its 16-bit number to the absolute block; `None` on timeout. Stale and
    /// duplicate ACKs are ignored (resending on them would double every window: the Sorcerer's
    /// Apprentice bug).
    async fn next_ack(&mut self, acked: Option<u64>, last: u64, spin: bool) -> Result<Option<u64>, TransferError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut spin = spin;
        loop {
            let received = tokio::time::timeout_at(deadline, self.receive(std::mem::take(&mut spin))).await;
            let len = match received {
                Err(_) => return Ok(None),
                Ok(result) => result?,
            };
            match packet::parse(&self.inbox[..len]) {
                Ok(Packet::Ack(wire)) => {
                    let found = match acked {
                        None => (wire == 0).then_some(0),
                        Some(acked) => (acked + 1..=last).rev().find(|b| (b & 0xffff) as u16 == wire),
                    };
                    if found.is_some() {
                        return Ok(found);
                    }
                }
                Ok(Packet::Error { code, message }) => {
                    return Err(TransferError::Client { code, message: String::from_utf8_lossy(message).into_owned() });
                }
                _ => {}
            }
        }
    }
}
