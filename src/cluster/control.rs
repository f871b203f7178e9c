//! What the admin API asks of defined clusters: plan (a dry run), apply (the definition, the
//! cluster and its nodes' reservations and their first phase, in one transaction), status and
//! retry. Applies to clusters are serialised; the engine and these calls change a node's record
//! only under one lock, each checking the record is still the one it read.

use std::sync::Arc;

use serde::Serialize;

use super::definition::Definition;
use super::health::CheckResult;
use super::k3s::stage::K3sRecord;
use super::okd::stage::{ClusterRecord, Stage};
use super::phase::{Condition, Limits, NodeRecord, Phase, VmPlace, cluster_phase, conditions};
use super::plan::{Action, Facts, Plan, Problem, plan};
use super::stages::ClusterStage;
use crate::hypervisor::Hypervisor;
use crate::inventory::{ClusterKind, Name, Object, Op, Timestamp};
use crate::store::events::{EventKind, EventLog, Source, Subject};
use crate::store::records::{RecordWrite, Records};
use crate::store::{RecordsMark, Store, StoreError};

/// How long a plan waits for the hypervisor's hosts and VMs.
const FACTS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The defined clusters, for the API, the engine and the boot service (`Admission`).
#[derive(Clone)]
pub struct Clusters {
    pub(super) store: Store,
    pub(in crate::cluster) events: EventLog,
    pub(super) hypervisors: Vec<Arc<dyn Hypervisor>>,
    /// Held across plan and commit: one apply at a time.
    apply: Arc<tokio::sync::Mutex<()>>,
    /// The config file's cluster definitions (changed only by editing the file, and taken
    /// again on a reload; the engine applies each new set).
    pub(super) declared: Arc<tokio::sync::watch::Sender<Arc<Declared>>>,
    /// Each cluster's latest health check results (observations, not state: a restart checks
    /// again within seconds).
    pub(super) health: Arc<std::sync::Mutex<std::collections::HashMap<Name, Vec<CheckResult>>>>,
    /// The images directory, where add-on sets named by `image` are.
    pub(in crate::cluster) images: Arc<std::path::PathBuf>,
}

/// The cluster definitions a config file declares.
#[derive(Debug, Default)]
pub struct Declared {
    pub file: std::path::PathBuf,
    pub definitions: Vec<Definition>,
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clusters").field("hypervisors", &self.hypervisors.len()).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the definition has {} problem(s): {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
    #[error("{0}")]
    Busy(String),
    #[error("cluster {cluster} is defined in {}; change it there (the file is applied when slipway starts or reloads)", file.display())]
    Declared { cluster: String, file: std::path::PathBuf },
    #[error("no defined cluster {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store task failed: {0}")]
    Task(String),
    /// The cluster's own API did not answer as needed.
    #[error("{0}")]
    Upstream(String),
}

/// When the uploaded config for `role` was made, if it carries the installer's short-lived
/// certificates (bootstrap.ign does; the master and worker pointer configs carry only the
/// long-lived root CA and stay usable): its stored date, set from them at upload.
fn dated(
    files: &crate::store::files::Files,
    cluster: &str,
    role: crate::inventory::Role,
) -> std::io::Result<Option<std::time::SystemTime>> {
    let Some((text, made)) = crate::store::uploads::get(files, cluster, role)? else { return Ok(None) };
    let config: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    Ok(crate::boot::ignition::certs::short_lived(&config).map(|_| made))
}

/// How long an `openshift-install` config is good for, and when it is worth a warning.
const IGNITION_LIFE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);
const IGNITION_WARN: std::time::Duration = std::time::Duration::from_secs(20 * 60 * 60);

/// A definition as stored.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, Serialize)]
pub struct Stored {
    pub definition: Definition,
    pub applied: Timestamp,
    /// The cluster is being deleted (its nodes leave; then it and this record go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting: Option<Deletion>,
    /// From the config file: the API does not change it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub declared: bool,
    /// When `validation.timeout` last started counting again (a retry); else `applied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<Timestamp>,
}

impl Stored {
    /// When the cluster must be installed by, if its definition sets `validation.timeout`.
    pub fn deadline(&self) -> Option<Timestamp> {
        let timeout = self.definition.validation.timeout?;
        Some(Timestamp(self.clock.unwrap_or(self.applied).0 + timeout))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Serialize)]
pub struct Deletion {
    /// The VMs stay; only slipway's records of them go.
    pub keep_vms: bool,
}

/// A cluster's state for `status`.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = ClusterStatus)]
pub struct Status {
    pub cluster: String,
    /// The least advanced node's phase, `failed` if one failed, `removing` while one leaves,
    /// `empty` without nodes, `deleting` once a deleted cluster's last node went.
    pub phase: String,
    pub applied: Timestamp,
    /// Defined in the config file (changed there, not through the API).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub declared: bool,
    /// When every node must be installed by (`validation.timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    pub conditions: Vec<Condition>,
    /// The cluster's stage once its first node runs (OKD: the bootstrap node; k3s: the first
    /// server), and what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageStatus>,
    /// OKD: the uploaded Ignition configs, when each was made and when its certificates expire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignition: Vec<IgnitionStatus>,
    /// The health checks' latest results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// The definition's add-on sets, in order, with where each stands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addons: Vec<crate::cluster::addons::progress::AddonStatus>,
    pub nodes: Vec<NodeStatus>,
}

/// An uploaded `openshift-install` config, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct IgnitionStatus {
    /// `bootstrap`, `master` or `worker`.
    pub role: String,
    /// When it was made (its certificates' start), else when it was uploaded.
    pub made: Timestamp,
    /// When its certificates expire (24 h after it was made).
    pub expires: Timestamp,
}

/// A cluster's stage (OKD's or k3s's), as `status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StageStatus {
    pub stage: ClusterStage,
    pub since: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_in: Option<ClusterStage>,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    pub name: String,
    pub phase: Phase,
    pub since: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmPlace>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_in: Option<Phase>,
}

impl Clusters {
    pub fn new(store: &Store, events: &EventLog, hypervisors: Vec<Arc<dyn Hypervisor>>) -> Clusters {
        Clusters {
            store: store.clone(),
            events: events.clone(),
            hypervisors,
            apply: Arc::default(),
            declared: Arc::new(tokio::sync::watch::Sender::new(Arc::default())),
            health: Arc::default(),
            images: Arc::new(store.state_dir().join("images")),
        }
    }

    /// With the images directory add-on sets named by `image` are read from.
    /// These clusters over a fenced store (`Store::fenced`): for the lifecycle engine.
    pub fn fenced(&self) -> Clusters {
        let mut fenced = self.clone();
        fenced.store = self.store.fenced();
        fenced
    }

