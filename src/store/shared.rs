//! The store's shared half in etcd (`[store] backend = "etcd"`): the inventory objects made
//! through the API, the lifecycle records, the leases and the installed marks of two or three
//! instances live under one prefix; each instance keeps a mirror of that prefix, current
//! through a watch, and builds its inventory snapshot from it. Events stay in each instance's
//! own file.
//!
//! Writes are etcd transactions; a write returns once the mirror has seen it, so a caller reads
//! its own write, and every instance publishes the same objects in the same order. Object
//! changes compare the version key's value: two instances writing at once cannot both build on
//! the same snapshot (the second computes its change again); a read-modify-write of records
//! (`Store::records_section`) compares the records' mark the same way. Lease writes are fenced
//! by the leader's term (`etcd::leader`): an instance that does not lead, or no longer does,
//! cannot record a lease, so it never acknowledges one. The mirror, but for the leases, is
//! also kept in the instance's own file (`super::cache`), to serve from when it starts while
//! etcd cannot be reached.
//!
//! The keys, under the prefix (`/slipway/` by default):
//!
//! ```text
//! objects/{nodes,clusters,profiles}/<name>   JSON, as the embedded store keeps them
//! meta/inventory-version                     the inventory's version (decimal)
//! meta/records-version                       put by every records write (its revision is the mark)
//! records/<table>/<key>                      lifecycle records (JSON)
//! leases/<address>                           a lease (JSON)
//! installed/<node>                           when the node reported an installed system (ms)
//! leader                                     the leader's name, under its etcd lease
//! members/<instance>                         each running instance (JSON), under its lease
//! files/<path>, dated/<path>                 private files (`files`): uploads, SSH keys, k3s
//!                                            tokens, by their path under the state directory,
//!                                            and when each was made (ms)
//! ```

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::etcd::leader::{Leadership, Term};
use super::etcd::wire::{B64, Compare, DeleteRangeRequest, PutRequest, RequestOp, ResponseOp, TxnRequest};
use super::etcd::{Change, Etcd, EtcdError, Seen};
use super::events::{EventKind, EventLog, Source, Subject};
use super::records::{RecordWrite, Records};
use super::{Store, StoreError};
use crate::inventory::{HasOrigin, Inventory, Kind, Lease, Name, Origin, Timestamp, validate};

/// `[store] backend = "etcd"`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub etcd: super::etcd::Settings,
    /// Every key slipway writes starts with it (`/slipway/`).
    pub prefix: String,
    /// This instance's name among the others (the leader key holds it).
    pub instance: String,
    /// The leader's etcd lease: a leader that dies holds DHCP and the engine this long at most.
    pub lease_ttl: Duration,
    /// How the leader compacts etcd's history.
    pub compaction: Compaction,
}

/// Every lease write is an etcd revision, and an uncompacted history grows until etcd refuses
/// writes (its space quota): the leader compacts it to the last `keep` revisions every
/// `every`. An instance away for longer reads everything again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    pub every: Duration,
    pub keep: i64,
}

impl Default for Compaction {
    fn default() -> Compaction {
        Compaction { every: Duration::from_secs(300), keep: 10_000 }
    }
}

/// Why the shared store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("this instance ({instance}) does not lead: only the leader records leases")]
    NotLeader { instance: String },
    #[error("etcd accepted the write at revision {0} but this instance's copy has not seen it within {1:?}")]
    Behind(i64, Duration),
    #[error("etcd is unavailable: {0}")]
    Unavailable(String),
    #[error("other instances kept changing what this change is computed from; gave up after {0} attempts")]
    Contended(usize),
    /// Records were written (by another instance) between a section's reads and its write
    /// (`Store::records_section` computes it again).
    #[error("the records changed while this change was computed from them")]
    Moved,
    #[error("etcd key {key} cannot be read: {message}")]
    Corrupt { key: String, message: String },
}

/// One value in the mirror and the revision that wrote it.
#[derive(Clone, Debug)]
struct Value {
    bytes: Vec<u8>,
    revision: i64,
}

/// A read-modify-write of records under way (`Store::records_section`): the revision of the
/// last records write its reads saw (its own writes included), which its writes compare.
#[derive(Debug)]
pub(super) struct Section {
    seen: AtomicI64,
}

impl Section {
    /// A section whose reads saw the records as they were at revision `seen`.
    pub(super) fn since(seen: i64) -> Section {
        Section { seen: AtomicI64::new(seen) }
    }
}

/// This instance's copy of everything under the prefix.
#[derive(Debug, Default)]
struct Mirror {
    /// Every change up to this revision is in `keys`.
    revision: i64,
    keys: BTreeMap<Vec<u8>, Value>,
}

