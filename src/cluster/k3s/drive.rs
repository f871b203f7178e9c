//! The adapter that drives a k3s cluster's stages once its first server has started k3s (its
//! record is made when that server fetches its config): every few seconds it looks at what the
//! stage needs, lets `stage::next` decide, and stores the record it moves to (compare-and-set,
//! so a restart resumes from the stored record and deadline).
//!
//! - InitServer: the first server's kubeconfig, read over SSH (user `slipway`, `sudo`; its host
//!   key pinned), and its `/cacerts`, fetched over TLS verified against that kubeconfig's CA,
//!   must hold the same CA: then the bundle's SHA-256 goes into every joiner's token, and the
//!   kubeconfig, pointed at `https://api.<zone>:6443`, is stored for the operator.
//! - Then the cluster's Ready Nodes, read from the first server's API with that kubeconfig.
//! - FetchingKubeconfig: the stored kubeconfig answers `/version` through the load balancer
//!   (`api.<zone>` at `api_address`), as the operator will use it.
//!
//! A stage that fails has the node it waited for read over SSH (its k3s journal and failed
//! units), kept as an event on that node.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::admission::{self, API_PORT};
use super::stage::{self, K3sRecord, Look, Stage};
use super::token;
use crate::boot::cloudinit::WriteFile;
use crate::cluster::addons::autodeploy::{self, Copied, Copier};
use crate::cluster::control::{Clusters, ControlError, Stored, blocking, lock};
use crate::inventory::{Cluster, ClusterKind, Name, Node, Timestamp};
use crate::kube::Kube;
use crate::kube::objects::{List, Version};
use crate::store::events::{CommandOutput, EventKind, Source, Subject};
use crate::store::records::Records;

/// How often a cluster is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(2);
/// Where k3s writes its admin kubeconfig.
pub const KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";
/// An SSH session's whole limit, and the most of a command's output kept.
const SSH_LIMIT: Duration = Duration::from_secs(30);
const SSH_CAP: usize = 1 << 20;
/// Kept of each diagnostics stream (its end): an event holds at most four of them.
const DIAGNOSTICS_CAP: usize = 32 * 1024;
/// What is read from a node whose stage failed.
pub const DIAGNOSTICS: [&str; 2] = [
    "sudo -n journalctl -b --no-pager -n 200 -u k3s.service -u k3s-agent.service -u slipway-k3s.service",
    "systemctl --failed --no-legend --plain",
];

#[derive(Debug, Default)]
pub struct Driver {
    looked: Mutex<HashMap<Name, tokio::time::Instant>>,
}

