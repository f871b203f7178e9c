//! The reconciler: one more service. Every second, and whenever a node's event arrives, it
//! reads the node records and gives each unsettled node one step on a task of its own (a slow
//! VM create holds up no other node). A step observes, acts only when needed, and stores the
//! record it moves to before the action that needs it (`Creating` before the create call,
//! `PoweringOn` before the start): a daemon killed anywhere resumes from the stored phase and
//! deadline, and the hypervisor calls are idempotent (create finds the VM it made before), so
//! no VM is made twice and none is lost.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::control::{Clusters, ControlError, Stored, blocking, lock};
use super::phase::{Next, NodeRecord, Phase, Seen, VmPlace, after_boot_events, cluster_phase};
use crate::hypervisor::{Hypervisor, Owner};
use crate::inventory::{ClusterKind, Kind, Name, Op, Timestamp};
use crate::service::{RunError, Service};
use crate::store::events::{Event, EventKind, Filter, Source, Subject};
use crate::store::records::{RecordWrite, Records};

/// How often every node is looked at without a trigger.
const TICK: Duration = Duration::from_secs(1);
/// How long after a waiting node's event the pass runs (the events of one burst share it).
const EVENT_BATCH: Duration = Duration::from_millis(100);
/// How long past its phase's deadline a node waits for hypervisor work still under way.
const IN_PROGRESS_GRACE: Duration = Duration::from_secs(10 * 60);
/// How soon a config file's definition that could not be applied is tried again (doubling up
/// to `DECLARED_RETRY_MAX`).
const DECLARED_RETRY: Duration = Duration::from_secs(2);
const DECLARED_RETRY_MAX: Duration = Duration::from_secs(60);
/// How long a failed hypervisor call waits before it is tried again (until the deadline).
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// How long a retried node's VM gets to power off on ACPI before it is stopped.
const POWER_OFF_WAIT: Duration = Duration::from_secs(10);
/// How long a leaving node's open load-balancer connections get before its VM is shut down.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// The bound engine.
#[derive(Debug)]
pub struct Engine {
    clusters: Clusters,
}

impl Engine {
    pub fn bind(clusters: &Clusters) -> Engine {
        Engine { clusters: clusters.clone() }
    }
}

impl Service for Engine {
    const NAME: &'static str = "cluster";

    fn span(&self) -> tracing::Span {
        tracing::info_span!("cluster")
    }

    fn listeners(&self) -> Vec<(String, SocketAddr)> {
        Vec::new()
    }

    async fn run(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let worker = Arc::new(Worker {
            // The passes' writes hold only while this instance leads (etcd: another may lead
            // by the time a slow step writes).
            clusters: self.clusters.fenced(),
            busy: Mutex::default(),
            attempted: Mutex::default(),
            started: Mutex::default(),
            waiting: Mutex::default(),
            okd: super::okd::drive::Driver::default(),
            k3s: super::k3s::drive::Driver::default(),
            stepping: Mutex::default(),
        });
        // Listening to the event log only while a node waits on its boot: the engine costs the
        // DHCP and HTTP hot paths nothing otherwise.
        let mut events: Option<broadcast::Receiver<Arc<Event>>> = None;
        let mut due: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut steps = JoinSet::new();
        steps.spawn(super::monitor::watch(self.clusters.clone()));
        // The config file's definitions, applied (when new or changed) beside the passes: a
        // slow hypervisor or a node still leaving holds up no step.
        steps.spawn(follow_declared(self.clusters.clone()));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                () = sleep_until(due), if due.is_some() => {}
                received = recv(&mut events), if events.is_some() => {
                    match received {
                        // A waiting node's boot step moves it on: one pass soon, for every
                        // event of a burst.
                        Ok(e) if worker.watches(&e) => {
                            due.get_or_insert_with(|| tokio::time::Instant::now() + EVENT_BATCH);
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            due.get_or_insert_with(tokio::time::Instant::now);
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                    continue;
                }
            }
            due = None;
            while steps.try_join_next().is_some() {}
            if worker.clusters.store.term().is_none() {
                // Another instance leads (etcd): it drives the clusters.
                continue;
            }
            match worker.clone().pass(&mut steps).await {
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the node records"),
            }
            match (worker.anyone_waiting(), events.is_some()) {
                (true, false) => events = Some(worker.clusters.events.subscribe()),
                (false, true) => events = None,
                _ => {}
            }
        }
        // Every step is safe to cut short: its record was stored before its action.
        steps.shutdown().await;
        Ok(())
    }
}

