//! The ApplyingAddons stage, the same for OKD and k3s: the definition's sets read from disk,
//! one pass of the first set not applied as it is now, its state stored in the cluster's
//! lifecycle record before anything is told (events per set: applied with its object count, or
//! failed with the object and the API's message), then the next set on the next step. The
//! cluster is Ready once every set is applied, and fails with the set's reason when one fails
//! (`retry` starts that set again). `at_install` sets are applied by k3s itself: k3s's record
//! of the file it applied is read (and the first server's copy brought up to date when the set
//! changed), then their `wait_for`. (A definition applied again whose sets changed takes a Ready cluster
//! back to ApplyingAddons: `Clusters`, as it applies.)

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::apply;
use super::autodeploy::Copier;
use super::progress::{Outcome, Wanted};
use super::sets::read_sets;
use crate::cluster::Clusters;
use crate::cluster::control::{ControlError, blocking};
use crate::cluster::definition::Definition;
use crate::cluster::record::{Facts, Limits, StageRecord, Staged};
use crate::inventory::Timestamp;
use crate::kube::Kube;
use crate::store::events::{EventKind, Source, Subject};

/// One step of a cluster in ApplyingAddons, against its API through `kube`; `copier` reaches
/// a k3s first server's auto-deploy directory.
pub async fn step<S, L, F>(
    clusters: &Clusters,
    def: &Definition,
    record: &StageRecord<S, L, F>,
    kube: &Kube,
    copier: Option<&dyn Copier>,
) -> Result<(), ControlError>
where
    S: Staged + Serialize + DeserializeOwned + Send + 'static,
    L: Limits<S> + Serialize + DeserializeOwned + PartialEq + Send + 'static,
    F: Facts + Serialize + DeserializeOwned + PartialEq + Send + 'static,
{
    let (images, copy) = (clusters.images.clone(), def.clone());
    let sets = blocking(move || Ok(read_sets(&copy, &images))).await?;
    let now = Timestamp::now();
    let mut told = None;
    let next = match sets {
        // A file being replaced is read again while a set applies (until its deadline); a set
        // that cannot be read otherwise fails the cluster, named.
        Err(problem) => {
            let reason = format!("add-ons: {}: {}", problem.field, problem.message);
            let mut facts = record.facts.clone();
            match facts.addons().applying_until() {
                Some(deadline) if now <= deadline => {
                    StageRecord { observed: Some(format!("{reason} (read again)")), ..record.clone() }
                }
                _ => record.fail(reason, now),
            }
        }
        Ok(sets) => {
            let wanted: Vec<Wanted> = sets.iter().map(|(w, _)| w.clone()).collect();
            let mut facts = record.facts.clone();
            // Sets no longer in the definition are forgotten (their objects stay).
            let pruned = facts.addons().pruned(&wanted);
            *facts.addons() = pruned;
            match facts.addons().current(&wanted).cloned() {
                None => {
                    let mut ready = StageRecord { facts, ..record.clone() }.enter(S::READY, now);
                    ready.observed = Some(format!("{} add-on set(s) applied", wanted.len()));
                    ready
                }
                Some(current) => {
                    let index = wanted.iter().position(|w| *w == current).unwrap_or_default();
                    let (set, loaded) = (&def.addons[index], &sets[index].1);
                    let copy = copier.filter(|_| set.at_install && facts.addons().copy_due(&current, now));
                    let pass = apply::pass(kube, set, loaded, copy).await;
                    let (mut progress, outcome) = facts.addons().after(&current, &pass, now);
                    if copy.is_some() {
                        progress.copy_checked(&current.name, now);
                    }
                    let mut next = record.clone();
                    *next.facts.addons() = progress;
                    let state = next.facts.addons().sets.iter().find(|s| s.name == current.name).cloned();
                    match outcome {
                        Outcome::Quiet => {
                            next.observed = state.and_then(|s| s.observed).map(|o| format!("{}: {o}", current.name));
                            next
                        }
                        Outcome::Applied => {
                            told = Some((current.name.clone(), "applied", state.map_or(0, |s| s.applied), None));
                            next.observed = Some(format!("{} applied", current.name));
                            next
                        }
                        Outcome::Failed(reason) => {
                            told = Some((current.name.clone(), "failed", 0, Some(reason.clone())));
                            next.fail(format!("add-on {}: {reason}", current.name), now)
                        }
                    }
                }
            }
        }
    };
    if next == *record {
        return Ok(());
    }
    if !clusters.put_lifecycle(record.cluster.as_str(), Some(record.clone()), next.clone()).await? {
        return Ok(());
    }
    if let Some((set, state, objects, error)) = told {
        match &error {
            Some(e) => tracing::warn!(cluster = %record.cluster, set = %set, error = %e, "add-on failed"),
            None => tracing::info!(cluster = %record.cluster, set = %set, objects, "add-on applied"),
        }
        let details = EventKind::Addon { cluster: record.cluster.clone(), set, state: state.into(), objects, error };
        clusters.events.append(Source::Cluster, Subject::default(), details);
    }
    if next.stage != record.stage {
        tracing::info!(cluster = %record.cluster, stage = next.stage.name(), "cluster stage");
        let details = EventKind::ClusterStage {
            cluster: record.cluster.clone(),
            from: record.stage.name().into(),
            stage: next.stage.name().into(),
            error: next.error.clone().filter(|_| next.stage == S::FAILED),
        };
        clusters.events.append(Source::Cluster, Subject::default(), details);
    }
    Ok(())
}
