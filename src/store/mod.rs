//! Persistence: the inventory objects created through the API and the event log in one redb file
//! under the state directory, and leases in a journal beside it (`journal`).
//!
//! Every change is one transaction; only after it commits is the next inventory snapshot
//! published on a `watch` channel. A change that fails validation or storage leaves the previous
//! snapshot in force. This module decides nothing about protocols.

mod cache;
pub mod etcd;
pub mod events;
pub mod files;
pub mod journal;
pub mod private;
pub mod records;
pub mod schema;
pub mod shared;
pub mod uploads;

use std::fs::{self, DirBuilder};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::inventory::{
    Action, ChangeError, HasOrigin, Inventory, Kind, Lease, LeaseState, Name, Op, Origin, Outcome, Timestamp, validate,
};
use journal::Journal;
use schema::{CLUSTERS, INSTALLED, INVENTORY_VERSION_KEY, LEASES, META, NODES, PROFILES, SCHEMA_VERSION};

/// The store's file name inside the state directory.
pub const FILE_NAME: &str = "slipway.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error(
        "state directory {path} has mode {mode:04o} (other users can read the store, tokens and Ignition) and cannot be tightened to 0700: {source}"
    )]
    StateDirMode { path: PathBuf, mode: u32, source: std::io::Error },
    #[error("store {path} is open in another process (is another slipway running with the same state directory?)")]
    InUse { path: PathBuf },
    #[error("cannot open store {path}: {source}")]
    Open { path: PathBuf, source: redb::DatabaseError },
    #[error(
        "store {path} was written by a newer slipway (schema version {found}; this build understands up to {supported}); \
         run the newer slipway or restore a backup"
    )]
    NewerSchema { path: PathBuf, found: u64, supported: u64 },
    #[error("store {table} entry {key} cannot be read: {message}")]
    Corrupt { table: &'static str, key: String, message: String },
    #[error("the stored objects conflict with the config file: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Conflict(Vec<crate::inventory::Problem>),
    #[error("the objects in etcd conflict with the config file: {}", .0.join("; "))]
    SharedConflict(Vec<String>),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error("no lease for {0}")]
    NoLease(Ipv4Addr),
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    #[error("shared store: {0}")]
    Shared(#[from] shared::SharedError),
}

/// Whether `error`, or anything that caused it, is the disk being full (`ENOSPC`) or a quota
/// reached (`EDQUOT`): the one failure an operator fixes by freeing space.
pub fn disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let full = |io: &std::io::Error| {
        matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
            || matches!(io.raw_os_error(), Some(28 | 122))
    };
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>().is_some_and(full) {
            return true;
        }
        next = e.source();
    }
    // Some wrappers keep only an I/O error's message.
    let text = error.to_string();
    text.contains("(os error 28)") || text.contains("(os error 122)")
}

impl StoreError {
    /// The disk under the state directory is full (see `disk_full`).
    pub fn is_disk_full(&self) -> bool {
        disk_full(self)
    }

    /// redb's answer to every transaction after an I/O failure, until the file is reopened.
    fn is_previous_io(&self) -> bool {
        matches!(self, StoreError::Db(redb::Error::PreviousIo))
    }

    /// Records written by another instance under a `Store::records_section`'s reads: the
    /// section computes again.
    pub fn is_moved(&self) -> bool {
        matches!(self, StoreError::Shared(shared::SharedError::Moved))
    }
}

