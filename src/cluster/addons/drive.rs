//! The ApplyingAddons stage, the same for OKD and k3s: the definition's sets read from disk,
//! one pass of the first set not applied as it is now, its state stored in the cluster's
//! lifecycle record before anything is told (events per set: applied with its object count, or
//! failed with the object and the API's message), then the next set on the next step. The
//! cluster is Ready once every set is applied, and fails with the set's reason when one fails
//! (`retry` starts that set again). `at_install` sets were applied by k3s itself: only their
//! `wait_for` is read. A definition applied again whose sets changed takes a Ready cluster back
//! to ApplyingAddons ([`reopen`]).

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::apply;
use super::check::DEFAULT_TIMEOUT;
use super::manifest::{self, Loaded};
use super::progress::{Outcome, Wanted};
use crate::cluster::Clusters;
use crate::cluster::control::{ControlError, blocking};
use crate::cluster::definition::{AddonSet, Definition, Problem};
use crate::cluster::record::{Facts, Limits, StageRecord, Staged};
use crate::inventory::Timestamp;
use crate::kube::Kube;
use crate::store::events::{EventKind, Source, Subject};

/// Every set of `def` read from disk (`image`s under `images`), or the first that cannot be,
/// named by its field.
pub fn read_sets(def: &Definition, images: &Path) -> Result<Vec<(Wanted, Loaded)>, Problem> {
    def.addons
        .iter()
        .enumerate()
        .map(|(i, set)| {
            let (field, shown, path) = source(i, set, images);
            let loaded = manifest::load(&path).map_err(|e| Problem {
                field: field.clone(),
                value: shown.clone(),
                message: format!("cannot be read: {e}"),
            })?;
            if set.image.is_some()
                && let Some(secret) = loaded.objects.iter().find(|o| o.kind() == "Secret")
            {
                return Err(Problem {
                    field,
                    value: shown,
                    message: format!(
                        "holds a Secret ({}): the images directory is served to every machine of the provisioning network; give Secrets by path",
                        secret.origin
                    ),
                });
            }
            let wanted = Wanted {
                name: set.name.clone(),
                hash: content_hash(set, &loaded),
                timeout: set.timeout.unwrap_or(DEFAULT_TIMEOUT),
            };
            Ok((wanted, loaded))
        })
        .collect()
}

