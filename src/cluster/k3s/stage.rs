//! A k3s cluster's stages once its first server runs, and the pure decisions of what comes next
//! and which node may join now:
//!
//! InitServer (the first server, `--cluster-init`: its `/cacerts` answers and matches the CA of
//! the kubeconfig read from it over SSH, and its Node is Ready) -> JoiningServers (one server at
//! a time: servers that join together fail — k3s#4335, rke2#869 — so the next one is let in
//! only once the one before is a Ready Node) -> JoiningAgents (all at once) ->
//! FetchingKubeconfig (the kubeconfig, pointed at the load balancer, answers there) -> Ready.
//! A stage that outlives its deadline fails the cluster with what was last seen; nothing is
//! destroyed, and `retry` resumes it.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::addons::progress::AddonProgress;
use crate::cluster::phase::Condition;
use crate::cluster::record::{Facts, Limits, StageRecord, Staged};
use crate::inventory::{Name, Timestamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = K3sStage)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    InitServer,
    JoiningServers,
    JoiningAgents,
    FetchingKubeconfig,
    ApplyingAddons,
    Ready,
    Failed,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::InitServer => "init-server",
            Stage::JoiningServers => "joining-servers",
            Stage::JoiningAgents => "joining-agents",
            Stage::FetchingKubeconfig => "fetching-kubeconfig",
            Stage::ApplyingAddons => "applying-addons",
            Stage::Ready => "ready",
            Stage::Failed => "failed",
        }
    }
}

/// How long each stage may last (JoiningServers: each server).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageLimits {
    #[serde(with = "crate::inventory::duration_text")]
    pub init: Duration,
    #[serde(with = "crate::inventory::duration_text")]
    pub server_join: Duration,
    #[serde(with = "crate::inventory::duration_text")]
    pub agent_join: Duration,
    #[serde(with = "crate::inventory::duration_text")]
    pub kubeconfig: Duration,
}

impl StageLimits {
    pub const DEFAULT: StageLimits = StageLimits {
        init: Duration::from_secs(15 * 60),
        server_join: Duration::from_secs(10 * 60),
        agent_join: Duration::from_secs(10 * 60),
        kubeconfig: Duration::from_secs(5 * 60),
    };

    /// A definition's `validation.phases`, the defaults where unset.
    pub fn from(t: &crate::cluster::definition::PhaseTimeouts) -> StageLimits {
        let d = StageLimits::DEFAULT;
        StageLimits {
            init: t.init.unwrap_or(d.init),
            server_join: t.server_join.unwrap_or(d.server_join),
            agent_join: t.agent_join.unwrap_or(d.agent_join),
            kubeconfig: t.kubeconfig.unwrap_or(d.kubeconfig),
        }
    }

    pub fn of(&self, stage: Stage) -> Option<Duration> {
        match stage {
            Stage::InitServer => Some(self.init),
            Stage::JoiningServers => Some(self.server_join),
            Stage::JoiningAgents => Some(self.agent_join),
            Stage::FetchingKubeconfig => Some(self.kubeconfig),
            // Each add-on set has its own deadline.
            Stage::ApplyingAddons | Stage::Ready | Stage::Failed => None,
        }
    }
}

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

/// One k3s cluster's lifecycle record, as stored (beside its nodes' records).
pub type K3sRecord = StageRecord<Stage, StageLimits, K3sFacts>;

/// What a k3s cluster's lifecycle has learnt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct K3sFacts {
    /// The server that initialised the cluster.
    pub init: Name,
    /// SHA-256 (hex) of the CA bundle: `/cacerts` as served, checked against the kubeconfig
    /// read over SSH. Joiners' secure token carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_hash: Option<String>,
    /// Servers that joined (Ready Nodes), in order, the first one included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<Name>,
    /// The server let in now (JoiningServers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joining: Option<Name>,
    /// Agents seen Ready (JoiningAgents): like joined servers, not handed the token again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ready_agents: Vec<Name>,
    /// Where the add-ons stand (ApplyingAddons).
    #[serde(default, skip_serializing_if = "AddonProgress::is_empty")]
    pub addons: AddonProgress,
}

impl Facts for K3sFacts {
    fn addons(&mut self) -> &mut AddonProgress {
        &mut self.addons
    }
}

impl K3sRecord {
    /// The first server runs: its API, CA and Node are waited for from now.
    pub fn start(cluster: Name, init: Name, limits: StageLimits, now: Timestamp) -> K3sRecord {
        let facts = K3sFacts {
            init,
            ca_hash: None,
            joined: Vec::new(),
            joining: None,
            ready_agents: Vec::new(),
            addons: AddonProgress::default(),
        };
        StageRecord::begin(cluster, Stage::InitServer, facts, limits, now)
    }
}

/// The cluster's nodes by role, servers in join order (the first initialises).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    pub servers: Vec<Name>,
    pub agents: Vec<Name>,
}