struct Worker {
    clusters: Clusters,
    /// Nodes with a step running.
    busy: Mutex<HashSet<Name>>,
    /// When a hypervisor call for a node was last made (by this process), in which phase.
    attempted: Mutex<std::collections::HashMap<Name, (Phase, tokio::time::Instant)>>,
    /// Nodes this process powered on, by the power-on they belong to.
    started: Mutex<HashSet<(Name, Option<Timestamp>)>>,
    /// Nodes waiting on their boot events (as of the last pass).
    waiting: Mutex<HashSet<Name>>,
    /// OKD clusters' stages, looked at through their APIs.
    okd: super::okd::drive::Driver,
    /// k3s clusters' stages, looked at through their APIs and over SSH.
    k3s: super::k3s::drive::Driver,
    /// Clusters with a stage step running.
    stepping: Mutex<HashSet<Name>>,
}

/// Takes a name out of a busy set when dropped: a step that panics frees its node or cluster.
struct Release<'a>(&'a Mutex<HashSet<Name>>, Name);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(&self.1);
    }
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Applies the config file's definitions when the engine starts and again after every reload:
/// each new or changed one is applied, those taken out are released; one that cannot be
/// applied yet is tried again with a growing pause, until it is or a reload replaces it.
async fn follow_declared(clusters: Clusters) {
    let mut declared = clusters.declared.subscribe();
    let mut told = std::collections::HashMap::new();
    loop {
        let mut pending = declared.borrow_and_update().definitions.clone();
        // A new set: each reason it meets is told again.
        told.clear();
        let mut pause = DECLARED_RETRY;
        // At least once: a definition taken out of the file is released even when none is left.
        let replaced = loop {
            let failed = clusters.apply_declared(pending).await;
            pending = Vec::new();
            for (definition, e) in failed {
                // Each reason once, not at every attempt.
                let why = e.to_string();
                if told.insert(definition.name.clone(), why.clone()).as_ref() != Some(&why) {
                    let cluster = &definition.name;
                    match e {
                        ControlError::Busy(_) => tracing::info!(%cluster, %why, "the config file's definition waits"),
                        _ => {
                            tracing::error!(%cluster, error = %why, "cannot apply the config file's definition; trying again")
                        }
                    }
                }
                pending.push(definition);
            }
            if pending.is_empty() {
                break false;
            }
            // A node still leaving lets go soon; anything else may take an operator. A reload
            // brings a new set: that one is applied instead.
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                changed = declared.changed() => match changed {
                    Ok(()) => break true,
                    Err(_) => return,
                },
            }
            pause = (pause * 2).min(DECLARED_RETRY_MAX);
        };
        // All applied: the next reload's set, when it comes.
        if !replaced && declared.changed().await.is_err() {
            return;
        }
    }
}