    pub fn with_images(mut self, images: std::path::PathBuf) -> Clusters {
        self.images = Arc::new(images);
        self
    }

    /// With the config file's cluster definitions, which the engine applies when it starts.
    pub fn with_declared(self, declared: Declared) -> Clusters {
        self.redeclare(declared);
        self
    }

    /// A reloaded config file's cluster definitions: the engine applies those new or changed
    /// and releases those taken out, as at start.
    pub fn redeclare(&self, declared: Declared) {
        self.declared.send_replace(Arc::new(declared));
    }

    /// What applying `definitions` against `inventory` (a reloaded config file's, after its
    /// objects went in) would refuse, each naming the definition. Placement on the hypervisors is
    /// left to the engine's apply (it asks them).
    pub fn check_declared(&self, definitions: &[Definition], inventory: &crate::inventory::Inventory) -> Vec<String> {
        let facts = self.names();
        let planned = definitions.iter().map(|d| (d, plan(d, inventory, &facts)));
        let refused = planned.filter_map(|(d, p)| p.err().map(|problems| (d, problems)));
        refused
            .flat_map(|(d, problems)| problems.into_iter().map(move |p| format!("cluster definition {}: {p}", d.name)))
            .collect()
    }

    /// The config file's definitions in force.
    pub(super) fn declared(&self) -> Arc<Declared> {
        self.declared.borrow().clone()
    }

    /// Refuses an API change to a definition the config file declares.
    fn writable(&self, cluster: &str) -> Result<(), ControlError> {
        let declared = self.declared();
        if declared.definitions.iter().any(|d| d.name.as_str() == cluster) {
            return Err(ControlError::Declared { cluster: cluster.to_owned(), file: declared.file.clone() });
        }
        Ok(())
    }

    /// The configured hypervisors' names (all a plan needs to order and allocate nodes).
    fn names(&self) -> Facts {
        Facts { hypervisors: self.hypervisors.iter().map(|h| h.name().to_owned()).collect(), ..Facts::default() }
    }

    /// What planning `definition` knows of the hypervisors: their names and, from the one that
    /// makes its VMs, that one's hosts and slipway's VMs on it. A hypervisor that does not
    /// answer (in `FACTS_TIMEOUT`) leaves placement unchecked, with a warning saying so: the
    /// engine retries its calls until each phase's deadline.
    async fn facts(&self, definition: &Definition) -> (Facts, Vec<String>) {
        let mut facts = self.names();
        let mut warnings = Vec::new();
        let wanted = definition.hypervisor.as_ref().filter(|_| definition.node_groups.iter().any(|g| g.count > 0));
        let Some(hypervisor) = wanted.and_then(|w| self.hypervisors.iter().find(|h| h.name() == w.as_str())) else {
            return (facts, warnings);
        };
        let read = async { Ok::<_, crate::hypervisor::Error>((hypervisor.hosts().await?, hypervisor.list().await?)) };
        match tokio::time::timeout(FACTS_TIMEOUT, read).await {
            Ok(Ok((hosts, vms))) => {
                facts.hosts = Some(hosts);
                facts.vms = vms;
            }
            Ok(Err(e)) => warnings.push(format!("placement not checked: {e}")),
            Err(_) => warnings.push(format!(
                "placement not checked: hypervisor {} did not answer within {}",
                hypervisor.name(),
                humantime::format_duration(FACTS_TIMEOUT)
            )),
        }
        (facts, warnings)
    }

    /// The plan of `definition` against the inventory and the hypervisor now; nothing is
    /// changed.
    pub async fn plan(&self, definition: &Definition) -> Result<Plan, ControlError> {
        let (facts, warnings) = self.facts(definition).await;
        let definition = &self.without_finished_bootstrap(definition).await?;
        let mut plan = plan(definition, &self.store.snapshot(), &facts).map_err(ControlError::Invalid)?;
        plan.warnings = warnings;
        // Every add-on set reads (a set that does not is refused now, not when the cluster is up).
        if !definition.addons.is_empty() {
            let (images, copy) = (self.images.clone(), definition.clone());
            if let Err(problem) = blocking(move || Ok(crate::cluster::addons::sets::read_sets(&copy, &images))).await? {
                return Err(ControlError::Invalid(vec![problem]));
            }
        }
        if definition.kind == crate::inventory::ClusterKind::Okd {
            let stale = self.ignition_age(definition, &plan).await?;
            plan.warnings.extend(stale);
        }
        Ok(plan)
    }

    /// New OKD nodes fetch the uploaded Ignition of their role: one whose short-lived
    /// certificates were made more than 24 h ago (expired) refuses the plan, past 20 h it is a
    /// warning.
    async fn ignition_age(&self, definition: &Definition, plan: &Plan) -> Result<Vec<String>, ControlError> {
        let mut roles: Vec<crate::inventory::Role> = Vec::new();
        for (p, _) in plan.nodes.iter().zip(&plan.changes).filter(|(_, c)| c.action == Action::Create) {
            let file = |r: crate::inventory::Role| crate::store::uploads::okd_name(r);
            if let Some(role) = p.node.role.filter(|r| !roles.iter().any(|k| file(*k) == file(*r))) {
                roles.push(role);
            }
        }
        let (dir, key) = (self.store.files(), definition.name.to_string());
        let made = tokio::task::spawn_blocking(move || {
            roles.into_iter().map(|role| Ok((role, dated(&dir, &key, role)?))).collect::<std::io::Result<Vec<_>>>()
        })
        .await
        .map_err(|e| ControlError::Task(e.to_string()))?
        .map_err(|e| ControlError::Task(format!("cannot read the uploaded Ignition: {e}")))?;
        let (mut problems, mut warnings) = (Vec::new(), Vec::new());
        for (role, made) in made {
            let Some(age) = made.and_then(|m| m.elapsed().ok()) else { continue };
            let (hours, file) =
                (age.as_secs() / 3600, format!("ignition/{}.ign", crate::store::uploads::okd_name(role)));
            if age > IGNITION_LIFE {
                problems.push(Problem {
                    field: file,
                    value: format!("made {hours} h ago"),
                    message: "its certificates expire 24 h after openshift-install made them: run create ignition-configs again and upload before new nodes boot".into(),
                });
            } else if age > IGNITION_WARN {
                let left = IGNITION_LIFE.saturating_sub(age).as_secs() / 60;
                warnings.push(format!("{file} was made {hours} h ago: its certificates expire in {left} min; new nodes must have joined by then"));
            }
        }
        if problems.is_empty() { Ok(warnings) } else { Err(ControlError::Invalid(problems)) }
    }