/// What one look showed; a stage fills what it needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Look {
    /// The CA bundle's SHA-256, once `/cacerts` matched the kubeconfig's CA; or why not yet.
    pub ca_hash: Option<Result<String, String>>,
    /// Ready Nodes by name, or why the API could not be read.
    pub ready: Option<Result<BTreeSet<String>, String>>,
    /// The stored kubeconfig answered through the load balancer (its `/version`), or why not.
    pub through_lb: Option<Result<String, String>>,
    /// The definition has add-ons: they are applied before the cluster is Ready.
    pub addons: bool,
}

/// The decision from one look: the record to store (a stage entered, a server let in, or what
/// was seen), or `None` when nothing changed.
pub fn next(record: &K3sRecord, members: &Members, look: &Look, now: Timestamp) -> Option<K3sRecord> {
    let mut seen = record.clone();
    for error in
        [&look.ca_hash.as_ref().and_then(|r| r.as_ref().err()), &look.ready.as_ref().and_then(|r| r.as_ref().err())]
            .into_iter()
            .flatten()
    {
        seen.error = Some((*error).clone());
    }
    let ready = |node: &Name| matches!(&look.ready, Some(Ok(r)) if r.contains(node.as_str()));
    let moved = |seen: &K3sRecord, stage: Stage, observed: String| {
        let mut next = seen.enter(stage, now);
        next.observed = Some(observed);
        next
    };
    // A server that took the slot after the servers' stage (added, reinstalled): joined once
    // Ready, which frees the slot for the next.
    if record.stage > Stage::JoiningServers
        && record.stage != Stage::Failed
        && let Some(joining) = &record.facts.joining
        && (ready(joining) || !members.servers.contains(joining))
    {
        if ready(joining) && !seen.facts.joined.contains(joining) {
            seen.facts.joined.push(joining.clone());
        }
        seen.facts.joining = None;
        seen.observed = Some(format!("{joining} joined"));
        return Some(seen);
    }
    let progress = match record.stage {
        Stage::InitServer => {
            if let Some(Ok(hash)) = &look.ca_hash {
                seen.facts.ca_hash = Some(hash.clone());
            }
            if seen.facts.ca_hash.is_some() && ready(&record.facts.init) {
                seen.facts.joined = vec![record.facts.init.clone()];
                Some(let_in(&seen, members, now, format!("{} initialised the cluster and is Ready", record.facts.init)))
            } else {
                if seen.facts.ca_hash.is_some() {
                    seen.observed = Some(format!("the CA is known; {} is not a Ready node yet", record.facts.init));
                }
                None
            }
        }
        Stage::JoiningServers => match &record.facts.joining {
            // Let in, then gone (retired, deleted): the next one.
            Some(joining) if !members.servers.contains(joining) => {
                seen.facts.joining = None;
                Some(let_in(&seen, members, now, format!("{joining} is no longer a server of the cluster")))
            }
            Some(joining) if ready(joining) => {
                seen.facts.joined.push(joining.clone());
                seen.facts.joining = None;
                Some(let_in(&seen, members, now, format!("{joining} joined and is Ready")))
            }
            Some(joining) => {
                seen.observed = Some(format!("{joining} is joining"));
                None
            }
            None => Some(let_in(&seen, members, now, "the next server".into())),
        },
        Stage::JoiningAgents => {
            for agent in members.agents.iter().filter(|a| ready(a)) {
                if !seen.facts.ready_agents.contains(agent) {
                    seen.facts.ready_agents.push(agent.clone());
                }
            }
            let waiting: Vec<&str> = members.agents.iter().filter(|a| !ready(a)).map(Name::as_str).collect();
            if waiting.is_empty() && matches!(look.ready, Some(Ok(_))) {
                Some(moved(&seen, Stage::FetchingKubeconfig, "every agent is a Ready node".into()))
            } else {
                seen.observed = Some(format!("not Ready yet: {}", waiting.join(", ")));
                None
            }
        }
        Stage::FetchingKubeconfig => match &look.through_lb {
            Some(Ok(version)) => Some(moved(
                &seen,
                if look.addons { Stage::ApplyingAddons } else { Stage::Ready },
                format!("the kubeconfig answers through the load balancer ({version})"),
            )),
            Some(Err(e)) => {
                seen.error = Some(e.clone());
                None
            }
            None => None,
        },
        // Add-ons are applied by their own driver (`addons::drive`).
        Stage::ApplyingAddons | Stage::Ready | Stage::Failed => None,
    };
    if progress.is_some() {
        return progress;
    }
    if record.deadline.is_some_and(|d| now > d) {
        let waited = match record.stage {
            Stage::InitServer if seen.facts.ca_hash.is_none() => {
                format!("{}'s /cacerts and kubeconfig were not read", record.facts.init)
            }
            Stage::InitServer => format!("{} did not become a Ready node", record.facts.init),
            Stage::JoiningServers => {
                format!("{} did not join", record.facts.joining.as_ref().map_or("the next server", Name::as_str))
            }
            Stage::JoiningAgents => "not every agent became a Ready node".to_owned(),
            _ => "the kubeconfig did not answer through the load balancer".to_owned(),
        };
        let limit = record.limits.of(record.stage).map(crate::inventory::types::format_duration).unwrap_or_default();
        let mut reason = format!("{waited} within {limit}");
        if let Some(observed) = &seen.observed {
            reason.push_str(&format!("; last seen: {observed}"));
        }
        if let Some(error) = &seen.error {
            reason.push_str(&format!("; last error: {error}"));
        }
        return Some(seen.fail(reason, now));
    }
    (seen != *record).then_some(seen)
}

