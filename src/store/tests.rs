use std::time::Duration;

use super::events::{EventKind, EventLog, Filter, Retention, Source, Subject};
use super::*;
use crate::inventory::{Node, Object, Role};

fn lab() -> Inventory {
    crate::inventory::lab::lab()
}

fn worker(n: &str, last: u8) -> Node {
    let mut node = crate::inventory::lab::node(
        n,
        &format!("52:54:00:00:01:{last:02x}"),
        &format!("10.1.107.{}", 20 + last),
        Some("prod"),
        Some(Role::Worker),
    );
    node.labels.insert("rack".into(), "r1".into());
    node
}

fn declared() -> Inventory {
    let mut inv = lab();
    for c in inv.clusters.values_mut() {
        c.origin = Origin::Config;
    }
    for n in inv.nodes.values_mut() {
        n.origin = Origin::Config;
    }
    inv
}

#[test]
fn objects_round_trip_through_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), declared()).expect("open");
    let (snap, out) = store.apply(&[Op::Create(Object::Node(worker("w0", 0)))]).expect("apply");
    assert_eq!(out[0].action, Action::Created);
    let version = snap.version;
    drop(store);
    let store = Store::open(dir.path(), declared()).expect("reopen");
    let snap = store.snapshot();
    assert_eq!(snap.version, version);
    assert_eq!(snap.nodes.get("w0"), Some(&worker("w0", 0)));
    assert_eq!(snap.nodes["master-0"].origin, Origin::Config);
    assert_eq!(snap.node_by_ip("10.1.107.20".parse().expect("ip")).map(|n| n.name.as_str()), Some("w0"));
}

#[test]
fn a_snapshot_is_published_after_each_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), declared()).expect("open");
    let mut rx = store.subscribe();
    let before = rx.borrow_and_update().version;
    store.apply(&[Op::Put(Object::Node(worker("w0", 0)))]).expect("apply");
    assert!(rx.has_changed().expect("sender alive"));
    let snap = rx.borrow_and_update().clone();
    assert_eq!(snap.version, before + 1);
    assert!(snap.nodes.contains_key("w0"));
}

#[test]
fn an_invalid_change_keeps_the_old_snapshot_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), declared()).expect("open");
    let rx = store.subscribe();
    let mut dup = worker("w0", 0);
    dup.mac = "52:54:00:00:00:01".parse().expect("mac");
    let err = store.apply(&[Op::Put(Object::Node(dup))]).expect_err("duplicate mac");
    assert!(err.to_string().contains("mac = 52:54:00:00:00:01"), "{err}");
    assert!(!rx.has_changed().expect("alive"));
    drop(store);
    assert!(!Store::open(dir.path(), declared()).expect("reopen").snapshot().nodes.contains_key("w0"));
}

#[test]
fn a_failed_commit_keeps_the_old_snapshot_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), declared()).expect("open");
    let before = store.snapshot();
    assert_eq!(store.error_counts(), ErrorCounts::default());
    store.fail_next_commit();
    assert!(store.apply(&[Op::Put(Object::Node(worker("w0", 0)))]).is_err());
    assert_eq!(store.snapshot(), before);
    assert_eq!(store.error_counts(), ErrorCounts { database: 1, lease_journal: 0, etcd: 0 }, "the failure is counted");
    let (after, _) = store.apply(&[Op::Put(Object::Node(worker("w1", 1)))]).expect("next write works");
    assert_eq!(store.error_counts().database, 1, "a write that works is not");
    assert_eq!(after.version, before.version + 1);
    assert!(!after.nodes.contains_key("w0"));
    drop(store);
    let reopened = Store::open(dir.path(), declared()).expect("reopen").snapshot();
    assert!(!reopened.nodes.contains_key("w0") && reopened.nodes.contains_key("w1"));
}

#[test]
fn a_store_from_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path(), declared()).expect("open"));
    {
        let db = Database::create(dir.path().join(FILE_NAME)).expect("db");
        let txn = db.begin_write().expect("txn");
        txn.open_table(META).expect("meta").insert(schema::SCHEMA_KEY, SCHEMA_VERSION + 1).expect("insert");
        txn.commit().expect("commit");
    }
    let err = Store::open(dir.path(), declared()).expect_err("newer schema");
    let text = err.to_string();
    assert!(
        text.contains(&format!("schema version {}", SCHEMA_VERSION + 1)) && text.contains("newer slipway"),
        "{text}"
    );
}