macro_rules! db_error_from {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StoreError {
            fn from(e: $ty) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
db_error_from!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// Where the records stood when it was taken (`Store::records_mark`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordsMark(i64);

/// The store: cheap to clone, safe to share across tasks and threads.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
    /// Writes of the lifecycle engine: on etcd they hold only while this instance leads.
    fenced: bool,
    /// On etcd, inside `records_section`: what its record writes compare.
    section: Option<Arc<shared::Section>>,
}

#[derive(Debug)]
struct Inner {
    /// `None` only between a failed reopen and the next attempt.
    db: std::sync::RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    /// Serialises writers so each change is computed from the latest snapshot.
    writer: Mutex<()>,
    /// Serialises `records_section`s (taken before `writer`).
    records: Mutex<()>,
    snapshot: watch::Sender<Arc<Inventory>>,
    /// The `installed` table, kept in memory too: every boot script asks it.
    installed: Mutex<std::collections::HashMap<String, Timestamp>>,
    /// The lease journal; `None` when leases live in etcd (`shared`).
    journal: Option<Journal>,
    /// `[store] backend = "etcd"`: objects, records, leases and installed marks live there;
    /// the file under the state directory keeps only this instance's events.
    shared: Option<Arc<shared::Shared>>,
    /// This instance, as `announce` described it.
    this: Mutex<Option<shared::Member>>,
    /// On etcd: the thread keeping this instance's copy of the shared state (`cache`).
    copy: std::sync::OnceLock<cache::Writer>,
    /// Failed reads and writes of the database (objects, records, events) and of the lease
    /// journal, for `slipway_store_errors_total`.
    database_errors: std::sync::atomic::AtomicU64,
    journal_errors: std::sync::atomic::AtomicU64,
    shared_errors: std::sync::atomic::AtomicU64,
    #[cfg(test)]
    fail_next_commit: std::sync::atomic::AtomicBool,
}

/// How many store operations have failed since the start, by part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// The redb file: inventory objects, lifecycle records, events.
    pub database: u64,
    /// The lease journal.
    pub lease_journal: u64,
    /// etcd (`[store] backend = "etcd"`): objects, records, leases, marks.
    pub etcd: u64,
}

fn table_of(kind: Kind) -> Option<TableDefinition<'static, &'static str, &'static [u8]>> {
    match kind {
        Kind::Node => Some(NODES),
        Kind::Cluster => Some(CLUSTERS),
        Kind::Profile => Some(PROFILES),
        _ => None,
    }
}