    /// `definition` with its bootstrap groups cut to the bootstrap nodes that still exist once
    /// the cluster's bootstrap has done its job (its removal started, or it was kept by
    /// `cleanup_after_boot = false`): a removed one is not made again, a kept one stays.
    async fn without_finished_bootstrap(&self, definition: &Definition) -> Result<Definition, ControlError> {
        if definition.kind != ClusterKind::Okd {
            return Ok(definition.clone());
        }
        let (store, key) = (self.store.clone(), definition.name.to_string());
        let record: Option<ClusterRecord> = blocking(move || store.record(Records::Lifecycle, &key)).await?;
        let mut definition = definition.clone();
        let done = record
            .is_some_and(|r| r.facts.bootstrap_done || r.failed_in.unwrap_or(r.stage) >= Stage::RemovingBootstrap);
        if done {
            let inv = self.store.snapshot();
            for g in definition.node_groups.iter_mut().filter(|g| g.role == crate::inventory::Role::Bootstrap) {
                let prefix = format!("{}-", g.name);
                let left = inv
                    .nodes
                    .values()
                    .filter(|n| n.cluster.as_ref() == Some(&definition.name) && n.name.as_str().starts_with(&prefix))
                    .count();
                g.count = u32::try_from(left).unwrap_or(0).min(g.count);
            }
        }
        Ok(definition)
    }

    /// Stores `definition`, the cluster and its nodes' reservations, every new node's first
    /// phase, and (scaling down) every leaving node's Draining, in one transaction; the engine
    /// takes it from there.
    pub async fn apply(&self, definition: Definition) -> Result<Plan, ControlError> {
        self.writable(definition.name.as_str())?;
        self.apply_as(definition, false).await
    }

    /// The stored definition with one group's count changed, applied again; read and applied
    /// under the one-apply-at-a-time lock, so two scales of different groups both count.
    pub async fn scale(&self, cluster: &str, group: &str, count: u32) -> Result<Plan, ControlError> {
        self.writable(cluster)?;
        let _one_at_a_time = self.apply.lock().await;
        self.on_fresh_reads(|mark| async move {
            let (stored, _) = self.read(cluster).await?;
            let mut definition = stored.ok_or_else(|| ControlError::NotFound(cluster.to_owned()))?.definition;
            let groups: Vec<String> = definition.node_groups.iter().map(|g| g.name.to_string()).collect();
            let Some(g) = definition.node_groups.iter_mut().find(|g| g.name.as_str() == group) else {
                return Err(ControlError::Invalid(vec![Problem {
                    field: "group".into(),
                    value: group.to_owned(),
                    message: format!("cluster {cluster} has no such node group (groups: {})", groups.join(", ")),
                }]));
            };
            g.count = count;
            self.apply_locked(definition, false, mark).await
        })
        .await
    }

    /// `apply`, for the API or (`declared`) for the config file.
    async fn apply_as(&self, definition: Definition, declared: bool) -> Result<Plan, ControlError> {
        let _one_at_a_time = self.apply.lock().await;
        self.on_fresh_reads(|mark| self.apply_locked(definition.clone(), declared, mark)).await
    }

    /// Runs `step`, which reads records and commits what it computed from them (`mark` taken
    /// before its reads), again while another instance wrote records in between (the apply
    /// lock is this instance's only).
    async fn on_fresh_reads<T, F>(&self, mut step: impl FnMut(RecordsMark) -> F) -> Result<T, ControlError>
    where
        F: std::future::Future<Output = Result<T, ControlError>>,
    {
        const ATTEMPTS: usize = 8;
        for _ in 0..ATTEMPTS {
            match step(self.store.records_mark()).await {
                Err(ControlError::Store(e)) if e.is_moved() => continue,
                done => return done,
            }
        }
        Err(ControlError::Busy("other instances kept changing the clusters' records meanwhile; try again".into()))
    }

    /// `apply_as` with the apply lock held; `mark` was taken before anything was read.
    async fn apply_locked(
        &self,
        definition: Definition,
        declared: bool,
        mark: RecordsMark,
    ) -> Result<Plan, ControlError> {
        let (stored, existing) = self.read(definition.name.as_str()).await?;
        if stored.as_ref().is_some_and(|s| s.deleting.is_some()) {
            return Err(ControlError::Busy(format!("cluster {} is being deleted", definition.name)));
        }
        if let Some(r) = existing.iter().find(|r| r.is_leaving()) {
            return Err(ControlError::Busy(format!(
                "node {} is still being removed ({}); apply again once it is gone",
                r.node,
                r.phase.as_str()
            )));
        }
        let plan = self.plan(&definition).await?;
        self.check_adopted(&plan, &existing)?;
        let now = Timestamp::now();
        let limits = Limits::from(&definition.validation.phases);
        let mut ops = vec![Op::Put(Object::Cluster(plan.cluster.clone()))];
        let stored = Stored { definition: definition.clone(), applied: now, deleting: None, declared, clock: None };
        let mut records = vec![RecordWrite::put(Records::Definitions, definition.name.as_str(), &stored)];
        for (p, change) in plan.nodes.iter().zip(&plan.changes) {
            if change.action != Action::Keep {
                ops.push(Op::Put(Object::Node(p.node.clone())));
            }
            // A new node starts at its first phase; so does one that existed before its
            // definition (a create finds a VM slipway made before), or, if it phoned home, it
            // is tracked as installed and nothing is done to it.
            let tracked = existing.iter().any(|r| r.node == p.node.name);
            if change.action == Action::Create || !tracked {
                let hypervisor = p.vm.as_ref().and(definition.hypervisor.as_ref()).map(ToString::to_string);
                let mut record = NodeRecord::planned(
                    definition.name.clone(),
                    p.node.name.clone(),
                    hypervisor,
                    p.vm.clone(),
                    limits,
                    now,
                );
                if change.action != Action::Create && self.store.installed(p.node.name.as_str()).is_some() {
                    record = record.enter(Phase::Installed, now);
                }
                records.push(RecordWrite::put(Records::Phases, p.node.name.as_str(), &record));
            }
        }
        let leaving: Vec<Name> =
            plan.changes.iter().filter(|c| c.action == Action::Delete).map(|c| c.node.clone()).collect();
        self.retire(&leaving, &mut ops);
        // A node made under a name used before must install again: no old installed mark.
        let new: Vec<String> =
            plan.changes.iter().filter(|c| c.action == Action::Create).map(|c| c.node.to_string()).collect();
        let store = self.store.clone();
        blocking(move || new.iter().try_for_each(|n| store.set_installed(n, None).map(drop))).await?;
        let retiring = Retiring { cluster: definition.name.clone(), nodes: leaving.clone(), keep_vms: false, limits };
        self.commit(ops, records, retiring, mark).await?;
        let created = plan.changes.iter().filter(|c| c.action == Action::Create).count();
        tracing::info!(cluster = %definition.name, nodes = plan.nodes.len(), created, leaving = leaving.len(), "cluster definition applied");
        // The definition is committed: a failure here is told, not returned.
        if let Err(e) = self.reopen_addons(&definition).await {
            tracing::warn!(cluster = %definition.name, error = %e, "cannot compare the add-ons with their files");
        }
        Ok(plan)
    }