async fn recv(events: &mut Option<broadcast::Receiver<Arc<Event>>>) -> Result<Arc<Event>, broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Worker {
    /// A boot step of a node waiting on one (not the engine's own events).
    fn watches(&self, e: &Event) -> bool {
        e.source != Source::Cluster && e.node.as_ref().is_some_and(|n| lock(&self.waiting).contains(n))
    }

    fn anyone_waiting(&self) -> bool {
        !lock(&self.waiting).is_empty()
    }

    /// Removes each cluster being deleted whose nodes are all gone, with its definition. One
    /// the inventory will not let go (a profile or pool still names it) stays, with a warning,
    /// and is tried again on the next pass.
    async fn finish_deletions(&self, records: &[(String, NodeRecord)]) -> Result<(), ControlError> {
        let store = self.clusters.store.clone();
        let busy: HashSet<Name> = records.iter().map(|(_, r)| r.cluster.clone()).collect();
        let done = blocking(move || {
            store.records_section(|store| {
                let mut done = Vec::new();
                for (name, stored) in store.records::<Stored>(Records::Definitions)? {
                    let cluster = stored.definition.name.clone();
                    if stored.deleting.is_none() || busy.contains(&cluster) {
                        continue;
                    }
                    let ops: Vec<Op> = if store.snapshot().clusters.contains_key(&cluster) {
                        vec![Op::Delete(Kind::Cluster, cluster.clone())]
                    } else {
                        Vec::new()
                    };
                    let records = [
                        RecordWrite::remove(Records::Definitions, name.as_str()),
                        RecordWrite::remove(Records::Lifecycle, name.as_str()),
                    ];
                    match store.apply_with(&ops, &records) {
                        Ok(applied) => done.push((cluster, applied)),
                        // Another instance wrote records meanwhile: from the top with them, or,
                        // with some removed already (their files go now), on the next pass.
                        Err(e) if e.is_moved() && done.is_empty() => return Err(e),
                        Err(e) if e.is_moved() => break,
                        Err(e) => tracing::warn!(%cluster, error = %e, "cannot remove the deleted cluster yet"),
                    }
                }
                Ok(done)
            })
        })
        .await?;
        for (cluster, (inv, outcomes)) in done {
            // Its uploads (Ignition, the admin kubeconfig), its SSH keys and its k3s token go with it.
            let (dir, key) = (self.clusters.store.files(), cluster.to_string());
            let removed = tokio::task::spawn_blocking(move || {
                crate::store::uploads::remove_cluster(&dir, &key).map_err(|e| e.to_string())?;
                crate::ssh::keys::remove_cluster(&dir, &key).map_err(|e| e.to_string())?;
                super::k3s::token::remove_cluster(&dir, &key).map_err(|e| e.to_string())
            })
            .await;
            if let Ok(Err(e)) = removed {
                tracing::warn!(%cluster, error = %e, "cannot remove the cluster's uploads and keys");
            }
            tracing::info!(%cluster, "cluster deleted");
            let details = EventKind::ClusterPhase { cluster, phase: "deleted".into() };
            self.clusters.events.append(Source::Cluster, Subject::default(), details);
            self.clusters.events.inventory_changed(Source::Cluster, &inv, &outcomes);
        }
        Ok(())
    }

    /// Fails every unsettled node of a cluster that is not installed by its
    /// `validation.timeout` (from its apply or its last retry); nothing is destroyed, and
    /// `retry` resumes them with the cluster's clock started again.
    async fn expire(&self, definitions: &[Stored], records: &[(String, NodeRecord)]) -> Result<(), ControlError> {
        let now = Timestamp::now();
        for stored in definitions {
            let (Some(deadline), Some(timeout)) = (stored.deadline(), stored.definition.validation.timeout) else {
                continue;
            };
            let cluster = &stored.definition.name;
            let nodes: Vec<&NodeRecord> = records.iter().map(|(_, r)| r).filter(|r| &r.cluster == cluster).collect();
            if now <= deadline || stored.deleting.is_some() || nodes.iter().all(|r| r.phase == Phase::Installed) {
                continue;
            }
            let timeout = crate::inventory::types::format_duration(timeout);
            for record in nodes.into_iter().filter(|r| !r.phase.is_settled() && !r.phase.is_removal()) {
                let reason = format!(
                    "the cluster was not installed within {timeout} (validation.timeout); this node was {}",
                    record.phase.as_str()
                );
                self.save(record, record.fail(reason, now)).await?;
            }
        }
        Ok(())
    }

    /// One look at every unsettled node: a step task for each that has none running.
    async fn pass(self: Arc<Self>, steps: &mut JoinSet<()>) -> Result<(), ControlError> {
        let store = self.clusters.store.clone();
        let (records, definitions) = blocking(move || {
            let definitions = store.records::<Stored>(Records::Definitions)?;
            Ok((store.records::<NodeRecord>(Records::Phases)?, definitions))
        })
        .await?;
        let definitions: Vec<Stored> = definitions.into_iter().map(|(_, d)| d).collect();
        // (Reread under the records lock when a deletion may be done.)
        if definitions.iter().any(|d| d.deleting.is_some()) {
            self.finish_deletions(&records).await?;
        }
        self.expire(&definitions, &records).await?;
        let waiting: HashSet<Name> = records
            .iter()
            .filter(|(_, r)| matches!(r.phase, Phase::PoweringOn | Phase::Booting | Phase::ConfigServed))
            .map(|(_, r)| r.node.clone())
            .collect();
        let any = !waiting.is_empty();
        *lock(&self.waiting) = waiting;
        if any {
            // The boot events appended so far are on disk for the steps to read.
            self.clusters.events.flush().await;
        }
        // OKD clusters follow their stages beside their nodes' phases.
        for stored in definitions.iter().filter(|d| d.definition.kind == ClusterKind::Okd && d.deleting.is_none()) {
            let cluster = stored.definition.name.clone();
            if !lock(&self.stepping).insert(cluster.clone()) {
                continue;
            }
            let nodes: Vec<NodeRecord> =
                records.iter().map(|(_, r)| r).filter(|r| r.cluster == cluster).cloned().collect();
            let (worker, stored) = (self.clone(), stored.clone());
            let span = tracing::info_span!("okd", cluster = %cluster);
            steps.spawn(
                async move {
                    // Released however the step ends (a panic included).
                    let _release = Release(&worker.stepping, cluster.clone());
                    if let Err(e) = worker.okd.step(&worker.clusters, &stored, &nodes).await {
                        tracing::warn!(error = %e, "OKD stage step failed");
                    }
                }
                .instrument(span),
            );
        }
        // k3s clusters too, once their first server started k3s.
        for stored in definitions.iter().filter(|d| d.definition.kind == ClusterKind::K3s && d.deleting.is_none()) {
            let cluster = stored.definition.name.clone();
            if !lock(&self.stepping).insert(cluster.clone()) {
                continue;
            }
            let (worker, stored) = (self.clone(), stored.clone());
            let span = tracing::info_span!("k3s", cluster = %cluster);
            steps.spawn(
                async move {
                    let _release = Release(&worker.stepping, cluster.clone());
                    if let Err(e) = worker.k3s.step(&worker.clusters, &stored).await {
                        tracing::warn!(error = %e, "k3s stage step failed");
                    }
                }
                .instrument(span),
            );
        }
        for (_, record) in records.into_iter().filter(|(_, r)| !r.phase.is_settled()) {
            if !lock(&self.busy).insert(record.node.clone()) {
                continue;
            }
            let span = tracing::info_span!("node", cluster = %record.cluster, node = %record.node, phase = record.phase.as_str());
            let worker = self.clone();
            steps.spawn(
                async move {
                    let _release = Release(&worker.busy, record.node.clone());
                    if let Err(e) = worker.step(record).await {
                        tracing::warn!(error = %e, "provisioning step failed");
                    }
                }
                .instrument(span),
            );
        }
        Ok(())
    }

    async fn step(&self, record: NodeRecord) -> Result<(), ControlError> {
        let now = Timestamp::now();
        match record.phase {
            Phase::Planned if record.spec.is_some() => self.save(&record, record.enter(Phase::Creating, now)).await,
            Phase::Planned => {
                // A listed machine is powered on by its operator, as soon as the apply: what it
                // did since then counts.
                let mut next = record.enter(Phase::PoweringOn, now);
                next.powered_on = Some(record.since);
                self.save(&record, next).await
            }
            Phase::Draining => {
                if now.0 < record.since.0 + DRAIN_GRACE {
                    return Ok(());
                }
                if record.keep_vm || record.spec.is_none() {
                    return self.remove(record).await;
                }
                if self.hypervisor(&record).is_none() {
                    // Removing the record would orphan a running VM (and free its address).
                    let reason = format!(
                        "hypervisor {} is not configured: its VM cannot be removed (configure it and retry, or delete with --keep-vms)",
                        record.hypervisor.as_deref().unwrap_or("(none)")
                    );
                    return self.save(&record, record.fail(reason, now)).await;
                }
                self.save(&record, record.enter(Phase::ShuttingDown, now)).await
            }
            Phase::ShuttingDown | Phase::Deleting => self.take_down(record, now).await,
            Phase::Creating => self.create(record, now).await,
            Phase::Created => self.save(&record, record.enter(Phase::PoweringOn, now)).await,
            Phase::PoweringOn | Phase::Booting | Phase::ConfigServed => {
                if record.phase == Phase::PoweringOn {
                    self.start(&record).await?;
                }
                let seen = self.seen(&record).await?;
                match after_boot_events(&record, &seen, now) {
                    Next::Wait => Ok(()),
                    Next::Enter(phase) => {
                        let mut next = record.enter(phase, now);
                        next.observed = seen.last;
                        self.save(&record, next).await
                    }
                    Next::Fail(reason) => self.save(&record, record.fail(reason, now)).await,
                }
            }
            Phase::Installed | Phase::Failed => Ok(()),
        }
    }

    fn hypervisor(&self, record: &NodeRecord) -> Option<Arc<dyn Hypervisor>> {
        let name = record.hypervisor.as_deref()?;
        self.clusters.hypervisors.iter().find(|h| h.name() == name).cloned()
    }

    /// Whether a hypervisor call for this node in this phase failed or ran less than
    /// `RETRY_AFTER` ago (so it is not asked again at every tick).
    fn recently_tried(&self, record: &NodeRecord) -> bool {
        lock(&self.attempted)
            .get(&record.node)
            .is_some_and(|(phase, at)| *phase == record.phase && at.elapsed() < RETRY_AFTER)
    }

    fn tried(&self, record: &NodeRecord) {
        lock(&self.attempted).insert(record.node.clone(), (record.phase, tokio::time::Instant::now()));
    }

    /// Asks for the VM (idempotent: the one made before is found) and moves to Created.
    async fn create(&self, record: NodeRecord, now: Timestamp) -> Result<(), ControlError> {
        let (Some(hypervisor), Some(spec)) = (self.hypervisor(&record), record.spec.clone()) else {
            let reason = format!("hypervisor {} is not configured", record.hypervisor.as_deref().unwrap_or("(none)"));
            return self.save(&record, record.fail(reason, now)).await;
        };
        if self.recently_tried(&record) {
            return Ok(());
        }
        self.tried(&record);
        match hypervisor.create(&spec).await {
            Ok(vm) => {
                let mut next = record.enter(Phase::Created, Timestamp::now());
                next.observed = Some(format!("VM {} on {}: {}", vm.id, vm.host, vm.state));
                next.vm = Some(VmPlace { hypervisor: vm.hypervisor.clone(), id: vm.id.clone(), host: vm.host.clone() });
                self.save(&record, next).await?;
                let details = EventKind::VmCreated { vm: vm.name.clone(), hypervisor: vm.hypervisor };
                self.clusters.events.append(Source::Hypervisor, subject(&record), details);
                Ok(())
            }
            Err(e) => self.call_failed(&record, &e).await,
        }
    }

    /// Shuts a leaving node's VM down (ACPI, forced after the shutdown limit), then deletes it
    /// with its disks; both are idempotent, so a restart simply asks again.
    async fn take_down(&self, record: NodeRecord, now: Timestamp) -> Result<(), ControlError> {
        let Some(hypervisor) = self.hypervisor(&record) else {
            let reason = format!("hypervisor {} is not configured", record.hypervisor.as_deref().unwrap_or("(none)"));
            return self.save(&record, record.fail(reason, now)).await;
        };
        if self.recently_tried(&record) {
            return Ok(());
        }
        self.tried(&record);
        // A VM that is not there (never made, or deleted before a restart) is shut down and
        // deleted already.
        let gone = |e: &crate::hypervisor::Error| matches!(e.kind, crate::hypervisor::ErrorKind::NotFound);
        if record.phase == Phase::ShuttingDown {
            return match hypervisor.shutdown(&owner(&record), record.limits.shutdown).await {
                Ok(()) => self.save(&record, record.enter(Phase::Deleting, now)).await,
                Err(e) if gone(&e) => self.save(&record, record.enter(Phase::Deleting, now)).await,
                Err(e) => self.call_failed(&record, &e).await,
            };
        }
        match hypervisor.delete(&owner(&record)).await {
            Err(e) if gone(&e) => self.remove(record).await,
            Ok(()) => {
                let details =
                    EventKind::VmDeleted { vm: record.node.to_string(), hypervisor: hypervisor.name().to_owned() };
                self.clusters.events.append(Source::Hypervisor, subject(&record), details);
                self.remove(record).await
            }
            Err(e) => self.call_failed(&record, &e).await,
        }
    }

    /// A create, shutdown or delete that failed: past the phase's deadline the node fails with
    /// the error; before it, the error is kept and the call made again. (The deadline is only
    /// looked at after the call: a VM made while slipway was down moves on, it does not fail.)
    ///
    /// Work still under way from before (a create task a killed slipway started) gets longer:
    /// `IN_PROGRESS_GRACE` past the deadline (a stale lock is named when it runs out).
    async fn call_failed(&self, record: &NodeRecord, e: &crate::hypervisor::Error) -> Result<(), ControlError> {
        let now = Timestamp::now();
        let error = e.to_string();
        let waiting = matches!(e.kind, crate::hypervisor::ErrorKind::InProgress(_))
            && record.deadline.is_some_and(|d| now.0 <= d.0 + IN_PROGRESS_GRACE);
        if !past(record, now) || waiting {
            return self.note_error(record, error).await;
        }
        let what = match record.phase {
            Phase::Creating => "created",
            Phase::ShuttingDown => "shut down",
            _ => "deleted",
        };
        let limit = record.limits.of(record.phase).map(crate::inventory::types::format_duration);
        let reason = format!("the VM was not {what} within {}; last error: {error}", limit.unwrap_or_default());
        self.save(record, record.fail(reason, now)).await
    }

    /// The node is gone: its reservation (and with it its DNS names and configs) and its record
    /// in one transaction, checked against the record as read, then its installed mark (a node
    /// of the same name made later must install; an apply that makes one clears it too). A
    /// deleted cluster goes once its last node has (`finish_deletions`).
    async fn remove(&self, record: NodeRecord) -> Result<(), ControlError> {
        let store = self.clusters.store.clone();
        let expected = record.clone();
        let done = blocking(move || {
            store.records_section(|store| {
                if store.record::<NodeRecord>(Records::Phases, expected.node.as_str())?.as_ref() != Some(&expected) {
                    return Ok(None);
                }
                let inv = store.snapshot();
                let mut ops = Vec::new();
                if inv.nodes.contains_key(&expected.node) {
                    ops.push(Op::Delete(Kind::Node, expected.node.clone()));
                }
                let records = [RecordWrite::remove(Records::Phases, expected.node.as_str())];
                let removed = store.apply_with(&ops, &records)?;
                if let Err(e) = store.set_installed(expected.node.as_str(), None) {
                    tracing::warn!(error = %e, "cannot clear the removed node's installed mark");
                }
                Ok(Some(removed))
            })
        })
        .await?;
        let Some((inv, outcomes)) = done else { return Ok(()) };
        tracing::info!("node removed");
        // Its host key goes with its VM: a node made again under its name gets a new one.
        let (dir, cluster, node) = (self.clusters.store.files(), record.cluster.to_string(), record.node.to_string());
        if let Ok(Err(e)) =
            tokio::task::spawn_blocking(move || crate::ssh::keys::remove_host(&dir, &cluster, &node)).await
        {
            tracing::warn!(error = %e, "cannot remove the node's host key");
        }
        let details = EventKind::NodePhase {
            cluster: record.cluster.clone(),
            from: record.phase.as_str().into(),
            phase: "removed".into(),
            error: None,
        };
        self.clusters.events.append(Source::Cluster, subject(&record), details);
        self.clusters.events.inventory_changed(Source::Cluster, &inv, &outcomes);
        Ok(())
    }

    /// Powers the VM on, once per phase entry in this process (and again `RETRY_AFTER` after a
    /// failure); a listed node has nothing to power.
    async fn start(&self, record: &NodeRecord) -> Result<(), ControlError> {
        let Some(hypervisor) = self.hypervisor(record) else { return Ok(()) };
        if record.spec.is_none() || self.recently_tried(record) || self.started(record) {
            return Ok(());
        }
        self.tried(record);
        if record.power_cycle {
            if let Err(e) = hypervisor.shutdown(&owner(record), POWER_OFF_WAIT).await {
                return self.note_error(record, e.to_string()).await;
            }
            tracing::info!("powered off for a fresh boot");
        }
        match hypervisor.start(&owner(record)).await {
            Ok(()) => {
                lock(&self.started).insert((record.node.clone(), record.powered_on));
                if record.power_cycle {
                    let mut next = record.clone();
                    next.power_cycle = false;
                    self.save(record, next).await?;
                }
                Ok(())
            }
            Err(e) => self.note_error(record, e.to_string()).await,
        }
    }

    /// Powered on by this process for the record's current power-on.
    fn started(&self, record: &NodeRecord) -> bool {
        lock(&self.started).contains(&(record.node.clone(), record.powered_on))
    }

    /// Keeps the error on the record (the phase stays; its deadline decides).
    async fn note_error(&self, record: &NodeRecord, error: String) -> Result<(), ControlError> {
        tracing::warn!(%error, "hypervisor call failed; retrying until the phase's deadline");
        if record.error.as_deref() == Some(error.as_str()) {
            return Ok(());
        }
        let mut next = record.clone();
        next.error = Some(error);
        self.save(record, next).await
    }

    /// What the node did since it was powered on, from the event log.
    async fn seen(&self, record: &NodeRecord) -> Result<Seen, ControlError> {
        let filter = Filter { node: Some(record.node.clone()), since: record.powered_on, ..Filter::default() };
        let events = self.clusters.events.clone();
        let found: Vec<Event> = blocking(move || events.query(&filter, 10_000)).await?;
        let mut seen = Seen::default();
        for e in found.iter().filter(|e| e.source != Source::Cluster && e.source != Source::Hypervisor) {
            match &e.details {
                EventKind::LeaseOffered { .. } | EventKind::LeaseAcked { .. } | EventKind::DhcpProxied { .. } => {
                    seen.dhcp = true
                }
                EventKind::ConfigFetched { .. } => seen.config = true,
                EventKind::PhoneHome { .. } => seen.phone_home = true,
                _ => {}
            }
            seen.last = Some(e.details.type_name().to_owned());
        }
        // A phone-home recorded since power-on counts even if its event was trimmed.
        if let (Some(at), Some(on)) = (self.clusters.store.installed(record.node.as_str()), record.powered_on) {
            seen.phone_home |= at >= on;
        }
        Ok(seen)
    }

    /// Stores `next` if the stored record is still `current` (an apply or a retry may have
    /// changed it meanwhile), then tells the event log of a phase change.
    async fn save(&self, current: &NodeRecord, next: NodeRecord) -> Result<(), ControlError> {
        let store = self.clusters.store.clone();
        let (key, expected, value) = (current.node.to_string(), current.clone(), next.clone());
        let (saved, phases) = blocking(move || {
            store.records_section(|store| {
                let stored = store.record::<NodeRecord>(Records::Phases, &key)?;
                if stored.as_ref() != Some(&expected) {
                    return Ok((false, Vec::new()));
                }
                store.write_records(&[RecordWrite::put(Records::Phases, key.as_str(), &value)])?;
                let phases: Vec<Phase> = store
                    .records::<NodeRecord>(Records::Phases)?
                    .into_iter()
                    .filter(|(_, r)| r.cluster == value.cluster)
                    .map(|(_, r)| r.phase)
                    .collect();
                Ok((true, phases))
            })
        })
        .await?;
        if !saved || next.phase == current.phase {
            return Ok(());
        }
        match &next.error {
            Some(error) if next.phase == Phase::Failed => tracing::warn!(phase = "failed", %error, "node failed"),
            _ => tracing::info!(phase = next.phase.as_str(), "node phase"),
        }
        let details = EventKind::NodePhase {
            cluster: next.cluster.clone(),
            from: current.phase.as_str().into(),
            phase: next.phase.as_str().into(),
            error: next.error.clone().filter(|_| next.phase == Phase::Failed),
        };
        self.clusters.events.append(Source::Cluster, subject(&next), details);
        let after = cluster_phase(&phases);
        let mut before = phases;
        if let Some(slot) = before.iter_mut().find(|p| **p == next.phase) {
            *slot = current.phase;
        }
        if cluster_phase(&before) != after {
            let details = EventKind::ClusterPhase { cluster: next.cluster.clone(), phase: after.into() };
            self.clusters.events.append(Source::Cluster, Subject::default(), details);
        }
        Ok(())
    }
}

fn past(record: &NodeRecord, now: Timestamp) -> bool {
    record.deadline.is_some_and(|d| now > d)
}

fn subject(record: &NodeRecord) -> Subject {
    Subject { node: Some(record.node.clone()), mac: None }
}

/// Who the node's VM belongs to, as it was made.
fn owner(record: &NodeRecord) -> Owner {
    match &record.spec {
        Some(spec) => spec.owner.clone(),
        None => Owner { cluster: Some(record.cluster.clone()), node: record.node.clone() },
    }
}