/// The shared half of a `Store`.
#[derive(Debug)]
pub struct Shared {
    etcd: Etcd,
    settings: Settings,
    runtime: tokio::runtime::Handle,
    mirror: RwLock<Mirror>,
    /// The mirror's revision, for writers waiting to read their own write.
    seen: watch::Sender<i64>,
    /// The config file's objects, which the stored ones are merged under.
    declared: Mutex<Inventory>,
    /// The term this instance leads in, if it does.
    term: watch::Sender<Option<Term>>,
    /// What this instance announces under `members/` (set before `follow`).
    presence: Mutex<Option<Member>>,
    /// Notified when the leader key goes: the leadership tries at once.
    vacated: Arc<tokio::sync::Notify>,
    /// Why etcd is unavailable here, while it is (no member takes a watch): writes fail at
    /// once rather than each waiting out the timeouts.
    down: Mutex<Option<String>>,
    /// Why the first read failed (etcd could not be reached at the start), if it did.
    unread: Option<String>,
    /// Whether the mirror was read whole from etcd (not only restored from the instance's
    /// copy): until then this instance does not try to lead.
    whole: Arc<AtomicBool>,
}

/// A running instance, as it announces itself to the others.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub name: String,
    /// Its admin API (`https://10.0.0.5:9443`).
    pub admin: String,
    /// slipway's version there.
    pub version: String,
    /// When it started (RFC 3339).
    pub started: String,
}

/// Who leads, as this instance's copy says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderSeen {
    pub name: String,
    /// The term: the leader key's create revision.
    pub term: i64,
}

const OBJECTS: &str = "objects/";
const VERSION: &str = "meta/inventory-version";
/// Put by every records write: its revision tells a section whether records changed since
/// its reads.
const RECORDS_VERSION: &str = "meta/records-version";
const RECORDS: &str = "records/";
const LEASES: &str = "leases/";
const INSTALLED: &str = "installed/";
const LEADER: &str = "leader";
const MEMBERS: &str = "members/";
const FILES: &str = "files/";
const DATED: &str = "dated/";
/// How many times an object change is computed again when another instance changed the
/// inventory first.
pub(super) const ATTEMPTS: usize = 8;

fn object_table(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Node => Some("nodes"),
        Kind::Cluster => Some("clusters"),
        Kind::Profile => Some("profiles"),
        _ => None,
    }
}

impl Shared {
    /// Connects and reads everything under the prefix once (the first mirror). Must run inside
    /// the daemon's runtime: later blocking calls go through it.
    /// When etcd cannot be reached, the mirror starts empty and `unread` says why: the store
    /// restores it from the instance's own copy, or refuses to start without one.
    pub async fn connect(settings: Settings) -> Result<Shared, SharedError> {
        let etcd = Etcd::new(&settings.etcd)?;
        let (mirror, unread) = match etcd.prefix(settings.prefix.as_bytes()).await {
            Ok((revision, kvs)) => (Mirror { revision, keys: values(kvs) }, None),
            Err(e) => (Mirror::default(), Some(e.to_string())),
        };
        Ok(Shared {
            etcd,
            settings,
            runtime: tokio::runtime::Handle::current(),
            seen: watch::channel(mirror.revision).0,
            mirror: RwLock::new(mirror),
            declared: Mutex::new(Inventory::default()),
            term: watch::channel(None).0,
            presence: Mutex::new(None),
            down: Mutex::new(unread.clone()),
            vacated: Arc::default(),
            whole: Arc::new(AtomicBool::new(unread.is_none())),
            unread,
        })
    }

    /// Why etcd could not be read at the start, if it could not.
    pub(super) fn unread(&self) -> Option<&str> {
        self.unread.as_deref()
    }

    /// Whether `key` is in the copy an instance keeps in its file (`super::cache`): all but
    /// the leases (only a leader uses them, and it reads etcd whole first) and who is there.
    /// Every watched change passes here (each lease write too): no allocation.
    fn kept(&self, key: &[u8]) -> bool {
        let rest = key.strip_prefix(self.settings.prefix.as_bytes()).unwrap_or(key);
        !rest.starts_with(LEASES.as_bytes()) && !rest.starts_with(MEMBERS.as_bytes()) && rest != LEADER.as_bytes()
    }

    /// The kept part of the mirror and its revision (for `cache::replace`).
    pub(super) fn kept_copy(&self) -> (i64, Vec<(Vec<u8>, super::cache::Entry)>) {
        let mirror = self.read();
        let keys = mirror.keys.iter().filter(|(k, _)| self.kept(k));
        (mirror.revision, keys.map(|(k, v)| (k.clone(), (v.revision, v.bytes.clone()))).collect())
    }

    /// Starts the mirror from this instance's copy (etcd could not be read: `unread`).
    pub(super) fn restore(&self, revision: i64, keys: super::cache::Keys) {
        let keys = keys.into_iter().map(|(k, (revision, bytes))| (k, Value { bytes, revision })).collect();
        // `seen` stays where it is: etcd may come back at another revision (restored from a
        // backup); the whole read that must come first sets it.
        *self.mirror.write().unwrap_or_else(|p| p.into_inner()) = Mirror { revision, keys };
        tracing::warn!(
            revision,
            reason = self.unread.as_deref().unwrap_or_default(),
            "etcd cannot be reached: serving DNS, network boot and the load balancer from this instance's copy of the shared state; DHCP allocates nothing and API writes answer 503 until etcd answers"
        );
    }