/// What a set is applied as: its files and what the definition says of it (namespace,
/// create_namespace, wait_for, ...; its name and timeout aside), so a change to either applies
/// it again.
fn content_hash(set: &AddonSet, loaded: &Loaded) -> String {
    use sha2::Digest;
    let shape = AddonSet { timeout: None, ..set.clone() };
    let mut hash = sha2::Sha256::new();
    hash.update(loaded.hash.as_bytes());
    hash.update(serde_json::to_vec(&shape).unwrap_or_default());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The field a set is read through, its value, and the path read.
fn source(i: usize, set: &AddonSet, images: &Path) -> (String, String, std::path::PathBuf) {
    match (&set.path, &set.image) {
        (Some(path), _) => (format!("addons[{i}].path"), path.display().to_string(), path.clone()),
        (None, Some(image)) => {
            let relative = crate::confine::relative(image).unwrap_or_default();
            (format!("addons[{i}].image"), image.clone(), images.join(relative))
        }
        (None, None) => (format!("addons[{i}]"), set.name.to_string(), std::path::PathBuf::new()),
    }
}

/// One step of a cluster in ApplyingAddons, against its API through `kube`.
pub async fn step<S, L, F>(
    clusters: &Clusters,
    def: &Definition,
    record: &StageRecord<S, L, F>,
    kube: &Kube,
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
        Err(problem) => record.fail(format!("add-ons: {}: {}", problem.field, problem.message), now),
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
                    let pass = apply::pass(kube, set, loaded).await;
                    let (progress, outcome) = facts.addons().after(&current, &pass, now);
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

/// A Ready cluster whose definition now has sets not applied as they are (new, or changed)
/// goes back to ApplyingAddons; whether it did. The record is read here and the change stored
/// only over what was read (a driver that stored meanwhile makes it read again).
pub async fn reopen<S, L, F>(clusters: &Clusters, def: &Definition) -> Result<bool, ControlError>
where
    S: Staged + Serialize + DeserializeOwned + Send + 'static,
    L: Limits<S> + Serialize + DeserializeOwned + PartialEq + Send + 'static,
    F: Facts + Serialize + DeserializeOwned + PartialEq + Send + 'static,
{
    if def.addons.is_empty() {
        return Ok(false);
    }
    let (images, copy) = (clusters.images.clone(), def.clone());
    let Ok(sets) = blocking(move || Ok(read_sets(&copy, &images))).await? else { return Ok(false) };
    let wanted: Vec<Wanted> = sets.into_iter().map(|(w, _)| w).collect();
    for _ in 0..5 {
        let (store, key) = (clusters.store.clone(), def.name.to_string());
        let record: Option<StageRecord<S, L, F>> =
            blocking(move || store.record(crate::store::records::Records::Lifecycle, &key)).await?;
        let Some(record) = record else { return Ok(false) };
        let mut facts = record.facts.clone();
        if record.stage != S::READY || facts.addons().current(&wanted).is_none() {
            return Ok(false);
        }
        let next = record.enter(S::APPLYING_ADDONS, Timestamp::now());
        if clusters.put_lifecycle(record.cluster.as_str(), Some(record.clone()), next).await? {
            let details = EventKind::ClusterStage {
                cluster: record.cluster.clone(),
                from: record.stage.name().into(),
                stage: S::APPLYING_ADDONS.name().into(),
                error: None,
            };
            clusters.events.append(Source::Cluster, Subject::default(), details);
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(dir: &Path, namespace: &str) -> Definition {
        let yaml = format!(
            "name: edge\nkind: k3s\nbase_domain: lab.example\nnetwork: cluster\napi_address: 192.0.2.10\n\
             api_int_address: 10.1.107.1\ningress_address: 192.0.2.10\naddons:\n\
             - {{ name: web, path: {}, namespace: {namespace} }}\n",
            dir.join("web.yaml").display()
        );
        serde_norway::from_str(&yaml).expect("definition")
    }

    #[test]
    fn a_set_applies_again_when_its_files_or_its_settings_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("web.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n")
            .expect("web");
        let hash = |ns: &str| read_sets(&definition(dir.path(), ns), dir.path()).expect("reads")[0].0.hash.clone();
        let first = hash("apps");
        assert_eq!(hash("apps"), first, "nothing changed");
        assert_ne!(hash("web"), first, "another namespace");
        std::fs::write(dir.path().join("web.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web2}\n")
            .expect("web");
        assert_ne!(hash("apps"), first, "other files");
    }

    #[test]
    fn a_secret_in_the_images_directory_is_refused() {
        let images = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(images.path().join("creds")).expect("dir");
        std::fs::write(
            images.path().join("creds/repo.yaml"),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: repo}\nstringData: {password: x}\n",
        )
        .expect("secret");
        let yaml = "name: edge\nkind: k3s\nbase_domain: lab.example\nnetwork: cluster\napi_address: 192.0.2.10\n\
                    api_int_address: 10.1.107.1\ningress_address: 192.0.2.10\naddons:\n- { name: repo, image: creds/repo.yaml }\n";
        let def: Definition = serde_norway::from_str(yaml).expect("definition");
        let problem = read_sets(&def, images.path()).expect_err("refused");
        assert_eq!((problem.field.as_str(), problem.value.as_str()), ("addons[0].image", "creds/repo.yaml"));
        assert!(problem.message.starts_with("holds a Secret (repo.yaml document 1)"), "{}", problem.message);
    }
}
