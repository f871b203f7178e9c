//! slipway's SSH client (russh): logs in to a node with its cluster's key (`keys`), accepts only
//! the ed25519 host key slipway made for that node (no trust on first use: any other key ends
//! the connection, named), runs commands one by one and returns what each printed (the last
//! `cap` bytes of each stream) and its exit status. Every wait is bounded. Knows nothing of
//! clusters: callers say whom to reach and what to run.

pub mod keys;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::{Algorithm, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Preferred, client};

/// The port sshd listens on.
pub const PORT: u16 = 22;

/// Whom to reach.
#[derive(Clone, Debug)]
pub struct Target {
    /// The node's name (for messages).
    pub node: String,
    pub addr: SocketAddr,
    pub user: String,
    /// The host key slipway made for the node.
    pub host_key: PublicKey,
}

/// What a command printed and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    pub command: String,
    /// The exit status; `None` when the command ended without one (killed by a signal).
    pub status: Option<u32>,
    pub stdout: String,
    pub stderr: String,
    /// Output beyond `cap` bytes was dropped from the front.
    pub truncated: bool,
}

impl From<Ran> for crate::store::events::CommandOutput {
    fn from(r: Ran) -> Self {
        crate::store::events::CommandOutput {
            command: r.command,
            status: r.status,
            stdout: r.stdout,
            stderr: r.stderr,
            truncated: r.truncated,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot reach {node} at {addr}: {message}")]
    Unreachable { node: String, addr: SocketAddr, message: String },
    #[error(
        "{node} at {addr} offered host key {offered}, not the one slipway made for it ({pinned}): refused (a different machine, or reinstalled without slipway's config)"
    )]
    HostKey { node: String, addr: SocketAddr, offered: String, pinned: String },
    #[error("{node} at {addr} did not let {user} in with key {key} (not among {user}'s authorized keys)")]
    Denied { node: String, addr: SocketAddr, user: String, key: String },
    #[error("{node} at {addr}: no answer within {} while {what}", humantime::format_duration(*.limit))]
    Timeout { node: String, addr: SocketAddr, limit: Duration, what: &'static str },
    #[error("{node} at {addr}: {message}")]
    Protocol { node: String, addr: SocketAddr, message: String },
}

/// Accepts the pinned key only; notes what was offered, for the error.
struct Pinned {
    key: PublicKey,
    offered: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(&mut self, offered: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let (seen, same) = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                (keys::fingerprint(key), key.key_data() == self.key.key_data())
            }
            PublicKeyOrCertificate::Certificate(_) => ("a host certificate".to_string(), false),
        };
        *self.offered.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
        Ok(same)
    }
}

/// Runs `commands` on `target` in turn, within `limit` in all.
pub async fn run(
    target: &Target,
    key: Arc<PrivateKey>,
    commands: &[&str],
    limit: Duration,
    cap: usize,
) -> Result<Vec<Ran>, SshError> {
    let steps: Vec<(&str, &[u8])> = commands.iter().map(|c| (*c, &[][..])).collect();
    session(target, key, &steps, limit, cap).await
}

/// Runs `command` on `target` with `input` as its standard input (then end of file), within
/// `limit`.
pub async fn run_with_input(
    target: &Target,
    key: Arc<PrivateKey>,
    command: &str,
    input: &[u8],
    limit: Duration,
    cap: usize,
) -> Result<Ran, SshError> {
    let mut ran = session(target, key, &[(command, input)], limit, cap).await?;
    ran.pop().ok_or_else(|| protocol(target, russh::Error::Disconnect))
}

