//! Following a Proxmox task (UPID) to its end: every asynchronous call returns one, and only
//! its exit status says whether the work was done.

use std::time::{Duration, Instant};

use proxmox_api::nodes::NodesClient;

use super::api::{Api, ApiError};

#[derive(Debug)]
pub enum TaskError {
    Failed(String),
    Timeout(Duration),
    Api(ApiError),
}

/// The node a UPID ran on: `UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:`.
pub fn node_of(upid: &str) -> Option<&str> {
    let mut parts = upid.split(':');
    (parts.next() == Some("UPID")).then_some(())?;
    parts.next().filter(|n| !n.is_empty())
}

/// Whether an exit status means success: `OK`, or `WARNINGS: n` (done, with warnings logged).
pub fn succeeded(exitstatus: &str) -> bool {
    exitstatus == "OK" || exitstatus.starts_with("WARNINGS")
}

/// How many polls in a row may fail in passing (pveproxy restarting after a certificate
/// renewal, a forwarded request failing) before the wait gives up.
const POLL_FAILURES: u32 = 5;

/// Polls the task until it stops (backing off from 200 ms to 2 s), at most `limit`. A poll that
/// fails in passing is not the task's failure: the wait goes on.
pub async fn wait(api: &Api, upid: &str, limit: Duration) -> Result<(), TaskError> {
    let node = node_of(upid).ok_or_else(|| TaskError::Failed(format!("'{upid}' is not a task id")))?;
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(200);
    let mut failures = 0;
    loop {
        let polled = NodesClient::new(api.clone()).node(node).tasks().upid(upid).status().get().await;
        let status = match polled {
            Ok(status) => {
                failures = 0;
                status
            }
            Err(e) if e.is_transient() && failures < POLL_FAILURES && Instant::now() < deadline => {
                failures += 1;
                tracing::debug!(upid, error = %e, "task poll failed in passing");
                tokio::time::sleep(pause).await;
                continue;
            }
            Err(e) => return Err(TaskError::Api(e)),
        };
        if matches!(status.status, proxmox_api::nodes::node::tasks::upid::status::Status::Stopped) {
            let exit = status.exitstatus.unwrap_or_default();
            return if succeeded(&exit) { Ok(()) } else { Err(TaskError::Failed(exit)) };
        }
        if Instant::now() >= deadline {
            return Err(TaskError::Timeout(limit));
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_comes_from_the_upid() {
        let upid = "UPID:pve2:0012D4A1:0A3B2C1D:6745F00D:qmcreate:105:slipway@pve!provision:";
        assert_eq!(node_of(upid), Some("pve2"));
        assert_eq!(node_of("pve2:123"), None);
        assert_eq!(node_of("UPID::x"), None);
    }

    #[test]
    fn warnings_are_success_and_anything_else_is_the_error() {
        assert!(succeeded("OK"));
        assert!(succeeded("WARNINGS: 2"));
        assert!(!succeeded("unable to create VM 105 - storage 'nosuch' does not exist"));
    }
}
