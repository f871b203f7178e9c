//! Which socket errors end a service, decided once for every service: an error that belongs to
//! one peer or is a passing shortage (a refused datagram, out of file descriptors) is logged
//! and the loop goes on; an error that means the socket itself no longer works (it was closed
//! or shut down under the daemon, e.g. by `ss -K`) ends the service, and the daemon with it,
//! so systemd can start it afresh instead of it serving nothing. Neutral.

use std::net::SocketAddr;

/// A socket that no longer works.
#[derive(Debug, thiserror::Error)]
#[error("{what} on {addr} no longer works: {source}")]
pub struct Broken {
    pub what: &'static str,
    /// Its address (unspecified if even that cannot be read).
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

impl Broken {
    pub fn at(what: &'static str, addr: std::io::Result<SocketAddr>, source: std::io::Error) -> Broken {
        let addr = addr.unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        Broken { what, addr, source }
    }
}

/// A receive error: `Err` when it broke the socket, else `Ok` with the error back for the
/// caller to log.
pub fn received(
    what: &'static str,
    addr: std::io::Result<SocketAddr>,
    error: std::io::Error,
) -> Result<std::io::Error, Broken> {
    if broken(&error) { Err(Broken::at(what, addr, error)) } else { Ok(error) }
}

/// Connections the kernel completes and queues for a listener before it is accepted. A burst
/// of clients (a boot storm, many operators, a flood) overflows a short queue, and each
/// connection dropped there waits a second or more for its SYN to be sent again: 4,096 takes
/// what `net.core.somaxconn` allows up to that (std's default is 128).
const BACKLOG: i32 = 4096;

/// A TCP listener on `addr` (address reuse as std sets it) with a long accept queue.
pub fn tcp_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// The next connection on `listener`. A passing error (out of file descriptors and the like) is
/// logged and retried after a pause instead of spinning; a broken listener is `Broken`
/// naming `what` and its address.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    what: &'static str,
) -> Result<(tokio::net::TcpStream, SocketAddr), Broken> {
    loop {
        match listener.accept().await {
            Ok(accepted) => return Ok(accepted),
            Err(e) if broken(&e) => return Err(Broken::at(what, listener.local_addr(), e)),
            Err(e) => {
                tracing::warn!(error = %e, "{what}: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Whether a receive or accept error means the socket itself is broken (the service must
/// stop), rather than one peer's trouble or a passing shortage (log, go on).
///
/// Broken: not a socket any more, not listening (a listener closed under the daemon returns
/// `EINVAL` from every `accept`), a bad descriptor or buffer. Everything else, including
/// `ECONNABORTED` (a UDP socket destroyed by `ss -K` reports it once and then works), `EMFILE`,
/// `ENOBUFS`, `ECONNREFUSED` (an ICMP error for an earlier send) and the network errors
/// `accept(2)` says to retry, passes.
pub fn broken(error: &std::io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(Errno::EBADF | Errno::ENOTSOCK | Errno::EINVAL | Errno::EFAULT | Errno::ENOTCONN)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_listener_is_broken_and_a_shortage_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        nix::sys::socket::shutdown(std::os::fd::AsRawFd::as_raw_fd(&listener), nix::sys::socket::Shutdown::Both)
            .expect("shutdown");
        let err = listener.accept().expect_err("a shut-down listener accepts nothing");
        assert!(broken(&err), "{err:?}");
        for passing in [nix::errno::Errno::EMFILE, nix::errno::Errno::ECONNABORTED, nix::errno::Errno::ECONNREFUSED] {
            assert!(!broken(&std::io::Error::from(passing)), "{passing}");
        }
        assert!(!broken(&std::io::Error::other("no errno")));
    }
}
