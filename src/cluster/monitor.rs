//! Runs each defined cluster's health checks once its nodes are all installed, and keeps the
//! latest results for `status`; a check that starts or stops passing is logged and an event.

use std::time::Duration;

use super::control::{Clusters, Stored, blocking, lock};
use super::health::{CheckResult, Target, in_zone, probe};
use super::phase::{NodeRecord, Phase};
use crate::inventory::{Name, Timestamp};
use crate::store::events::{EventKind, Source, Subject};
use crate::store::records::Records;

/// How often a cluster's checks run.
pub const EVERY: Duration = Duration::from_secs(10);

/// Runs every defined cluster's checks every `EVERY`, for as long as the engine runs.
pub(super) async fn watch(clusters: Clusters) {
    loop {
        check_all(&clusters).await;
        tokio::time::sleep(EVERY).await;
    }
}

/// Probes each cluster that has checks and whose nodes are all installed, and keeps the results
/// in `clusters.health`; a check that starts or stops passing is logged and an event.
async fn check_all(clusters: &Clusters) {
    let store = clusters.store.clone();
    let read = blocking(move || {
        let definitions = store.records::<Stored>(Records::Definitions)?;
        Ok((definitions, store.records::<NodeRecord>(Records::Phases)?))
    });
    let (definitions, records) = match read.await {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the clusters for their health checks");
            return;
        }
    };
    let inv = clusters.store.snapshot();
    let mut checked = std::collections::HashSet::new();
    for (_, stored) in definitions {
        let def = &stored.definition;
        // Nodes on their way out do not count (as in the cluster's conditions).
        let phases: Vec<Phase> =
            records.iter().filter(|(_, r)| r.cluster == def.name && !r.is_leaving()).map(|(_, r)| r.phase).collect();
        let installed = !phases.is_empty() && phases.iter().all(|p| *p == Phase::Installed);
        let Some(cluster) = inv.clusters.get(&def.name) else { continue };
        if def.validation.health_checks.is_empty() || stored.deleting.is_some() || !installed {
            continue;
        }
        let zone = cluster.zone();
        let probes = def.validation.health_checks.iter().map(|check| {
            let (zone, inv) = (&zone, &inv);
            async move {
                let result = match Target::parse(check, zone) {
                    Ok(target) => probe(&target, in_zone(target.host(), cluster, inv), check).await,
                    Err(why) => Err(why),
                };
                (check.name.clone(), result)
            }
        });
        let results = futures_util::future::join_all(probes).await;
        record(clusters, &def.name, results);
        checked.insert(def.name.clone());
    }
    lock(&clusters.health).retain(|cluster, _| checked.contains(cluster));
}

/// Keeps one cluster's results, noting each change.
fn record(clusters: &Clusters, cluster: &Name, results: Vec<(Name, Result<String, String>)>) {
    let now = Timestamp::now();
    let mut health = lock(&clusters.health);
    let before = health.remove(cluster).unwrap_or_default();
    let mut after = Vec::new();
    for (check, result) in results {
        let (ok, message) = match result {
            Ok(m) => (true, m),
            Err(m) => (false, m),
        };
        let previous = before.iter().find(|r| r.name == check.as_str());
        let since = match previous {
            Some(p) if p.ok == ok => p.since,
            _ => {
                match ok {
                    true => tracing::info!(%cluster, %check, %message, "health check passes"),
                    false => tracing::warn!(%cluster, %check, %message, "health check fails"),
                }
                let details = EventKind::HealthCheck {
                    cluster: cluster.clone(),
                    check: check.clone(),
                    ok,
                    message: message.clone(),
                };
                clusters.events.append(Source::Cluster, Subject::default(), details);
                now
            }
        };
        after.push(CheckResult { name: check.to_string(), ok, message, since });
    }
    health.insert(cluster.clone(), after);
}
