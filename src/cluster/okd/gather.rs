//! Bootstrap diagnostics: what `openshift-install gather bootstrap` looks at first — the last
//! lines of the bootkube and release-image journals and the failed units — read over SSH from
//! the bootstrap node (as `core`, with the cluster's key; its host key is the one slipway made
//! and served it, pinned) and kept as a `node_diagnostics` event on the node's timeline,
//! with the reason slipway looked. Run when WaitingForAPI or Bootstrapping fails, and when an
//! operator asks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::control::Clusters;
use crate::inventory::{Name, Role};
use crate::store::events::{CommandOutput, EventKind, Source, Subject};

/// What is run, in order (`core` reads the system journal: it is in group `adm`).
pub const COMMANDS: [&str; 2] = [
    "journalctl -b --no-pager -n 200 -u bootkube.service -u release-image.service",
    "systemctl --failed --no-legend --plain",
];
/// The user CoreOS gives the SSH keys of the Ignition config.
pub const USER: &str = "core";
/// All of it: connecting, logging in, both commands.
const LIMIT: Duration = Duration::from_secs(60);
/// Kept of each output stream (its end): an event holds at most four of them.
const CAP: usize = 32 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("cluster {0} has no bootstrap node")]
    NoBootstrap(Name),
    /// slipway does not log in to a host it cannot identify: nothing is tried.
    #[error("{0}")]
    Untrusted(String),
    /// The node could not be read (unreachable, another host key, the key refused, a key file).
    #[error("{0}")]
    Failed(String),
}

/// Reads the diagnostics from the cluster's bootstrap node and records them (or why not).
pub async fn gather(clusters: &Clusters, cluster: &Name, reason: &str) -> Result<Vec<CommandOutput>, GatherError> {
    let inv = clusters.store.snapshot();
    let Some(node) =
        inv.nodes.values().find(|n| n.cluster.as_ref() == Some(cluster) && n.role == Some(Role::Bootstrap))
    else {
        return Err(GatherError::NoBootstrap(cluster.clone()));
    };
    let outcome = run(clusters, cluster, node).await;
    let details = EventKind::NodeDiagnostics {
        cluster: cluster.clone(),
        reason: reason.to_owned(),
        commands: outcome.as_ref().map(Clone::clone).unwrap_or_default(),
        error: outcome.as_ref().err().map(ToString::to_string),
    };
    match &outcome {
        Ok(_) => tracing::info!(%cluster, node = %node.name, %reason, "bootstrap diagnostics gathered"),
        Err(error) => tracing::warn!(%cluster, node = %node.name, %reason, %error, "no bootstrap diagnostics"),
    }
    clusters.events.append(Source::Cluster, Subject { node: Some(node.name.clone()), mac: Some(node.mac) }, details);
    outcome
}

async fn run(
    clusters: &Clusters,
    cluster: &Name,
    node: &crate::inventory::Node,
) -> Result<Vec<CommandOutput>, GatherError> {
    let failed = |e: &dyn std::fmt::Display| GatherError::Failed(e.to_string());
    let (dir, key, name) = (clusters.store.files(), cluster.to_string(), node.name.to_string());
    let keys = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::ssh::keys::KeyError>((
            crate::ssh::keys::existing_client(&dir, &key)?,
            crate::ssh::keys::pinned(&dir, &key, &name)?,
        ))
    })
    .await
    .map_err(|e| failed(&e))?
    .map_err(|e| failed(&e))?;
    let (Some(client), Some(host_key)) = keys else {
        return Err(GatherError::Untrusted(format!(
            "{} was never served an Ignition config carrying the host key slipway made for it (it did not fetch one, or its config defines a host key of its own: see its config_additions_left_out event): its SSH host cannot be identified",
            node.name
        )));
    };
    let target = crate::ssh::Target {
        node: node.name.to_string(),
        addr: SocketAddr::from((node.ipv4, crate::ssh::PORT)),
        user: USER.to_owned(),
        host_key,
    };
    let ran = crate::ssh::run(&target, Arc::new(client), &COMMANDS, LIMIT, CAP).await.map_err(|e| failed(&e))?;
    Ok(ran.into_iter().map(CommandOutput::from).collect())
}
