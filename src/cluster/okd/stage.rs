//! An OKD cluster's stages once its bootstrap node runs, and the pure decision of what comes
//! next, from one look at its Kubernetes API — the checks `openshift-install wait-for
//! bootstrap-complete` and `wait-for install-complete` make:
//!
//! WaitingForApi (`GET /version` answers) -> Bootstrapping (ConfigMap `kube-system/bootstrap`
//! has `status: complete`) -> WaitingEtcdHandoff (`etcds/cluster` has
//! `EtcdBootstrapMemberRemoved=True`: removing the bootstrap earlier can break etcd's quorum)
//! -> RemovingBootstrap (the bootstrap node leaves like a scaled-down node: out of the pools,
//! shut down, deleted) -> JoiningWorkers (every master and worker a Ready Node) -> Finalizing
//! (ClusterVersion Available, not Progressing, not Failing; every ClusterOperator Available,
//! not Degraded, and not Progressing for 30 s) -> Ready. A stage that outlives its deadline
//! fails the cluster with what was last seen; nothing is destroyed, and `retry` resumes it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::addons::progress::AddonProgress;
use crate::cluster::phase::Condition;
use crate::cluster::record::{Facts, Limits, StageRecord, Staged};
use crate::inventory::{Name, Timestamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = OkdStage)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    WaitingForApi,
    Bootstrapping,
    WaitingEtcdHandoff,
    RemovingBootstrap,
    JoiningWorkers,
    Finalizing,
    ApplyingAddons,
    Ready,
    Failed,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::WaitingForApi => "waiting-for-api",
            Stage::Bootstrapping => "bootstrapping",
            Stage::WaitingEtcdHandoff => "waiting-etcd-handoff",
            Stage::RemovingBootstrap => "removing-bootstrap",
            Stage::JoiningWorkers => "joining-workers",
            Stage::Finalizing => "finalizing",
            Stage::ApplyingAddons => "applying-addons",
            Stage::Ready => "ready",
            Stage::Failed => "failed",
        }
    }
}

/// How long each stage may last (the installer's own limits by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageLimits {
    #[serde(with = "crate::inventory::duration_text")]
    pub api: Duration,
    #[serde(with = "crate::inventory::duration_text")]
    pub bootstrap: Duration,
    #[serde(with = "crate::inventory::duration_text")]
    pub etcd_handoff: Duration,
    #[serde(with = "crate::inventory::duration_text")]
    pub remove_bootstrap: Duration,
    #[serde(with = "crate::inventory::duration_text")]
    pub join: Duration,
    #[serde(with = "crate::inventory::duration_text")]
    pub finalize: Duration,
}

impl StageLimits {
    /// `wait-for bootstrap-complete`: API 20 min, bootstrap 60 min (bare metal); the etcd
    /// handoff and removal 15 min; workers 60 min; `wait-for install-complete` 60 min.
    pub const DEFAULT: StageLimits = StageLimits {
        api: Duration::from_secs(20 * 60),
        bootstrap: Duration::from_secs(60 * 60),
        etcd_handoff: Duration::from_secs(15 * 60),
        remove_bootstrap: Duration::from_secs(15 * 60),
        join: Duration::from_secs(60 * 60),
        finalize: Duration::from_secs(60 * 60),
    };

    /// A definition's `validation.phases`, the installer's limits where unset.
    pub fn from(t: &crate::cluster::definition::PhaseTimeouts) -> StageLimits {
        let d = StageLimits::DEFAULT;
        StageLimits {
            api: t.api.unwrap_or(d.api),
            bootstrap: t.bootstrap.unwrap_or(d.bootstrap),
            etcd_handoff: t.etcd_handoff.unwrap_or(d.etcd_handoff),
            remove_bootstrap: t.remove_bootstrap.unwrap_or(d.remove_bootstrap),
            join: t.join.unwrap_or(d.join),
            finalize: t.finalize.unwrap_or(d.finalize),
        }
    }

    pub fn of(&self, stage: Stage) -> Option<Duration> {
        match stage {
            Stage::WaitingForApi => Some(self.api),
            Stage::Bootstrapping => Some(self.bootstrap),
            Stage::WaitingEtcdHandoff => Some(self.etcd_handoff),
            Stage::RemovingBootstrap => Some(self.remove_bootstrap),
            Stage::JoiningWorkers => Some(self.join),
            Stage::Finalizing => Some(self.finalize),
            // Each add-on set has its own deadline.
            Stage::ApplyingAddons | Stage::Ready | Stage::Failed => None,
        }
    }
}

/// How long every ClusterOperator must stay settled before the install counts as complete
/// (the installer's `coStabilityThreshold`).
pub const STABLE_FOR: Duration = Duration::from_secs(30);

