//! What an operator decides by hand for an OKD cluster: its kubelet CSRs listed with slipway's
//! verdict on each, one approved by name (whatever the verdict: the operator's call, recorded
//! as such), the bootstrap node removed before slipway would (refused until etcd has let go
//! of it, unless forced), and its diagnostics read now.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::csr::{self, Verdict};
use super::drive;
use super::stage::{ClusterRecord, Stage};
use crate::cluster::control::{Clusters, ControlError, Stored, blocking};
use crate::cluster::phase::NodeRecord;
use crate::inventory::{ClusterKind, Name, Role, Timestamp};
use crate::kube::objects::{self, Csr, List, Node, WithConditions};
use crate::store::events::{EventKind, Source, Subject};
use crate::store::records::Records;

/// One CSR as `cluster csr list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CsrView {
    pub name: String,
    pub signer: String,
    /// Who filed it.
    pub requester: String,
    /// `metadata.creationTimestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// `pending`, `approved`, `denied` or `failed`.
    pub state: String,
    /// For a pending kubelet CSR: `approve` or `leave`, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

fn state(csr: &Csr) -> &'static str {
    let has = |kind: &str| csr.status.conditions.iter().any(|c| c.kind == kind && c.status == "True");
    if has("Approved") {
        "approved"
    } else if has("Denied") {
        "denied"
    } else if has("Failed") {
        "failed"
    } else {
        "pending"
    }
}

/// The stored definition of an OKD cluster and its nodes' records.
async fn okd(clusters: &Clusters, cluster: &str) -> Result<(Stored, Vec<NodeRecord>), ControlError> {
    let (stored, nodes) = clusters.read(cluster).await?;
    let stored = stored.ok_or_else(|| ControlError::NotFound(cluster.to_owned()))?;
    if stored.definition.kind != ClusterKind::Okd {
        return Err(ControlError::Busy(format!("cluster {cluster} is not an OKD cluster")));
    }
    Ok((stored, nodes))
}

fn upstream(e: impl std::fmt::Display) -> ControlError {
    ControlError::Upstream(format!("the cluster's API: {e}"))
}

