//! Keyed JSON records the layers above keep beside the inventory (cluster definitions, node
//! phases). The store knows their tables, not their types; a write of records commits in one
//! transaction, and with an inventory change when given to `apply_with`, so a definition and
//! the nodes it makes are on disk together or not at all.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::schema::{DEFINITIONS, LIFECYCLE, PHASES};
use super::{Store, StoreError};

/// The record tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Records {
    /// Cluster name -> its definition.
    Definitions,
    /// Node name -> its provisioning phase.
    Phases,
    /// Cluster name -> its cluster-level lifecycle (OKD's stages).
    Lifecycle,
}

impl Records {
    pub(crate) fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Records::Definitions => DEFINITIONS,
            Records::Phases => PHASES,
            Records::Lifecycle => LIFECYCLE,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Records::Definitions => "definitions",
            Records::Phases => "phases",
            Records::Lifecycle => "lifecycle",
        }
    }
}

/// One record to write (`Some`) or remove (`None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordWrite {
    pub table: Records,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

impl RecordWrite {
    pub fn put<T: Serialize>(table: Records, key: impl Into<String>, value: &T) -> RecordWrite {
        RecordWrite { table, key: key.into(), value: Some(super::encode(value)) }
    }

    pub fn remove(table: Records, key: impl Into<String>) -> RecordWrite {
        RecordWrite { table, key: key.into(), value: None }
    }
}

pub(crate) fn write(txn: &redb::WriteTransaction, records: &[RecordWrite]) -> Result<(), StoreError> {
    for r in records {
        let mut table = txn.open_table(r.table.table())?;
        match &r.value {
            Some(bytes) => table.insert(r.key.as_str(), bytes.as_slice())?,
            None => table.remove(r.key.as_str())?,
        };
    }
    Ok(())
}

impl Store {
    /// Writes `records` in one transaction. Blocking (it waits for the disk).
    pub fn write_records(&self, records: &[RecordWrite]) -> Result<(), StoreError> {
        let _writer = self.inner.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(shared) = &self.inner.shared {
            return self.count_shared(
                shared.write_records(records, self.fenced, self.section.as_deref()).map_err(StoreError::from),
            );
        }
        self.with_db(|db| {
            let txn = db.begin_write()?;
            write(&txn, records)?;
            self.commit(txn)
        })
    }

    /// Every record of `table`, decoded, by key.
    pub fn records<T: DeserializeOwned>(&self, table: Records) -> Result<Vec<(String, T)>, StoreError> {
        if let Some(shared) = &self.inner.shared {
            let rows = shared.records(table).into_iter();
            return rows.map(|(key, bytes)| Ok((key.clone(), super::decode(table.name(), key, &bytes)?))).collect();
        }
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let mut out = Vec::new();
            for row in txn.open_table(table.table())?.iter()? {
                let (key, value) = row?;
                out.push((key.value().to_owned(), super::decode(table.name(), key.value(), value.value())?));
            }
            Ok(out)
        })
    }

    /// One record of `table`, decoded.
    pub fn record<T: DeserializeOwned>(&self, table: Records, key: &str) -> Result<Option<T>, StoreError> {
        if let Some(shared) = &self.inner.shared {
            return shared.record(table, key).map(|bytes| super::decode(table.name(), key, &bytes)).transpose();
        }
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let value = txn.open_table(table.table())?.get(key)?;
            value.map(|v| super::decode(table.name(), key, v.value())).transpose()
        })
    }
}