#[test]
fn a_second_process_on_the_same_state_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = Store::open(dir.path(), declared()).expect("open");
    let err = Store::open(dir.path(), declared()).expect_err("in use");
    assert!(err.to_string().contains("another process"), "{err}");
}

#[test]
fn the_config_file_adopts_an_object_of_the_same_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), declared()).expect("open");
    store.apply(&[Op::Put(Object::Node(worker("w0", 0)))]).expect("apply");
    drop(store);
    let mut config = declared();
    let mut w0 = worker("w0", 7);
    w0.origin = Origin::Config;
    config.nodes.insert(w0.name.clone(), w0.clone());
    let snap = Store::open(dir.path(), config).expect("reopen").snapshot();
    assert_eq!(snap.nodes["w0"], w0);
}

#[test]
fn stored_objects_that_conflict_with_the_config_stop_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), declared()).expect("open");
    store.apply(&[Op::Put(Object::Node(worker("w0", 0)))]).expect("apply");
    drop(store);
    let mut config = declared();
    let mut other = worker("w9", 0);
    other.origin = Origin::Config;
    config.nodes.insert(other.name.clone(), other);
    let err = Store::open(dir.path(), config).expect_err("duplicate mac");
    assert!(err.to_string().contains("conflict with the config file") && err.to_string().contains("mac"), "{err}");
}

#[test]
fn a_reloaded_config_replaces_the_files_objects_in_one_commit_and_keeps_the_apis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), declared()).expect("open");
    store.apply(&[Op::Put(Object::Node(worker("w0", 0))), Op::Put(Object::Node(worker("w1", 1)))]).expect("apply");
    let before = store.snapshot().version;
    let mut config = declared();
    let mut w1 = worker("w1", 7);
    w1.origin = Origin::Config;
    config.nodes.insert(w1.name.clone(), w1.clone());
    let (snap, outcomes) = store.redeclare(&config).expect("redeclare");
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(snap.version, before + 1);
    assert_eq!(store.snapshot().nodes["w1"], w1, "published");
    // A clash with the API's w0 (same MAC) is refused whole: nothing changes.
    let mut clash = worker("w9", 0);
    clash.origin = Origin::Config;
    let mut bad = config.clone();
    bad.nodes.insert(clash.name.clone(), clash);
    assert!(matches!(store.redeclare(&bad), Err(StoreError::Change(_))));
    assert_eq!(store.snapshot().version, before + 1);
    drop(store);
    // After a restart with the same file: w1 is the file's (its API copy is gone), w0 stays.
    let reopened = Store::open(dir.path(), config).expect("reopen").snapshot();
    assert_eq!(reopened.version, before + 1);
    assert_eq!(reopened.nodes["w1"].origin, Origin::Config);
    assert_eq!(reopened.nodes["w0"].origin, Origin::Api);
}

fn bound_lease(updated: Timestamp) -> Lease {
    Lease {
        ip: "10.1.107.100".parse().expect("ip"),
        mac: "52:54:00:aa:bb:cc".parse().expect("mac"),
        network: "cluster".parse().expect("name"),
        state: LeaseState::Bound,
        expires: Timestamp::from_unix_millis(1_800_000_360_000),
        updated,
        hostname: Some("pxe-1".into()),
        client_id: None,
    }
}

#[test]
fn leases_are_stored_and_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), declared()).expect("open");
    let now = Timestamp::from_unix_millis(1_800_000_000_000);
    let lease = bound_lease(now);
    store.put_leases(vec![lease.clone()]).expect("put");
    assert_eq!(store.leases().expect("list"), vec![lease.clone()]);
    let released = store.release_lease(lease.ip, now).expect("release");
    assert_eq!(released.state, LeaseState::Released);
    assert!(!released.is_active(now));
    assert!(matches!(store.release_lease("10.1.107.101".parse().expect("ip"), now), Err(StoreError::NoLease(_))));
}

fn event(log: &EventLog, node: &str, details: EventKind) {
    log.append(Source::Dhcp, Subject { node: Some(node.parse().expect("name")), mac: None }, details);
}

