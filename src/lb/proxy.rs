//! Copying one connection both ways with bounded buffers: half-closes pass through, and the
//! connection ends on an error, after `idle` with no traffic either way, or when `drain` fires.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Per direction.
const BUFFER: usize = 16 * 1024;

/// Bytes moved: (client to backend, backend to client).
pub async fn pipe(client: TcpStream, backend: TcpStream, idle: Duration, drain: CancellationToken) -> (u64, u64) {
    let (mut cr, mut cw) = client.into_split();
    let (mut br, mut bw) = backend.into_split();
    let mut up_buf = vec![0u8; BUFFER];
    let mut down_buf = vec![0u8; BUFFER];
    let (mut up, mut down) = (0u64, 0u64);
    let (mut client_open, mut backend_open) = (true, true);
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    while client_open || backend_open {
        tokio::select! {
            read = cr.read(&mut up_buf), if client_open => match read {
                Ok(0) => {
                    client_open = false;
                    let _ = bw.shutdown().await;
                }
                Ok(n) => {
                    if bw.write_all(&up_buf[..n]).await.is_err() {
                        break;
                    }
                    up += n as u64;
                    timer.as_mut().reset(Instant::now() + idle);
                }
                Err(_) => break,
            },
            read = br.read(&mut down_buf), if backend_open => match read {
                Ok(0) => {
                    backend_open = false;
                    let _ = cw.shutdown().await;
                }
                Ok(n) => {
                    if cw.write_all(&down_buf[..n]).await.is_err() {
                        break;
                    }
                    down += n as u64;
                    timer.as_mut().reset(Instant::now() + idle);
                }
                Err(_) => break,
            },
            () = &mut timer => break,
            () = drain.cancelled() => break,
        }
    }
    (up, down)
}