impl Staged for Stage {
    const FAILED: Stage = Stage::Failed;
    const APPLYING_ADDONS: Stage = Stage::ApplyingAddons;
    const READY: Stage = Stage::Ready;
    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl Limits<Stage> for StageLimits {
    fn of(&self, stage: Stage) -> Option<Duration> {
        StageLimits::of(self, stage)
    }
}

/// One OKD cluster's lifecycle record, as stored (beside its nodes' records).
pub type ClusterRecord = StageRecord<Stage, StageLimits, OkdFacts>;

/// What an OKD cluster's lifecycle has learnt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OkdFacts {
    /// When the API first answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_seen: Option<Timestamp>,
    /// Since when every ClusterOperator has been settled (Finalizing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_since: Option<Timestamp>,
    /// The bootstrap node is gone (or kept by `cleanup_after_boot = false`): it is not made again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bootstrap_done: bool,
    /// The bootstrap ConfigMap was seen complete (not so when an operator forced the removal
    /// earlier).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub complete_seen: bool,
    /// Where the add-ons stand (ApplyingAddons).
    #[serde(default, skip_serializing_if = "AddonProgress::is_empty")]
    pub addons: AddonProgress,
}

impl Facts for OkdFacts {
    /// Settling is counted within Finalizing only.
    fn entered(&mut self) {
        self.stable_since = None;
    }

    fn addons(&mut self) -> &mut AddonProgress {
        &mut self.addons
    }
}

impl ClusterRecord {
    /// The bootstrap node runs: the API is waited for from now.
    pub fn start(cluster: Name, limits: StageLimits, now: Timestamp) -> ClusterRecord {
        StageRecord::begin(cluster, Stage::WaitingForApi, OkdFacts::default(), limits, now)
    }
}

/// ClusterVersion `version`'s conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionSeen {
    pub available: bool,
    pub progressing: bool,
    pub failing: bool,
    /// Progressing's or Failing's message.
    pub message: String,
}

/// What one look at the API showed; a stage fills what it needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Look {
    /// `/version`'s gitVersion, or why it did not answer.
    pub api: Option<Result<String, String>>,
    pub bootstrap_complete: bool,
    pub etcd_bootstrap_removed: bool,
    /// Masters and workers that are not Ready Nodes yet.
    pub not_ready: Vec<String>,
    pub version: Option<VersionSeen>,
    /// ClusterOperators still Progressing or not Available, and Degraded ones (with why).
    pub unsettled: Vec<String>,
    pub degraded: Vec<String>,
    /// Bootstrap nodes still there (RemovingBootstrap waits for none).
    pub bootstrap_left: usize,
    /// The definition has add-ons: once installed, they are applied before the cluster is Ready.
    pub addons: bool,
}

/// What the engine does next for an OKD cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Store this record (a stage entered, or what was seen).
    Save(ClusterRecord),
    /// Start removing the bootstrap node(s), then store this record.
    RemoveBootstrap(ClusterRecord),
    /// Nothing changed.
    Wait,
}