    /// A Ready cluster whose definition now has sets not applied as they are (new, or changed)
    /// goes back to ApplyingAddons; whether it did. The record is read here and the change stored
    /// only over what was read (a driver that stored meanwhile makes it read again).
    async fn reopen<S, L, F>(&self, def: &Definition) -> Result<bool, ControlError>
    where
        S: crate::cluster::record::Staged + Serialize + serde::de::DeserializeOwned + Send + 'static,
        L: crate::cluster::record::Limits<S> + Serialize + serde::de::DeserializeOwned + PartialEq + Send + 'static,
        F: crate::cluster::record::Facts + Serialize + serde::de::DeserializeOwned + PartialEq + Send + 'static,
    {
        if def.addons.is_empty() {
            return Ok(false);
        }
        let (images, copy) = (self.images.clone(), def.clone());
        let Ok(sets) = blocking(move || Ok(crate::cluster::addons::sets::read_sets(&copy, &images))).await? else {
            return Ok(false);
        };
        let wanted: Vec<crate::cluster::addons::progress::Wanted> = sets.into_iter().map(|(w, _)| w).collect();
        for _ in 0..5 {
            let (store, key) = (self.store.clone(), def.name.to_string());
            let record: Option<crate::cluster::record::StageRecord<S, L, F>> =
                blocking(move || store.record(Records::Lifecycle, &key)).await?;
            let Some(record) = record else { return Ok(false) };
            let mut facts = record.facts.clone();
            if record.stage != S::READY || facts.addons().current(&wanted).is_none() {
                return Ok(false);
            }
            let next = record.enter(S::APPLYING_ADDONS, Timestamp::now());
            if self.put_lifecycle(record.cluster.as_str(), Some(record.clone()), next).await? {
                let details = crate::store::events::EventKind::ClusterStage {
                    cluster: record.cluster.clone(),
                    from: record.stage.name().into(),
                    stage: S::APPLYING_ADDONS.name().into(),
                    error: None,
                };
                self.events.append(
                    crate::store::events::Source::Cluster,
                    crate::store::events::Subject::default(),
                    details,
                );
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A Ready cluster whose add-on sets changed applies them again.
    async fn reopen_addons(&self, definition: &Definition) -> Result<(), ControlError> {
        use crate::cluster::{k3s::stage as k3s, okd::stage as okd};
        let reopened = match definition.kind {
            ClusterKind::Okd => self.reopen::<okd::Stage, okd::StageLimits, okd::OkdFacts>(definition).await?,
            ClusterKind::K3s => self.reopen::<k3s::Stage, k3s::StageLimits, k3s::K3sFacts>(definition).await?,
        };
        if reopened {
            tracing::info!(cluster = %definition.name, "add-ons changed: applying them again");
        }
        Ok(())
    }

    /// A group node that existed before its definition (no record) is taken over only when the
    /// hypervisor holds its VM: otherwise it is some other machine with that name and MAC (a
    /// bare-metal box reserved by hand), and making a VM would put two machines on one MAC.
    fn check_adopted(&self, plan: &Plan, existing: &[NodeRecord]) -> Result<(), ControlError> {
        let mut problems = Vec::new();
        for (p, change) in plan.nodes.iter().zip(&plan.changes) {
            let untracked = change.action != Action::Create && !existing.iter().any(|r| r.node == p.node.name);
            let has_vm = p.place.as_ref().is_some_and(|at| at.id.is_some());
            if !untracked || p.vm.is_none() || has_vm {
                continue;
            }
            if !plan.warnings.is_empty() {
                return Err(ControlError::Busy(format!(
                    "node {} exists already, and whether the hypervisor holds its VM cannot be told now ({}); apply again",
                    p.node.name,
                    plan.warnings.join("; ")
                )));
            }
            problems.push(Problem {
                field: format!("node {}", p.node.name),
                value: p.node.mac.to_string(),
                message: "exists already (made outside this definition) and the hypervisor holds no VM of it: delete the node, or list it under nodes".into(),
            });
        }
        if problems.is_empty() { Ok(()) } else { Err(ControlError::Invalid(problems)) }
    }

    /// Starts removing every node of `cluster` (their VMs too unless `keep_vms`); the cluster
    /// and its definition go with the last node. Returns the nodes leaving.
    pub async fn delete(&self, cluster: &str, keep_vms: bool) -> Result<Vec<String>, ControlError> {
        self.writable(cluster)?;
        let _one_at_a_time = self.apply.lock().await;
        self.on_fresh_reads(|mark| self.delete_locked(cluster, keep_vms, mark)).await
    }

    /// `delete` with the apply lock held; `mark` was taken before anything was read.
    async fn delete_locked(
        &self,
        cluster: &str,
        keep_vms: bool,
        mark: RecordsMark,
    ) -> Result<Vec<String>, ControlError> {
        let (stored, existing) = self.read(cluster).await?;
        let mut stored = stored.ok_or_else(|| ControlError::NotFound(cluster.to_owned()))?;
        let name = stored.definition.name.clone();
        let inv = self.store.snapshot();
        // Its nodes, and any record whose node was deleted from the inventory by hand.
        let mut leaving: Vec<Name> =
            inv.nodes.values().filter(|n| n.cluster.as_ref() == Some(&name)).map(|n| n.name.clone()).collect();
        for r in &existing {
            if !leaving.contains(&r.node) {
                leaving.push(r.node.clone());
            }
        }
        // Refused now rather than stuck later: the cluster itself must be deletable once its
        // nodes are gone (no profile or pool may still name it).
        let mut after = (*inv).clone();
        after.nodes.retain(|_, n| n.cluster.as_ref() != Some(&name));
        after.reindex();
        if after.clusters.contains_key(&name)
            && let Err(e) = after.apply(&[Op::Delete(crate::inventory::Kind::Cluster, name.clone())])
        {
            return Err(ControlError::Busy(format!("cluster {name} cannot be deleted: {e}")));
        }
        stored.deleting = Some(Deletion { keep_vms });
        let limits = Limits::from(&stored.definition.validation.phases);
        let mut ops = Vec::new();
        let mut records = Vec::new();
        self.retire(&leaving, &mut ops);
        if leaving.is_empty() {
            if inv.clusters.contains_key(&name) {
                ops.push(Op::Delete(crate::inventory::Kind::Cluster, name.clone()));
            }
            records.push(RecordWrite::remove(Records::Definitions, name.as_str()));
        } else {
            records.push(RecordWrite::put(Records::Definitions, name.as_str(), &stored));
        }
        let retiring = Retiring { cluster: name.clone(), nodes: leaving.clone(), keep_vms, limits };
        self.commit(ops, records, retiring, mark).await?;
        tracing::info!(cluster = %name, nodes = leaving.len(), keep_vms, "cluster deletion started");
        Ok(leaving.iter().map(ToString::to_string).collect())
    }

    /// Brings the stored definitions in line with the config file's: each of `pending` that is
    /// new or changed is applied (marked declared); a stored one marked declared that the file
    /// no longer has is released to the API, its nodes kept (`slipway cluster delete` removes
    /// them). Returns each definition not applied, with why: the engine tries them again (a
    /// node still leaving, or still holding an address or MAC, lets go in time).
    pub(super) async fn apply_declared(&self, pending: Vec<Definition>) -> Vec<(Definition, ControlError)> {
        if let Err(e) = self.release_undeclared().await {
            return pending.into_iter().map(|d| (d, ControlError::Task(e.to_string()))).collect();
        }
        let mut again = Vec::new();
        for definition in pending {
            let cluster = definition.name.clone();
            match self.read(cluster.as_str()).await {
                Ok((Some(stored), _)) if stored.declared && stored.definition == definition => {
                    // The same definition; its add-on files may have changed.
                    if let Err(e) = self.reopen_addons(&definition).await {
                        tracing::warn!(%cluster, error = %e, "cannot compare the add-ons with their files");
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    again.push((definition, e));
                    continue;
                }
            }
            match self.apply_as(definition.clone(), true).await {
                Ok(plan) => tracing::info!(%cluster, nodes = plan.nodes.len(), "applied the config file's definition"),
                Err(e) => again.push((definition, e)),
            }
        }
        again
    }

    /// Unmarks stored definitions the config file no longer declares.
    async fn release_undeclared(&self) -> Result<(), ControlError> {
        let store = self.store.clone();
        let names: Vec<Name> = self.declared().definitions.iter().map(|d| d.name.clone()).collect();
        let released = blocking(move || {
            store.records_section(|store| {
                let (mut writes, mut released) = (Vec::new(), Vec::new());
                for (key, mut stored) in store.records::<Stored>(Records::Definitions)? {
                    if stored.declared && !names.contains(&stored.definition.name) {
                        stored.declared = false;
                        released.push(stored.definition.name.clone());
                        writes.push(RecordWrite::put(Records::Definitions, key, &stored));
                    }
                }
                store.write_records(&writes)?;
                Ok(released)
            })
        })
        .await?;
        for cluster in released {
            tracing::warn!(
                %cluster,
                "the config file no longer defines this cluster: it stays, now changed through the API (`slipway cluster delete` removes it)"
            );
        }
        Ok(())
    }

    /// The stored definition of `cluster`, if any.
    pub async fn definition(&self, cluster: &str) -> Result<Definition, ControlError> {
        let (stored, _) = self.read(cluster).await?;
        stored.map(|s| s.definition).ok_or_else(|| ControlError::NotFound(cluster.to_owned()))
    }

    /// An OKD cluster's lifecycle moves from `current` to `next` while `leaving` (its bootstrap
    /// nodes) start leaving as scaled-down nodes do, in one transaction; `false` (nothing done)
    /// when the stored record is no longer `current`.
    pub(super) async fn advance(
        &self,
        current: &ClusterRecord,
        next: &ClusterRecord,
        leaving: &[Name],
        limits: Limits,
    ) -> Result<bool, ControlError> {
        let _one_at_a_time = self.apply.lock().await;
        let mut ops = Vec::new();
        self.retire(leaving, &mut ops);
        let records = vec![RecordWrite::put(Records::Lifecycle, next.cluster.as_str(), next)];
        let retiring = Retiring { cluster: next.cluster.clone(), nodes: leaving.to_vec(), keep_vms: false, limits };
        // Compared and written under the records lock: the engine's own save cannot come between.
        self.commit_if(ops, records, retiring, Some(current.clone()), None).await
    }

    /// Marks `leaving` retiring in the inventory; `commit` moves each to Draining.
    fn retire(&self, leaving: &[Name], ops: &mut Vec<Op>) {
        let inv = self.store.snapshot();
        for name in leaving {
            if let Some(node) = inv.nodes.get(name).filter(|n| !n.retiring) {
                let mut node = node.clone();
                node.retiring = true;
                ops.push(Op::Put(Object::Node(node)));
            }
        }
    }

    /// The stored definition of `cluster` and its nodes' records.
    /// Stores `next` as the cluster's lifecycle record if the stored one is still `expected`
    /// (`None`: none yet) and the cluster is defined and not being deleted; whether it did.
    /// A record entering `ready` is followed by a look at the definition as stored now: one
    /// applied while the step that made it ready ran (its reopening saw a cluster not ready yet)
    /// gets its changed add-ons applied all the same.
    pub(in crate::cluster) async fn put_lifecycle<T>(
        &self,
        cluster: &str,
        expected: Option<T>,
        next: T,
    ) -> Result<bool, ControlError>
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + Send + 'static,
    {
        let stage = |record: &T| serde_json::to_value(record).ok().and_then(|v| v["stage"].as_str().map(str::to_owned));
        let readied =
            stage(&next).as_deref() == Some("ready") && expected.as_ref().and_then(stage).as_deref() != Some("ready");
        let (store, key) = (self.store.clone(), cluster.to_owned());
        let written = blocking(move || {
            store.records_section(|store| {
                let stored = store.record::<serde_json::Value>(Records::Lifecycle, &key)?;
                let current: Option<T> = stored.and_then(|v| serde_json::from_value(v).ok());
                if current != expected {
                    return Ok(None);
                }
                // A step that began before the cluster's deletion writes nothing after it.
                let defined = store.record::<Stored>(Records::Definitions, &key)?;
                let Some(defined) = defined.filter(|d| d.deleting.is_none()) else { return Ok(None) };
                store.write_records(&[RecordWrite::put(Records::Lifecycle, key.as_str(), &next)])?;
                Ok(Some(defined))
            })
        })
        .await?;
        let Some(defined) = written else { return Ok(false) };
        if readied && let Err(e) = Box::pin(self.reopen_addons(&defined.definition)).await {
            tracing::warn!(%cluster, error = %e, "cannot compare the add-ons with their files");
        }
        Ok(true)
    }

    pub(super) async fn read(&self, cluster: &str) -> Result<(Option<Stored>, Vec<NodeRecord>), ControlError> {
        let (store, name) = (self.store.clone(), cluster.to_owned());
        blocking(move || {
            let stored = store.record::<Stored>(Records::Definitions, &name)?;
            let records = store.records::<NodeRecord>(Records::Phases)?;
            Ok((stored, records.into_iter().map(|(_, r)| r).filter(|r| r.cluster.as_str() == name).collect()))
        })
        .await
    }

    /// Commits inventory changes and records together, and tells the event log what changed.
    /// The leaving nodes' Draining records are made from their records as stored at that
    /// moment, under the records lock: a step the engine stored since they were read is not
    /// overwritten by an older copy.
    /// `records` were computed from reads made after `mark`: on etcd, records another instance
    /// wrote since end the commit with `StoreError::is_moved` (see `on_fresh_reads`).
    async fn commit(
        &self,
        ops: Vec<Op>,
        records: Vec<RecordWrite>,
        retiring: Retiring,
        mark: RecordsMark,
    ) -> Result<(), ControlError> {
        self.commit_if(ops, records, retiring, None, Some(mark)).await.map(drop)
    }

    /// `commit`, done only if the cluster's lifecycle record is still `expected` (when given);
    /// `false` when it was not.
    async fn commit_if(
        &self,
        ops: Vec<Op>,
        records: Vec<RecordWrite>,
        retiring: Retiring,
        expected: Option<ClusterRecord>,
        since: Option<RecordsMark>,
    ) -> Result<bool, ControlError> {
        let store = self.store.clone();
        let cluster = retiring.cluster.clone();
        let done = blocking(move || {
            let commit = |store: &Store| {
                if let Some(expected) = &expected {
                    let key = expected.cluster.to_string();
                    if store.record::<ClusterRecord>(Records::Lifecycle, &key)?.as_ref() != Some(expected) {
                        return Ok(None);
                    }
                }
                let mut records = records.clone();
                let mut drained = Vec::new();
                for name in &retiring.nodes {
                    let stored = store.record::<NodeRecord>(Records::Phases, name.as_str())?;
                    let from = stored.as_ref().map_or(Phase::Planned, |r| r.phase);
                    if let Some(next) = retiring.draining(name, stored) {
                        records.push(RecordWrite::put(Records::Phases, name.as_str(), &next));
                        drained.push((name.clone(), from));
                    }
                }
                Ok(Some((store.apply_with(&ops, &records)?, drained)))
            };
            match since {
                Some(mark) => store.records_section_since(mark, commit),
                None => store.records_section(commit),
            }
        })
        .await?;
        let Some(((inv, outcomes), drained)) = done else { return Ok(false) };
        self.events.inventory_changed(Source::Cluster, &inv, &outcomes);
        for (node, from) in drained {
            let details = EventKind::NodePhase {
                cluster: cluster.clone(),
                from: from.as_str().into(),
                phase: Phase::Draining.as_str().into(),
                error: None,
            };
            self.events.append(Source::Cluster, Subject { node: Some(node), mac: None }, details);
        }
        Ok(true)
    }

    /// The definition and its nodes' phases.
    pub async fn status(&self, cluster: &str) -> Result<Status, ControlError> {
        let store = self.store.clone();
        let name = cluster.to_owned();
        let (stored, nodes, lifecycle) = blocking(move || {
            let stored = store.record::<Stored>(Records::Definitions, &name)?;
            let nodes = store.records::<NodeRecord>(Records::Phases)?;
            let lifecycle = store.record::<serde_json::Value>(Records::Lifecycle, &name)?;
            Ok((stored, nodes, lifecycle))
        })
        .await?;
        let stored = stored.ok_or_else(|| ControlError::NotFound(cluster.to_owned()))?;
        let kind = stored.definition.kind;
        let record: Option<ClusterRecord> =
            lifecycle.clone().filter(|_| kind == ClusterKind::Okd).and_then(|v| serde_json::from_value(v).ok());
        let k3s: Option<K3sRecord> =
            lifecycle.filter(|_| kind == ClusterKind::K3s).and_then(|v| serde_json::from_value(v).ok());
        let order: Vec<Name> = plan(&stored.definition, &self.store.snapshot(), &self.names())
            .map(|p| p.nodes.into_iter().map(|n| n.node.name).collect())
            .unwrap_or_default();
        let mut nodes: Vec<NodeRecord> =
            nodes.into_iter().map(|(_, r)| r).filter(|r| r.cluster.as_str() == cluster).collect();
        nodes.sort_by_key(|r| (order.iter().position(|n| n == &r.node).unwrap_or(usize::MAX), r.node.clone()));
        let phases: Vec<Phase> = nodes.iter().map(|r| r.phase).collect();
        let reached: Vec<Phase> =
            nodes.iter().filter(|r| !r.is_leaving()).map(|r| r.failed_in.unwrap_or(r.phase)).collect();
        let checks = lock(&self.health).get(&stored.definition.name).cloned().unwrap_or_default();
        let mut conditions = conditions(&reached, stored.definition.validation.health_checks.len(), &checks);
        let mut phase = cluster_phase(&phases).to_owned();
        // Its last node gone, a cluster being deleted is not empty but about to go.
        if phase == "empty" && stored.deleting.is_some() {
            phase = "deleting".to_owned();
        }
        let mut ignition = Vec::new();
        if kind == ClusterKind::Okd {
            use crate::inventory::Role;
            let (dir, key) = (self.store.files(), cluster.to_owned());
            let made = tokio::task::spawn_blocking(move || {
                [Role::Bootstrap, Role::ControlPlane, Role::Worker]
                    .map(|role| (role, dated(&dir, &key, role).ok().flatten()))
            })
            .await
            .map_err(|e| ControlError::Task(e.to_string()))?;
            for (role, made) in made {
                if let Some(made) = made {
                    let expires = Timestamp(made + IGNITION_LIFE);
                    let role = crate::store::uploads::okd_name(role).to_owned();
                    ignition.push(IgnitionStatus { role, made: Timestamp(made), expires });
                }
            }
            conditions.extend(super::okd::stage::conditions(record.as_ref()));
        }
        if kind == ClusterKind::K3s {
            conditions.extend(super::k3s::stage::conditions(k3s.as_ref()));
        }
        let stage = match (&record, &k3s) {
            (Some(r), _) => Some(StageStatus {
                stage: ClusterStage::Okd(r.stage),
                since: r.since,
                deadline: r.deadline,
                observed: r.observed.clone(),
                error: r.error.clone(),
                failed_in: r.failed_in.map(ClusterStage::Okd),
            }),
            (_, Some(r)) => Some(StageStatus {
                stage: ClusterStage::K3s(r.stage),
                since: r.since,
                deadline: r.deadline,
                observed: r.observed.clone(),
                error: r.error.clone(),
                failed_in: r.failed_in.map(ClusterStage::K3s),
            }),
            _ => None,
        };
        if !["failed", "removing", "empty", "deleting"].contains(&phase.as_str()) {
            // Its stage once its first node runs (OKD: the bootstrap node; k3s: the first
            // server); before, an OKD cluster is provisioning or booting, a k3s one shows its
            // nodes' phase.
            match &stage {
                Some(s) => phase = s.stage.as_str().to_owned(),
                None if kind != ClusterKind::Okd => {}
                None if phases.iter().any(|p| *p < Phase::Created) => phase = "provisioning".to_owned(),
                None => phase = "booting".to_owned(),
            }
        }
        let progress = match (&record, &k3s) {
            (Some(r), _) => r.facts.addons.clone(),
            (_, Some(r)) => r.facts.addons.clone(),
            _ => Default::default(),
        };
        let names: Vec<Name> = stored.definition.addons.iter().map(|s| s.name.clone()).collect();
        Ok(Status {
            cluster: cluster.to_owned(),
            phase,
            applied: stored.applied,
            declared: stored.declared,
            deadline: stored.deadline(),
            conditions,
            ignition,
            stage,
            checks,
            addons: progress.statuses(&names),
            nodes: nodes
                .into_iter()
                .map(|r| NodeStatus {
                    name: r.node.to_string(),
                    phase: r.phase,
                    since: r.since,
                    deadline: r.deadline,
                    vm: r.vm,
                    observed: r.observed,
                    error: r.error,
                    failed_in: r.failed_in,
                })
                .collect(),
        })
    }

    /// Puts every failed node of `cluster` back into the phase it failed in, and an OKD cluster
    /// failed in a stage back into that stage, with fresh deadlines. Returns what resumed.
    pub async fn retry(&self, cluster: &str) -> Result<Vec<String>, ControlError> {
        let store = self.store.clone();
        let name = cluster.to_owned();
        let (exists, resumed, stage) = blocking(move || {
            store.records_section(|store| {
                let stored = store.record::<Stored>(Records::Definitions, &name)?;
                let exists = stored.is_some();
                let now = Timestamp::now();
                let phases = stored.as_ref().map(|s| s.definition.validation.phases.clone()).unwrap_or_default();
                let kind = stored.as_ref().map(|s| s.definition.kind);
                let mut writes = Vec::new();
                // The cluster's own timeout starts again too.
                if let Some(mut stored) = stored.filter(|s| s.definition.validation.timeout.is_some()) {
                    stored.clock = Some(now);
                    writes.push(RecordWrite::put(Records::Definitions, name.as_str(), &stored));
                }
                let mut resumed = Vec::new();
                // A cluster failed in a stage resumes it (with the definition's limits now).
                let lifecycle = store.record::<serde_json::Value>(Records::Lifecycle, &name)?;
                let stage: Option<(&'static str, serde_json::Value)> = match kind {
                    Some(ClusterKind::Okd) => lifecycle
                        .and_then(|v| serde_json::from_value::<ClusterRecord>(v).ok())
                        .and_then(|r| r.retried(super::okd::stage::StageLimits::from(&phases), now))
                        .and_then(|r| Some((r.stage.as_str(), serde_json::to_value(&r).ok()?))),
                    Some(ClusterKind::K3s) => lifecycle
                        .and_then(|v| serde_json::from_value::<K3sRecord>(v).ok())
                        .and_then(|r| r.retried(super::k3s::stage::StageLimits::from(&phases), now))
                        .and_then(|r| Some((r.stage.as_str(), serde_json::to_value(&r).ok()?))),
                    None => None,
                };
                if let Some((_, next)) = &stage {
                    writes.push(RecordWrite::put(Records::Lifecycle, name.as_str(), next));
                }
                for (key, record) in store.records::<NodeRecord>(Records::Phases)? {
                    if record.cluster.as_str() != name {
                        continue;
                    }
                    if let Some(next) = record.retried(now) {
                        resumed.push((key.clone(), record.phase, next.phase));
                        writes.push(RecordWrite::put(Records::Phases, key, &next));
                    }
                }
                store.write_records(&writes)?;
                Ok((exists, resumed, stage))
            })
        })
        .await?;
        if !exists {
            return Err(ControlError::NotFound(cluster.to_owned()));
        }
        let cluster_name: Name = cluster.parse().map_err(|_| ControlError::NotFound(cluster.to_owned()))?;
        let mut names: Vec<String> = Vec::new();
        if let Some((stage, _)) = stage {
            let details = EventKind::ClusterStage {
                cluster: cluster_name.clone(),
                from: "failed".into(),
                stage: stage.into(),
                error: None,
            };
            self.events.append(Source::Cluster, Subject::default(), details);
            names.push(format!("cluster ({stage})"));
        }
        for (node, from, to) in &resumed {
            let subject = Subject { node: node.parse().ok(), mac: None };
            let details = EventKind::NodePhase {
                cluster: cluster_name.clone(),
                from: from.as_str().into(),
                phase: to.as_str().into(),
                error: None,
            };
            self.events.append(Source::Cluster, subject, details);
        }
        names.extend(resumed.into_iter().map(|(n, _, _)| n));
        Ok(names)
    }
}

/// Nodes an apply or a delete takes away.
struct Retiring {
    cluster: Name,
    nodes: Vec<Name>,
    keep_vms: bool,
    limits: Limits,
}

impl Retiring {
    /// `name`'s record moved to Draining (a node made before the definition, without a record,
    /// gets one with no VM to remove); `None` for one already on its way out.
    fn draining(&self, name: &Name, stored: Option<NodeRecord>) -> Option<NodeRecord> {
        let now = Timestamp::now();
        let record = stored
            .unwrap_or_else(|| NodeRecord::planned(self.cluster.clone(), name.clone(), None, None, self.limits, now));
        if record.phase.is_removal() {
            return None;
        }
        let mut next = record.enter(Phase::Draining, now);
        next.keep_vm = self.keep_vms;
        Some(next)
    }
}

pub(super) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a blocking store call off the runtime.
pub(in crate::cluster) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ControlError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(ControlError::Task(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::events::Retention;

    fn clusters(dir: &std::path::Path) -> Clusters {
        let mut inv = crate::inventory::lab::lab();
        inv.clusters.clear();
        inv.nodes.clear();
        inv.reindex();
        let store = Store::open(dir, inv).expect("store");
        let events = EventLog::open(&store, Retention::default()).expect("events");
        Clusters::new(&store, &events, Vec::new())
    }

    /// Machines listed by hand: no hypervisor needed.
    fn definition(metal: &[&str]) -> Definition {
        // Each machine's MAC from its number: metal-2 is 52:54:00:aa:00:02.
        let nodes: Vec<String> = metal
            .iter()
            .map(|n| {
                let i = n.trim_start_matches("metal-");
                format!("  - {{ name: {n}, role: control-plane, mac: \"52:54:00:aa:00:0{i}\" }}\n")
            })
            .collect();
        let yaml = format!(
            "name: prod\nkind: k3s\nbase_domain: lab.example\nnetwork: cluster\napi_address: 192.0.2.10\n\
             api_int_address: 10.1.107.1\ningress_address: 192.0.2.10\nnodes:\n{}",
            nodes.concat()
        );
        serde_norway::from_str(&yaml).expect("definition")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_applies_are_serialised_and_each_leaves_a_consistent_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = clusters(dir.path());
        let (a, b) = (definition(&["metal-0", "metal-1"]), definition(&["metal-0", "metal-2"]));
        let (first, second) = tokio::join!(c.apply(a.clone()), c.apply(b.clone()));
        // Both succeed, one after the other: the later one plans against the earlier one's
        // nodes and retires the one it does not list. Interleaved, both would plan against an
        // empty cluster and the earlier one's extra node would stay, active, in neither.
        assert!(first.is_ok() && second.is_ok(), "{:?} {:?}", first.err(), second.err());
        let stored = c.definition("prod").await.expect("stored");
        assert!(stored == a || stored == b, "one definition, whole");
        let status = c.status("prod").await.expect("status");
        let active: Vec<&str> =
            status.nodes.iter().filter(|n| n.phase == Phase::Planned).map(|n| n.name.as_str()).collect();
        let wanted: Vec<&str> = stored.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(active, wanted, "{status:?}");
        assert!(status.nodes.iter().all(|n| n.phase == Phase::Planned || n.phase == Phase::Draining), "{status:?}");
    }

    #[tokio::test]
    async fn nodes_that_existed_before_their_definition_are_tracked_from_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = clusters(dir.path());
        // prod and its metal-0, metal-1 made through the objects API; metal-0 phoned home.
        let before = c.plan(&definition(&["metal-0", "metal-1"])).await.expect("plan");
        let mut ops = vec![Op::Put(Object::Cluster(before.cluster.clone()))];
        ops.extend(before.nodes.iter().map(|p| Op::Put(Object::Node(p.node.clone()))));
        c.store.apply_with(&ops, &[]).expect("objects");
        c.store.set_installed("metal-0", Some(Timestamp::now())).expect("installed");

        c.apply(definition(&["metal-0", "metal-1", "metal-2"])).await.expect("apply");
        let status = c.status("prod").await.expect("status");
        let phases: Vec<(&str, Phase)> = status.nodes.iter().map(|n| (n.name.as_str(), n.phase)).collect();
        assert_eq!(
            phases,
            [("metal-0", Phase::Installed), ("metal-1", Phase::Planned), ("metal-2", Phase::Planned)],
            "an existing node keeps its installed state and the others are tracked"
        );
        assert!(c.store.installed("metal-0").is_some(), "its installed mark stays");
    }

    /// With a local QEMU hypervisor (no VM is made: the engine does not run here).
    fn with_qemu(dir: &std::path::Path) -> Clusters {
        let mut c = clusters(dir);
        let qemu = crate::hypervisor::qemu::Settings::new("local", dir.join("vms"), "br0");
        c.hypervisors = vec![Arc::new(crate::hypervisor::qemu::Qemu::new(qemu))];
        c
    }

    /// Two node groups of one VM each.
    fn groups() -> Definition {
        let yaml = "name: prod\nkind: k3s\nbase_domain: lab.example\nnetwork: cluster\napi_address: 192.0.2.10\n\
             api_int_address: 10.1.107.1\ningress_address: 192.0.2.10\nhypervisor: local\nnode_groups:\n\
             - { name: server, role: control-plane, count: 1, memory: 512MiB }\n\
             - { name: agent, role: worker, count: 1, memory: 512MiB }\n";
        serde_norway::from_str(yaml).expect("definition")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scales_of_different_groups_both_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = with_qemu(dir.path());
        c.apply(groups()).await.expect("apply");
        let (a, b) = tokio::join!(c.scale("prod", "server", 3), c.scale("prod", "agent", 2));
        assert!(a.is_ok() && b.is_ok(), "{:?} {:?}", a.err(), b.err());
        let stored = c.definition("prod").await.expect("stored");
        let counts: Vec<u32> = stored.node_groups.iter().map(|g| g.count).collect();
        assert_eq!(counts, [3, 2], "neither scale lost the other's count");
        let err = c.scale("prod", "nosuch", 1).await.expect_err("no such group");
        assert!(
            err.to_string().contains("group = nosuch: cluster prod has no such node group (groups: server, agent)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_group_node_made_outside_the_definition_without_a_vm_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = with_qemu(dir.path());
        // server-0 reserved by hand for some other machine, before the definition.
        let before = c.plan(&groups()).await.expect("plan");
        let ops =
            [Op::Put(Object::Cluster(before.cluster.clone())), Op::Put(Object::Node(before.nodes[0].node.clone()))];
        c.store.apply_with(&ops, &[]).expect("objects");
        let err = c.apply(groups()).await.expect_err("two machines on one MAC");
        assert!(err.to_string().contains("node server-0") && err.to_string().contains("holds no VM of it"), "{err}");
    }

    #[tokio::test]
    async fn an_apply_while_a_node_leaves_or_the_cluster_is_deleted_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = clusters(dir.path());
        c.apply(definition(&["metal-0", "metal-1"])).await.expect("apply");
        c.apply(definition(&["metal-0"])).await.expect("scale down");
        let busy = c.apply(definition(&["metal-0", "metal-1"])).await.expect_err("metal-1 is leaving");
        assert!(matches!(&busy, ControlError::Busy(m) if m.contains("metal-1 is still being removed")), "{busy}");
        let leaving = c.delete("prod", false).await.expect("delete");
        assert_eq!(leaving, ["metal-0", "metal-1"]);
        let busy = c.apply(definition(&["metal-0"])).await.expect_err("being deleted");
        assert!(matches!(&busy, ControlError::Busy(m) if m == "cluster prod is being deleted"), "{busy}");
    }
}
