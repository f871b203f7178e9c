//! Node and cluster phases and the pure decision of what comes next.
//!
//! A node of a defined cluster goes Planned -> Creating -> Created -> PoweringOn -> Booting
//! (its first DHCP request) -> ConfigServed (its Ignition or cloud-init fetched) -> Installed
//! (its phone-home); a node slipway does not create (a listed one) starts at PoweringOn, waiting
//! for someone to power it on. A phase that outlives its deadline fails the node with what was
//! last seen; nothing is destroyed. Each record is stored before the step that needs it.
//!
//! A node leaves (scale-down, cluster delete) through Draining (out of the load balancers'
//! pools; a grace period for open connections) -> ShuttingDown (ACPI, then forced) -> Deleting
//! (the VM and its disks); then its reservation, names and record go in one transaction.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::definition::PhaseTimeouts;
use super::health::CheckResult;
use crate::hypervisor::VmSpec;
use crate::inventory::{Name, Timestamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Accepted; nothing done yet.
    Planned,
    /// The VM is being created (asked for; a restart asks again and finds it).
    Creating,
    /// The VM exists, stopped.
    Created,
    /// Power-on asked; waiting for the node's first DHCP request.
    PoweringOn,
    /// It asked for an address; waiting for its config to be fetched.
    Booting,
    /// Its Ignition or cloud-init was fetched; waiting for its phone-home.
    ConfigServed,
    /// It phoned home from the installed system.
    Installed,
    /// Being removed: out of the load balancers' pools, open connections get a grace period.
    Draining,
    /// Being removed: its VM is being shut down.
    ShuttingDown,
    /// Being removed: its VM is being deleted with its disks.
    Deleting,
    /// A deadline passed or a step kept failing; `retry` resumes it.
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Planned => "planned",
            Phase::Creating => "creating",
            Phase::Created => "created",
            Phase::PoweringOn => "powering-on",
            Phase::Booting => "booting",
            Phase::ConfigServed => "config-served",
            Phase::Installed => "installed",
            Phase::Draining => "draining",
            Phase::ShuttingDown => "shutting-down",
            Phase::Deleting => "deleting",
            Phase::Failed => "failed",
        }
    }

    /// One of the phases a node leaves through.
    pub fn is_removal(self) -> bool {
        matches!(self, Phase::Draining | Phase::ShuttingDown | Phase::Deleting)
    }

    /// Nothing more happens without an operator (or the next issue's lifecycle).
    pub fn is_settled(self) -> bool {
        matches!(self, Phase::Installed | Phase::Failed)
    }
}

/// The resolved limits of one node's phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(with = "crate::inventory::duration_text")]
    pub create: Duration,
    #[serde(with = "crate::inventory::duration_text")]
    pub boot: Duration,
    #[serde(with = "crate::inventory::duration_text")]
    pub config: Duration,
    #[serde(with = "crate::inventory::duration_text")]
    pub phone_home: Duration,
    #[serde(with = "crate::inventory::duration_text", default = "default_shutdown")]
    pub shutdown: Duration,
}

fn default_shutdown() -> Duration {
    PhaseTimeouts::DEFAULT_SHUTDOWN
}

impl Limits {
    pub fn from(t: &PhaseTimeouts) -> Limits {
        Limits {
            create: t.create.unwrap_or(PhaseTimeouts::DEFAULT_CREATE),
            boot: t.boot.unwrap_or(PhaseTimeouts::DEFAULT_BOOT),
            config: t.config.unwrap_or(PhaseTimeouts::DEFAULT_CONFIG),
            phone_home: t.phone_home.unwrap_or(PhaseTimeouts::DEFAULT_PHONE_HOME),
            shutdown: t.shutdown.unwrap_or(PhaseTimeouts::DEFAULT_SHUTDOWN),
        }
    }

    /// How long `phase` may last; `None` for phases without a deadline.
    pub fn of(&self, phase: Phase) -> Option<Duration> {
        match phase {
            Phase::Creating | Phase::Created | Phase::ShuttingDown | Phase::Deleting => Some(self.create),
            Phase::PoweringOn => Some(self.boot),
            Phase::Booting => Some(self.config),
            Phase::ConfigServed => Some(self.phone_home),
            Phase::Planned | Phase::Installed | Phase::Draining | Phase::Failed => None,
        }
    }
}