impl Driver {
    /// One step of a k3s cluster.
    pub async fn step(&self, clusters: &Clusters, stored: &Stored) -> Result<(), ControlError> {
        let name = stored.definition.name.clone();
        let inv = clusters.store.snapshot();
        let Some(cluster) = inv.clusters.get(&name).filter(|c| c.kind == ClusterKind::K3s).cloned() else {
            return Ok(());
        };
        let (store, key) = (clusters.store.clone(), name.to_string());
        let record: Option<K3sRecord> = blocking(move || store.record(Records::Lifecycle, &key)).await?;
        let Some(record) = record else { return Ok(()) };
        // Ready, a cluster is looked at only while a server added since joins.
        if record.stage == Stage::Failed || (record.stage == Stage::Ready && record.facts.joining.is_none()) {
            return Ok(());
        }
        {
            let mut looked = lock(&self.looked);
            if looked.get(&name).is_some_and(|at| at.elapsed() < LOOK_EVERY) {
                return Ok(());
            }
            looked.insert(name.clone(), tokio::time::Instant::now());
        }
        let members = admission::members(&inv, &name);
        let Some(init) = inv.nodes.get(&record.facts.init).cloned() else {
            let reason = format!("the first server {} is gone", record.facts.init);
            return self
                .save(clusters, &record, record.fail(reason, Timestamp::now()), record.facts.init.clone())
                .await;
        };
        if record.stage == Stage::ApplyingAddons {
            let base = format!("https://api-int.{}.{}:{API_PORT}", cluster.name, cluster.base_domain);
            let connect = SocketAddr::from((cluster.api_int_address, API_PORT));
            return match client(clusters, &cluster.name, &base, Some(connect)).await {
                Ok(kube) => {
                    let copier = FirstServer { clusters, cluster: &cluster, node: &init };
                    crate::cluster::addons::drive::step(clusters, &stored.definition, &record, &kube, Some(&copier))
                        .await
                }
                Err(why) => {
                    tracing::debug!(cluster = %name, %why, "add-ons wait for the cluster's API");
                    Ok(())
                }
            };
        }
        let mut look = Look { addons: !stored.definition.addons.is_empty(), ..Look::default() };
        match record.stage {
            Stage::InitServer => {
                if record.facts.ca_hash.is_none() {
                    look.ca_hash = Some(trust(clusters, &cluster, &init).await);
                }
                if record.facts.ca_hash.is_some() || matches!(look.ca_hash, Some(Ok(_))) {
                    look.ready = Some(ready(clusters, &cluster, &init, true).await);
                }
            }
            Stage::JoiningServers | Stage::JoiningAgents => {
                look.ready = Some(ready(clusters, &cluster, &init, false).await)
            }
            Stage::FetchingKubeconfig => look.through_lb = Some(through_lb(clusters, &cluster).await),
            Stage::ApplyingAddons | Stage::Ready | Stage::Failed => {}
        }
        if record.facts.joining.is_some() && look.ready.is_none() {
            look.ready = Some(ready(clusters, &cluster, &init, false).await);
        }
        match stage::next(&record, &members, &look, Timestamp::now()) {
            Some(next) => {
                // The node a failure waited for: the server let in, the first agent not Ready,
                // else the first server.
                let waited = record.facts.joining.clone().or_else(|| {
                    let ready = look.ready.as_ref().and_then(|r| r.as_ref().ok());
                    members
                        .agents
                        .iter()
                        .find(|a| ready.is_some_and(|r| !r.contains(a.as_str())))
                        .cloned()
                        .filter(|_| record.stage == Stage::JoiningAgents)
                });
                self.save(clusters, &record, next, waited.unwrap_or_else(|| record.facts.init.clone())).await
            }
            None => Ok(()),
        }
    }

    /// Stores `next` if the stored record is still `current`; tells of a stage change, and
    /// reads the node a failed stage waited for.
    async fn save(
        &self,
        clusters: &Clusters,
        current: &K3sRecord,
        next: K3sRecord,
        waited: Name,
    ) -> Result<(), ControlError> {
        let name = next.cluster.clone();
        if !clusters.put_lifecycle(name.as_str(), Some(current.clone()), next.clone()).await? {
            return Ok(());
        }
        if next.stage == current.stage && next.facts.joining == current.facts.joining {
            return Ok(());
        }
        match (&next.error, next.stage) {
            (Some(error), Stage::Failed) => tracing::warn!(cluster = %name, %error, "k3s cluster failed"),
            _ => {
                tracing::info!(cluster = %name, stage = next.stage.as_str(), joining = ?next.facts.joining, "k3s stage")
            }
        }
        if next.stage != current.stage {
            let details = EventKind::ClusterStage {
                cluster: name.clone(),
                from: current.stage.as_str().into(),
                stage: next.stage.as_str().into(),
                error: next.error.clone().filter(|_| next.stage == Stage::Failed),
            };
            clusters.events.append(Source::Cluster, Subject::default(), details);
        }
        if next.stage == Stage::Failed {
            // The node it waited for: the one joining, else the first server.
            let node = waited;
            let reason = format!("{} failed: {}", current.stage.as_str(), next.error.clone().unwrap_or_default());
            let clusters = clusters.clone();
            tokio::spawn(async move { diagnose(&clusters, &name, &node, &reason).await });
        }
        Ok(())
    }
}

