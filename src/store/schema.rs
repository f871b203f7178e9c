//! The on-disk layout: table definitions, the schema version and the migrations between versions.
//!
//! Version history:
//! - 1: meta, nodes, clusters, profiles (JSON by name), leases (JSON by IPv4), events.
//! - 2: installed (node name -> unix milliseconds when it reported an installed system).
//! - 3: leases move to the lease journal (`leases.journal`, see `journal`); the table is dropped.
//!   An older slipway must refuse such a store: it would see no leases and hand addresses out twice.
//! - 4: an events row holds up to 64 events written together: their JSON lines, keyed by the
//!   first one's sequence number, with the newest one's time. A version-3 row (one JSON event)
//!   reads as a row of one, so nothing is rewritten; an older slipway could not read the rows.
//! - 5: definitions (cluster name -> its definition, JSON) and phases (node name -> its
//!   provisioning phase, JSON), written by the cluster engine through `records`.
//! - 6: lifecycle (cluster name -> its cluster-level lifecycle record, JSON: OKD's stages);
//!   stored definitions' bootstrap groups lose the `cleanup_after_boot: false` version 5 wrote
//!   for every group (it now means "keep the bootstrap VM").
//! - 7: audit (the admin API's writes, in event rows).
//!
//! The file of an instance on etcd also holds `shared_copy` (its copy of the shared state, see
//! `cache`) and `shared_copy_revision` in meta: made when first written, read only by such an
//! instance, so they need no version of their own (an older build leaves them be).

use redb::{ReadableTable, TableDefinition, WriteTransaction};

/// The schema this build writes. Raise it with a new entry in `MIGRATIONS`.
pub const SCHEMA_VERSION: u64 = 7;
/// The first version whose leases live in the journal.
pub const JOURNAL_VERSION: u64 = 3;

pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
pub const CLUSTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("clusters");
pub const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");
/// Leases up to version 2 (JSON by IPv4); since version 3 in the lease journal.
pub const LEASES: TableDefinition<u32, &[u8]> = TableDefinition::new("leases");
/// Sequence number of a row's first event -> (unix milliseconds of its newest event, up to 64
/// events as JSON lines, each ending in a newline; a version-3 row is one event without one).
pub const EVENTS: TableDefinition<u64, (u64, &[u8])> = TableDefinition::new("events");
/// The audit trail (every admin API write), in the rows `EVENTS` has, under its own retention.
pub const AUDIT: TableDefinition<u64, (u64, &[u8])> = TableDefinition::new("audit");
/// Node name -> unix milliseconds when the node phoned home from an installed system.
pub const INSTALLED: TableDefinition<&str, u64> = TableDefinition::new("installed");
/// Cluster name -> its definition (JSON).
pub const DEFINITIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("definitions");
/// Node name -> its provisioning phase (JSON).
pub const PHASES: TableDefinition<&str, &[u8]> = TableDefinition::new("phases");
/// Cluster name -> its cluster-level lifecycle record (JSON).
pub const LIFECYCLE: TableDefinition<&str, &[u8]> = TableDefinition::new("lifecycle");

/// An instance on etcd: key under the prefix -> (the revision that last changed it, its value).
pub const SHARED_COPY: TableDefinition<&[u8], (u64, &[u8])> = TableDefinition::new("shared_copy");

pub const SCHEMA_KEY: &str = "schema_version";
/// The revision `SHARED_COPY` is current to.
pub const SHARED_COPY_REVISION_KEY: &str = "shared_copy_revision";
pub const INVENTORY_VERSION_KEY: &str = "inventory_version";

type Migration = fn(&WriteTransaction) -> Result<(), redb::Error>;

/// `MIGRATIONS[v]` turns a version-`v` store into version `v + 1`. Version 0 is an empty file.
const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] =
    [create_v1, add_installed, drop_leases_table, event_rows, add_cluster_records, add_lifecycle, add_audit];

