//! A minimal IPv6 router advertisement on the provisioning interfaces, so iPXE does not wait
//! ~13 s for one before it goes on with DHCPv4. The advertisement says nothing: no prefix,
//! router lifetime 0 (not a default router), M and O flags off (no DHCPv6): hosts configure no
//! IPv6 address or route from it. Sent once at start, then in answer to router solicitations
//! (at most one per `MIN_INTERVAL`) and every `PERIOD`. Needs CAP_NET_RAW.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

use crate::service::{RunError, Service};

const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);
pub const PERIOD: Duration = Duration::from_secs(60);

/// The advertisement: ICMPv6 type 134, hop limit unspecified, no flags, router lifetime 0, no
/// options. The kernel fills in the checksum of a raw ICMPv6 socket.
pub fn advertisement() -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = ROUTER_ADVERTISEMENT;
    p
}

/// Whether an ICMPv6 message (as a raw ICMPv6 socket delivers it, without the IPv6 header) is a
/// router solicitation.
pub fn is_solicitation(message: &[u8]) -> bool {
    message.len() >= 8 && message[0] == ROUTER_SOLICITATION && message[1] == 0
}

#[derive(Debug, thiserror::Error)]
#[error("router advertisements on {interface}: {source}")]
pub struct RaError {
    interface: String,
    source: std::io::Error,
}

/// A bound advertiser for one interface.
#[derive(Debug)]
pub struct Advertiser {
    interface: String,
    ifindex: u32,
    socket: tokio::net::UdpSocket,
}

impl Advertiser {
    pub fn bind(interface: &str) -> Result<Advertiser, RaError> {
        let err = |source| RaError { interface: interface.to_string(), source };
        let ifindex = nix::net::if_::if_nametoindex(interface).map_err(|e| err(std::io::Error::from(e)))?;
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).map_err(err)?;
        socket.bind_device(Some(interface.as_bytes())).map_err(err)?;
        socket.set_multicast_hops_v6(255).map_err(err)?;
        socket.set_unicast_hops_v6(255).map_err(err)?;
        socket.set_multicast_if_v6(ifindex).map_err(err)?;
        socket.set_multicast_loop_v6(false).map_err(err)?;
        socket.join_multicast_v6(&ALL_ROUTERS, ifindex).map_err(err)?;
        socket.set_nonblocking(true).map_err(err)?;
        // A raw socket reads and writes through the same system calls as a UDP one.
        let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket)).map_err(err)?;
        Ok(Advertiser { interface: interface.to_string(), ifindex, socket })
    }

    async fn advertise(&self) {
        let to = SocketAddr::V6(SocketAddrV6::new(ALL_NODES, 0, 0, self.ifindex));
        if let Err(e) = self.socket.send_to(&advertisement(), to).await {
            tracing::debug!(interface = %self.interface, error = %e, "router advertisement not sent");
        }
    }
}

impl Service for Advertiser {
    const NAME: &'static str = "ra";

    fn span(&self) -> tracing::Span {
        tracing::info_span!("ra", interface = %self.interface)
    }

    /// Nothing to reach it on: it answers router solicitations on the interface.
    fn listeners(&self) -> Vec<(String, SocketAddr)> {
        Vec::new()
    }

    async fn run(self, shutdown: CancellationToken) -> Result<(), RunError> {
        self.advertise().await;
        let mut last = tokio::time::Instant::now();
        let mut buf = [0u8; 1500];
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep_until(last + PERIOD) => {}
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, _)) if is_solicitation(&buf[..n]) && last.elapsed() >= MIN_INTERVAL => {}
                    Ok(_) => continue,
                    Err(e) if crate::sockets::broken(&e) => {
                        return Err(RunError::Interface { what: "router advertisements", interface: self.interface, source: e });
                    }
                    Err(e) => {
                        tracing::debug!(interface = %self.interface, error = %e, "ICMPv6 receive failed");
                        tokio::time::sleep(MIN_INTERVAL).await;
                        continue;
                    }
                },
            }
            self.advertise().await;
            last = tokio::time::Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertisement_announces_nothing() {
        let ra = advertisement();
        assert_eq!(ra[0], 134);
        assert_eq!(ra[5], 0, "M and O flags off: no DHCPv6");
        assert_eq!(&ra[6..8], &[0, 0], "router lifetime 0: not a default router");
        assert_eq!(ra.len(), 16, "no prefix or other options");
    }

    #[test]
    fn only_router_solicitations_are_answered() {
        assert!(is_solicitation(&[133, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_solicitation(&[135, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_solicitation(&[133, 0, 0]));
    }
}