#[tokio::test]
async fn events_are_persisted_queried_and_filtered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), declared()).expect("open");
    let log = EventLog::open(&store, Retention::default()).expect("log");
    let ip = "10.1.107.20".parse().expect("ip");
    event(&log, "w0", EventKind::LeaseOffered { ip });
    event(&log, "w1", EventKind::LeaseOffered { ip });
    event(&log, "w0", EventKind::LeaseAcked { ip, lease_secs: 3600 });
    log.flush().await;
    let all = log.query(&Filter::default(), 100).expect("query");
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    let w0 = Filter { node: Some("w0".parse().expect("name")), ..Filter::default() };
    assert_eq!(log.query(&w0, 100).expect("query").len(), 2);
    let acked = Filter { types: vec!["lease_acked".into()], ..Filter::default() };
    assert_eq!(log.query(&acked, 100).expect("query")[0].details, EventKind::LeaseAcked { ip, lease_secs: 3600 });
    assert_eq!(log.query(&Filter::default(), 2).expect("query").iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    let after = Filter { after: Some(1), ..Filter::default() };
    assert_eq!(log.query(&after, 1).expect("query")[0].seq, 2);
    log.close();
    drop(log);
    drop(store);

    let store = Store::open(dir.path(), declared()).expect("reopen");
    let log = EventLog::open(&store, Retention::default()).expect("log");
    event(&log, "w0", EventKind::DaemonStopping);
    log.flush().await;
    assert_eq!(log.query(&Filter::default(), 100).expect("query").len(), 4, "sequence continues after a reopen");
    assert_eq!(log.query(&Filter::default(), 1).expect("query")[0].seq, 4);
}

#[tokio::test]
async fn retention_bounds_events_by_count_and_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), declared()).expect("open");
    let log =
        EventLog::open(&store, Retention { max_count: 5, max_age: Duration::from_secs(3600), ..Retention::default() })
            .expect("log");
    let old = Timestamp(std::time::SystemTime::now() - Duration::from_secs(7200));
    log.append_at(old, Source::Daemon, Subject::default(), EventKind::DaemonStopping);
    log.flush().await;
    assert!(log.query(&Filter::default(), 100).expect("query").is_empty(), "older than max_age");
    for _ in 0..12 {
        log.append(Source::Daemon, Subject::default(), EventKind::DaemonStopping);
    }
    log.flush().await;
    let kept = log.query(&Filter::default(), 100).expect("query");
    assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), [9, 10, 11, 12, 13]);
}

#[tokio::test]
async fn live_subscribers_see_new_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), declared()).expect("open");
    let log = EventLog::open(&store, Retention::default()).expect("log");
    let mut rx = log.subscribe();
    event(&log, "w0", EventKind::DaemonStopping);
    let got = rx.recv().await.expect("event");
    assert_eq!(got.node.as_ref().map(Name::as_str), Some("w0"));
}

#[tokio::test]
async fn appends_after_close_are_counted_as_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), declared()).expect("open");
    let log = EventLog::open(&store, Retention::default()).expect("log");
    log.close();
    event(&log, "w0", EventKind::DaemonStopping);
    assert_eq!(log.dropped(), 1);
}

#[test]
fn a_version_1_store_is_migrated_and_keeps_its_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path(), declared()).expect("open");
        store.apply(&[Op::Put(Object::Node(worker("w1", 1)))]).expect("write");
    }
    {
        // What version 1 wrote: no `installed` table.
        let db = Database::create(dir.path().join(FILE_NAME)).expect("db");
        let txn = db.begin_write().expect("txn");
        txn.delete_table(schema::INSTALLED).expect("drop installed");
        txn.open_table(META).expect("meta").insert(schema::SCHEMA_KEY, 1).expect("insert");
        txn.commit().expect("commit");
    }
    let store = Store::open(dir.path(), declared()).expect("migrated");
    assert!(store.snapshot().nodes.contains_key("w1"));
    assert_eq!(store.installed("w1"), None);
    let at = Timestamp::from_unix_millis(1_700_000_000_000);
    assert_eq!(store.set_installed("w1", Some(at)).expect("mark"), None);
    drop(store);
    let store = Store::open(dir.path(), declared()).expect("reopen");
    assert_eq!(store.installed("w1"), Some(at));
    assert_eq!(store.set_installed("w1", None).expect("clear"), Some(at));
    assert_eq!(store.installed("w1"), None);
}