    /// Whether the mirror is this instance's copy restored from its file (no leases, maybe
    /// behind), not yet read whole from etcd.
    pub(super) fn partial(&self) -> bool {
        !self.whole.load(Ordering::SeqCst)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}{rest}", self.settings.prefix).into_bytes()
    }

    fn object_key(&self, kind: Kind, name: &str) -> Option<Vec<u8>> {
        object_table(kind).map(|t| self.key(&format!("{OBJECTS}{t}/{name}")))
    }

    fn record_key(&self, table: Records, key: &str) -> Vec<u8> {
        self.key(&format!("{RECORDS}{}/{key}", table.name()))
    }

    fn lease_key(&self, ip: Ipv4Addr) -> Vec<u8> {
        self.key(&format!("{LEASES}{ip}"))
    }

    fn installed_key(&self, node: &str) -> Vec<u8> {
        self.key(&format!("{INSTALLED}{node}"))
    }

    /// The leadership of this instance's group (announcing this instance, once `announce`d).
    pub fn leadership(&self) -> Leadership {
        let leadership =
            Leadership::new(self.etcd.clone(), &self.key(LEADER), &self.settings.instance, self.settings.lease_ttl)
                .waking_on(self.vacated.clone())
                .when_ready(self.whole.clone());
        match self.presence.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(member) => {
                leadership.with_presence(self.key(&format!("{MEMBERS}{}", member.name)), super::encode(member))
            }
            None => leadership,
        }
    }

    /// What this instance tells the others about itself (before `Store::follow`).
    pub fn announce(&self, member: Member) {
        *self.presence.lock().unwrap_or_else(|p| p.into_inner()) = Some(member);
    }

    /// The instances running now (their announcements), by name.
    pub fn members(&self) -> Vec<Member> {
        let mut members: Vec<Member> =
            self.under(MEMBERS).into_iter().filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok()).collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members
    }

    /// Who leads, if anyone.
    pub fn leader(&self) -> Option<LeaderSeen> {
        let mirror = self.read();
        let held = mirror.keys.get(&self.key(LEADER))?;
        Some(LeaderSeen { name: String::from_utf8_lossy(&held.bytes).into_owned(), term: held.revision })
    }

    /// The term in force here: `Some` while this instance leads.
    pub fn terms(&self) -> watch::Receiver<Option<Term>> {
        self.term.subscribe()
    }

    /// Why etcd cannot be used now, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        self.down.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_down(&self, reason: String, events: Option<&EventLog>) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if down.is_none() {
            tracing::warn!(%reason, "etcd unavailable: API writes answer 503 and DHCP allocates nothing; DNS, boot and the load balancer serve the last inventory");
            if let Some(events) = events {
                events.append(
                    Source::Daemon,
                    Subject::default(),
                    EventKind::StoreUnavailable { reason: reason.clone() },
                );
            }
        }
        *down = Some(reason);
    }

    fn set_up(&self, events: Option<&EventLog>) {
        if self.down.lock().unwrap_or_else(|p| p.into_inner()).take().is_some() {
            tracing::info!("etcd available again");
            if let Some(events) = events {
                events.append(Source::Daemon, Subject::default(), EventKind::StoreAvailable);
            }
        }
    }

    fn check_up(&self) -> Result<(), SharedError> {
        match self.unavailable() {
            Some(reason) => Err(SharedError::Unavailable(reason)),
            None => Ok(()),
        }
    }

    /// The revision the mirror is current to.
    pub fn revision(&self) -> i64 {
        *self.seen.borrow()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Mirror> {
        self.mirror.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every value under `rest` (after the prefix), with the key's remainder.
    fn under(&self, rest: &str) -> Vec<(String, Vec<u8>)> {
        let start = self.key(rest);
        let mirror = self.read();
        mirror
            .keys
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .map(|(k, v)| (String::from_utf8_lossy(&k[start.len()..]).into_owned(), v.bytes.clone()))
            .collect()
    }

    fn value(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.read().keys.get(key).map(|v| v.bytes.clone())
    }

    /// Runs `request` in etcd from blocking code (a `spawn_blocking` thread, never a runtime
    /// worker) and waits until the mirror has seen what it wrote.
    fn transact(&self, request: &TxnRequest) -> Result<(bool, i64), SharedError> {
        self.transact_as(request.clone(), false)
    }

    /// `transact`; when `fenced`, the write holds only while this instance leads (the
    /// lifecycle engine's writes): refused with `NotLeader` when it does not, or no longer does.
    fn transact_as(&self, mut request: TxnRequest, fenced: bool) -> Result<(bool, i64), SharedError> {
        self.check_up()?;
        let term = match fenced {
            false => None,
            true => {
                let term = self.term.borrow().clone();
                let term = term.ok_or_else(|| SharedError::NotLeader { instance: self.settings.instance.clone() })?;
                super::etcd::leader::fence(&self.key(LEADER), &term, &mut request);
                Some(term)
            }
        };
        let answer = self.runtime.block_on(self.etcd.txn(&request))?;
        if let Some(term) = term
            && !answer.succeeded
        {
            let held = answer.responses.iter().rev().find_map(|r| match r {
                ResponseOp::ResponseRange(range) => Some(range.kvs.first().map(|kv| kv.create_revision.0)),
                _ => None,
            });
            if held != Some(Some(term.revision)) {
                return Err(SharedError::NotLeader { instance: self.settings.instance.clone() });
            }
        }
        let revision = answer.header.revision.0;
        self.wait_for(revision)?;
        Ok((answer.succeeded, revision))
    }

    /// Waits, up to the timeout, until the mirror holds every write up to `revision`.
    pub(super) async fn caught_up(&self, revision: i64) -> bool {
        let mut seen = self.seen.subscribe();
        let limit = self.settings.etcd.timeout;
        tokio::time::timeout(limit, seen.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    fn wait_for(&self, revision: i64) -> Result<(), SharedError> {
        match self.runtime.block_on(self.caught_up(revision)) {
            true => Ok(()),
            false => Err(SharedError::Behind(revision, self.settings.etcd.timeout)),
        }
    }

    // --- reads, from the mirror ---

    pub(super) fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let mut leases = self
            .under(LEASES)
            .into_iter()
            .map(|(key, bytes)| super::decode::<Lease>("leases", key, &bytes))
            .collect::<Result<Vec<_>, _>>()?;
        leases.sort_by_key(|l| l.ip);
        Ok(leases)
    }

    pub(super) fn lease(&self, ip: Ipv4Addr) -> Result<Option<Lease>, StoreError> {
        self.value(&self.lease_key(ip)).map(|bytes| super::decode("leases", ip, &bytes)).transpose()
    }

    pub(super) fn installed(&self, node: &str) -> Option<Timestamp> {
        let bytes = self.value(&self.installed_key(node))?;
        std::str::from_utf8(&bytes).ok()?.parse().ok().map(Timestamp::from_unix_millis)
    }

    pub(super) fn records(&self, table: Records) -> Vec<(String, Vec<u8>)> {
        self.under(&format!("{RECORDS}{}/", table.name()))
    }

    pub(super) fn record(&self, table: Records, key: &str) -> Option<Vec<u8>> {
        self.value(&self.record_key(table, key))
    }

    // --- writes ---

    /// The revision of the last records write the mirror holds.
    pub(super) fn records_revision(&self) -> i64 {
        self.read().keys.get(&self.key(RECORDS_VERSION)).map_or(0, |v| v.revision)
    }

    /// A section starting from what the mirror holds now.
    pub(super) fn section(&self) -> Section {
        Section::since(self.records_revision())
    }

    /// The ops writing `records` (none when there are none), the records' revision mark included.
    fn record_ops(&self, records: &[RecordWrite]) -> Vec<RequestOp> {
        let mut ops: Vec<RequestOp> = records
            .iter()
            .map(|r| {
                let key = self.record_key(r.table, &r.key);
                match &r.value {
                    Some(bytes) => put(key, bytes.clone()),
                    None => delete(key),
                }
            })
            .collect();
        if !ops.is_empty() {
            ops.push(put(self.key(RECORDS_VERSION), Vec::new()));
        }
        ops
    }

    /// What a write of records in `section` compares: no records written since its reads.
    fn section_compare(&self, section: Option<&Section>) -> Vec<Compare> {
        let seen = |s: &Section| s.seen.load(Ordering::SeqCst);
        section.map(|s| Compare::modified_at(&self.key(RECORDS_VERSION), seen(s))).into_iter().collect()
    }

    /// Writes `records`; in a `section`, only if no records were written since its reads
    /// (`Moved` otherwise).
    pub(super) fn write_records(
        &self,
        records: &[RecordWrite],
        fenced: bool,
        section: Option<&Section>,
    ) -> Result<(), SharedError> {
        if records.is_empty() {
            return Ok(());
        }
        let request =
            TxnRequest { compare: self.section_compare(section), success: self.record_ops(records), failure: vec![] };
        match self.transact_as(request, fenced)? {
            (true, revision) => {
                if let Some(section) = section {
                    section.seen.store(revision, Ordering::SeqCst);
                }
                Ok(())
            }
            (false, _) => Err(SharedError::Moved),
        }
    }

    pub(super) fn set_installed(&self, node: &str, at: Option<Timestamp>, fenced: bool) -> Result<(), SharedError> {
        let key = self.installed_key(node);
        let op = match at {
            Some(at) => put(key, at.unix_millis().to_string().into_bytes()),
            None => delete(key),
        };
        self.transact_as(TxnRequest { compare: vec![], success: vec![op], failure: vec![] }, fenced).map(drop)
    }

    // --- private files (`super::files`) ---

    pub(super) fn file(&self, name: &str) -> Option<Vec<u8>> {
        self.value(&self.key(&format!("{FILES}{name}")))
    }

    pub(super) fn file_made(&self, name: &str) -> Option<u64> {
        let bytes = self.value(&self.key(&format!("{DATED}{name}")))?;
        std::str::from_utf8(&bytes).ok()?.parse().ok()
    }

    fn file_ops(&self, name: &str, body: &[u8], made_ms: u64) -> Vec<RequestOp> {
        vec![
            put(self.key(&format!("{FILES}{name}")), body.to_vec()),
            put(self.key(&format!("{DATED}{name}")), made_ms.to_string().into_bytes()),
        ]
    }

    pub(super) fn file_replace(&self, name: &str, body: &[u8], made_ms: u64) -> Result<(), SharedError> {
        let request = TxnRequest { compare: vec![], success: self.file_ops(name, body, made_ms), failure: vec![] };
        self.transact(&request).map(drop)
    }

    /// Stores `body` as `name` unless it exists; whether this call stored it.
    pub(super) fn file_once(&self, name: &str, body: &[u8]) -> Result<bool, SharedError> {
        let now = Timestamp::now().unix_millis();
        let request = TxnRequest {
            compare: vec![Compare::created_at(&self.key(&format!("{FILES}{name}")), 0)],
            success: self.file_ops(name, body, now),
            failure: vec![],
        };
        self.transact(&request).map(|(stored, _)| stored)
    }

    /// Removes `name` (and, with `under`, everything under `name/`).
    pub(super) fn files_remove(&self, name: &str, under: bool) -> Result<(), SharedError> {
        let mut ops = Vec::new();
        for table in [FILES, DATED] {
            let key = self.key(&format!("{table}{name}"));
            ops.push(delete(key.clone()));
            if under {
                let mut dir = key;
                dir.push(b'/');
                let end = super::etcd::prefix_end(&dir);
                ops.push(RequestOp::RequestDeleteRange(DeleteRangeRequest {
                    key: B64(dir),
                    range_end: Some(B64(end)),
                }));
            }
        }
        self.transact(&TxnRequest { compare: vec![], success: ops, failure: vec![] }).map(drop)
    }

    /// Records `leases` if this instance leads, in one fenced transaction.
    pub(super) fn put_leases(&self, leases: &[Lease]) -> Result<(), SharedError> {
        let Some(term) = self.term.borrow().clone() else {
            return Err(SharedError::NotLeader { instance: self.settings.instance.clone() });
        };
        self.check_up()?;
        let ops = leases.iter().map(|l| put(self.lease_key(l.ip), super::encode(l))).collect();
        let request = self.leadership().fenced(&term, ops);
        let answer = self.runtime.block_on(self.etcd.txn(&request))?;
        if !answer.succeeded {
            return Err(SharedError::NotLeader { instance: self.settings.instance.clone() });
        }
        // The lease is in etcd (a majority has it); the mirror follows on its own.
        Ok(())
    }

    /// Writes an inventory change computed by `change` from the snapshot in force (every
    /// API-made object that differs, and the version), with `records`; computed again when
    /// another instance changed the inventory in between. `None` from `change`: nothing to
    /// write.
    pub(super) fn write_objects<T>(
        &self,
        store: &Store,
        records: &[RecordWrite],
        (fenced, section): (bool, Option<&Section>),
        mut change: impl FnMut(&Inventory) -> Result<Option<(Inventory, T)>, StoreError>,
    ) -> Result<Option<(Arc<Inventory>, T)>, StoreError> {
        for _ in 0..ATTEMPTS {
            let current = store.snapshot();
            let Some((next, out)) = change(&current)? else {
                return Ok(None);
            };
            let mut ops = self.record_ops(records);
            for (kind, name) in changed_objects(&current, &next) {
                let Some(key) = self.object_key(kind, name.as_str()) else { continue };
                match object_json(&next, kind, &name) {
                    Some(bytes) => ops.push(put(key, bytes)),
                    None => ops.push(delete(key)),
                }
            }
            ops.push(put(self.key(VERSION), next.version.to_string().into_bytes()));
            // The version this change was computed from is still the last one written: no
            // other instance changed the inventory in between (versions only grow).
            let mut compare = vec![Compare::holds(
                &self.key(VERSION),
                (current.version > 0).then(|| current.version.to_string().into_bytes()).as_deref(),
            )];
            let section = section.filter(|_| !records.is_empty());
            compare.extend(self.section_compare(section));
            let request = TxnRequest { compare, success: ops, failure: vec![] };
            let (succeeded, revision) = self.transact_as(request, fenced).map_err(StoreError::Shared)?;
            if succeeded {
                if let Some(section) = section {
                    section.seen.store(revision, Ordering::SeqCst);
                }
                return Ok(Some((store.snapshot(), out)));
            }
            // The mirror has what was written meanwhile: records under a section's reads mean
            // the section computes again; another instance's inventory change, this one does.
            if section.is_some_and(|s| s.seen.load(Ordering::SeqCst) != self.records_revision()) {
                return Err(StoreError::Shared(SharedError::Moved));
            }
        }
        Err(StoreError::Shared(SharedError::Contended(ATTEMPTS)))
    }

    /// Sets the config file's objects (at start and on reload); the next build merges them.
    /// The ones set before.
    pub(super) fn declare(&self, declared: Inventory) -> Inventory {
        std::mem::replace(&mut *self.declared.lock().unwrap_or_else(|p| p.into_inner()), declared)
    }

    /// The inventory: the declared objects, with the stored ones under them (a stored object
    /// the file declares too is left out: the file wins). Its problems when it does not
    /// validate (instances with different config files).
    pub(super) fn build(&self) -> Result<Inventory, Vec<String>> {
        let mut inv = self.declared.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mirror = self.read();
        let version_key = self.key(VERSION);
        let version = mirror.keys.get(&version_key);
        inv.version = version.and_then(|v| std::str::from_utf8(&v.bytes).ok()?.parse().ok()).unwrap_or(0);
        let mut problems = Vec::new();
        let start = self.key(OBJECTS);
        for (key, value) in mirror.keys.range(start.clone()..).take_while(|(k, _)| k.starts_with(&start)) {
            let rest = String::from_utf8_lossy(&key[start.len()..]).into_owned();
            if let Err(message) = merge_object(&mut inv, &rest, &value.bytes) {
                problems.push(format!("etcd key {}{OBJECTS}{rest}: {message}", self.settings.prefix));
            }
        }
        inv.reindex();
        problems.extend(validate(&inv).iter().map(ToString::to_string));
        if problems.is_empty() { Ok(inv) } else { Err(problems) }
    }

    /// Applies one watch message to the mirror; whether it touched inventory objects, and the
    /// changes to the kept keys (for the instance's copy; `None`: the key went).
    fn absorb(&self, changes: Vec<Change>) -> (bool, Vec<super::cache::Kept>) {
        let objects = self.key(OBJECTS);
        let version = self.key(VERSION);
        let leader = self.key(LEADER);
        let mut mirror = self.mirror.write().unwrap_or_else(|p| p.into_inner());
        let mut touched = false;
        let mut kept = Vec::new();
        // One transaction's changes share a revision: each is new if it is newer than what
        // the mirror held before this message (a resumed watch may repeat what it has).
        let before = mirror.revision;
        for change in changes {
            let (key, revision) = match &change {
                Change::Put(kv) => (kv.key.0.clone(), kv.mod_revision.0),
                Change::Delete { key, revision } => (key.clone(), *revision),
            };
            if revision <= before {
                continue;
            }
            touched |= key.starts_with(&objects) || key == version;
            if self.kept(&key) {
                let value = match &change {
                    Change::Put(kv) => Some((revision, kv.value.0.clone())),
                    Change::Delete { .. } => None,
                };
                kept.push((key.clone(), value));
            }
            match change {
                Change::Put(kv) => {
                    if key == leader {
                        self.not_our_term(Some(kv.create_revision.0), revision);
                    }
                    mirror.keys.insert(key, Value { bytes: kv.value.0, revision });
                }
                Change::Delete { .. } => {
                    if key == leader {
                        self.not_our_term(None, revision);
                        self.vacated.notify_one();
                    }
                    mirror.keys.remove(&key);
                }
            }
            mirror.revision = mirror.revision.max(revision);
        }
        (touched, kept)
    }

    /// The leader key now holds `term` (`None`: it went): a term of this instance's that is not
    /// it is over, whatever its etcd lease says (the key was deleted, or another made it).
    /// `at`: the revision of that change. A change older than this instance's term (a watch
    /// that lags behind delivering the previous leader's resignation after this one took the
    /// key) says nothing about it.
    fn not_our_term(&self, term: Option<i64>, at: i64) {
        let ended = self.term.send_if_modified(|ours| {
            let over = ours.as_ref().is_some_and(|t| at > t.revision && Some(t.revision) != term);
            if over {
                *ours = None;
            }
            over
        });
        if ended {
            tracing::warn!("the leader key changed under this instance: no longer leading");
        }
    }

    /// Replaces the mirror with a fresh read (after a compaction took the watch's start away).
    async fn reload(&self) -> Result<(), EtcdError> {
        let (revision, kvs) = self.etcd.prefix(self.settings.prefix.as_bytes()).await?;
        let keys = values(kvs);
        // The leader key is only ever put once: its last change is its creation, the term.
        let held = keys.get(&self.key(LEADER)).map(|v| v.revision);
        *self.mirror.write().unwrap_or_else(|p| p.into_inner()) = Mirror { revision, keys };
        self.not_our_term(held, revision);
        // A whole read replaces what was seen (etcd restored from a backup may be behind it).
        self.seen.send_replace(revision);
        self.whole.store(true, Ordering::SeqCst);
        Ok(())
    }
}

fn put(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp::RequestPut(PutRequest { key: B64(key), value: B64(value), lease: None })
}

fn delete(key: Vec<u8>) -> RequestOp {
    RequestOp::RequestDeleteRange(DeleteRangeRequest { key: B64(key), range_end: None })
}

/// A read of etcd as the mirror keeps it.
fn values(kvs: Vec<super::etcd::wire::KeyValue>) -> BTreeMap<Vec<u8>, Value> {
    kvs.into_iter().map(|kv| (kv.key.0, Value { bytes: kv.value.0, revision: kv.mod_revision.0 })).collect()
}

/// The API-made objects that differ between `a` and `b`.
fn changed_objects(a: &Inventory, b: &Inventory) -> Vec<(Kind, Name)> {
    fn diff<T: PartialEq + HasOrigin>(
        kind: Kind,
        a: &BTreeMap<Name, T>,
        b: &BTreeMap<Name, T>,
        out: &mut Vec<(Kind, Name)>,
    ) {
        let api = |t: &T| t.origin() == Origin::Api;
        for (name, x) in a {
            if api(x) && b.get(name) != Some(x) {
                out.push((kind, name.clone()));
            }
        }
        for (name, y) in b {
            if api(y) && a.get(name) != Some(y) && !out.iter().any(|(k, n)| *k == kind && n == name) {
                out.push((kind, name.clone()));
            }
        }
    }
    let mut out = Vec::new();
    diff(Kind::Node, &a.nodes, &b.nodes, &mut out);
    diff(Kind::Cluster, &a.clusters, &b.clusters, &mut out);
    diff(Kind::Profile, &a.profiles, &b.profiles, &mut out);
    out
}

/// The stored form of an API-made object in `inv`; `None` when it is gone or declared.
fn object_json(inv: &Inventory, kind: Kind, name: &Name) -> Option<Vec<u8>> {
    fn api<T: HasOrigin + serde::Serialize>(t: Option<&T>) -> Option<Vec<u8>> {
        t.filter(|t| t.origin() == Origin::Api).map(super::encode)
    }
    match kind {
        Kind::Node => api(inv.nodes.get(name)),
        Kind::Cluster => api(inv.clusters.get(name)),
        Kind::Profile => api(inv.profiles.get(name)),
        _ => None,
    }
}

/// Puts the object stored at `rest` (`nodes/<name>`) into `inv` unless the file declares one
/// of that name.
fn merge_object(inv: &mut Inventory, rest: &str, bytes: &[u8]) -> Result<(), String> {
    fn one<T: HasOrigin + serde::de::DeserializeOwned>(
        map: &mut BTreeMap<Name, T>,
        name: Name,
        bytes: &[u8],
    ) -> Result<(), String> {
        if map.contains_key(&name) {
            return Ok(());
        }
        let mut object: T = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        *object.origin_mut() = Origin::Api;
        map.insert(name, object);
        Ok(())
    }
    let (table, name) = rest.split_once('/').ok_or_else(|| "not an object key".to_string())?;
    let name: Name = name.parse().map_err(|e: crate::inventory::BadValue| e.to_string())?;
    match table {
        "nodes" => one(&mut inv.nodes, name, bytes),
        "clusters" => one(&mut inv.clusters, name, bytes),
        "profiles" => one(&mut inv.profiles, name, bytes),
        other => Err(format!("unknown object table {other:?}")),
    }
}

/// How a watch ended.
enum Ended {
    /// Its start was compacted away: read everything again.
    Compacted,
    /// It ran, then broke (a member went, or lost its leader).
    Broke(EtcdError),
    /// No member would take it.
    Refused(EtcdError),
}

/// While this instance leads, compacts etcd's history (`Compaction`).
async fn compact(shared: Arc<Shared>, shutdown: CancellationToken) {
    let Compaction { every, keep } = shared.settings.compaction;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if shared.term.borrow().is_none() {
            continue;
        }
        let newest = shared.revision();
        if newest <= keep {
            continue;
        }
        match shared.etcd.compact(newest - keep).await {
            Ok(()) => tracing::debug!(up_to = newest - keep, "etcd: compacted the history"),
            Err(EtcdError::Compacted(_)) => {}
            Err(e) => tracing::warn!(error = %e, "etcd: cannot compact the history"),
        }
    }
}

const MIN_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Records each change of leadership here as an event (and a log line).
async fn report_terms(mut terms: watch::Receiver<Option<Term>>, events: Option<EventLog>, shutdown: CancellationToken) {
    let mut leading = terms.borrow_and_update().is_some();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = terms.changed() => if changed.is_err() { return },
        }
        let term = terms.borrow_and_update().as_ref().map(|t| t.revision);
        let details = match (leading, term) {
            (false, Some(term)) => EventKind::LeadershipGained { term },
            (true, None) => EventKind::LeadershipLost,
            _ => continue,
        };
        leading = term.is_some();
        if let Some(events) = &events {
            events.append(Source::Daemon, Subject::default(), details);
        }
    }
}