/// Logs in and runs each (command, standard input) in turn.
async fn session(
    target: &Target,
    key: Arc<PrivateKey>,
    commands: &[(&str, &[u8])],
    limit: Duration,
    cap: usize,
) -> Result<Vec<Ran>, SshError> {
    let timeout = |what| SshError::Timeout { node: target.node.clone(), addr: target.addr, limit, what };
    let offered = Arc::new(Mutex::new(None));
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(limit),
        preferred: Preferred { key: vec![Algorithm::Ed25519].into(), ..Preferred::default() },
        ..Default::default()
    });
    let handler = Pinned { key: target.host_key.clone(), offered: offered.clone() };
    let started = tokio::time::Instant::now();
    let handle = tokio::time::timeout(limit, client::connect(config, target.addr, handler))
        .await
        .map_err(|_| timeout("connecting"))?
        .map_err(|e| connect_error(target, e, offered.lock().unwrap_or_else(|p| p.into_inner()).take()))?;
    let left = || limit.saturating_sub(started.elapsed());
    let mut handle = handle;
    let fingerprint = keys::fingerprint(key.public_key());
    let auth = tokio::time::timeout(
        left(),
        handle.authenticate_publickey(&target.user, PrivateKeyWithHashAlg::new(key, None)),
    )
    .await
    .map_err(|_| timeout("logging in"))?
    .map_err(|e| protocol(target, e))?;
    if !auth.success() {
        let (node, user) = (target.node.clone(), target.user.clone());
        return Err(SshError::Denied { node, addr: target.addr, user, key: fingerprint });
    }
    let mut out = Vec::with_capacity(commands.len());
    for (command, input) in commands {
        let ran = tokio::time::timeout(left(), exec(&handle, command, input, cap))
            .await
            .map_err(|_| timeout("running a command"))?
            .map_err(|e| protocol(target, e))?;
        out.push(ran);
    }
    // The answers are in: a peer that does not say goodbye does not matter.
    let _ = tokio::time::timeout(left(), handle.disconnect(Disconnect::ByApplication, "", "en")).await;
    Ok(out)
}

async fn exec<H: client::Handler>(
    handle: &client::Handle<H>,
    command: &str,
    input: &[u8],
    cap: usize,
) -> Result<Ran, russh::Error> {
    let mut channel = handle.channel_open_session().await?;
    channel.exec(true, command).await?;
    if !input.is_empty() {
        channel.data(input).await?;
    }
    channel.eof().await?;
    let (mut stdout, mut stderr, mut status) = (Tail::new(cap), Tail::new(cap), None);
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => stdout.push(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } => stderr.push(&data),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            _ => {}
        }
    }
    let truncated = stdout.dropped || stderr.dropped;
    Ok(Ran { command: command.to_string(), status, stdout: stdout.text(), stderr: stderr.text(), truncated })
}

/// The last `cap` bytes of a stream.
struct Tail {
    bytes: Vec<u8>,
    cap: usize,
    dropped: bool,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Tail { bytes: Vec::new(), cap, dropped: false }
    }

    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > self.cap.saturating_mul(2).max(4096) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.bytes.len() > self.cap {
            let cut = self.bytes.len() - self.cap;
            self.bytes.drain(..cut);
            self.dropped = true;
        }
    }

    fn text(mut self) -> String {
        self.trim();
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

fn connect_error(target: &Target, e: russh::Error, offered: Option<String>) -> SshError {
    match e {
        russh::Error::UnknownKey => SshError::HostKey {
            node: target.node.clone(),
            addr: target.addr,
            offered: offered.unwrap_or_else(|| "an unknown key".into()),
            pinned: keys::fingerprint(&target.host_key),
        },
        russh::Error::IO(e) => {
            SshError::Unreachable { node: target.node.clone(), addr: target.addr, message: e.to_string() }
        }
        e => protocol(target, e),
    }
}

fn protocol(target: &Target, e: russh::Error) -> SshError {
    SshError::Protocol { node: target.node.clone(), addr: target.addr, message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_last_bytes_and_says_so() {
        let mut tail = Tail::new(5);
        tail.push(b"hello ");
        tail.push(b"world");
        assert!(!tail.dropped, "trimmed only when asked or far over");
        let text = {
            let mut t = Tail::new(5);
            t.push(b"hello world");
            t.text()
        };
        assert_eq!(text, "world");
        let mut big = Tail::new(10);
        for _ in 0..1000 {
            big.push(b"0123456789");
        }
        assert!(big.bytes.len() <= 4096 + 10, "memory stays bounded");
        assert!(big.dropped);
        assert_eq!(big.text(), "0123456789");
        let mut short = Tail::new(100);
        short.push("bootkube.service loaded failed".as_bytes());
        assert!(!short.dropped);
        assert_eq!(short.text(), "bootkube.service loaded failed");
    }
}