/// Where a node's VM is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmPlace {
    pub hypervisor: String,
    /// The Proxmox VMID or the local VM's directory.
    pub id: String,
    /// The Proxmox node; `local` for QEMU.
    pub host: String,
}

/// One node's provisioning record, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub cluster: Name,
    pub node: Name,
    pub phase: Phase,
    /// When the current phase began.
    pub since: Timestamp,
    /// When it fails unless it moved on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// When power-on was asked (boot observations count from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub powered_on: Option<Timestamp>,
    /// The last thing seen of the node (a boot step, the VM's state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    /// Why the last step failed (kept while it is retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The phase a failed node failed in (where `retry` resumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_in: Option<Phase>,
    /// The hypervisor that creates its VM; `None` for a listed node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VmSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmPlace>,
    pub limits: Limits,
    /// Power the VM off before powering it on (a retried boot: the firmware gave up on the
    /// network long ago).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub power_cycle: bool,
    /// Removed without touching its VM (`cluster delete --keep-vms`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_vm: bool,
}

impl NodeRecord {
    /// A node just accepted: a VM to make, or (listed) a machine to wait for.
    pub fn planned(
        cluster: Name,
        node: Name,
        hypervisor: Option<String>,
        spec: Option<VmSpec>,
        limits: Limits,
        now: Timestamp,
    ) -> NodeRecord {
        NodeRecord {
            cluster,
            node,
            phase: Phase::Planned,
            since: now,
            deadline: None,
            powered_on: None,
            observed: None,
            error: None,
            failed_in: None,
            hypervisor,
            spec,
            vm: None,
            limits,
            power_cycle: false,
            keep_vm: false,
        }
    }

    /// Leaving, or failed while leaving.
    pub fn is_leaving(&self) -> bool {
        self.phase.is_removal() || (self.phase == Phase::Failed && self.failed_in.is_some_and(Phase::is_removal))
    }

    /// The record moved to `phase` at `now`, with that phase's deadline.
    pub fn enter(&self, phase: Phase, now: Timestamp) -> NodeRecord {
        let mut next = self.clone();
        next.phase = phase;
        next.since = now;
        next.deadline = self.limits.of(phase).and_then(|d| now.0.checked_add(d)).map(Timestamp);
        next.error = None;
        if phase == Phase::PoweringOn {
            next.powered_on = Some(now);
        }
        next
    }

    /// The record failed in its current phase.
    pub fn fail(&self, reason: String, now: Timestamp) -> NodeRecord {
        let mut next = self.clone();
        next.failed_in = Some(self.phase);
        next.phase = Phase::Failed;
        next.since = now;
        next.deadline = None;
        next.error = Some(reason);
        next
    }

    /// A failed node back in the phase it failed in, with a fresh deadline.
    pub fn retried(&self, now: Timestamp) -> Option<NodeRecord> {
        let phase = self.failed_in.filter(|_| self.phase == Phase::Failed)?;
        let mut next = self.enter(phase, now);
        next.failed_in = None;
        if phase == Phase::PoweringOn {
            // Boot observations count from the retry: an old DHCP request is not this boot's;
            // and the VM boots again (its firmware gave up on the network long ago).
            next.powered_on = Some(now);
            next.power_cycle = self.spec.is_some();
        }
        Some(next)
    }
}

/// What the node did since it was powered on, from the event log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub dhcp: bool,
    pub config: bool,
    pub phone_home: bool,
    /// The latest boot step, as the node's timeline names it (for a failure's message).
    pub last: Option<String>,
}

/// What the engine does next for a node in a waiting phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Move on to this phase.
    Enter(Phase),
    /// The deadline passed: fail with this reason.
    Fail(String),
    /// Nothing yet.
    Wait,
}

