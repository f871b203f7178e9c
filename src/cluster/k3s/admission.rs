//! The lifecycle's answer to a k3s node asking for its config (`boot::k3s::Admission`): the
//! cluster's record says whose turn it is (`stage::turn`); the config carries the cluster's
//! password for the first server and the secure token for everyone else, the names and
//! addresses the API is reached at, and the node's labels and taints.

use super::stage::{self, K3sRecord, Members, Turn};
use super::token;
use crate::boot::cloudinit::WriteFile;
use crate::boot::k3s::{Admission, Answer, NodeSettings, Start};
use crate::cluster::addons::sets;
use crate::cluster::control::{Clusters, Stored, blocking};
use crate::inventory::{Cluster, ClusterKind, Inventory, Name, Node, Role, Timestamp};
use crate::store::events::{EventKind, Source, Subject};
use crate::store::records::Records;

/// The API port on the fixed registration address (`api_int_address`).
pub const API_PORT: u16 = 6443;

/// A k3s cluster's servers (the first initialises; the rest join in this order) and agents,
/// leaving nodes left out.
pub fn members(inv: &Inventory, cluster: &Name) -> Members {
    let of = |roles: &[Role]| -> Vec<Name> {
        inv.nodes
            .values()
            .filter(|n| n.cluster.as_ref() == Some(cluster) && !n.retiring)
            .filter(|n| n.role.is_some_and(|r| roles.contains(&r)))
            .map(|n| n.name.clone())
            .collect()
    };
    Members { servers: of(&[Role::ControlPlane]), agents: of(&[Role::Worker, Role::Infra]) }
}

/// Where the API is reached: `api` and `api-int` names and addresses (servers' certificates).
pub fn tls_san(cluster: &Cluster) -> Vec<String> {
    let zone = format!("{}.{}", cluster.name, cluster.base_domain);
    let mut names = vec![
        format!("api.{zone}"),
        format!("api-int.{zone}"),
        cluster.api_address.to_string(),
        cluster.api_int_address.to_string(),
    ];
    names.dedup();
    names
}