/// The first server's CA, checked: its kubeconfig read over SSH and its `/cacerts` served over
/// TLS verified against that kubeconfig must hold the same certificates. Stores the kubeconfig
/// (pointed at the load balancer's `api` name) and returns the bundle's SHA-256.
async fn trust(clusters: &Clusters, cluster: &Cluster, init: &Node) -> Result<String, String> {
    let ran = ssh(clusters, cluster, init, &[&format!("sudo -n cat {KUBECONFIG}")], SSH_CAP).await?;
    let read = ran.first().ok_or("no answer")?;
    if read.status != Some(0) {
        return Err(format!(
            "reading {KUBECONFIG} on {} failed (exit {}): {}",
            init.name,
            read.status.map_or("none".into(), |s| s.to_string()),
            read.stderr.trim()
        ));
    }
    let text = read.stdout.as_bytes();
    let config = crate::kube::config::parse(text).map_err(|e| format!("{}'s {KUBECONFIG}: {e}", init.name))?;
    let direct = format!("https://{}:{API_PORT}", init.ipv4);
    let kube = Kube::new(&config, &direct, None).map_err(|e| e.to_string())?;
    let cacerts = kube.get_bytes("/cacerts").await.map_err(|e| e.to_string())?;
    if certificates(&cacerts) != certificates(&config.ca) || certificates(&cacerts).is_empty() {
        return Err(format!(
            "{direct}/cacerts serves a CA other than the one in {}'s {KUBECONFIG}: not trusted",
            init.name
        ));
    }
    let zone = format!("{}.{}", cluster.name, cluster.base_domain);
    let stored = pointed_at(text, &format!("https://api.{zone}:{API_PORT}"))?;
    let (dir, key) = (clusters.store.files(), cluster.name.to_string());
    tokio::task::spawn_blocking(move || crate::store::uploads::put_kubeconfig(&dir, &key, &stored))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot store the kubeconfig: {e}"))?;
    tracing::info!(cluster = %cluster.name, "k3s: the first server's CA checked, its kubeconfig stored");
    Ok(token::ca_hash(&cacerts))
}

/// The DER certificates in a PEM bundle.
fn certificates(pem: &[u8]) -> BTreeSet<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).map(|c| c.to_vec()).collect()
}

/// The kubeconfig with every cluster's `server` set to `server`.
fn pointed_at(kubeconfig: &[u8], server: &str) -> Result<Vec<u8>, String> {
    let mut doc: serde_norway::Value =
        serde_norway::from_slice(kubeconfig).map_err(|e| format!("the kubeconfig is not YAML: {e}"))?;
    let clusters = doc.get_mut("clusters").and_then(|c| c.as_sequence_mut()).ok_or("the kubeconfig has no clusters")?;
    for entry in clusters {
        if let Some(cluster) = entry.get_mut("cluster").and_then(|c| c.as_mapping_mut()) {
            cluster.insert("server".into(), server.into());
        }
    }
    serde_norway::to_string(&doc).map(String::into_bytes).map_err(|e| e.to_string())
}

/// The stored kubeconfig's client, reaching `base` (at `connect` if set).
async fn client(clusters: &Clusters, cluster: &Name, base: &str, connect: Option<SocketAddr>) -> Result<Kube, String> {
    let (dir, key) = (clusters.store.files(), cluster.to_string());
    let bytes = tokio::task::spawn_blocking(move || crate::store::uploads::get_kubeconfig(&dir, &key))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read the kubeconfig: {e}"))?
        .ok_or("no kubeconfig yet")?;
    let config = crate::kube::config::parse(&bytes).map_err(|e| e.to_string())?;
    Kube::new(&config, base, connect).map_err(|e| e.to_string())
}

/// The cluster's Ready Nodes: from the first server while it initialises, then through the
/// fixed registration address (`api-int`, any server), as the joiners reach it.
async fn ready(
    clusters: &Clusters,
    cluster: &Cluster,
    init: &Node,
    initialising: bool,
) -> Result<BTreeSet<String>, String> {
    let kube = if initialising {
        client(clusters, &cluster.name, &format!("https://{}:{API_PORT}", init.ipv4), None).await?
    } else {
        let base = format!("https://api-int.{}.{}:{API_PORT}", cluster.name, cluster.base_domain);
        client(clusters, &cluster.name, &base, Some(SocketAddr::from((cluster.api_int_address, API_PORT)))).await?
    };
    let nodes: List<crate::kube::objects::Node> = kube.get("/api/v1/nodes").await.map_err(|e| e.to_string())?;
    Ok(nodes.items.iter().filter(|n| n.ready()).map(|n| n.metadata.name.clone()).collect())
}