fn decode<T: DeserializeOwned>(table: &'static str, key: impl ToString, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        key: key.to_string(),
        message: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain data with string keys into a Vec cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// A state directory that already existed (made by `images fetch --dir`, or by hand) gets the
/// mode slipway creates it with: 0700, with a warning; one it cannot change stops the start.
fn private_dir(dir: &Path) -> Result<(), StoreError> {
    let meta = fs::metadata(dir).map_err(|source| StoreError::StateDir { path: dir.to_owned(), source })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o7700)).map_err(|source| StoreError::StateDirMode {
        path: dir.to_owned(),
        mode,
        source,
    })?;
    tracing::warn!(path = %dir.display(), from = format_args!("{mode:04o}"), to = format_args!("{:04o}", mode & 0o7700), "tightened the state directory's mode: other users could read it");
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store in `state_dir`, migrates it to this build's schema,
    /// merges the API-created objects with `declared` (the config file's objects, which win on a
    /// name clash) and publishes the first snapshot.
    pub fn open(state_dir: &Path, declared: Inventory) -> Result<Store, StoreError> {
        Store::open_with(state_dir, declared, None)
    }

    /// Opens the store of an instance sharing its state through etcd (`shared`, connected):
    /// the file in `state_dir` keeps only this instance's events; the first snapshot is the
    /// declared objects with those in etcd under them.
    pub fn open_shared(state_dir: &Path, declared: Inventory, shared: shared::Shared) -> Result<Store, StoreError> {
        Store::open_with(state_dir, declared, Some(shared))
    }

    fn open_with(state_dir: &Path, declared: Inventory, shared: Option<shared::Shared>) -> Result<Store, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| StoreError::StateDir { path: state_dir.to_owned(), source })?;
        private_dir(state_dir)?;
        let path = state_dir.join(FILE_NAME);
        let db = open_file(&path)?;
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));

        let txn = db.begin_write()?;
        let found = schema::version(&txn)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { path, found, supported: SCHEMA_VERSION });
        }
        let journal_path = state_dir.join(journal::FILE_NAME);
        let journal = if shared.is_some() {
            None
        } else if found > 0 && found < schema::JOURNAL_VERSION {
            // Leases move from their redb table to the journal; the table is dropped by the
            // migration below, in a transaction that commits only after the journal is synced.
            Some(Journal::create(&journal_path, stored_leases(&txn)?)?)
        } else {
            Some(Journal::open(&journal_path)?)
        };
        if found < SCHEMA_VERSION {
            schema::migrate(&txn, found)?;
        }
        let inventory = match &shared {
            None => load(&txn, declared)?,
            Some(shared) => {
                match shared.unread() {
                    None => {
                        let (revision, keys) = shared.kept_copy();
                        cache::replace(&txn, revision, &keys)?;
                    }
                    Some(reason) => match cache::load(&txn)? {
                        Some((revision, keys)) => shared.restore(revision, keys),
                        None => {
                            return Err(StoreError::Shared(shared::SharedError::Unavailable(format!(
                                "{reason}; and {} holds no copy of the shared state from an earlier run to serve from until it answers",
                                path.display()
                            ))));
                        }
                    },
                }
                let _ = shared.declare(declared);
                shared.build().map_err(StoreError::SharedConflict)?
            }
        };
        let mut installed = std::collections::HashMap::new();
        for row in txn.open_table(INSTALLED)?.iter()? {
            let (node, at) = row?;
            installed.insert(node.value().to_string(), Timestamp::from_unix_millis(at.value()));
        }
        txn.commit()?;

        let (snapshot, _) = watch::channel(Arc::new(inventory));
        let store = Store {
            fenced: false,
            section: None,
            inner: Arc::new(Inner {
                db: std::sync::RwLock::new(Some(Arc::new(db))),
                path,
                writer: Mutex::new(()),
                records: Mutex::new(()),
                snapshot,
                installed: Mutex::new(installed),
                journal,
                shared: shared.map(Arc::new),
                this: Mutex::new(None),
                copy: std::sync::OnceLock::new(),
                database_errors: Default::default(),
                journal_errors: Default::default(),
                shared_errors: Default::default(),
                #[cfg(test)]
                fail_next_commit: Default::default(),
            }),
        };
        if store.inner.shared.is_some() {
            let _ = store.inner.copy.set(cache::Writer::start(Arc::downgrade(&store.inner))?);
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Where the private files the lifecycle keeps are (uploads, SSH keys, k3s tokens): under
    /// the state directory, or in etcd when the store is shared.
    pub fn files(&self) -> files::Files {
        let root = self.state_dir().to_owned();
        match &self.inner.shared {
            Some(shared) => files::Files::Shared { root, shared: shared.clone() },
            None => files::Files::Local(root),
        }
    }

    /// The directory the store file lives in (uploaded files go beside it).
    pub fn state_dir(&self) -> &Path {
        self.inner.path.parent().unwrap_or(Path::new("."))
    }

    pub(crate) fn current(&self) -> Option<Arc<Database>> {
        self.inner.db.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Runs `op` on the database. After an I/O failure (a full disk, say) redb refuses every
    /// later transaction until the file is opened again: then the file is reopened (once no
    /// other transaction holds the old handle) and `op` runs once more, so the store serves
    /// again as soon as the disk does.
    pub(crate) fn with_db<T>(&self, op: impl Fn(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let done = self.with_db_once(op);
        if done.is_err() {
            self.inner.database_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        done
    }

    fn with_db_once<T>(&self, op: impl Fn(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let used = self.current();
        if let Some(db) = &used {
            match op(db) {
                Err(e) if e.is_previous_io() => {
                    tracing::warn!("store: reopening {} after an I/O error", self.inner.path.display())
                }
                done => return done,
            }
        }
        let db = self.reopen(used)?;
        op(&db)
    }

    /// Replaces `used` (the handle that failed, or none) with a freshly opened file; a handle
    /// another thread already put in its place is returned as it is.
    fn reopen(&self, used: Option<Arc<Database>>) -> Result<Arc<Database>, StoreError> {
        let mut slot = self.inner.db.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(current) = slot.as_ref()
            && !used.as_ref().is_some_and(|u| Arc::ptr_eq(u, current))
        {
            return Ok(current.clone());
        }
        drop(used);
        drop(slot.take());
        let db = Arc::new(open_file(&self.inner.path).map_err(|e| match e {
            // A transaction elsewhere in this process still holds the old handle: not yet.
            StoreError::InUse { .. } => StoreError::Db(redb::Error::PreviousIo),
            e => e,
        })?);
        *slot = Some(db.clone());
        Ok(db)
    }

    /// The inventory in force now.
    pub fn snapshot(&self) -> Arc<Inventory> {
        self.inner.snapshot.borrow().clone()
    }

    /// A receiver that sees every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Inventory>> {
        self.inner.snapshot.subscribe()
    }

    /// Whether the store answers reads.
    pub fn is_healthy(&self) -> bool {
        self.with_db(|db| Ok(db.begin_read()?.open_table(META).is_ok())).unwrap_or(false)
    }

    /// Applies a change as one transaction and publishes the next snapshot after commit.
    /// Blocking (it waits for the disk): call it from `spawn_blocking` in async code.
    pub fn apply(&self, ops: &[Op]) -> Result<(Arc<Inventory>, Vec<Outcome>), StoreError> {
        self.apply_with(ops, &[])
    }

    /// `apply`, writing `records` in the same transaction (also when the inventory does not
    /// change).
    pub fn apply_with(
        &self,
        ops: &[Op],
        records: &[records::RecordWrite],
    ) -> Result<(Arc<Inventory>, Vec<Outcome>), StoreError> {
        let _writer = self.inner.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(shared) = &self.inner.shared {
            let section = self.section.as_deref();
            // The outcomes of a change that leaves the inventory as it is.
            let mut unchanged = Vec::new();
            let written = shared.write_objects(self, records, (self.fenced, section), |current| {
                let (next, outcomes) = current.apply(ops)?;
                if next.version == current.version {
                    unchanged = outcomes;
                    return Ok(None);
                }
                Ok(Some((next, outcomes)))
            });
            return self.count_shared(written.and_then(|done| match done {
                Some(done) => Ok(done),
                None => {
                    shared.write_records(records, self.fenced, section)?;
                    Ok((self.snapshot(), unchanged))
                }
            }));
        }
        let current = self.snapshot();
        let (next, outcomes) = current.apply(ops)?;
        if next.version == current.version {
            if !records.is_empty() {
                self.with_db(|db| {
                    let txn = db.begin_write()?;
                    records::write(&txn, records)?;
                    self.commit(txn)
                })?;
            }
            return Ok((current, outcomes));
        }
        self.with_db(|db| self.write_objects(db, &next, &outcomes, records))?;
        let next = Arc::new(next);
        self.inner.snapshot.send_replace(next.clone());
        Ok((next, outcomes))
    }

    /// Puts a reloaded config file's objects in place of the old file's, as one transaction
    /// (see `Inventory::redeclare`), and publishes the next snapshot after commit. Refused
    /// whole (`Change`) when the result does not validate. Blocking, like `apply`.
    pub fn redeclare(&self, declared: &Inventory) -> Result<(Arc<Inventory>, Vec<Outcome>), StoreError> {
        let _writer = self.inner.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(shared) = &self.inner.shared {
            return self.count_shared(self.redeclare_shared(shared, declared));
        }
        let current = self.snapshot();
        let done = current.redeclare(declared)?;
        if done.outcomes.is_empty() && done.adopted.is_empty() {
            return Ok((current, done.outcomes));
        }
        self.with_db(|db| {
            let txn = db.begin_write()?;
            for (kind, name) in &done.adopted {
                if let Some(def) = table_of(*kind) {
                    txn.open_table(def)?.remove(name.as_str())?;
                }
            }
            txn.open_table(META)?.insert(INVENTORY_VERSION_KEY, done.inventory.version)?;
            self.commit(txn)
        })?;
        for (kind, name) in &done.adopted {
            tracing::warn!(%kind, %name, "the config file now declares this object; dropped the copy created through the API");
        }
        let next = Arc::new(done.inventory);
        self.inner.snapshot.send_replace(next.clone());
        Ok((next, done.outcomes))
    }

    /// `redeclare` on etcd: the adopted objects' keys go and the version moves on, in one
    /// transaction; the declared objects themselves are each instance's own (its file).
    fn redeclare_shared(
        &self,
        shared: &shared::Shared,
        declared: &Inventory,
    ) -> Result<(Arc<Inventory>, Vec<Outcome>), StoreError> {
        let before = shared.declare(declared.clone());
        let written = shared.write_objects(self, &[], (false, None), |current| {
            let done = current.redeclare(declared)?;
            let changed = !done.outcomes.is_empty() || !done.adopted.is_empty();
            Ok(changed.then_some((done.inventory, (done.outcomes, done.adopted))))
        });
        match written {
            Ok(Some((next, (outcomes, adopted)))) => {
                for (kind, name) in &adopted {
                    tracing::warn!(%kind, %name, "the config file now declares this object; dropped the copy created through the API");
                }
                Ok((next, outcomes))
            }
            Ok(None) => Ok((self.snapshot(), Vec::new())),
            Err(e) => {
                shared.declare(before);
                Err(e)
            }
        }
    }

    fn count_shared<T>(&self, done: Result<T, StoreError>) -> Result<T, StoreError> {
        // A section computing again is no failure.
        if matches!(done, Err(StoreError::Shared(ref e)) if !matches!(e, shared::SharedError::Moved)) {
            self.inner.shared_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        done
    }

    /// The leadership term this instance acts in, for what only one instance may do (DHCP
    /// allocation, the lifecycle engine): always `Some(0)` on the embedded store (its one
    /// instance leads); on etcd, the term's revision while this instance leads.
    pub fn term(&self) -> Option<i64> {
        match &self.inner.shared {
            None => Some(0),
            // Not on a copy restored from the file, which lacks the leases.
            Some(shared) if shared.partial() => None,
            Some(shared) => shared.terms().borrow().as_ref().map(|t| t.revision),
        }
    }

    /// Waits, up to the etcd timeout, until this instance's copy holds every write up to
    /// `revision` (a new leader reads the old one's last leases only after that). At once on
    /// the embedded store.
    pub async fn caught_up(&self, revision: i64) -> bool {
        let Some(shared) = &self.inner.shared else { return true };
        shared.caught_up(revision).await
    }

    /// Describes this instance (its name, admin API, version, start); on etcd the others see
    /// it under `members/` while this one runs (see `follow`).
    pub fn announce(&self, member: shared::Member) {
        if let Some(shared) = &self.inner.shared {
            shared.announce(member.clone());
        }
        *self.inner.this.lock().unwrap_or_else(|p| p.into_inner()) = Some(member);
    }

    /// This instance, as announced.
    pub fn this(&self) -> Option<shared::Member> {
        self.inner.this.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// This store for the lifecycle engine: on etcd, each of its writes holds only while this
    /// instance leads (the leader key's term is compared in the same transaction), so a step
    /// still running on an instance that lost the lead writes nothing. The same store on the
    /// embedded file, whose one instance always leads.
    pub fn fenced(&self) -> Store {
        Store { fenced: true, ..self.clone() }
    }

    /// Runs `f`, a read-modify-write of records, as one: no other writer of records comes
    /// between `f`'s reads and its writes. On the embedded file that is a lock of this process;
    /// on etcd, where the other instances write too, each records write of `f` (through the
    /// store it is given) also compares that no records were written since its reads, and `f`
    /// runs again, with what was written, when some were. So `f` reads and writes through
    /// that store only, and running it again must be harmless (it recomputes from the
    /// records; its earlier writes are among them). Sections do not nest.
    pub fn records_section<T>(&self, f: impl FnMut(&Store) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.section(None, f)
    }

    /// Where the records stand now: taken before reads made outside a section, for
    /// `records_section_since`.
    pub fn records_mark(&self) -> RecordsMark {
        RecordsMark(self.inner.shared.as_ref().map_or(0, |s| s.records_revision()))
    }

    /// `records_section`, for a change computed (partly) from records read after `mark` was
    /// taken, before the section: on etcd its writes hold only if no records were written
    /// since `mark`; when some were, it ends with `StoreError::is_moved` without running `f`
    /// again (what `f` was computed from must be read again: the caller's part).
    pub fn records_section_since<T>(
        &self,
        mark: RecordsMark,
        f: impl FnMut(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.section(Some(mark), f)
    }

    fn section<T>(
        &self,
        since: Option<RecordsMark>,
        mut f: impl FnMut(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _section = self.inner.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(shared) = &self.inner.shared else { return f(self) };
        if let Some(RecordsMark(seen)) = since {
            return f(&Store { section: Some(Arc::new(shared::Section::since(seen))), ..self.clone() });
        }
        for _ in 0..shared::ATTEMPTS {
            let store = Store { section: Some(Arc::new(shared.section())), ..self.clone() };
            match f(&store) {
                Err(e) if e.is_moved() => continue,
                done => return done,
            }
        }
        self.count_shared(Err(StoreError::Shared(shared::SharedError::Contended(shared::ATTEMPTS))))
    }

    /// The shared half (etcd), when this instance has one.
    pub fn shared(&self) -> Option<&Arc<shared::Shared>> {
        self.inner.shared.as_ref()
    }

    fn write_objects(
        &self,
        db: &Database,
        next: &Inventory,
        outcomes: &[Outcome],
        records: &[records::RecordWrite],
    ) -> Result<(), StoreError> {
        let txn = db.begin_write()?;
        records::write(&txn, records)?;
        for outcome in outcomes {
            let Some(def) = table_of(outcome.kind) else {
                continue;
            };
            let mut table = txn.open_table(def)?;
            let key = outcome.name.as_str();
            match (outcome.action, outcome.kind) {
                (Action::Deleted, _) => {
                    table.remove(key)?;
                }
                (Action::Unchanged, _) => {}
                (_, Kind::Node) => put(&mut table, key, next.nodes.get(key))?,
                (_, Kind::Cluster) => put(&mut table, key, next.clusters.get(key))?,
                (_, _) => put(&mut table, key, next.profiles.get(key))?,
            }
        }
        txn.open_table(META)?.insert(INVENTORY_VERSION_KEY, next.version)?;
        self.commit(txn)
    }

    fn commit(&self, txn: WriteTransaction) -> Result<(), StoreError> {
        #[cfg(test)]
        if self.inner.fail_next_commit.swap(false, std::sync::atomic::Ordering::SeqCst) {
            txn.abort()?;
            return Err(StoreError::Db(
                redb::StorageError::Io(std::io::Error::other("injected commit failure")).into(),
            ));
        }
        txn.commit()?;
        Ok(())
    }

    /// Every lease, ordered by address.
    pub fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        match (&self.inner.shared, &self.inner.journal) {
            (Some(shared), _) => shared.leases(),
            (None, Some(journal)) => Ok(journal.all()),
            (None, None) => Ok(Vec::new()),
        }
    }

    /// The lease on `ip`, if there is one. From memory: no disk read.
    pub fn lease(&self, ip: Ipv4Addr) -> Result<Option<Lease>, StoreError> {
        match (&self.inner.shared, &self.inner.journal) {
            (Some(shared), _) => shared.lease(ip),
            (None, Some(journal)) => Ok(journal.get(ip)),
            (None, None) => Ok(None),
        }
    }

    /// Writes leases durably, synced in one write (the DHCP server calls this before it ACKs).
    /// On etcd, only while this instance leads (see `shared`). Blocking.
    pub fn put_leases(&self, leases: Vec<Lease>) -> Result<(), StoreError> {
        match (&self.inner.shared, &self.inner.journal) {
            (Some(shared), _) => self.count_shared(shared.put_leases(&leases).map_err(StoreError::from)),
            (None, Some(journal)) => {
                let done = journal.put(leases);
                self.count_journal(&done);
                Ok(done?)
            }
            (None, None) => Ok(()),
        }
    }

    fn count_journal<T, E>(&self, done: &Result<T, E>) {
        if done.is_err() {
            self.inner.journal_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Failed store operations since the start.
    pub fn error_counts(&self) -> ErrorCounts {
        use std::sync::atomic::Ordering::Relaxed;
        ErrorCounts {
            database: self.inner.database_errors.load(Relaxed),
            lease_journal: self.inner.journal_errors.load(Relaxed),
            etcd: self.inner.shared_errors.load(Relaxed),
        }
    }

    /// Marks the lease on `ip` released, so its address can be handed out again.
    pub fn release_lease(&self, ip: Ipv4Addr, now: Timestamp) -> Result<Lease, StoreError> {
        let Some(journal) = &self.inner.journal else {
            let mut lease = self.lease(ip)?.ok_or(StoreError::NoLease(ip))?;
            lease.state = LeaseState::Released;
            lease.expires = now;
            lease.updated = now;
            self.put_leases(vec![lease.clone()])?;
            return Ok(lease);
        };
        let released = journal.update(ip, |lease| {
            lease.state = LeaseState::Released;
            lease.expires = now;
            lease.updated = now;
        });
        self.count_journal(&released);
        let released = released?;
        released.ok_or(StoreError::NoLease(ip))
    }

    /// When `node` reported an installed system, if it has (and no reinstall was asked since).
    /// From memory: no disk read.
    pub fn installed(&self, node: &str) -> Option<Timestamp> {
        if let Some(shared) = &self.inner.shared {
            return shared.installed(node);
        }
        self.inner.installed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(node).copied()
    }

    /// Records that `node` runs an installed system (`Some`), or clears it so the node is
    /// installed again on its next network boot (`None`). Returns the previous value.
    /// Blocking (it waits for the disk).
    pub fn set_installed(&self, node: &str, at: Option<Timestamp>) -> Result<Option<Timestamp>, StoreError> {
        let _writer = self.inner.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(shared) = &self.inner.shared {
            let before = shared.installed(node);
            self.count_shared(shared.set_installed(node, at, self.fenced).map_err(StoreError::from))?;
            return Ok(before);
        }
        self.with_db(|db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(INSTALLED)?;
                match at {
                    Some(at) => table.insert(node, at.unix_millis())?,
                    None => table.remove(node)?,
                };
            }
            self.commit(txn)
        })?;
        let mut installed = self.inner.installed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(match at {
            Some(at) => installed.insert(node.to_string(), at),
            None => installed.remove(node),
        })
    }

    #[cfg(test)]
    fn fail_next_commit(&self) {
        self.inner.fail_next_commit.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Opens (creating if needed) the store file.
fn open_file(path: &Path) -> Result<Database, StoreError> {
    Database::create(path).map_err(|source| match source {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.to_owned() },
        source => StoreError::Open { path: path.to_owned(), source },
    })
}

fn put<T: Serialize>(table: &mut redb::Table<&str, &[u8]>, key: &str, value: Option<&T>) -> Result<(), StoreError> {
    if let Some(value) = value {
        table.insert(key, encode(value).as_slice())?;
    }
    Ok(())
}

/// Reads the API-created objects and merges them under the declared ones. A stored object whose
/// name the config file now declares is dropped (the file wins), with a warning.
/// The leases of a store from before the journal, from their redb table.
fn stored_leases(txn: &WriteTransaction) -> Result<Vec<Lease>, StoreError> {
    let table = txn.open_table(LEASES)?;
    let mut out = Vec::with_capacity(usize::try_from(table.len()?).unwrap_or(0));
    for row in table.iter()? {
        let (key, value) = row?;
        out.push(decode("leases", Ipv4Addr::from(key.value()), value.value())?);
    }
    Ok(out)
}

fn load(txn: &WriteTransaction, mut inv: Inventory) -> Result<Inventory, StoreError> {
    inv.version = txn.open_table(META)?.get(INVENTORY_VERSION_KEY)?.map(|v| v.value()).unwrap_or(0);
    let mut adopted = Vec::new();
    load_kind(txn, Kind::Node, &mut inv.nodes, &mut adopted)?;
    load_kind(txn, Kind::Cluster, &mut inv.clusters, &mut adopted)?;
    load_kind(txn, Kind::Profile, &mut inv.profiles, &mut adopted)?;
    for (kind, name) in adopted {
        if let Some(def) = table_of(kind) {
            txn.open_table(def)?.remove(name.as_str())?;
        }
        tracing::warn!(%kind, %name, "the config file now declares this object; dropped the copy created through the API");
    }
    inv.reindex();
    let problems = validate(&inv);
    if !problems.is_empty() {
        return Err(StoreError::Conflict(problems));
    }
    Ok(inv)
}

fn load_kind<T: HasOrigin + DeserializeOwned>(
    txn: &WriteTransaction,
    kind: Kind,
    map: &mut std::collections::BTreeMap<Name, T>,
    adopted: &mut Vec<(Kind, Name)>,
) -> Result<(), StoreError> {
    let Some(def) = table_of(kind) else {
        return Ok(());
    };
    let table = txn.open_table(def)?;
    for row in table.iter()? {
        let (key, value) = row?;
        let name: Name = key.value().parse().map_err(|e: crate::inventory::BadValue| StoreError::Corrupt {
            table: kind.config_table(),
            key: key.value().into(),
            message: e.to_string(),
        })?;
        if map.contains_key(&name) {
            adopted.push((kind, name));
            continue;
        }
        let mut object: T = decode(kind.config_table(), &name, value.value())?;
        *object.origin_mut() = Origin::Api;
        map.insert(name, object);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
