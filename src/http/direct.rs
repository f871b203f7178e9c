//! The boot service's direct path, for the two requests every booting machine makes: the boot
//! script, rendered into one write, and images, sent with sendfile(2) straight from the page
//! cache. It reads request heads on a plain connection and answers what `head::classify` gives
//! it; at the first request it does not answer, the connection goes to hyper (the routed
//! handlers) with the bytes already read. The script comes from the same `BootState::script`
//! as the routed handler; images are confined to the images directory exactly as TFTP files
//! are (name filter, then symlinks resolved and required to stay inside); the same events are
//! recorded.

use std::io::Write as _;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::head::{self, Classified, Span, Target};
use super::routes::BootState;
use crate::listen::{Connection, Front};

/// How long a client gets to send a whole request head, and an idle keep-alive connection lives.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a send may make no progress (a client that stopped reading) before the connection
/// is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes one sendfile call is asked for (it returns earlier when the socket buffer fills).
const SENDFILE_CHUNK: usize = 8 << 20;

/// The direct path of one boot service.
#[derive(Clone, Debug)]
pub struct Direct {
    state: BootState,
    /// The images directory, canonical (`None` when it does not exist: every image is 404).
    images: Option<PathBuf>,
}

impl Direct {
    pub fn new(state: BootState) -> Direct {
        let images = std::fs::canonicalize(&state.settings.images).ok();
        Direct { state, images }
    }
}

impl Front for Direct {
    async fn serve(
        &self,
        mut stream: TcpStream,
        conn: Connection,
        stop: CancellationToken,
    ) -> Option<(TcpStream, Vec<u8>)> {
        let mut buf = Vec::with_capacity(4096);
        loop {
            // The whole head within `HEAD_TIMEOUT` of waiting for it: a client that sends a byte
            // now and then (slowloris) is cut off as one that sends nothing.
            let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
            let request = loop {
                match head::classify(&buf) {
                    Classified::Direct(request) => break request,
                    Classified::Hyper => return Some((stream, buf)),
                    Classified::Partial => {}
                }
                let read = tokio::select! {
                    () = stop.cancelled() => return None,
                    read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => read,
                };
                match read {
                    Ok(Ok(n)) if n > 0 => {}
                    // Closed, failed, or silent for too long: nothing more to answer.
                    _ => return None,
                }
            };
            buf.drain(..request.len);
            let sent = match request.target {
                Target::Script { ref arch } => {
                    let text = self.state.script(&conn, arch.clone());
                    let out = response_head(
                        "200 OK",
                        &[("content-type", "text/plain; charset=utf-8")],
                        text.len() as u64,
                        request.keep_alive,
                    );
                    let body = if request.head_only { &[][..] } else { text.as_bytes() };
                    send_all(&stream, &[&out, body]).await
                }
                Target::Image(ref path) => self.image(&stream, &conn, path.as_deref(), &request).await,
            };
            if let Err(e) = sent {
                tracing::debug!(peer = %conn.peer, error = %e, "HTTP boot: connection ended while sending");
                return None;
            }
            if !request.keep_alive {
                let _ = stream.shutdown().await;
                return None;
            }
        }
    }
}

impl Direct {
    /// Answers an image request: 200, 206, 404 or 416; the file itself through sendfile.
    async fn image(
        &self,
        stream: &TcpStream,
        conn: &Connection,
        path: Option<&Path>,
        request: &head::Request,
    ) -> std::io::Result<()> {
        let keep_alive = request.keep_alive;
        let found = match (&self.images, path) {
            (Some(root), Some(relative)) => open_inside(root, relative).await,
            _ => None,
        };
        let Some((file, len, modified)) = found else {
            tracing::debug!(peer = %conn.peer, path = ?path, "HTTP boot: image not found");
            let out = response_head("404 Not Found", &[], 0, keep_alive);
            return send_all(stream, &[&out]).await;
        };
        let last_modified = modified.map(httpdate::fmt_http_date);
        // If-Range with anything but the current Last-Modified: the file changed, send it whole.
        let range = match (&request.if_range, &last_modified) {
            (Some(tag), Some(lm)) if tag == lm => request.range.as_deref(),
            (Some(_), _) => None,
            (None, _) => request.range.as_deref(),
        };
        let mut headers = vec![("content-type", "application/octet-stream"), ("accept-ranges", "bytes")];
        if let Some(lm) = &last_modified {
            headers.push(("last-modified", lm));
        }
        let (status, start, count, content_range) = match head::span(range, len) {
            Span::Whole => ("200 OK", 0, len, None),
            Span::Part { start, end } => {
                ("206 Partial Content", start, end - start + 1, Some(format!("bytes {start}-{end}/{len}")))
            }
            Span::Unsatisfiable => {
                let unsatisfied = format!("bytes */{len}");
                headers.push(("content-range", &unsatisfied));
                let out = response_head("416 Range Not Satisfiable", &headers, 0, keep_alive);
                return send_all(stream, &[&out]).await;
            }
        };
        if let Some(cr) = &content_range {
            headers.push(("content-range", cr));
        }
        let out = response_head(status, &headers, count, keep_alive);
        if let Some(relative) = path {
            self.state.record_file(conn, relative.display().to_string(), count);
        }
        send_all(stream, &[&out]).await?;
        if request.head_only {
            return Ok(());
        }
        send_file(stream, &file, start, count).await
    }
}