/// The stored kubeconfig as the operator uses it: `api.<zone>` through the load balancer.
async fn through_lb(clusters: &Clusters, cluster: &Cluster) -> Result<String, String> {
    let zone = format!("{}.{}", cluster.name, cluster.base_domain);
    let connect = SocketAddr::from((cluster.api_address, API_PORT));
    let kube = client(clusters, &cluster.name, &format!("https://api.{zone}:{API_PORT}"), Some(connect)).await?;
    let version: Version = kube.get("/version").await.map_err(|e| e.to_string())?;
    Ok(version.git_version)
}

/// Before a node of a k3s cluster is reinstalled: its Node object is deleted (k3s deletes the
/// node's password secret with it), or the reinstalled node would be refused ("Node password
/// rejected"). Nothing to do for a cluster without a kubeconfig yet; `Err` when the API cannot
/// be reached or refuses.
pub async fn forget_node(clusters: &Clusters, node: &Node) -> Result<(), String> {
    let inv = clusters.store.snapshot();
    let Some(cluster) = node.cluster.as_ref().and_then(|c| inv.clusters.get(c)).filter(|c| c.kind == ClusterKind::K3s)
    else {
        return Ok(());
    };
    let (dir, key) = (clusters.store.files(), cluster.name.to_string());
    let stored = tokio::task::spawn_blocking(move || crate::store::uploads::get_kubeconfig(&dir, &key))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if stored.is_none() {
        return Ok(());
    }
    let kube = client(
        clusters,
        &cluster.name,
        &format!("https://api-int.{}.{}:{API_PORT}", cluster.name, cluster.base_domain),
        Some(SocketAddr::from((cluster.api_int_address, API_PORT))),
    )
    .await?;
    kube.delete(&format!("/api/v1/nodes/{}", node.name)).await.map_err(|e| e.to_string())?;
    tracing::info!(cluster = %cluster.name, node = %node.name, "k3s: the node's Node object deleted before its reinstall");
    // It joins anew: handed its config again (a server through the join slot).
    for _ in 0..3 {
        let (store, key) = (clusters.store.clone(), cluster.name.to_string());
        let record: Option<K3sRecord> =
            blocking(move || store.record(Records::Lifecycle, &key)).await.map_err(|e| e.to_string())?;
        let Some(record) = record else { return Ok(()) };
        let mut next = record.clone();
        next.facts.joined.retain(|n| *n != node.name);
        next.facts.ready_agents.retain(|n| *n != node.name);
        if next == record
            || clusters.put_lifecycle(cluster.name.as_str(), Some(record), next).await.map_err(|e| e.to_string())?
        {
            return Ok(());
        }
    }
    Err("the cluster's record kept changing".into())
}

/// The first server's auto-deploy directory, over SSH: its copy of an `at_install` set's file
/// is compared by SHA-256 and written (whole, then renamed into place) when it differs.
struct FirstServer<'a> {
    clusters: &'a Clusters,
    cluster: &'a Cluster,
    node: &'a Node,
}

#[async_trait::async_trait]
impl Copier for FirstServer<'_> {
    async fn ensure(&self, file: &WriteFile) -> Result<Copied, String> {
        let sum = autodeploy::checksum(&file.content);
        let check = format!("sudo -n sha256sum '{}'", file.path);
        let ran = ssh(self.clusters, self.cluster, self.node, &[&check], 4096).await?;
        if ran.first().is_some_and(|r| r.status == Some(0) && r.stdout.starts_with(&sum)) {
            return Ok(Copied::Already);
        }
        let (dir, name) = file.path.rsplit_once('/').unwrap_or((autodeploy::DIRECTORY, &file.path));
        // Written beside it under a dot name (k3s skips dotfiles), then renamed: k3s never
        // reads half a file.
        let write = format!(
            "sudo -n sh -c 'umask 077 && mkdir -p {dir} && cat > {dir}/.{name}.part && mv -f {dir}/.{name}.part {dir}/{name}'"
        );
        let (target, key) = login(self.clusters, self.cluster, self.node).await?;
        let ran = crate::ssh::run_with_input(&target, key, &write, file.content.as_bytes(), SSH_LIMIT, 4096)
            .await
            .map_err(|e| e.to_string())?;
        match ran.status {
            Some(0) => {
                tracing::info!(cluster = %self.cluster.name, node = %self.node.name, path = %file.path, "k3s add-on file written");
                Ok(Copied::Written)
            }
            status => Err(format!(
                "writing {} ended with status {}: {}",
                file.path,
                status.map_or("none".to_owned(), |s| s.to_string()),
                ran.stderr.trim()
            )),
        }
    }

    fn server(&self) -> &str {
        self.node.name.as_str()
    }
}

