//! A cluster's stage once its kind's lifecycle runs: OKD's or k3s's, as `status` shows it and
//! `wait --for` compares it. Both kinds end in `ready` or `failed`.

use serde::{Deserialize, Serialize};

use super::k3s::stage::Stage as K3s;
use super::okd::stage::Stage as Okd;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ClusterStage {
    Okd(Okd),
    K3s(K3s),
}

/// OKD's stages in order (`failed` aside).
const OKD: [Okd; 8] = [
    Okd::WaitingForApi,
    Okd::Bootstrapping,
    Okd::WaitingEtcdHandoff,
    Okd::RemovingBootstrap,
    Okd::JoiningWorkers,
    Okd::Finalizing,
    Okd::ApplyingAddons,
    Okd::Ready,
];
/// k3s's stages in order (`failed` aside).
const K3S: [K3s; 6] = [
    K3s::InitServer,
    K3s::JoiningServers,
    K3s::JoiningAgents,
    K3s::FetchingKubeconfig,
    K3s::ApplyingAddons,
    K3s::Ready,
];

impl ClusterStage {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterStage::Okd(s) => s.as_str(),
            ClusterStage::K3s(s) => s.as_str(),
        }
    }

    pub fn is_failed(self) -> bool {
        matches!(self, ClusterStage::Okd(Okd::Failed) | ClusterStage::K3s(K3s::Failed))
    }

    pub fn is_ready(self) -> bool {
        matches!(self, ClusterStage::Okd(Okd::Ready) | ClusterStage::K3s(K3s::Ready))
    }

    /// Whether this stage is `wanted` or past it (never when failed); `None` when `wanted`
    /// is no stage of this kind.
    pub fn reached(self, wanted: &str) -> Option<bool> {
        if wanted == "ready" {
            return Some(self.is_ready());
        }
        if self.is_ready() {
            // `ready` reads back as either kind's: every stage is behind it.
            return Self::names().contains(&wanted).then_some(true);
        }
        if self.is_failed() {
            // `failed` reads back as either kind's: any stage name counts as not reached.
            return Self::names().contains(&wanted).then_some(false);
        }
        let position = |name: &str| match self {
            ClusterStage::Okd(_) => OKD.iter().position(|s| s.as_str() == name),
            ClusterStage::K3s(_) => K3S.iter().position(|s| s.as_str() == name),
        };
        let wanted = position(wanted)?;
        Some(position(self.as_str()).is_some_and(|at| at >= wanted))
    }

    /// Every stage name of both kinds, in order (for messages).
    pub fn names() -> Vec<&'static str> {
        OKD.iter().map(|s| s.as_str()).chain(K3S.iter().map(|s| s.as_str())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_read_back_and_compare_within_their_kind() {
        let k3s = ClusterStage::K3s(K3s::JoiningAgents);
        assert_eq!(serde_json::to_string(&k3s).expect("json"), "\"joining-agents\"");
        assert_eq!(serde_json::from_str::<ClusterStage>("\"joining-agents\"").expect("back"), k3s);
        assert_eq!(k3s.reached("joining-servers"), Some(true));
        assert_eq!(k3s.reached("fetching-kubeconfig"), Some(false));
        assert_eq!(k3s.reached("bootstrapping"), None, "an OKD stage");
        let okd = ClusterStage::Okd(Okd::Finalizing);
        assert_eq!(okd.reached("joining-workers"), Some(true));
        assert_eq!(okd.reached("ready"), Some(false));
        // `ready` and `failed` read back as OKD's: the same meaning for either kind.
        let ready: ClusterStage = serde_json::from_str("\"ready\"").expect("ready");
        assert!(ready.is_ready() && ready.reached("ready") == Some(true));
        let failed: ClusterStage = serde_json::from_str("\"failed\"").expect("failed");
        assert!(failed.is_failed() && failed.reached("ready") == Some(false));
        assert_eq!(failed.reached("joining-servers"), Some(false));
        assert_eq!(ready.reached("joining-servers"), Some(true), "a k3s stage, behind a ready cluster");
        assert_eq!(failed.reached("no-such-stage"), None);
    }
}
