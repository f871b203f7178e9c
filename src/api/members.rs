//! `GET /api/v1/cluster-members`: the instances sharing this one's state, who leads, and how
//! etcd is (each member's health, and how far this instance's copy is behind it).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::ApiState;
use crate::store::shared::Member;

/// The instances and their shared store.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterMembers {
    /// `local` (the embedded store: this instance alone) or `etcd`.
    pub backend: String,
    /// This instance's name.
    pub instance: String,
    /// The leading instance, if one leads.
    pub leader: Option<String>,
    /// The leader's term (the leader key's revision in etcd).
    pub term: Option<i64>,
    /// Whether this instance leads (allocates DHCP leases and runs the lifecycle engine).
    pub leading: bool,
    /// The running instances.
    pub members: Vec<Member>,
    /// Each etcd member, as it answers now.
    pub etcd: Vec<EtcdMember>,
    /// The newest revision an etcd member reports.
    pub revision: Option<i64>,
    /// The revision this instance's copy is current to.
    pub mirrored: Option<i64>,
    /// `revision - mirrored`: writes this instance has not seen yet.
    pub lag: Option<i64>,
}

/// One etcd member's health.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EtcdMember {
    pub endpoint: String,
    /// It answered and follows a leader.
    pub healthy: bool,
    pub version: Option<String>,
    pub revision: Option<i64>,
    /// Why it is not healthy.
    pub error: Option<String>,
}

/// The instances sharing this one's state, the leader, etcd's health and this instance's lag.
#[utoipa::path(get, path = "/api/v1/cluster-members", tag = "meta", responses((status = 200, body = ClusterMembers)))]
pub async fn members(State(s): State<ApiState>) -> Json<ClusterMembers> {
    let this = s.store.this();
    let Some(shared) = s.store.shared() else {
        let instance = this.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        return Json(ClusterMembers {
            backend: "local".into(),
            leader: Some(instance.clone()),
            instance,
            term: None,
            leading: true,
            members: this.into_iter().collect(),
            etcd: Vec::new(),
            revision: None,
            mirrored: None,
            lag: None,
        });
    };
    let mut etcd = Vec::new();
    for (endpoint, status) in shared.etcd().statuses().await {
        etcd.push(match status {
            Ok(st) if st.leader.0 != 0 && st.errors.is_empty() => EtcdMember {
                endpoint,
                healthy: true,
                version: Some(st.version),
                revision: Some(st.header.revision.0),
                error: None,
            },
            Ok(st) => EtcdMember {
                endpoint,
                healthy: false,
                version: Some(st.version),
                revision: Some(st.header.revision.0),
                error: Some(if st.leader.0 == 0 { "no leader (no quorum)".into() } else { st.errors.join("; ") }),
            },
            Err(e) => {
                EtcdMember { endpoint, healthy: false, version: None, revision: None, error: Some(e.to_string()) }
            }
        });
    }
    let revision = etcd.iter().filter(|m| m.healthy).filter_map(|m| m.revision).max();
    let mirrored = shared.revision();
    let leader = shared.leader();
    Json(ClusterMembers {
        backend: "etcd".into(),
        instance: shared.settings().instance.clone(),
        leading: s.store.term().is_some(),
        leader: leader.as_ref().map(|l| l.name.clone()),
        term: leader.map(|l| l.term),
        members: shared.members(),
        etcd,
        revision,
        mirrored: Some(mirrored),
        lag: revision.map(|r| (r - mirrored).max(0)),
    })
}
