//! One read transfer on its own UDP socket (the transfer's TID), connected to the client: the
//! OACK when options were taken, then windows of DATA blocks (RFC 7440), each answered by an
//! ACK of the last block the client holds in order. A timeout resends the window from the first
//! unacknowledged block, at most `RETRIES` times in a row. Block numbers roll over past 65535, as
//! iPXE, atftp and tftp-hpa expect.

use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::packet::{self, Negotiated, Packet};

/// Consecutive timeouts before the transfer is given up.
pub const RETRIES: u32 = 5;
/// File bytes read per disk read.
const CHUNK: usize = 256 << 10;
/// Most DATA packets per segmentation-offload send (the whole must stay under 64 KiB).
const GSO_SEGMENTS: usize = 32;
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

/// Sends `source` to the socket's peer; returns the bytes sent.
pub async fn send(
    socket: &UdpSocket,
    source: Source,
    n: Negotiated,
    oack: Option<Vec<u8>>,
) -> Result<u64, TransferError> {
    let size = source.len();
    let blksize = n.blksize as u64;
    // The last block is shorter than blksize, possibly empty.
    let blocks = size / blksize + 1;
    let mut reader = Reader { source, buf: Vec::new(), start: 0 };
    let mut inbox = vec![0u8; 1024];
    if let Some(oack) = oack {
        send_oack(socket, &mut inbox, n, &oack).await?;
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
        send_window(socket, &window, segment, &mut gso).await?;
        match next_ack(socket, &mut inbox, n, Some(acked), last).await? {
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
/// possibly shorter): with UDP segmentation offload, a group of packets per system call, which
/// the kernel cuts into datagrams; one datagram per call where the kernel refuses it (`gso`
/// then stays off for the transfer).
async fn send_window(socket: &UdpSocket, window: &[u8], segment: usize, gso: &mut bool) -> std::io::Result<()> {
    let size = u16::try_from(segment).unwrap_or(u16::MAX);
    for group in window.chunks(segment * GSO_SEGMENTS) {
        if *gso && group.len() > segment {
            let sent = loop {
                socket.writable().await?;
                let sent = socket.try_io(Interest::WRITABLE, || {
                    let iov = [IoSlice::new(group)];
                    let gso = [ControlMessage::UdpGsoSegments(&size)];
                    sendmsg::<()>(socket.as_raw_fd(), &iov, &gso, MsgFlags::empty(), None).map_err(std::io::Error::from)
                });
                match sent {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    other => break other,
                }
            };
            match sent {
                Ok(_) => continue,
                // No offload on this path (EIO from a device or route that cannot, EMSGSIZE
                // when a block no longer fits the MTU, EINVAL or ENOPROTOOPT from an older
                // kernel): plain datagrams, which IP may fragment, from here on.
                Err(e) if e.raw_os_error().map(Errno::from_raw).is_some_and(|errno| NO_OFFLOAD.contains(&errno)) => {
                    tracing::debug!(error = %e, "TFTP: no UDP segmentation offload, sending datagram by datagram");
                    *gso = false;
                }
                Err(e) => return Err(e),
            }
        }
        for packet in group.chunks(segment) {
            socket.send(packet).await?;
        }
    }
    Ok(())
}

/// Sends the OACK until the client acknowledges it with ACK 0.
async fn send_oack(socket: &UdpSocket, inbox: &mut [u8], n: Negotiated, oack: &[u8]) -> Result<(), TransferError> {
    for _ in 0..=RETRIES {
        socket.send(oack).await?;
        if next_ack(socket, inbox, n, None, 0).await?.is_some() {
            return Ok(());
        }
    }
    Err(TransferError::Timeout)
}

/// Waits for an ACK that moves past `acked` (`None`: the OACK, answered by ACK 0) up to
/// `last`, mapping its 16-bit number to the absolute block; `None` on timeout. Stale and
/// duplicate ACKs are ignored (resending on them would double every window: the Sorcerer's
/// Apprentice bug).
async fn next_ack(
    socket: &UdpSocket,
    inbox: &mut [u8],
    n: Negotiated,
    acked: Option<u64>,
    last: u64,
) -> Result<Option<u64>, TransferError> {
    let deadline = tokio::time::Instant::now() + n.timeout;
    loop {
        let len = match tokio::time::timeout_at(deadline, socket.recv(inbox)).await {
            Err(_) => return Ok(None),
            Ok(result) => result?,
        };
        match packet::parse(&inbox[..len]) {
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