#[async_trait::async_trait]
impl Admission for Clusters {
    async fn config(&self, node: &Node) -> Result<Option<Answer>, String> {
        let inv = self.store.snapshot();
        let Some(cluster) =
            node.cluster.as_ref().and_then(|c| inv.clusters.get(c)).filter(|c| c.kind == ClusterKind::K3s)
        else {
            return Ok(None);
        };
        let (store, key) = (self.store.clone(), cluster.name.to_string());
        let record: Option<K3sRecord> =
            blocking(move || store.record(Records::Lifecycle, &key)).await.map_err(|e| e.to_string())?;
        let server = node.role == Some(Role::ControlPlane);
        // The CA hash a joiner's token carries; none for the first server.
        let join = match stage::turn(record.as_ref(), &members(&inv, &cluster.name), &node.name, server) {
            Turn::Wait(why) => return Ok(Some(Answer::Wait(why))),
            Turn::Joined => return Ok(Some(Answer::Joined)),
            Turn::Claim { ca_hash } => {
                // The slot is taken in the record first: of two servers asking, one joins.
                let Some(current) = record.clone() else {
                    return Ok(Some(Answer::Wait("the cluster changed meanwhile: ask again".into())));
                };
                let mut claimed = current.clone();
                claimed.facts.joining = Some(node.name.clone());
                claimed.observed = Some(format!("{} is joining", node.name));
                if !self
                    .put_lifecycle(cluster.name.as_str(), Some(current), claimed)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    return Ok(Some(Answer::Wait("another server took the slot: servers join one at a time".into())));
                }
                tracing::info!(cluster = %cluster.name, node = %node.name, "k3s: a server takes the join slot");
                Some(ca_hash)
            }
            Turn::Init => None,
            Turn::Join { ca_hash } => Some(ca_hash),
        };
        if join.is_none() && record.is_none() {
            // The first server starts k3s now: the cluster's stages start with it.
            let (store, key) = (self.store.clone(), cluster.name.to_string());
            let stored: Option<Stored> =
                blocking(move || store.record(Records::Definitions, &key)).await.map_err(|e| e.to_string())?;
            // Only a defined cluster (not being deleted) is started: its stages follow it.
            let Some(stored) = stored.filter(|s| s.deleting.is_none()) else {
                return Ok(Some(Answer::Wait(format!(
                    "cluster {} is not a defined cluster slipway drives (or it is being deleted)",
                    cluster.name
                ))));
            };
            let limits = stage::StageLimits::from(&stored.definition.validation.phases);
            let start = K3sRecord::start(cluster.name.clone(), node.name.clone(), limits, Timestamp::now());
            if !self.put_lifecycle(cluster.name.as_str(), None, start).await.map_err(|e| e.to_string())? {
                // Started meanwhile, or deleted: the next ask sees which.
                return Ok(Some(Answer::Wait("the cluster changed meanwhile: ask again".into())));
            }
            tracing::info!(cluster = %cluster.name, init = %node.name, "k3s: the first server starts the cluster");
            let details = EventKind::ClusterStage {
                cluster: cluster.name.clone(),
                from: "installing".into(),
                stage: stage::Stage::InitServer.as_str().into(),
                error: None,
            };
            self.events.append(Source::Cluster, Subject::default(), details);
        }
        let (dir, key, first) = (self.store.files(), cluster.name.to_string(), join.is_none());
        let token = tokio::task::spawn_blocking(move || match first {
            true => token::get_or_make(&dir, &key).map(Some),
            false => token::existing(&dir, &key),
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("cluster {} has no token: its first server never fetched its config", cluster.name))?;
        let settings = NodeSettings {
            node_name: node.name.to_string(),
            node_ip: node.ipv4.to_string(),
            tls_san: tls_san(cluster),
            labels: node.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            taints: node.taints.clone(),
        };
        let server_url = format!("https://{}:{API_PORT}", cluster.api_int_address);
        let body = match join {
            None => crate::boot::k3s::render(&Start::Init { password: token.password() }, &settings),
            Some(ca_hash) => {
                let secure = token.secure_with_hash(&ca_hash);
                let start = match server {
                    true => Start::Server { server: &server_url, token: &secure },
                    false => Start::Agent { server: &server_url, token: &secure },
                };
                crate::boot::k3s::render(&start, &settings)
            }
        };
        Ok(Some(Answer::Config(body)))
    }

    async fn install_files(&self, node: &Node) -> Result<Vec<WriteFile>, String> {
        let inv = self.store.snapshot();
        let Some(cluster) =
            node.cluster.as_ref().and_then(|c| inv.clusters.get(c)).filter(|c| c.kind == ClusterKind::K3s)
        else {
            return Ok(Vec::new());
        };
        if node.role != Some(Role::ControlPlane) {
            return Ok(Vec::new());
        }
        let (store, key) = (self.store.clone(), cluster.name.to_string());
        let (record, stored) = blocking(move || {
            let record: Option<K3sRecord> = store.record(Records::Lifecycle, &key)?;
            let stored: Option<Stored> = store.record(Records::Definitions, &key)?;
            Ok((record, stored))
        })
        .await
        .map_err(|e| e.to_string())?;
        // The first server: the one that initialised the cluster, or the one that will.
        let first = match &record {
            Some(r) => Some(r.facts.init.clone()),
            None => members(&inv, &cluster.name).servers.first().cloned(),
        };
        let Some(stored) = stored.filter(|_| first.as_ref() == Some(&node.name)) else {
            return Ok(Vec::new());
        };
        let (images, def) = (self.images.clone(), stored.definition);
        tokio::task::spawn_blocking(move || sets::install_files(&def, &images))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|p| format!("add-ons: {} = {}: {}", p.field, p.value, p.message))
    }
}