/// Every CSR of the cluster, newest last, with slipway's verdict on the pending kubelet ones.
pub async fn list(clusters: &Clusters, cluster: &str) -> Result<Vec<CsrView>, ControlError> {
    let (stored, nodes) = okd(clusters, cluster).await?;
    let kube = drive::connect(clusters, &stored.definition).await.map_err(upstream)?;
    let csrs: List<Csr> =
        kube.get("/apis/certificates.k8s.io/v1/certificatesigningrequests").await.map_err(upstream)?;
    let registered: List<Node> = kube.get("/api/v1/nodes").await.map_err(upstream)?;
    let registered: BTreeSet<String> = registered.items.into_iter().map(|n| n.metadata.name).collect();
    let zone = format!("{}.{}", stored.definition.name, stored.definition.base_domain);
    let machines = drive::machines(clusters, &nodes, &zone);
    let mut out: Vec<CsrView> = csrs
        .items
        .iter()
        .map(|c| {
            let state = state(c);
            let kubelet = [csr::CLIENT_SIGNER, csr::SERVING_SIGNER].contains(&c.spec.signer_name.as_str());
            let verdict =
                (state == "pending" && kubelet).then(|| match csr::decide(c, &machines, &registered, &zone) {
                    Verdict::Approve { why, .. } => format!("approve: {why}"),
                    Verdict::Leave(why) => format!("leave: {why}"),
                });
            CsrView {
                name: c.metadata.name.clone(),
                signer: c.spec.signer_name.clone(),
                requester: c.spec.username.clone(),
                created: c.metadata.creation_timestamp.clone(),
                state: state.into(),
                verdict,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
    Ok(out)
}

/// Approves CSR `name` as the operator's decision (a pending one only).
pub async fn approve(clusters: &Clusters, cluster: &str, name: &str) -> Result<CsrView, ControlError> {
    let (stored, _) = okd(clusters, cluster).await?;
    let kube = drive::connect(clusters, &stored.definition).await.map_err(upstream)?;
    let path = format!("/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}");
    // A stale copy (409) is read again, a few times.
    for _ in 0..3 {
        let raw: serde_json::Value = match kube.get(&path).await {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => {
                return Err(ControlError::NotFound(format!("CSR {name} in cluster {cluster}")));
            }
            Err(e) => return Err(upstream(e)),
        };
        let csr: Csr = serde_json::from_value(raw.clone()).map_err(upstream)?;
        if !csr.pending() {
            return Err(ControlError::Busy(format!("CSR {name} is {} already", state(&csr))));
        }
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let body = objects::approved(&raw, "OperatorApprove", "approved by the operator through slipway", &now);
        match kube.put::<Csr>(&objects::approval_path(name), &body).await {
            Ok(done) => {
                let details = EventKind::CsrApproved {
                    cluster: stored.definition.name.clone(),
                    csr: name.to_owned(),
                    signer: csr.spec.signer_name.clone(),
                    why: "the operator's decision".into(),
                    approver: "operator".into(),
                };
                clusters.events.append(Source::Api, Subject::default(), details);
                tracing::info!(%cluster, csr = %name, "CSR approved by the operator");
                return Ok(CsrView {
                    name: name.to_owned(),
                    signer: done.spec.signer_name.clone(),
                    requester: done.spec.username.clone(),
                    created: done.metadata.creation_timestamp.clone(),
                    state: state(&done).into(),
                    verdict: None,
                });
            }
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(upstream(e)),
        }
    }
    Err(ControlError::Busy(format!("CSR {name} kept changing; try again")))
}

/// Starts removing the bootstrap node now. Refused until the etcd operator has removed the
/// bootstrap member (removing it earlier can break etcd's quorum), unless `force`.
pub async fn remove_bootstrap(clusters: &Clusters, cluster: &str, force: bool) -> Result<Vec<String>, ControlError> {
    let (stored, nodes) = okd(clusters, cluster).await?;
    let (store, key) = (clusters.store.clone(), cluster.to_owned());
    let record: Option<ClusterRecord> = blocking(move || store.record(Records::Lifecycle, &key)).await?;
    let record = record.ok_or_else(|| {
        ControlError::Busy(format!(
            "cluster {cluster}'s bootstrap node has not phoned home yet: there is nothing to hand over"
        ))
    })?;
    if record.facts.bootstrap_done || record.stage == Stage::RemovingBootstrap {
        return Err(ControlError::Busy(format!("cluster {cluster}'s bootstrap node is removed or being removed")));
    }
    if !force {
        let kube = drive::connect(clusters, &stored.definition).await.map_err(upstream)?;
        let etcd: Option<WithConditions> =
            kube.get_opt("/apis/operator.openshift.io/v1/etcds/cluster").await.map_err(upstream)?;
        if !etcd.is_some_and(|e| e.is("EtcdBootstrapMemberRemoved")) {
            return Err(ControlError::Busy(format!(
                "cluster {cluster}: etcd has not removed its bootstrap member yet (EtcdBootstrapMemberRemoved is not True): removing the bootstrap node now can break etcd's quorum; wait, or add --force"
            )));
        }
    }
    let inv = clusters.store.snapshot();
    let leaving: Vec<Name> = nodes
        .iter()
        .filter(|n| inv.nodes.get(&n.node).and_then(|node| node.role) == Some(Role::Bootstrap))
        .map(|n| n.node.clone())
        .collect();
    let mut next = record.enter(Stage::RemovingBootstrap, Timestamp::now());
    next.failed_in = None;
    next.observed = Some(if force { "removal forced by the operator" } else { "removal asked by the operator" }.into());
    let limits = crate::cluster::phase::Limits::from(&stored.definition.validation.phases);
    if !clusters.advance(&record, &next, &leaving, limits).await? {
        return Err(ControlError::Busy(format!(
            "cluster {cluster} moved on meanwhile; look at its status and try again"
        )));
    }
    tracing::warn!(%cluster, force, nodes = ?leaving, "bootstrap node removal asked by the operator");
    let details = EventKind::ClusterStage {
        cluster: stored.definition.name.clone(),
        from: record.stage.as_str().into(),
        stage: next.stage.as_str().into(),
        error: None,
    };
    clusters.events.append(Source::Api, Subject::default(), details);
    Ok(leaving.into_iter().map(|n| n.to_string()).collect())
}

/// The bootstrap node's diagnostics, read now over SSH (and recorded, as when a stage fails).
pub async fn gather(
    clusters: &Clusters,
    cluster: &str,
) -> Result<Vec<crate::store::events::CommandOutput>, ControlError> {
    let (stored, _) = okd(clusters, cluster).await?;
    use super::gather::GatherError;
    super::gather::gather(clusters, &stored.definition.name, "asked by the operator").await.map_err(|e| match e {
        GatherError::NoBootstrap(_) | GatherError::Untrusted(_) => ControlError::Busy(e.to_string()),
        GatherError::Failed(e) => ControlError::Upstream(format!("the bootstrap node: {e}")),
    })
}
