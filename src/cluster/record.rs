//! The record each cluster kind's lifecycle keeps (OKD's, k3s's): the stage it is in, since
//! when, the stage's deadline, the last thing seen, the last error and the stage it failed in,
//! with the kind's own facts beside them. Entering, failing and retrying a stage mean the same
//! for every kind, so they live here once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::inventory::{Name, Timestamp};

/// A kind's stages: the failed one, the one add-ons are applied in, and the last one.
pub trait Staged: Copy + PartialEq {
    const FAILED: Self;
    const APPLYING_ADDONS: Self;
    const READY: Self;
    fn name(self) -> &'static str;
}

/// How long each of a kind's stages may last (`None`: no deadline).
pub trait Limits<S>: Copy {
    fn of(&self, stage: S) -> Option<Duration>;
}

/// A kind's own facts; `entered` forgets what held for one stage only. Every kind keeps where
/// its add-ons stand.
pub trait Facts: Clone {
    fn entered(&mut self) {}
    fn addons(&mut self) -> &mut crate::cluster::addons::progress::AddonProgress;
}

/// One cluster's lifecycle record, as stored (the kind's facts flattened beside the stage).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de>, L: Deserialize<'de>, F: Deserialize<'de>"))]
pub struct StageRecord<S, L, F> {
    pub cluster: Name,
    pub stage: S,
    /// When the current stage began.
    pub since: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// The last thing seen of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    /// Why the last look failed, or why the cluster failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_in: Option<S>,
    #[serde(flatten)]
    pub facts: F,
    pub limits: L,
}

impl<S: Staged, L: Limits<S>, F: Facts> StageRecord<S, L, F> {
    /// A record in `stage` from `now`, with that stage's deadline.
    pub fn begin(cluster: Name, stage: S, facts: F, limits: L, now: Timestamp) -> Self {
        let record = StageRecord {
            cluster,
            stage,
            since: now,
            deadline: None,
            observed: None,
            error: None,
            failed_in: None,
            facts,
            limits,
        };
        record.enter(stage, now)
    }

    pub fn enter(&self, stage: S, now: Timestamp) -> Self {
        let mut next = self.clone();
        next.stage = stage;
        next.since = now;
        next.deadline = self.limits.of(stage).and_then(|d| now.0.checked_add(d)).map(Timestamp);
        next.error = None;
        next.facts.entered();
        next
    }

    pub fn fail(&self, reason: String, now: Timestamp) -> Self {
        let mut next = self.clone();
        next.failed_in = Some(self.stage);
        next.stage = S::FAILED;
        next.since = now;
        next.deadline = None;
        next.error = Some(reason);
        next
    }

    /// A failed cluster back in the stage it failed in, with a fresh deadline under `limits`
    /// (the definition's now: they may have been raised).
    pub fn retried(&self, limits: L, now: Timestamp) -> Option<Self> {
        let stage = self.failed_in.filter(|_| self.stage == S::FAILED)?;
        let mut next = StageRecord { limits, ..self.clone() }.enter(stage, now);
        next.failed_in = None;
        let addons = next.facts.addons().retried();
        *next.facts.addons() = addons;
        Some(next)
    }

    /// The stage it is in, or failed in.
    pub fn reached(&self) -> S {
        self.failed_in.unwrap_or(self.stage)
    }
}