/// The decision for a node waiting on its boot (PoweringOn, Booting, ConfigServed), from what
/// it did and the clock. Progress wins over the deadline (an event that arrived in time but was
/// read late still counts).
pub fn after_boot_events(record: &NodeRecord, seen: &Seen, now: Timestamp) -> Next {
    let reached = if seen.phone_home {
        Phase::Installed
    } else if seen.config {
        Phase::ConfigServed
    } else if seen.dhcp {
        Phase::Booting
    } else {
        Phase::PoweringOn
    };
    if reached > record.phase {
        return Next::Enter(reached);
    }
    match record.deadline {
        Some(deadline) if now > deadline => {
            let waited = match record.phase {
                Phase::PoweringOn => "no DHCP request from its MAC",
                Phase::Booting => "its Ignition / cloud-init was not fetched",
                _ => "no phone-home from the installed system",
            };
            let limit = record.limits.of(record.phase).map(crate::inventory::types::format_duration);
            let last = seen.last.as_deref().unwrap_or("nothing from it since power-on");
            let mut reason = format!("{waited} within {}; last seen: {last}", limit.unwrap_or_default());
            if let Some(error) = &record.error {
                reason.push_str(&format!("; last error: {error}"));
            }
            Next::Fail(reason)
        }
        _ => Next::Wait,
    }
}

/// A cluster's phase: `failed` if a node failed, `removing` while one leaves, else the least
/// advanced of its nodes', `empty` without nodes.
pub fn cluster_phase(nodes: &[Phase]) -> &'static str {
    if nodes.contains(&Phase::Failed) {
        return "failed";
    }
    if nodes.iter().any(|p| p.is_removal()) {
        return "removing";
    }
    nodes.iter().min().map_or("empty", |p| p.as_str())
}

/// One aspect of a cluster, Kubernetes style: `created` (every VM made), `booted` (every node
/// asked for its address), `installed` (every node phoned home), and `healthy` (every health
/// check passes; only with checks defined).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub message: String,
}

impl Condition {
    fn new(kind: &str, status: &str, message: String) -> Condition {
        Condition { kind: kind.into(), status: status.into(), message }
    }
}

