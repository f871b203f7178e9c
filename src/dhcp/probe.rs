//! The optional probe before a pool address is offered: one ICMP echo request, and whether the
//! address answers within the wait. Needs CAP_NET_RAW (the systemd unit grants it); a probe
//! that cannot run reports an error and the caller offers anyway.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::time::{Instant, timeout_at};

const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;

/// Whether `ip` answers an ICMP echo within `wait`.
pub async fn answers(ip: Ipv4Addr, wait: Duration) -> std::io::Result<bool> {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    socket.set_nonblocking(true)?;
    // A raw socket reads and writes through the same system calls as a UDP one.
    let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
    let id = std::process::id() as u16 ^ u16::from_be_bytes([ip.octets()[2], ip.octets()[3]]);
    socket.send_to(&echo_request(id, 1), SocketAddr::from((ip, 0))).await?;
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = match timeout_at(deadline, socket.recv_from(&mut buf)).await {
            Err(_) => return Ok(false),
            Ok(received) => received?,
        };
        if from.ip() == ip && is_reply(&buf[..n], id) {
            return Ok(true);
        }
    }
}

/// An echo request with `id`, `seq` and a short payload.
pub fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![ECHO_REQUEST, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"slipway-probe");
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// An IPv4 packet (as a raw socket delivers it) carrying our echo reply.
fn is_reply(packet: &[u8], id: u16) -> bool {
    let Some(&first) = packet.first() else { return false };
    let Some(icmp) = packet.get(usize::from(first & 0x0f) * 4..) else { return false };
    icmp.len() >= 8 && icmp[0] == ECHO_REPLY && icmp[4..6] == id.to_be_bytes()
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_checksums_to_zero() {
        let p = echo_request(0x1234, 1);
        assert_eq!(checksum(&p), 0, "a packet with its checksum in place sums to 0xffff");
        assert_eq!(&p[4..6], &[0x12, 0x34]);
    }

    #[test]
    fn only_an_echo_reply_with_our_id_counts() {
        let mut packet = vec![0x45; 20];
        packet.extend_from_slice(&[ECHO_REPLY, 0, 0, 0, 0x12, 0x34, 0, 1]);
        assert!(is_reply(&packet, 0x1234));
        assert!(!is_reply(&packet, 0x4321));
        packet[20] = ECHO_REQUEST;
        assert!(!is_reply(&packet, 0x1234));
        assert!(!is_reply(&[0x4f], 1), "a header longer than the packet");
    }

    #[tokio::test]
    async fn loopback_answers_a_probe() {
        // Needs CAP_NET_RAW, as the daemon does; the test suite runs as root.
        assert!(answers(Ipv4Addr::LOCALHOST, Duration::from_secs(2)).await.expect("raw ICMP socket"));
    }
}