impl Store {
    /// Keeps this instance's mirror (and so its snapshot) current from an etcd watch, and
    /// tries to lead, until `shutdown`. A broken watch resumes from the last revision seen; a
    /// compacted one reads everything again. When no member will take a watch (etcd down, or
    /// without quorum) the store is marked unavailable (writes fail at once) until one does;
    /// each change of that, and of leadership, is an event in `events`. Does nothing on the
    /// embedded store.
    pub async fn follow(&self, events: Option<EventLog>, shutdown: CancellationToken) {
        let Some(shared) = self.inner.shared.clone() else { return };
        // Started without etcd (on the copy in the file): say so as when it goes later.
        if let (Some(reason), Some(events)) = (shared.unavailable(), &events) {
            events.append(Source::Daemon, Subject::default(), EventKind::StoreUnavailable { reason });
        }
        let leading = tokio::spawn(shared.leadership().run(shared.term.clone(), shutdown.clone()));
        let reporting = tokio::spawn(report_terms(shared.terms(), events.clone(), shutdown.clone()));
        let compacting = tokio::spawn(compact(shared.clone(), shutdown.clone()));
        let mut pause = MIN_PAUSE;
        while !shutdown.is_cancelled() {
            let from = shared.read().revision + 1;
            // A copy restored from the file lacks the leases: read etcd whole first.
            let ended = match shared.partial() {
                true => Ended::Compacted,
                false => tokio::select! {
                    () = shutdown.cancelled() => break,
                    ended = self.follow_from(&shared, from, events.as_ref()) => ended,
                },
            };
            let wait = match ended {
                Ended::Compacted => {
                    if !shared.partial() {
                        tracing::warn!(
                            from,
                            "etcd compacted the history this instance needed: reading everything again"
                        );
                    }
                    let reloaded = tokio::select! {
                        () = shutdown.cancelled() => break,
                        reloaded = shared.reload() => reloaded,
                    };
                    match reloaded {
                        Ok(()) => {
                            shared.set_up(events.as_ref());
                            self.publish(&shared);
                            self.keep_all(&shared);
                            continue;
                        }
                        Err(e) => {
                            shared.set_down(format!("cannot read the store again: {e}"), events.as_ref());
                            true
                        }
                    }
                }
                // It worked until now: try again at once (on another member if this one went).
                Ended::Broke(e) => {
                    tracing::warn!(error = %e, from, "etcd: the watch ended; resuming");
                    pause = MIN_PAUSE;
                    false
                }
                Ended::Refused(e) => {
                    shared.set_down(e.to_string(), events.as_ref());
                    true
                }
            };
            let pause_now = if wait { pause } else { MIN_PAUSE };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(pause_now) => {}
            }
            if wait {
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
        let _ = leading.await;
        let _ = reporting.await;
        let _ = compacting.await;
    }

    async fn follow_from(&self, shared: &Shared, from: i64, events: Option<&EventLog>) -> Ended {
        let mut watch = match shared.etcd.watch(shared.settings.prefix.as_bytes(), from).await {
            Ok(watch) => watch,
            Err(EtcdError::Compacted(_)) => return Ended::Compacted,
            Err(e) => return Ended::Refused(e),
        };
        shared.set_up(events);
        loop {
            let seen = match watch.next().await {
                Ok(Some(seen)) => seen,
                Ok(None) => return Ended::Broke(EtcdError::Decode("the watch stream closed".into())),
                Err(EtcdError::Compacted(_)) => return Ended::Compacted,
                Err(e) => return Ended::Broke(e),
            };
            let revision = match seen {
                Seen::Changes { changes, .. } => {
                    let (touched, kept) = shared.absorb(changes);
                    if touched {
                        self.publish(shared);
                    }
                    let revision = shared.read().revision;
                    self.keep(revision, kept);
                    revision
                }
                Seen::Progress { revision } => {
                    let mut mirror = shared.mirror.write().unwrap_or_else(|p| p.into_inner());
                    mirror.revision = mirror.revision.max(revision);
                    mirror.revision
                }
            };
            shared.seen.send_if_modified(|seen| {
                let newer = revision > *seen;
                *seen = (*seen).max(revision);
                newer
            });
        }
    }

    /// Hands `changes` to the thread writing this instance's copy, current to `revision`.
    fn keep(&self, revision: i64, changes: Vec<super::cache::Kept>) {
        if let (false, Some(copy)) = (changes.is_empty(), self.inner.copy.get()) {
            copy.update(revision, changes);
        }
    }

    /// Hands the whole kept mirror to that thread, to replace the copy.
    pub(super) fn keep_all(&self, shared: &Shared) {
        if let Some(copy) = self.inner.copy.get() {
            let (revision, keys) = shared.kept_copy();
            copy.replace(revision, keys);
        }
    }

    /// Builds the inventory from the mirror and publishes it; one that does not validate is
    /// not published (the last good one stays), with a warning.
    fn publish(&self, shared: &Shared) {
        match shared.build() {
            Ok(inv) => {
                self.inner.snapshot.send_replace(Arc::new(inv));
            }
            Err(problems) => {
                tracing::warn!(problems = %problems.join("; "), "the shared inventory does not validate here (do the instances run the same config file?); keeping the last good one");
            }
        }
    }
}