fn create_v1(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(META)?;
    txn.open_table(NODES)?;
    txn.open_table(CLUSTERS)?;
    txn.open_table(PROFILES)?;
    txn.open_table(LEASES)?;
    txn.open_table(EVENTS)?;
    Ok(())
}

fn add_installed(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(INSTALLED)?;
    Ok(())
}

/// The store's caller has written the leases to the journal before this runs.
fn drop_leases_table(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.delete_table(LEASES)?;
    Ok(())
}

fn add_cluster_records(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(DEFINITIONS)?;
    txn.open_table(PHASES)?;
    Ok(())
}

/// The lifecycle table; and stored definitions lose the `cleanup_after_boot: false` that
/// version 5 wrote for every group: on a bootstrap group it now keeps the bootstrap VM, which
/// nobody asked for then.
fn add_lifecycle(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(LIFECYCLE)?;
    let mut definitions = txn.open_table(DEFINITIONS)?;
    let mut rewritten = Vec::new();
    for row in definitions.iter()? {
        let (key, value) = row?;
        let Ok(mut stored) = serde_json::from_slice::<serde_json::Value>(value.value()) else { continue };
        if drop_bootstrap_keep(&mut stored) {
            rewritten.push((key.value().to_owned(), serde_json::to_vec(&stored).unwrap_or_default()));
        }
    }
    for (key, value) in rewritten {
        definitions.insert(key.as_str(), value.as_slice())?;
    }
    Ok(())
}

fn add_audit(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(AUDIT)?;
    Ok(())
}

/// Removes `lifecycle.cleanup_after_boot: false` from the bootstrap groups of a stored
/// definition (`{"definition": {"node_groups": [...]}, ...}`); whether it changed.
fn drop_bootstrap_keep(stored: &mut serde_json::Value) -> bool {
    let mut changed = false;
    let groups = stored.pointer_mut("/definition/node_groups").and_then(serde_json::Value::as_array_mut);
    for group in groups.into_iter().flatten() {
        if group["role"] != "bootstrap" {
            continue;
        }
        if let Some(lifecycle) = group.get_mut("lifecycle").and_then(serde_json::Value::as_object_mut)
            && lifecycle.get("cleanup_after_boot") == Some(&serde_json::Value::Bool(false))
        {
            lifecycle.remove("cleanup_after_boot");
            changed = true;
        }
    }
    changed
}

/// Version-3 event rows already are rows of one event.
fn event_rows(_: &WriteTransaction) -> Result<(), redb::Error> {
    Ok(())
}

/// The schema version recorded in the store (0 for a new file).
pub fn version(txn: &WriteTransaction) -> Result<u64, redb::Error> {
    let meta = txn.open_table(META)?;
    Ok(meta.get(SCHEMA_KEY)?.map(|v| v.value()).unwrap_or(0))
}

/// Runs every migration from `from` up to `SCHEMA_VERSION` inside `txn`.
pub fn migrate(txn: &WriteTransaction, from: u64) -> Result<(), redb::Error> {
    for step in MIGRATIONS.iter().skip(usize::try_from(from).unwrap_or(usize::MAX)) {
        step(txn)?;
    }
    txn.open_table(META)?.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_5s_default_false_leaves_bootstrap_groups_only() {
        let mut stored = serde_json::json!({ "definition": { "node_groups": [
            { "name": "bootstrap", "role": "bootstrap", "lifecycle": { "temporary": false, "cleanup_after_boot": false } },
            { "name": "worker", "role": "worker", "lifecycle": { "temporary": false, "cleanup_after_boot": false } },
        ] } });
        assert!(super::drop_bootstrap_keep(&mut stored));
        assert_eq!(stored["definition"]["node_groups"][0]["lifecycle"], serde_json::json!({ "temporary": false }));
        assert_eq!(stored["definition"]["node_groups"][1]["lifecycle"]["cleanup_after_boot"], false);
        assert!(!super::drop_bootstrap_keep(&mut stored), "once");
    }
}