/// The conditions of a cluster whose nodes (those not leaving) reached `reached` — each the
/// phase it is in, or for a failed one the phase it failed in — and whose health checks
/// (`checks` defined) last gave `results`.
pub fn conditions(reached: &[Phase], checks: usize, results: &[CheckResult]) -> Vec<Condition> {
    let total = reached.len();
    let count = |phase: Phase| reached.iter().filter(|p| **p >= phase).count();
    let share = |kind: &str, done: usize, what: &str| {
        let status = if done == total { "True" } else { "False" };
        Condition::new(kind, status, format!("{done}/{total} {what}"))
    };
    let mut out = vec![
        share("created", count(Phase::Created), "VMs made (or machines listed)"),
        share("booted", count(Phase::Booting), "nodes asked for their address"),
        share("installed", count(Phase::Installed), "nodes phoned home"),
    ];
    if checks > 0 {
        let installed = count(Phase::Installed) == total && total > 0;
        let failing: Vec<String> =
            results.iter().filter(|r| !r.ok).map(|r| format!("{}: {}", r.name, r.message)).collect();
        out.push(match (installed, results.len() == checks) {
            (false, _) => Condition::new("healthy", "Unknown", "checked once every node is installed".into()),
            (true, false) => Condition::new("healthy", "Unknown", "not checked yet".into()),
            (true, true) if failing.is_empty() => Condition::new("healthy", "True", format!("{checks} checks pass")),
            (true, true) => Condition::new("healthy", "False", failing.join("; ")),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::from(&PhaseTimeouts::default())
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_millis(1_800_000_000_000 + secs * 1000)
    }

    fn record(phase: Phase) -> NodeRecord {
        let planned = NodeRecord::planned(
            "prod".parse().expect("name"),
            "master-0".parse().expect("name"),
            None,
            None,
            limits(),
            at(0),
        );
        planned.enter(phase, at(0))
    }

    #[test]
    fn default_limits_are_the_documented_ones() {
        let l = limits();
        assert_eq!([l.create, l.boot, l.config, l.phone_home].map(|d| d.as_secs()), [600, 300, 900, 1800]);
        assert_eq!(record(Phase::PoweringOn).deadline, Some(at(300)));
        assert_eq!(record(Phase::Installed).deadline, None);
    }

    #[test]
    fn boot_events_move_the_node_on_even_past_its_deadline() {
        let r = record(Phase::PoweringOn);
        assert_eq!(after_boot_events(&r, &Seen::default(), at(10)), Next::Wait);
        let dhcp = Seen { dhcp: true, ..Seen::default() };
        assert_eq!(after_boot_events(&r, &dhcp, at(10)), Next::Enter(Phase::Booting));
        let all = Seen { dhcp: true, config: true, phone_home: true, last: None };
        assert_eq!(after_boot_events(&r, &all, at(10_000)), Next::Enter(Phase::Installed), "progress wins");
        let booting = record(Phase::Booting);
        assert_eq!(after_boot_events(&booting, &dhcp, at(10)), Next::Wait, "no step back");
    }

    #[test]
    fn a_passed_deadline_fails_with_what_was_waited_for_and_last_seen() {
        let r = record(Phase::PoweringOn);
        let Next::Fail(reason) = after_boot_events(&r, &Seen::default(), at(301)) else { panic!("fails") };
        assert_eq!(reason, "no DHCP request from its MAC within 5m; last seen: nothing from it since power-on");
        let seen = Seen { dhcp: true, last: Some("boot_script_served".into()), ..Seen::default() };
        let Next::Fail(reason) = after_boot_events(&r.enter(Phase::Booting, at(0)), &seen, at(901)) else {
            panic!("fails")
        };
        assert!(reason.ends_with("within 15m; last seen: boot_script_served"), "{reason}");
    }

    #[test]
    fn retry_resumes_the_failed_phase_with_a_fresh_deadline() {
        let failed = record(Phase::PoweringOn).fail("no DHCP".into(), at(301));
        assert_eq!((failed.phase, failed.failed_in), (Phase::Failed, Some(Phase::PoweringOn)));
        let again = failed.retried(at(1000)).expect("retry");
        assert_eq!(
            (again.phase, again.deadline, again.powered_on),
            (Phase::PoweringOn, Some(at(1300)), Some(at(1000)))
        );
        assert_eq!(again.error, None);
        assert!(record(Phase::Booting).retried(at(5)).is_none(), "only a failed node is retried");
    }

    #[test]
    fn the_cluster_phase_is_the_least_advanced_node_or_failed() {
        assert_eq!(cluster_phase(&[Phase::Installed, Phase::Booting]), "booting");
        assert_eq!(cluster_phase(&[Phase::Installed, Phase::Failed]), "failed");
        assert_eq!(cluster_phase(&[]), "empty");
    }

    #[test]
    fn conditions_count_nodes_by_the_phase_they_reached() {
        // One installed, one booting, one that failed while creating its VM.
        let found: Vec<(String, String, String)> =
            conditions(&[Phase::Installed, Phase::Booting, Phase::Creating], 0, &[])
                .into_iter()
                .map(|c| (c.kind, c.status, c.message))
                .collect();
        let want = [
            ("created", "False", "2/3 VMs made (or machines listed)"),
            ("booted", "False", "2/3 nodes asked for their address"),
            ("installed", "False", "1/3 nodes phoned home"),
        ];
        assert_eq!(found, want.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned())));
        let all = conditions(&[Phase::Installed, Phase::Installed], 0, &[]);
        assert!(all.iter().all(|c| c.status == "True"), "{all:?}");
    }

    #[test]
    fn healthy_waits_for_every_node_then_names_the_failing_checks() {
        let result = |name: &str, ok: bool| CheckResult {
            name: name.into(),
            ok,
            message: if ok { "connected".into() } else { "refused".into() },
            since: at(0),
        };
        let healthy = |nodes: &[Phase], results: &[CheckResult]| {
            let c = conditions(nodes, 2, results).pop().expect("healthy");
            (c.status, c.message)
        };
        let installed = [Phase::Installed, Phase::Installed];
        assert_eq!(healthy(&[Phase::Booting], &[]).0, "Unknown");
        assert_eq!(healthy(&installed, &[result("api", true)]).0, "Unknown", "one of two checked");
        assert_eq!(
            healthy(&installed, &[result("api", true), result("apps", true)]),
            ("True".into(), "2 checks pass".into())
        );
        assert_eq!(
            healthy(&installed, &[result("api", true), result("apps", false)]),
            ("False".into(), "apps: refused".into())
        );
        assert_eq!(conditions(&installed, 0, &[]).len(), 3, "no checks, no healthy condition");
    }
}