/// The next server not joined yet, let in alone with a fresh deadline; with none left, the
/// agents.
fn let_in(seen: &K3sRecord, members: &Members, now: Timestamp, observed: String) -> K3sRecord {
    let waiting = members.servers.iter().find(|s| !seen.facts.joined.contains(s) && **s != seen.facts.init);
    let mut next = match waiting {
        Some(server) => {
            let mut next = seen.enter(Stage::JoiningServers, now);
            next.facts.joining = Some(server.clone());
            next
        }
        None => seen.enter(Stage::JoiningAgents, now),
    };
    next.observed = Some(observed);
    next
}

/// Which node may fetch its k3s config now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Turn {
    /// The first server: `cluster-init` with the cluster's password.
    Init,
    /// A server or agent joining through the fixed address, with the secure token for this
    /// CA hash.
    Join { ca_hash: String },
    /// Not yet (why, for the node's log and the event).
    Wait(String),
    /// A server added or reinstalled once the servers' stage is over: it may take the free slot
    /// (the caller claims it in the record first), then joins.
    Claim { ca_hash: String },
    /// It joined: its config (with the token) is not handed out again — a pod on the node
    /// shares its address. A reinstall lets it fetch again.
    Joined,
}

/// Whether `node` (a server when `server`) may fetch its k3s config now: the first server while
/// it initialises the cluster (a reboot fetches the same again); another server while it is the
/// one let in; agents from JoiningAgents on; none once it has joined (a node keeps the config it
/// has). A server not joined after the first server initialised waits for the slot — a
/// reinstalled first server never initialises a second cluster.
pub fn turn(record: Option<&K3sRecord>, members: &Members, node: &Name, server: bool) -> Turn {
    let init = members.servers.first();
    let Some(record) = record else {
        return match init {
            Some(first) if first == node => Turn::Init,
            _ => Turn::Wait(format!(
                "the first server ({}) has not initialised the cluster yet",
                init.map_or("none", Name::as_str)
            )),
        };
    };
    if record.facts.joined.contains(node) || record.facts.ready_agents.contains(node) {
        return Turn::Joined;
    }
    if *node == record.facts.init && record.reached() == Stage::InitServer {
        return Turn::Init;
    }
    let Some(ca_hash) = record.facts.ca_hash.clone() else {
        return Turn::Wait(format!("{} has not initialised the cluster yet", record.facts.init));
    };
    // A server added later joins once the cluster is Ready again (its join is followed from
    // Ready, not while add-ons are applied).
    if server && record.stage == Stage::ApplyingAddons && record.facts.joining.is_none() {
        return Turn::Wait("the cluster's add-ons are being applied".to_owned());
    }
    if server
        && record.facts.joining.is_none()
        && record.stage != Stage::Failed
        && record.reached() >= Stage::JoiningAgents
    {
        return Turn::Claim { ca_hash };
    }
    let admitted =
        if server { record.facts.joining.as_ref() == Some(node) } else { record.reached() >= Stage::JoiningAgents };
    if admitted {
        return Turn::Join { ca_hash };
    }
    let why = if server {
        match &record.facts.joining {
            Some(other) => format!("servers join one at a time: {other} is joining"),
            None => "servers join one at a time: waiting for its turn".to_owned(),
        }
    } else {
        "agents join once every server has joined".to_owned()
    };
    Turn::Wait(why)
}

/// A k3s cluster's conditions: `ServerInitialised`, `ServersJoined`, `AgentsJoined`,
/// `KubeconfigReady` (all False until its first server runs).
pub fn conditions(record: Option<&K3sRecord>) -> Vec<Condition> {
    let passed = |stage: Stage| record.is_some_and(|r| r.reached() > stage);
    let condition = |kind: &str, on: bool, yes: &str, no: &str| Condition {
        kind: kind.into(),
        status: if on { "True" } else { "False" }.into(),
        message: if on { yes } else { no }.into(),
    };
    vec![
        condition(
            "ServerInitialised",
            passed(Stage::InitServer),
            "the first server initialised the cluster and is Ready",
            "the first server has not initialised the cluster",
        ),
        condition("ServersJoined", passed(Stage::JoiningServers), "every server joined", "not every server joined"),
        condition("AgentsJoined", passed(Stage::JoiningAgents), "every agent joined", "not every agent joined"),
        condition(
            "KubeconfigReady",
            passed(Stage::FetchingKubeconfig),
            "the kubeconfig answers through the load balancer",
            "the kubeconfig is not ready",
        ),
    ]
    .into_iter()
    .chain(record.map(|r| r.facts.addons.conditions()).unwrap_or_default())
    .collect()
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