#[test]
fn a_store_from_before_the_journal_moves_its_leases_there_and_drops_the_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lease = bound_lease(Timestamp::from_unix_millis(1_800_000_000_000));
    {
        // A version-2 store, as the slipway before the journal wrote it.
        let db = Database::create(dir.path().join(FILE_NAME)).expect("db");
        let txn = db.begin_write().expect("txn");
        txn.open_table(META).expect("meta").insert(schema::SCHEMA_KEY, 2).expect("version");
        txn.open_table(LEASES).expect("leases").insert(u32::from(lease.ip), encode(&lease).as_slice()).expect("lease");
        txn.commit().expect("commit");
    }
    let store = Store::open(dir.path(), declared()).expect("open migrates");
    assert_eq!(store.leases().expect("leases"), vec![lease.clone()]);
    assert!(dir.path().join(journal::FILE_NAME).exists());
    drop(store);
    let db = Database::open(dir.path().join(FILE_NAME)).expect("db");
    let txn = db.begin_read().expect("txn");
    assert!(txn.open_table(LEASES).is_err(), "the leases table is gone");
    assert_eq!(
        txn.open_table(META).expect("meta").get(schema::SCHEMA_KEY).expect("get").map(|v| v.value()),
        Some(SCHEMA_VERSION)
    );
    drop((txn, db));
    assert_eq!(Store::open(dir.path(), declared()).expect("reopen").leases().expect("leases"), vec![lease]);
}

#[test]
fn a_state_directory_that_others_can_read_is_tightened_to_0700() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    drop(Store::open(&state, declared()).expect("open"));
    assert_eq!(std::fs::metadata(&state).expect("state").permissions().mode() & 0o7777, 0o700);
    let fresh = dir.path().join("fresh");
    drop(Store::open(&fresh, declared()).expect("open"));
    assert_eq!(std::fs::metadata(&fresh).expect("fresh").permissions().mode() & 0o7777, 0o700);
}

#[test]
fn the_audit_trail_has_its_own_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), declared()).expect("open");
    let retention = Retention { max_count: 3, audit_max_count: 10, ..Retention::default() };
    let log = EventLog::open(&store, retention).expect("log");
    let audit = |i: u16| EventKind::Audit {
        method: "PUT".into(),
        object: format!("nodes/w{i}"),
        status: 200,
        outcome: "done".into(),
        client: "127.0.0.1".into(),
        token: "admin".into(),
    };
    for i in 0..6 {
        log.append(Source::Api, Subject::default(), audit(i));
        log.append(Source::Dhcp, Subject::default(), EventKind::DhcpInformed);
    }
    log.close();
    let events = log.query(&Filter::default(), 100).expect("events");
    assert_eq!(events.len(), 3, "the event log keeps its 3");
    let kept = log.query(&Filter { log: super::events::Log::Audit, ..Filter::default() }, 100).expect("audit");
    assert_eq!(kept.len(), 6, "the audit trail keeps all 6");
    assert!(kept.windows(2).all(|w| w[0].seq < w[1].seq));
    // One sequence numbers both: a reopened log goes on after the highest of either.
    drop(log);
    let log = EventLog::open(&store, retention).expect("reopen");
    let next = log.append(Source::Api, Subject::default(), audit(9));
    assert_eq!(next.seq, 13);
}

#[test]
fn a_full_disk_is_told_apart_from_other_failures_however_it_is_wrapped() {
    let full = || std::io::Error::from_raw_os_error(28);
    let journal = StoreError::Journal(journal::JournalError { path: "leases.journal".into(), source: full() });
    assert!(journal.is_disk_full());
    let db = StoreError::Db(redb::Error::Io(full()));
    assert!(db.is_disk_full());
    assert!(StoreError::Db(redb::Error::Io(std::io::Error::from_raw_os_error(122))).is_disk_full(), "a quota");
    let other = StoreError::Db(redb::Error::Io(std::io::Error::from_raw_os_error(5)));
    assert!(!other.is_disk_full(), "EIO is not a full disk");
    assert!(!StoreError::NoLease([10, 0, 0, 1].into()).is_disk_full());
}
