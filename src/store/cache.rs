//! The copy of the shared state (etcd) an instance keeps in its own file: every key under the
//! prefix but the leases and who is there now, with the revision it is current to. An
//! instance that starts while etcd cannot be reached serves DNS, network boot and the load
//! balancer from it (what it last saw, as an instance already running does when etcd goes).
//! The leases are not in it, so nothing is allocated or decided from it: the instance reads
//! etcd whole before it may lead.
//!
//! Kept up to date from the watch by a thread of its own (`Writer`), in order, each batch one
//! synced transaction: the watch never waits for the disk, a crash loses at most the batch
//! being written, and the copy stays whole at the revision it names. A write that fails makes
//! the next one a whole copy of the mirror, so a change is never missed for good.

use std::collections::BTreeMap;
use std::sync::{Weak, mpsc};

use redb::{ReadableTable, WriteTransaction};

use super::schema::{META, SHARED_COPY, SHARED_COPY_REVISION_KEY};
use super::{Inner, Store, StoreError};

/// One kept key: the revision that last changed it and its value.
pub(super) type Entry = (i64, Vec<u8>);
/// The kept keys.
pub(super) type Keys = BTreeMap<Vec<u8>, Entry>;
/// A change seen on the watch to a kept key (`None`: it went).
pub(super) type Kept = (Vec<u8>, Option<Entry>);

/// The copy and its revision; `None` when this file never held one.
pub(super) fn load(txn: &WriteTransaction) -> Result<Option<(i64, Keys)>, StoreError> {
    let Some(revision) = txn.open_table(META)?.get(SHARED_COPY_REVISION_KEY)?.map(|v| v.value()) else {
        return Ok(None);
    };
    let mut keys = BTreeMap::new();
    for row in txn.open_table(SHARED_COPY)?.iter()? {
        let (key, value) = row?;
        let (at, bytes) = value.value();
        keys.insert(key.value().to_vec(), (i64::try_from(at).unwrap_or(i64::MAX), bytes.to_vec()));
    }
    Ok(Some((i64::try_from(revision).unwrap_or(i64::MAX), keys)))
}

/// Puts `keys` in place of the whole copy, current to `revision`.
pub(super) fn replace(txn: &WriteTransaction, revision: i64, keys: &[(Vec<u8>, Entry)]) -> Result<(), StoreError> {
    txn.delete_table(SHARED_COPY)?;
    let mut table = txn.open_table(SHARED_COPY)?;
    for (key, (at, bytes)) in keys {
        table.insert(key.as_slice(), (u64::try_from(*at).unwrap_or(0), bytes.as_slice()))?;
    }
    set_revision(txn, revision)
}

/// Applies changes seen on the watch (`None`: the key went), current to `revision`.
pub(super) fn update(txn: &WriteTransaction, revision: i64, changes: &[Kept]) -> Result<(), StoreError> {
    let mut table = txn.open_table(SHARED_COPY)?;
    for (key, change) in changes {
        match change {
            Some((at, bytes)) => table.insert(key.as_slice(), (u64::try_from(*at).unwrap_or(0), bytes.as_slice()))?,
            None => table.remove(key.as_slice())?,
        };
    }
    set_revision(txn, revision)
}

fn set_revision(txn: &WriteTransaction, revision: i64) -> Result<(), StoreError> {
    txn.open_table(META)?.insert(SHARED_COPY_REVISION_KEY, u64::try_from(revision).unwrap_or(0))?;
    Ok(())
}

/// What the writer is asked to do.
enum Job {
    /// Changes seen on the watch, current to the revision.
    Update(i64, Vec<Kept>),
    /// The whole kept mirror (after a whole read), current to the revision.
    Replace(i64, Vec<(Vec<u8>, Entry)>),
}

/// The thread that writes the copy; it ends when the store is dropped.
#[derive(Debug)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the thread for the store behind `inner`.
    pub(super) fn start(inner: Weak<Inner>) -> Result<Writer, StoreError> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("slipway-shared-copy".into())
            .spawn(move || write_all(&inner, &queue))
            .map_err(|e| StoreError::Db(redb::Error::Io(e)))?;
        Ok(Writer { jobs })
    }

    pub(super) fn update(&self, revision: i64, changes: Vec<Kept>) {
        self.send(Job::Update(revision, changes));
    }

    pub(super) fn replace(&self, revision: i64, keys: Vec<(Vec<u8>, Entry)>) {
        self.send(Job::Replace(revision, keys));
    }

    fn send(&self, job: Job) {
        // The thread ends only once the store is gone.
        let _ = self.jobs.send(job);
    }
}

/// The writer's loop: each time, everything queued in one synced transaction.
fn write_all(inner: &Weak<Inner>, queue: &mpsc::Receiver<Job>) {
    let mut failed = false;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let Some(inner) = inner.upgrade() else { return };
        let store = Store { inner, fenced: false, section: None };
        // After a failure, the whole mirror as it is now (it holds every queued change).
        if failed && let Some(shared) = &store.inner.shared {
            let (revision, keys) = shared.kept_copy();
            batch = vec![Job::Replace(revision, keys)];
        }
        let done = store.with_db(|db| {
            let txn = db.begin_write()?;
            for job in &batch {
                match job {
                    Job::Update(revision, changes) => update(&txn, *revision, changes)?,
                    Job::Replace(revision, keys) => replace(&txn, *revision, keys)?,
                }
            }
            txn.commit().map_err(StoreError::from)
        });
        failed = done.is_err();
        if let Err(e) = done {
            tracing::warn!(error = %e, "cannot write this instance's copy of the shared state; writing it whole next time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_replaced_then_updated_loads_as_the_watch_left_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = redb::Database::create(dir.path().join("f.redb")).expect("db");
        let txn = db.begin_write().expect("begin");
        assert_eq!(load(&txn).expect("load"), None, "never written: no copy");
        let first =
            [(b"/s/objects/nodes/a".to_vec(), (3, b"A".to_vec())), (b"/s/files/x".to_vec(), (4, b"X".to_vec()))];
        replace(&txn, 5, &first).expect("replace");
        update(
            &txn,
            7,
            &[(b"/s/objects/nodes/a".to_vec(), None), (b"/s/objects/nodes/b".to_vec(), Some((7, b"B".to_vec())))],
        )
        .expect("update");
        txn.commit().expect("commit");
        let txn = db.begin_write().expect("begin");
        let (revision, keys) = load(&txn).expect("load").expect("a copy");
        assert_eq!(revision, 7);
        let keys: Vec<(&[u8], &Entry)> = keys.iter().map(|(k, v)| (k.as_slice(), v)).collect();
        assert_eq!(
            keys,
            [(&b"/s/files/x"[..], &(4, b"X".to_vec())), (&b"/s/objects/nodes/b"[..], &(7, b"B".to_vec()))]
        );
        // A replace drops what the new whole read no longer has.
        replace(&txn, 9, &[]).expect("replace");
        assert_eq!(load(&txn).expect("load").map(|(r, k)| (r, k.len())), Some((9, 0)));
    }
}
