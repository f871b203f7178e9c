//! `slipway reload`: the daemon reads its config file again; what changed, or why not.

use reqwest::Method;

use super::client::{Client, ClientError};
use super::{Output, print_json};

/// Sends SIGHUP to the daemon `pid` (systemd's `ExecReload=`: no token, no address, no TLS;
/// the daemon logs what it applied or refused).
pub fn signal(pid: i32) -> Result<(), String> {
    use nix::sys::signal::{Signal, kill};
    if pid <= 1 {
        return Err(format!("--pid {pid}: not a daemon's process ID"));
    }
    kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP).map_err(|e| format!("cannot signal PID {pid}: {e}"))
}

/// Asks the daemon to read its config file again and apply it; prints what changed.
pub async fn reload(client: &Client, output: Output) -> Result<(), ClientError> {
    let r: crate::api::reload::Reloaded = client.json(Method::POST, "/api/v1/reload", None::<&()>).await?;
    if output == Output::Json {
        print_json(&r);
        return Ok(());
    }
    if r.changed.is_empty() {
        crate::outln!("{}: read again; nothing changed", r.file);
        return Ok(());
    }
    crate::outln!("{}: applied", r.file);
    for line in &r.changed {
        crate::outln!("  {line}");
    }
    Ok(())
}