/// Opens `root/relative` if it resolves (symlinks included) to a regular file inside `root`:
/// the file, its length and modification time.
async fn open_inside(root: &Path, relative: &Path) -> Option<(std::fs::File, u64, Option<SystemTime>)> {
    let (root, wanted) = (root.to_owned(), root.join(relative));
    tokio::task::spawn_blocking(move || {
        let resolved = std::fs::canonicalize(wanted).ok()?;
        if !crate::confine::inside(&root, &resolved) {
            tracing::info!(path = %resolved.display(), "HTTP boot: image refused, resolves outside the images directory");
            return None;
        }
        let file = std::fs::File::open(&resolved).ok()?;
        let meta = file.metadata().ok()?;
        meta.is_file().then(|| (file, meta.len(), meta.modified().ok()))
    })
    .await
    .ok()
    .flatten()
}

/// A response head with `content-length`, `date` and `connection` added.
fn response_head(status: &str, headers: &[(&str, &str)], length: u64, keep_alive: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let _ = write!(out, "HTTP/1.1 {status}\r\n");
    for (name, value) in headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(out, "content-length: {length}\r\nconnection: {connection}\r\ndate: {}\r\n\r\n", date());
    out
}

/// The `Date` header's value, formatted once per second per thread.
fn date() -> String {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with_borrow_mut(|(at, text)| {
        if *at != second || text.is_empty() {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        text.clone()
    })
}

/// Writes `parts` in order; a client that takes nothing for `SEND_TIMEOUT` ends it.
async fn send_all(stream: &TcpStream, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    while !parts.is_empty() {
        let slices: Vec<std::io::IoSlice<'_>> = parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
        let written = writable(stream, || stream.try_write_vectored(&slices)).await?;
        let mut left = written;
        while let Some(first) = parts.first_mut() {
            if left < first.len() {
                *first = &first[left..];
                break;
            }
            left -= first.len();
            parts.remove(0);
        }
    }
    Ok(())
}

/// Sends `count` bytes of `file` from `start` with sendfile(2).
async fn send_file(stream: &TcpStream, file: &std::fs::File, start: u64, count: u64) -> std::io::Result<()> {
    let mut offset = i64::try_from(start).map_err(|_| std::io::Error::other("offset out of range"))?;
    let mut left = count;
    while left > 0 {
        let chunk = usize::try_from(left).unwrap_or(usize::MAX).min(SENDFILE_CHUNK);
        let sent = writable(stream, || {
            stream.try_io(Interest::WRITABLE, || {
                let sent = nix::sys::sendfile::sendfile(stream.as_fd(), file.as_fd(), Some(&mut offset), chunk);
                sent.map_err(std::io::Error::from)
            })
        })
        .await?;
        if sent == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while being sent"));
        }
        left -= sent as u64;
    }
    Ok(())
}

/// Runs `op` (a non-blocking write through the stream's `try_*`, which clears its readiness on
/// "would block") once the socket is writable, until it does not block; a client that takes
/// nothing for `SEND_TIMEOUT` ends it.
async fn writable<T>(stream: &TcpStream, mut op: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        tokio::time::timeout(SEND_TIMEOUT, stream.writable())
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the client stopped reading"))??;
        match op() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            done => return done,
        }
    }
}
