//! Just enough of QEMU's machine protocol (QMP, JSON lines over a Unix socket) to ask a VM to
//! power down: greeting, `qmp_capabilities`, one command.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Runs one QMP command (e.g. `system_powerdown`) and returns QEMU's error, if any.
pub async fn execute(socket: &Path, command: &str) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(5), run(socket, command))
        .await
        .map_err(|_| format!("{}: no QMP answer within 5 s", socket.display()))?
}

async fn run(socket: &Path, command: &str) -> Result<(), String> {
    let stream = UnixStream::connect(socket).await.map_err(|e| format!("{}: {e}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let _greeting = reply(&mut lines).await?;
    for cmd in ["qmp_capabilities", command] {
        let line = serde_json::json!({ "execute": cmd }).to_string() + "\n";
        write.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
        let answer = reply(&mut lines).await?;
        if let Some(error) = answer.get("error") {
            return Err(format!("{cmd}: {}", error["desc"].as_str().unwrap_or("QMP error")));
        }
    }
    Ok(())
}

/// The next line that is not an asynchronous event.
async fn reply(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> Result<serde_json::Value, String> {
    loop {
        let line = lines.next_line().await.map_err(|e| e.to_string())?.ok_or("QMP socket closed")?;
        let value: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("QMP: {e}"))?;
        if value.get("event").is_none() {
            return Ok(value);
        }
    }
}