/// The decision from one look. `cleanup`: the bootstrap node is to be removed (not kept by
/// `cleanup_after_boot = false`).
pub fn next(record: &ClusterRecord, look: &Look, cleanup: bool, now: Timestamp) -> Next {
    let mut seen = record.clone();
    if let Some(Ok(_)) = &look.api {
        seen.facts.api_seen.get_or_insert(now);
        seen.error = None;
    } else if let Some(Err(e)) = &look.api {
        seen.error = Some(e.clone());
    }
    let api_up = matches!(look.api, Some(Ok(_)));
    let moved = |seen: &ClusterRecord, stage: Stage, observed: String| {
        let mut next = seen.enter(stage, now);
        next.observed = Some(observed);
        next
    };
    let progress = match record.stage {
        Stage::WaitingForApi if api_up => {
            let version = look.api.clone().and_then(Result::ok).unwrap_or_default();
            Some(moved(&seen, Stage::Bootstrapping, format!("the API answers ({version})")))
        }
        Stage::Bootstrapping if look.bootstrap_complete => {
            let mut next = moved(&seen, Stage::WaitingEtcdHandoff, "bootstrap complete (kube-system/bootstrap)".into());
            next.facts.complete_seen = true;
            Some(next)
        }
        Stage::WaitingEtcdHandoff if look.etcd_bootstrap_removed => {
            let observed = "etcd removed its bootstrap member (EtcdBootstrapMemberRemoved)".to_owned();
            if cleanup {
                return Next::RemoveBootstrap(moved(&seen, Stage::RemovingBootstrap, observed));
            }
            let mut next = moved(
                &seen,
                Stage::JoiningWorkers,
                format!("{observed}; the bootstrap node is kept (cleanup_after_boot = false)"),
            );
            next.facts.bootstrap_done = true;
            Some(next)
        }
        Stage::RemovingBootstrap if look.bootstrap_left == 0 => {
            let mut next = moved(&seen, Stage::JoiningWorkers, "the bootstrap node is gone".into());
            next.facts.bootstrap_done = true;
            Some(next)
        }
        Stage::JoiningWorkers if api_up && look.not_ready.is_empty() => {
            Some(moved(&seen, Stage::Finalizing, "every master and worker is a Ready node".into()))
        }
        // What was not seen did not settle: the 30 s count from a look that saw it.
        Stage::Finalizing if !api_up => {
            seen.facts.stable_since = None;
            None
        }
        Stage::Finalizing => {
            let version = look.version.clone().unwrap_or_default();
            let settled = version.available
                && !version.progressing
                && !version.failing
                && look.unsettled.is_empty()
                && look.degraded.is_empty();
            if settled {
                let since = *seen.facts.stable_since.get_or_insert(now);
                if now.0 >= since.0 + STABLE_FOR {
                    let last = if look.addons { Stage::ApplyingAddons } else { Stage::Ready };
                    return Next::Save(moved(
                        &seen,
                        last,
                        "ClusterVersion Available; every operator settled for 30 s".into(),
                    ));
                }
                seen.observed = Some("ClusterVersion Available; operators settling".into());
            } else {
                seen.facts.stable_since = None;
                seen.observed = Some(finalizing(&version, look));
            }
            None
        }
        _ => None,
    };
    if let Some(next) = progress {
        return Next::Save(next);
    }
    // Waiting: fail past the deadline with what was waited for and last seen — but not a
    // cluster seen settled, waiting out its 30 s.
    let settling = record.stage == Stage::Finalizing && seen.facts.stable_since.is_some();
    if record.deadline.is_some_and(|d| now > d) && !settling {
        let waited = match record.stage {
            Stage::WaitingForApi => "the API did not answer /version".to_owned(),
            Stage::Bootstrapping => "the bootstrap did not complete (kube-system/bootstrap)".to_owned(),
            Stage::WaitingEtcdHandoff => "etcd did not remove its bootstrap member".to_owned(),
            Stage::RemovingBootstrap => format!("{} bootstrap node(s) not removed", look.bootstrap_left),
            Stage::JoiningWorkers if look.not_ready.is_empty() => {
                "not every master and worker became a Ready node".to_owned()
            }
            Stage::JoiningWorkers => format!("not Ready nodes: {}", look.not_ready.join(", ")),
            _ => "the install did not complete".to_owned(),
        };
        let limit = record.limits.of(record.stage).map(crate::inventory::types::format_duration).unwrap_or_default();
        let mut reason = format!("{waited} within {limit}");
        if let Some(observed) = &seen.observed {
            reason.push_str(&format!("; last seen: {observed}"));
        }
        if let Some(error) = &seen.error {
            reason.push_str(&format!("; last error: {error}"));
        }
        return Next::Save(seen.fail(reason, now));
    }
    if seen != *record { Next::Save(seen) } else { Next::Wait }
}

/// An OKD cluster's conditions: `APIReachable`, `BootstrapComplete`, `BootstrapRemoved`,
/// `NodesJoined`, `ClusterAvailable` (all False until its bootstrap node runs).
pub fn conditions(record: Option<&ClusterRecord>) -> Vec<Condition> {
    let passed = |stage: Stage| record.is_some_and(|r| r.failed_in.unwrap_or(r.stage) > stage);
    let condition = |kind: &str, on: bool, yes: &str, no: &str| Condition {
        kind: kind.into(),
        status: if on { "True" } else { "False" }.into(),
        message: if on { yes } else { no }.into(),
    };
    let api = record.and_then(|r| r.facts.api_seen).is_some();
    let removed = record.is_some_and(|r| r.facts.bootstrap_done);
    vec![
        condition("APIReachable", api, "the API answered /version", "the API has not answered yet"),
        condition(
            "BootstrapComplete",
            record.is_some_and(|r| r.facts.complete_seen),
            "kube-system/bootstrap is complete",
            "the bootstrap has not completed",
        ),
        condition(
            "BootstrapRemoved",
            removed,
            "the bootstrap node is done (removed, or kept by cleanup_after_boot = false)",
            "the bootstrap node is still part of the cluster",
        ),
        condition(
            "NodesJoined",
            passed(Stage::JoiningWorkers),
            "every master and worker is a Ready node",
            "not every master and worker is a Ready node",
        ),
        condition(
            "ClusterAvailable",
            passed(Stage::Finalizing),
            "ClusterVersion Available and every operator settled",
            "the install is not complete",
        ),
    ]
    .into_iter()
    .chain(record.map(|r| r.facts.addons.conditions()).unwrap_or_default())
    .collect()
}

/// What Finalizing still waits for.
fn finalizing(version: &VersionSeen, look: &Look) -> String {
    let mut parts = Vec::new();
    if !version.available || version.progressing || version.failing {
        let what = if version.failing {
            "Failing"
        } else if version.progressing {
            "Progressing"
        } else {
            "not Available"
        };
        parts.push(format!("ClusterVersion {what}: {}", version.message));
    }
    if !look.degraded.is_empty() {
        parts.push(format!("Degraded: {}", look.degraded.join("; ")));
    }
    if !look.unsettled.is_empty() {
        parts.push(format!("not settled: {}", look.unsettled.join(", ")));
    }
    parts.join("; ")
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
