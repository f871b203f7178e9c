//! Just enough of QEMU's machine protocol (QMP, JSON lines over a Unix socket) to ask a VM to
//! power down: greeting, `qmp_capabilities`, one command.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Why a QMP command did not run.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("no QMP answer within 5 s")]
    Timeout,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("QMP socket closed")]
    Closed,
    #[error("QMP: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{command}: {desc}")]
    Refused { command: String, desc: String },
}

/// Runs one QMP command (e.g. `system_powerdown`) and returns QEMU's error, if any.
pub async fn execute(socket: &Path, command: &str) -> Result<(), QmpError> {
    tokio::time::timeout(Duration::from_secs(5), run(socket, command)).await.map_err(|_| QmpError::Timeout)?
}

async fn run(socket: &Path, command: &str) -> Result<(), QmpError> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let _greeting = reply(&mut lines).await?;
    for cmd in ["qmp_capabilities", command] {
        let line = serde_json::json!({ "execute": cmd }).to_string() + "\n";
        write.write_all(line.as_bytes()).await?;
        let answer = reply(&mut lines).await?;
        if let Some(error) = answer.get("error") {
            let desc = error["desc"].as_str().unwrap_or("QMP error").to_owned();
            return Err(QmpError::Refused { command: cmd.to_owned(), desc });
        }
    }
    Ok(())
}

/// The next line that is not an asynchronous event.
async fn reply(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> Result<serde_json::Value, QmpError> {
    loop {
        let line = lines.next_line().await?.ok_or(QmpError::Closed)?;
        let value: serde_json::Value = serde_json::from_str(&line)?;
        if value.get("event").is_none() {
            return Ok(value);
        }
    }
}
