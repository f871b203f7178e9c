//! The adapter that drives an OKD cluster's stages: once its bootstrap node has phoned home,
//! every few seconds it looks at the cluster's API through `api-int` with the uploaded admin
//! kubeconfig, lets `stage::next` decide, and stores the record it moves to (with the bootstrap
//! node's retirement, in one transaction, when the etcd handoff is seen). Beside the stages it
//! approves kubelet CSRs that pass `csr::decide` (`csr_approval = "inventory"`), naming each
//! decision in the event log. A restart resumes from the stored record and deadline.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use super::csr::{self, Machine, Verdict};
use super::stage::{self, ClusterRecord, Look, Next, Stage, VersionSeen};
use crate::cluster::control::{Clusters, ControlError, Stored, blocking, lock};
use crate::cluster::phase::{NodeRecord, Phase};
use crate::inventory::{Name, Role, Timestamp};
use crate::kube::objects::{ConfigMap, Csr, List, Node, Version, WithConditions};
use crate::kube::{Kube, KubeError};
use crate::store::events::{EventKind, Source, Subject};
use crate::store::records::Records;

/// How often a cluster's API is looked at (the installer polls `/version` every 2 s).
const LOOK_EVERY: Duration = Duration::from_secs(2);
/// The API port, on `api_int_address`.
const API_PORT: u16 = 6443;

/// What the driver keeps between passes (observations, not state: a restart rebuilds it).
#[derive(Debug, Default)]
pub struct Driver {
    /// Each cluster's API client, with the SHA-256 of the kubeconfig it was made from.
    clients: Mutex<HashMap<Name, ([u8; 32], Kube)>>,
    looked: Mutex<HashMap<Name, tokio::time::Instant>>,
    /// CSRs already reported as left alone (one event each).
    told: Mutex<HashSet<String>>,
}

impl Driver {
    /// One step of an OKD cluster with these node records (its own only).
    pub async fn step(&self, clusters: &Clusters, stored: &Stored, nodes: &[NodeRecord]) -> Result<(), ControlError> {
        let definition = &stored.definition;
        let name = definition.name.clone();
        let inv = clusters.store.snapshot();
        let role = |n: &NodeRecord| inv.nodes.get(&n.node).and_then(|node| node.role);
        let key = name.to_string();
        let store = clusters.store.clone();
        let record: Option<ClusterRecord> = blocking(move || store.record(Records::Lifecycle, &key)).await?;
        let Some(record) = record else {
            // The API comes up on the bootstrap node: its stages start once it has phoned home
            // (or, without one, once every master has).
            let bootstrap: Vec<&NodeRecord> = nodes.iter().filter(|n| role(n) == Some(Role::Bootstrap)).collect();
            let first: Vec<&NodeRecord> = if bootstrap.is_empty() {
                nodes.iter().filter(|n| role(n) == Some(Role::ControlPlane)).collect()
            } else {
                bootstrap
            };
            if first.is_empty() || !first.iter().all(|n| n.phase == Phase::Installed) {
                return Ok(());
            }
            let limits = stage::StageLimits::from(&definition.validation.phases);
            let record = ClusterRecord::start(name.clone(), limits, Timestamp::now());
            return self.save(clusters, None, record).await.map(drop);
        };
        if record.stage == Stage::Failed {
            return Ok(());
        }
        {
            let mut looked = lock(&self.looked);
            if looked.get(&name).is_some_and(|at| at.elapsed() < LOOK_EVERY) {
                return Ok(());
            }
            looked.insert(name.clone(), tokio::time::Instant::now());
        }
        let zone = format!("{}.{}", definition.name, definition.base_domain);
        let mut look = Look { addons: !definition.addons.is_empty(), ..Look::default() };
        let kube =
            match self.client(clusters, &name, &zone, SocketAddr::from((definition.api_int_address, API_PORT))).await {
                Ok(kube) => Some(kube),
                Err(why) => {
                    look.api = Some(Err(why));
                    None
                }
            };
        let bootstrap_left: Vec<Name> =
            nodes.iter().filter(|n| role(n) == Some(Role::Bootstrap)).map(|n| n.node.clone()).collect();
        look.bootstrap_left = bootstrap_left.len();
        if let Some(kube) = &kube {
            self.look(kube, &record, nodes, &role, &mut look).await;
            if matches!(look.api, Some(Ok(_)))
                && definition.csr_approval != crate::cluster::definition::CsrApproval::Off
            {
                let machines = machines(clusters, nodes, &zone);
                self.approve(clusters, kube, &name, &machines, &zone).await;
            }
        }
        // CSRs are approved while add-ons are applied too (their nodes may need them).
        if record.stage == Stage::ApplyingAddons {
            return match &kube {
                Some(kube) => crate::cluster::addons::drive::step(clusters, definition, &record, kube, None).await,
                None => Ok(()),
            };
        }
        let cleanup = definition
            .node_groups
            .iter()
            .filter(|g| g.role == Role::Bootstrap)
            .all(|g| g.lifecycle.cleanup_after_boot != Some(false));
        match stage::next(&record, &look, cleanup, Timestamp::now()) {
            Next::Wait => Ok(()),
            Next::Save(next) => {
                if next.facts.bootstrap_done && !record.facts.bootstrap_done {
                    // Its Ignition serves no one now.
                    let (dir, key) = (clusters.store.files(), name.to_string());
                    let removed =
                        tokio::task::spawn_blocking(move || crate::store::uploads::remove(&dir, &key, Role::Bootstrap))
                            .await;
                    if let Ok(Err(e)) = removed {
                        tracing::warn!(cluster = %name, error = %e, "cannot remove the bootstrap node's Ignition");
                    }
                }
                let failed_early =
                    next.stage == Stage::Failed && matches!(record.stage, Stage::WaitingForApi | Stage::Bootstrapping);
                let reason = next.error.clone().unwrap_or_default();
                if self.save(clusters, Some(&record), next).await? && failed_early {
                    // What the bootstrap node says about it, while it still runs.
                    let (clusters, name) = (clusters.clone(), name.clone());
                    let reason = format!("{} failed: {reason}", record.stage.as_str());
                    tokio::spawn(async move { super::gather::gather(&clusters, &name, &reason).await });
                }
                Ok(())
            }
            Next::RemoveBootstrap(next) => {
                let limits = crate::cluster::phase::Limits::from(&definition.validation.phases);
                let saved = clusters.advance(&record, &next, &bootstrap_left, limits).await?;
                if saved {
                    tracing::info!(cluster = %name, nodes = ?bootstrap_left, "etcd let go of the bootstrap node: removing it");
                    self.tell(clusters, &record, &next);
                }
                Ok(())
            }
        }
    }