/// Runs `commands` on `node` as user `slipway` with the cluster's key, its host key pinned.
async fn ssh(
    clusters: &Clusters,
    cluster: &Cluster,
    node: &Node,
    commands: &[&str],
    cap: usize,
) -> Result<Vec<crate::ssh::Ran>, String> {
    let (target, client) = login(clusters, cluster, node).await?;
    crate::ssh::run(&target, client, commands, SSH_LIMIT, cap).await.map_err(|e| e.to_string())
}

/// Whom to reach on `node` and with which key: user `slipway`, the cluster's key, the host key
/// slipway made for the node.
async fn login(
    clusters: &Clusters,
    cluster: &Cluster,
    node: &Node,
) -> Result<(crate::ssh::Target, Arc<russh::keys::PrivateKey>), String> {
    let (dir, key, name) = (clusters.store.files(), cluster.name.to_string(), node.name.to_string());
    let keys = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::ssh::keys::KeyError>((
            crate::ssh::keys::existing_client(&dir, &key)?,
            crate::ssh::keys::pinned(&dir, &key, &name)?,
        ))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let (Some(client), Some(host_key)) = keys else {
        return Err(format!(
            "{} was never served a cloud-init config carrying slipway's SSH access (its template sets users or ssh_keys: see its config_additions_left_out event): slipway does not log in to it",
            node.name
        ));
    };
    let target = crate::ssh::Target {
        node: node.name.to_string(),
        addr: SocketAddr::from((node.ipv4, crate::ssh::PORT)),
        user: crate::boot::cloudinit::USER.to_owned(),
        host_key,
    };
    Ok((target, Arc::new(client)))
}

/// Reads a node's k3s journal and failed units over SSH and keeps them as an event on it.
async fn diagnose(clusters: &Clusters, cluster: &Name, node: &Name, reason: &str) {
    let inv = clusters.store.snapshot();
    let (Some(found), Some(c)) = (inv.nodes.get(node), inv.clusters.get(cluster)) else { return };
    let outcome = ssh(clusters, c, found, &DIAGNOSTICS, DIAGNOSTICS_CAP)
        .await
        .map(|ran| ran.into_iter().map(CommandOutput::from).collect::<Vec<_>>());
    let details = EventKind::NodeDiagnostics {
        cluster: cluster.clone(),
        reason: reason.to_owned(),
        commands: outcome.clone().unwrap_or_default(),
        error: outcome.as_ref().err().cloned(),
    };
    if let Err(error) = &outcome {
        tracing::warn!(%cluster, %node, %error, "no diagnostics from the node");
    }
    clusters.events.append(Source::Cluster, Subject { node: Some(node.clone()), mac: Some(found.mac) }, details);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kubeconfig_is_pointed_at_the_load_balancer_and_nothing_else_changes() {
        let k3s = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {}\nusers:\n- name: default\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n";
        let out = super::pointed_at(k3s.as_bytes(), "https://api.edge.lab.example:6443").expect("rewritten");
        let doc: serde_norway::Value = serde_norway::from_slice(&out).expect("YAML");
        assert_eq!(doc["clusters"][0]["cluster"]["server"].as_str(), Some("https://api.edge.lab.example:6443"));
        assert_eq!(doc["clusters"][0]["cluster"]["certificate-authority-data"].as_str(), Some("Q0E="));
        assert_eq!(doc["users"][0]["user"]["client-key-data"].as_str(), Some("S0VZ"));
        assert!(super::pointed_at(b"kind: Config\n", "https://x").is_err());
    }
}