    /// The cluster's API client, made again when the kubeconfig changed.
    async fn client(&self, clusters: &Clusters, name: &Name, zone: &str, connect: SocketAddr) -> Result<Kube, String> {
        let bytes = kubeconfig(clusters, name).await?;
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
        if let Some((_, kube)) = lock(&self.clients).get(name).filter(|(seen, _)| *seen == digest) {
            return Ok(kube.clone());
        }
        let kube = client(&bytes, zone, connect)?;
        lock(&self.clients).insert(name.clone(), (digest, kube.clone()));
        Ok(kube)
    }

    /// What the current stage needs to see.
    async fn look(
        &self,
        kube: &Kube,
        record: &ClusterRecord,
        nodes: &[NodeRecord],
        role: &(dyn Fn(&NodeRecord) -> Option<Role> + Sync),
        look: &mut Look,
    ) {
        look.api = Some(kube.get::<Version>("/version").await.map(|v| v.git_version).map_err(|e| e.to_string()));
        if !matches!(look.api, Some(Ok(_))) {
            return;
        }
        let failed = |look: &mut Look, e: KubeError| look.api = Some(Err(e.to_string()));
        match record.stage {
            Stage::Bootstrapping => {
                match kube.get_opt::<ConfigMap>("/api/v1/namespaces/kube-system/configmaps/bootstrap").await {
                    Ok(cm) => {
                        look.bootstrap_complete =
                            cm.is_some_and(|cm| cm.data.get("status").is_some_and(|s| s == "complete"))
                    }
                    Err(e) => failed(look, e),
                }
            }
            Stage::WaitingEtcdHandoff => {
                match kube.get_opt::<WithConditions>("/apis/operator.openshift.io/v1/etcds/cluster").await {
                    Ok(etcd) => look.etcd_bootstrap_removed = etcd.is_some_and(|e| e.is("EtcdBootstrapMemberRemoved")),
                    Err(e) => failed(look, e),
                }
            }
            Stage::JoiningWorkers => match kube.get::<List<Node>>("/api/v1/nodes").await {
                Ok(list) => {
                    let ready: HashSet<String> =
                        list.items.iter().filter(|n| n.ready()).map(|n| short(&n.metadata.name)).collect();
                    look.not_ready = nodes
                        .iter()
                        .filter(|n| matches!(role(n), Some(Role::ControlPlane | Role::Worker | Role::Infra)))
                        .filter(|n| !n.is_leaving() && !ready.contains(n.node.as_str()))
                        .map(|n| n.node.to_string())
                        .collect();
                }
                Err(e) => failed(look, e),
            },
            Stage::Finalizing => {
                match kube.get_opt::<WithConditions>("/apis/config.openshift.io/v1/clusterversions/version").await {
                    Ok(Some(cv)) => {
                        let message = ["Failing", "Progressing"]
                            .iter()
                            .filter_map(|k| cv.condition(k).filter(|c| c.status == "True"))
                            .find_map(|c| c.message.clone())
                            .unwrap_or_default();
                        look.version = Some(VersionSeen {
                            available: cv.is("Available"),
                            progressing: cv.is("Progressing"),
                            failing: cv.is("Failing"),
                            message,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => return failed(look, e),
                }
                match kube.get::<List<WithConditions>>("/apis/config.openshift.io/v1/clusteroperators").await {
                    Ok(list) => {
                        for op in &list.items {
                            let name = &op.metadata.name;
                            if op.is("Degraded") {
                                let why = op.condition("Degraded").and_then(|c| c.message.clone()).unwrap_or_default();
                                look.degraded.push(format!("{name}: {why}"));
                            } else if op.is("Progressing") || !op.is("Available") {
                                look.unsettled.push(name.clone());
                            }
                        }
                    }
                    Err(e) => failed(look, e),
                }
            }
            _ => {}
        }
    }

    /// Approves the pending kubelet CSRs that pass the guarded checks; names each one left.
    async fn approve(&self, clusters: &Clusters, kube: &Kube, cluster: &Name, machines: &[Machine], zone: &str) {
        let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
        let (csrs, nodes) =
            match (kube.get::<List<serde_json::Value>>(path).await, kube.get::<List<Node>>("/api/v1/nodes").await) {
                (Ok(csrs), Ok(nodes)) => (csrs, nodes),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(%cluster, error = %e, "cannot list CSRs or nodes");
                    return;
                }
            };
        let nodes: BTreeSet<String> = nodes.items.into_iter().map(|n| n.metadata.name).collect();
        let pending: Vec<(serde_json::Value, Csr)> = csrs
            .items
            .into_iter()
            .filter_map(|raw| serde_json::from_value::<Csr>(raw.clone()).ok().map(|csr| (raw, csr)))
            .filter(|(_, csr)| csr.pending())
            .collect();
        let kubelets = pending
            .iter()
            .filter(|(_, c)| [csr::CLIENT_SIGNER, csr::SERVING_SIGNER].contains(&c.spec.signer_name.as_str()))
            .count();
        if kubelets > machines.len().max(nodes.len()) + csr::PENDING_MARGIN {
            if lock(&self.told).insert(format!("{cluster}/flood")) {
                tracing::warn!(%cluster, pending = kubelets, "more kubelet CSRs pending than machines + 100: approving none until they are fewer");
            }
            return;
        }
        // Forget CSRs no longer pending (approved, deleted): the set stays the size of the queue.
        {
            let prefix = format!("{cluster}/");
            let current: HashSet<String> =
                pending.iter().map(|(_, c)| format!("{prefix}{}", c.metadata.name)).collect();
            lock(&self.told).retain(|k| !k.starts_with(&prefix) || current.contains(k) || k.ends_with("/flood"));
        }
        for (raw, csr) in pending {
            let name = csr.metadata.name.clone();
            let signer = csr.spec.signer_name.clone();
            match csr::decide(&csr, machines, &nodes, zone) {
                Verdict::Approve { node, why } => {
                    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
                    let body = crate::kube::objects::approved(&raw, "SlipwayApprove", &format!("slipway: {why}"), &now);
                    match kube.put::<serde_json::Value>(&crate::kube::objects::approval_path(&name), &body).await {
                        Ok(_) => {
                            tracing::info!(%cluster, csr = %name, %node, "CSR approved");
                            let details = EventKind::CsrApproved {
                                cluster: cluster.clone(),
                                csr: name,
                                signer,
                                why,
                                approver: "slipway".into(),
                            };
                            let subject = Subject { node: node.parse().ok(), mac: None };
                            clusters.events.append(Source::Cluster, subject, details);
                        }
                        // Changed meanwhile (approved by someone else, or updated): the next
                        // look reads it again.
                        Err(e) if e.is_conflict() => {
                            tracing::debug!(%cluster, csr = %name, "CSR changed meanwhile; looking again")
                        }
                        Err(e) => tracing::warn!(%cluster, csr = %name, error = %e, "cannot approve the CSR"),
                    }
                }
                Verdict::Leave(why) => {
                    if lock(&self.told).insert(format!("{cluster}/{name}")) {
                        tracing::info!(%cluster, csr = %name, %why, "CSR left pending");
                        let details = EventKind::CsrLeft { cluster: cluster.clone(), csr: name, signer, why };
                        clusters.events.append(Source::Cluster, Subject::default(), details);
                    }
                }
            }
        }
    }

    /// Stores `next` if the stored record is still `current`, then tells of a stage change;
    /// whether it was stored.
    async fn save(
        &self,
        clusters: &Clusters,
        current: Option<&ClusterRecord>,
        next: ClusterRecord,
    ) -> Result<bool, ControlError> {
        let saved = clusters.put_lifecycle(next.cluster.as_str(), current.cloned(), next.clone()).await?;
        if saved {
            match current {
                Some(current) => self.tell(clusters, current, &next),
                None => {
                    tracing::info!(cluster = %next.cluster, stage = next.stage.as_str(), "cluster stage");
                    let details = EventKind::ClusterStage {
                        cluster: next.cluster.clone(),
                        from: "booting".into(),
                        stage: next.stage.as_str().into(),
                        error: None,
                    };
                    clusters.events.append(Source::Cluster, Subject::default(), details);
                }
            }
        }
        Ok(saved)
    }

    fn tell(&self, clusters: &Clusters, current: &ClusterRecord, next: &ClusterRecord) {
        if next.stage == current.stage {
            return;
        }
        match &next.error {
            Some(error) if next.stage == Stage::Failed => {
                tracing::warn!(cluster = %next.cluster, stage = "failed", %error, "cluster failed")
            }
            _ => tracing::info!(cluster = %next.cluster, stage = next.stage.as_str(), "cluster stage"),
        }
        let details = EventKind::ClusterStage {
            cluster: next.cluster.clone(),
            from: current.stage.as_str().into(),
            stage: next.stage.as_str().into(),
            error: next.error.clone().filter(|_| next.stage == Stage::Failed),
        };
        clusters.events.append(Source::Cluster, Subject::default(), details);
    }
}

/// The uploaded admin kubeconfig of cluster `name`.
async fn kubeconfig(clusters: &Clusters, name: &Name) -> Result<Vec<u8>, String> {
    let (dir, key) = (clusters.store.files(), name.to_string());
    let uploaded = tokio::task::spawn_blocking(move || crate::store::uploads::get_kubeconfig(&dir, &key))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read the kubeconfig: {e}"))?;
    uploaded
        .ok_or_else(|| format!("no admin kubeconfig uploaded (slipway cluster kubeconfig {name} -f auth/kubeconfig)"))
}

/// A client of the cluster's API at `api-int.<zone>`, reached at `connect`.
fn client(kubeconfig: &[u8], zone: &str, connect: SocketAddr) -> Result<Kube, String> {
    let config = crate::kube::config::parse(kubeconfig).map_err(|e| format!("the uploaded kubeconfig: {e}"))?;
    Kube::new(&config, &format!("https://api-int.{zone}:{API_PORT}"), Some(connect))
        .map_err(|e| format!("the uploaded kubeconfig: {e}"))
}

/// A client of an OKD cluster's API, for an operator's request.
pub(in crate::cluster) async fn connect(
    clusters: &Clusters,
    definition: &crate::cluster::Definition,
) -> Result<Kube, String> {
    let bytes = kubeconfig(clusters, &definition.name).await?;
    let zone = format!("{}.{}", definition.name, definition.base_domain);
    client(&bytes, &zone, SocketAddr::from((definition.api_int_address, API_PORT)))
}

/// A Node's name without the cluster's zone (a kubelet may register by FQDN).
fn short(name: &str) -> String {
    name.split('.').next().unwrap_or(name).to_owned()
}

/// The cluster's machines as the CSR checks see them: names, addresses, power-on.
pub(in crate::cluster) fn machines(clusters: &Clusters, nodes: &[NodeRecord], zone: &str) -> Vec<Machine> {
    let inv = clusters.store.snapshot();
    nodes
        .iter()
        .filter(|r| !r.is_leaving())
        .filter_map(|r| {
            // The bootstrap node never becomes a Node: nothing is approved in its name.
            let node = inv.nodes.get(&r.node).filter(|n| n.role != Some(Role::Bootstrap))?;
            let host = node.hostname.as_ref().unwrap_or(&node.name).to_string();
            let mut names = vec![node.name.to_string(), host.clone(), format!("{host}.{zone}")];
            names.dedup();
            Some(Machine { name: node.name.to_string(), names, ips: vec![node.ipv4.into()], started: r.powered_on })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_names_are_matched_without_the_zone() {
        assert_eq!(super::short("worker-0.prod.lab.example"), "worker-0");
        assert_eq!(super::short("worker-0"), "worker-0");
    }
}
