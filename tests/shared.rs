//! The etcd-backed store (`[store] backend = "etcd"`) of two instances on a real three-member
//! etcd (Debian's etcd-server): objects, records, installed marks and leases written through
//! either are seen by the other; leases only by the leader; a compacted history is read again.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use slipway::inventory::{Inventory, Lease, LeaseState, Node, Object, Op, Timestamp};
use slipway::store::records::{RecordWrite, Records};
use slipway::store::shared::{Settings, Shared};
use slipway::store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::etcd::Cluster;
use crate::support::Config;

/// The declared objects both instances share: network `cluster` (10.2.0.0/16), cluster `prod`
/// and master-0.
fn declared(dir: &Path) -> Inventory {
    let path = Config::prod(dir).write();
    let text = std::fs::read_to_string(&path).expect("config");
    slipway::config::parse(&text, &path).expect("the test config parses").inventory
}

fn settings(cluster: &Cluster, instance: &str) -> Settings {
    Settings {
        etcd: cluster.settings(&cluster.endpoints),
        prefix: "/slipway/".into(),
        instance: instance.into(),
        lease_ttl: Duration::from_secs(3),
        compaction: Default::default(),
    }
}

struct Instance {
    store: Store,
    stop: CancellationToken,
    follow: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Instance {
    async fn start(cluster: &Cluster, name: &str) -> Instance {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = Shared::connect(settings(cluster, name)).await.expect("connect");
        let store = Store::open_shared(&dir.path().join("state"), declared(dir.path()), shared).expect("open");
        let stop = CancellationToken::new();
        let follow = tokio::spawn({
            let (store, stop) = (store.clone(), stop.clone());
            async move { store.follow(None, stop).await }
        });
        Instance { store, stop, follow, _dir: dir }
    }

    /// Stops following (and resigns if leading).
    async fn stop(self) -> Store {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.follow).await.expect("stops in time").expect("joined");
        self.store
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<Inventory, StoreError> {
        let store = self.store.clone();
        let done = tokio::task::spawn_blocking(move || store.apply(&ops)).await.expect("joined");
        done.map(|(inv, _)| (*inv).clone())
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Store) -> T + Send + 'static) -> T {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store)).await.expect("joined")
    }
}

fn node(name: &str, last: u8) -> Node {
    let text = format!(
        r#"{{"name":"{name}","mac":"52:54:00:6b:01:{last:02x}","ipv4":"10.2.1.{last}","cluster":"prod","role":"worker"}}"#
    );
    let mut node: Node = serde_json::from_str(&text).expect("node");
    node.origin = slipway::inventory::Origin::Api;
    node
}

fn lease(last: u8, mac: &str) -> Lease {
    let now = Timestamp::now();
    Lease {
        ip: Ipv4Addr::new(10, 2, 3, last),
        mac: mac.parse().expect("mac"),
        network: "cluster".parse().expect("name"),
        state: LeaseState::Bound,
        expires: Timestamp(now.0 + Duration::from_secs(3600)),
        updated: now,
        hostname: None,
        client_id: None,
    }
}

/// Waits (up to 10 s) until `check` holds for `store`.
async fn until(what: &str, store: &Store, mut check: impl FnMut(&Store) -> bool) {
    within(what, Duration::from_secs(10), || check(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_objects_records_installed_marks_and_leases_only_the_leader_writes() {
    let cluster = Cluster::start();
    cluster.ready().await;
    let a = Instance::start(&cluster, "a").await;
    let b = Instance::start(&cluster, "b").await;
    assert!(a.store.snapshot().nodes.contains_key("master-0"), "the declared objects are in the snapshot");

    // An object made through one instance is in the other's snapshot, at the same version.
    let made = a.apply(vec![Op::Create(Object::Node(node("w1", 1)))]).await.expect("create on a");
    assert!(made.nodes.contains_key("w1"), "the writer reads its own write");
    until("b sees w1", &b.store, |s| s.snapshot().nodes.get("w1") == Some(&node("w1", 1))).await;
    assert_eq!(b.store.snapshot().version, made.version);
    let made = b.apply(vec![Op::Create(Object::Node(node("w2", 2)))]).await.expect("create on b");
    until("a sees w2", &a.store, |s| s.snapshot().version == made.version).await;
    assert_eq!(a.store.snapshot().nodes.get("w2"), Some(&node("w2", 2)));

    // Both write at once, many times: every change lands, each computed from the latest
    // inventory (the loser of a race computes again), and both end at one version.
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..6u8 {
        for (store, side, base) in [(a.store.clone(), "a", 10), (b.store.clone(), "b", 30)] {
            let op = Op::Create(Object::Node(node(&format!("{side}{i}"), base + i)));
            writes.spawn_blocking(move || store.apply(&[op]).map(drop));
        }
    }
    while let Some(done) = writes.join_next().await {
        done.expect("joined").expect("a concurrent create lands");
    }
    let version = a.store.snapshot().version.max(b.store.snapshot().version);
    until("a at the last version", &a.store, |s| s.snapshot().version == version).await;
    until("b at the last version", &b.store, |s| s.snapshot().version == version).await;
    assert_eq!(a.store.snapshot().nodes, b.store.snapshot().nodes);
    assert_eq!(a.store.snapshot().nodes.len(), 1 + 2 + 12);
    // A node clashing with one the other instance made is refused, naming the field.
    let clash = node("w9", 1);
    let refused = b.apply(vec![Op::Create(Object::Node(clash))]).await.expect_err("same MAC and address as w1");
    assert!(refused.to_string().contains("10.2.1.1"), "{refused}");
    // A delete through one is gone from the other.
    let gone = a.apply(vec![Op::Delete(slipway::inventory::Kind::Node, "w2".parse().expect("name"))]).await;
    let gone = gone.expect("delete on a");
    until("b loses w2", &b.store, |s| s.snapshot().version == gone.version).await;
    assert!(!b.store.snapshot().nodes.contains_key("w2"));

    // Lifecycle records and installed marks.
    let record = RecordWrite::put(Records::Phases, "w1", &serde_json::json!({"phase": "booting"}));
    b.blocking(move |s| s.write_records(&[record])).await.expect("record on b");
    until("a reads b's record", &a.store, |s| {
        s.record::<serde_json::Value>(Records::Phases, "w1").ok().flatten()
            == Some(serde_json::json!({"phase": "booting"}))
    })
    .await;
    let at = Timestamp::from_unix_millis(1_700_000_000_000);
    a.blocking(move |s| s.set_installed("w1", Some(at))).await.expect("installed on a");
    until("b sees the mark", &b.store, |s| s.installed("w1") == Some(at)).await;

    // Exactly one leads; only it records leases, and the other reads them.
    until("someone leads", &a.store, |s| s.term().is_some() || b.store.term().is_some()).await;
    let (leader, follower) = if a.store.term().is_some() { (&a, &b) } else { (&b, &a) };
    assert!(follower.store.term().is_none(), "one leader at a time");
    let refused = follower.blocking(|s| s.put_leases(vec![lease(5, "52:54:00:aa:00:05")])).await;
    assert!(refused.as_ref().is_err_and(|e| e.to_string().contains("does not lead")), "{refused:?}");
    leader.blocking(|s| s.put_leases(vec![lease(6, "52:54:00:aa:00:06")])).await.expect("the leader records a lease");
    until("the follower reads the lease", &follower.store, |s| {
        s.lease(Ipv4Addr::new(10, 2, 3, 6)).ok().flatten().map(|l| l.mac.to_string())
            == Some("52:54:00:aa:00:06".into())
    })
    .await;
    assert_eq!(follower.store.lease(Ipv4Addr::new(10, 2, 3, 5)).expect("read"), None, "the refused lease is nowhere");

    // The leader stops (and resigns): the other leads, after it has every lease; the old one's
    // store refuses lease writes from then on.
    let leader_is_a = a.store.term().is_some();
    let (old, new) = if leader_is_a { (a, b) } else { (b, a) };
    let old = old.stop().await;
    until("the other leads", &new.store, |s| s.term().is_some()).await;
    let term = new.store.term().expect("term");
    assert!(new.store.caught_up(term).await);
    assert_eq!(new.store.leases().expect("leases").len(), 1);
    let refused = tokio::task::spawn_blocking(move || old.put_leases(vec![lease(7, "52:54:00:aa:00:07")])).await;
    assert!(refused.expect("joined").is_err(), "a resigned leader records nothing");
    new.blocking(|s| s.put_leases(vec![lease(7, "52:54:00:aa:00:07")])).await.expect("the new leader records");
    new.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_missed_a_compacted_history_reads_everything_again() {
    let cluster = Cluster::start();
    let etcd = cluster.ready().await;
    let a = Instance::start(&cluster, "a").await;
    let b = Instance::start(&cluster, "b").await;
    let made = a.apply(vec![Op::Create(Object::Node(node("w1", 1)))]).await.expect("create");
    until("b sees w1", &b.store, |s| s.snapshot().version == made.version).await;
    // b stops following; a changes things; the history b would resume from is compacted away.
    let b_store = b.stop().await;
    a.apply(vec![Op::Create(Object::Node(node("w2", 2)))]).await.expect("create");
    let last = a.apply(vec![Op::Delete(slipway::inventory::Kind::Node, "w1".parse().expect("name"))]).await;
    let last = last.expect("delete");
    let (revision, _) = etcd.prefix(b"/slipway/").await.expect("read");
    etcd.compact(revision).await.expect("compact");
    assert!(b_store.snapshot().nodes.contains_key("w1"), "b has not seen the changes yet");
    let stop = CancellationToken::new();
    let follow = tokio::spawn({
        let (store, stop) = (b_store.clone(), stop.clone());
        async move { store.follow(None, stop).await }
    });
    until("b catches up after the compaction", &b_store, |s| s.snapshot().version == last.version).await;
    let snapshot = b_store.snapshot();
    assert!(!snapshot.nodes.contains_key("w1") && snapshot.nodes.contains_key("w2"), "{:?}", snapshot.nodes.keys());
    stop.cancel();
    follow.await.expect("joined");
    a.stop().await;
}

/// `config` with DNS on `dns` and the `[store]` of instance `name` of a pair sharing `cluster`.
fn paired(config: Config, cluster: &Cluster, name: &str, dns: &str) -> Config {
    let s = |p: &Path| p.display().to_string();
    config
        .section("[dns]")
        .list("listen", [format!("{dns}:53")])
        .section("[store]")
        .set("backend", "etcd")
        .list("endpoints", cluster.endpoints.iter())
        .set("ca", s(&cluster.ca.0))
        .set("cert", s(&cluster.client.0))
        .set("key", s(&cluster.client.1))
        .set("instance", name)
        .set("lease_ttl", "3s")
        .set("timeout", "2s")
}

/// A daemon of a pair sharing `cluster`, serving DNS on `dns`.
fn daemon(dir: &Path, cluster: &Cluster, name: &str, dns: &str) -> crate::support::Daemon {
    crate::support::start(&paired(Config::prod(dir), cluster, name, dns).write(), &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_made_through_one_daemons_api_answers_on_the_others_dns() {
    let cluster = Cluster::start();
    cluster.ready().await;
    let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = daemon(dir_a.path(), &cluster, "a", "127.54.0.1");
    let b = daemon(dir_b.path(), &cluster, "b", "127.54.0.2");
    let client = crate::support::http();
    let body = serde_json::json!({"name": "worker-1", "mac": "52:54:00:6b:00:21", "ipv4": "10.2.0.21", "cluster": "prod", "role": "worker"});
    let made = client.put(a.url("/api/v1/nodes/worker-1")).bearer_auth(crate::support::TOKEN).json(&body).send().await;
    assert_eq!(made.expect("put on a").status(), 201);
    let written = Instant::now();
    let name = "worker-1.prod.lab.example";
    let answer = || crate::dns::run("dig", "127.54.0.2", &["+short", name]);
    crate::support::eventually("b's DNS answers for the node made on a", Duration::from_secs(10), || {
        answer().trim() == "10.2.0.21"
    });
    eprintln!("made on a, answered by b's DNS after {:?}", written.elapsed());
    let listed = client.get(b.url("/api/v1/nodes/worker-1")).bearer_auth(crate::support::TOKEN).send().await;
    assert_eq!(listed.expect("get on b").status(), 200);
    // Removed through b: gone from a's DNS.
    let gone = client.delete(b.url("/api/v1/nodes/worker-1")).bearer_auth(crate::support::TOKEN).send().await;
    assert!(gone.expect("delete on b").status().is_success());
    crate::support::eventually("a's DNS forgets the node", Duration::from_secs(10), || {
        crate::dns::run("dig", "127.54.0.1", &["+short", name]).trim().is_empty()
    });

    // Both list both instances and one leader; keepalived's check passes on the leader only.
    let mut leaders = Vec::new();
    for d in [&a, &b] {
        let ask = || async {
            let r = client.get(d.url("/api/v1/cluster-members")).bearer_auth(crate::support::TOKEN).send().await;
            r.expect("members").json::<serde_json::Value>().await.expect("json")
        };
        // Each instance announces itself, and one takes the lead, on its first beat.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut m = ask().await;
        while m["members"].as_array().map(Vec::len) != Some(2) || m["leader"].is_null() {
            assert!(Instant::now() < deadline, "two members and a leader within 10 s: {m}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            m = ask().await;
        }
        let names: Vec<&str> =
            m["members"].as_array().expect("members").iter().filter_map(|i| i["name"].as_str()).collect();
        assert_eq!(names, ["a", "b"], "{m}");
        assert_eq!(m["etcd"].as_array().map(|e| e.iter().filter(|e| e["healthy"] == true).count()), Some(3), "{m}");
        assert_eq!(m["lag"].as_i64().map(|l| l >= 0), Some(true), "{m}");
        leaders.push(m["leader"].as_str().expect("a leader").to_owned());
        let ready = client.get(d.url("/readyz?role=leader")).send().await.expect("readyz").status();
        assert_eq!(ready == 200, m["leading"] == true, "{m}");
        assert_eq!(client.get(d.url("/readyz")).send().await.expect("readyz").status(), 200, "ready either way");
    }
    assert_eq!(leaders[0], leaders[1], "one leader, seen alike");
    let (ok, out, err) = crate::support::cli(&a, &["status"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("leader {}", leaders[0])) && out.contains("ETCD"), "{out}");
    for d in [a, b] {
        assert!(d.stop(Duration::from_secs(15)).is_some_and(|s| s.success()), "a clean stop");
    }
}

/// Waits (bounded, `limit`) until `check` holds.
async fn within(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_etcd_member_changes_nothing_and_losing_quorum_stops_writes_and_dhcp_until_it_returns() {
    let mut cluster = Cluster::start();
    cluster.ready().await;
    let a = Instance::start(&cluster, "a").await;
    let b = Instance::start(&cluster, "b").await;
    let events = slipway::store::events::EventLog::open(&a.store, Default::default()).expect("events");
    // a's follower records its events; restart it with the log.
    let a_store = a.stop().await;
    let a_stop = CancellationToken::new();
    let a_follow = tokio::spawn({
        let (store, events, stop) = (a_store.clone(), events.clone(), a_stop.clone());
        async move { store.follow(Some(events), stop).await }
    });
    let mut seen = events.subscribe();
    within("someone leads", Duration::from_secs(15), || a_store.term().is_some() || b.store.term().is_some()).await;
    let made = tokio::task::spawn_blocking({
        let store = a_store.clone();
        move || store.apply(&[Op::Create(Object::Node(node("w1", 1)))])
    });
    made.await.expect("joined").expect("a write with every member up");
    let leader_before = (a_store.term(), b.store.term());

    // One member gone: writes through both instances work, nobody is unavailable, the leader
    // stays.
    cluster.kill(0);
    for (i, store) in [a_store.clone(), b.store.clone()].into_iter().enumerate() {
        let op = Op::Create(Object::Node(node(&format!("m{i}"), 40 + u8::try_from(i).expect("small"))));
        let done = tokio::task::spawn_blocking(move || store.apply(&[op])).await.expect("joined");
        done.expect("a write with one member down");
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let shared = |s: &Store| s.shared().expect("etcd").unavailable();
    assert_eq!((shared(&a_store), shared(&b.store)), (None, None));
    assert_eq!((a_store.term(), b.store.term()), leader_before, "the leader keeps its term");

    // Quorum gone: both notice, nobody leads (DHCP stops), writes fail at once, and the
    // snapshot in force stays (DNS, boot and the load balancer keep serving it).
    cluster.kill(1);
    let in_force = a_store.snapshot();
    within("both see etcd unavailable", Duration::from_secs(30), || {
        shared(&a_store).is_some() && shared(&b.store).is_some()
    })
    .await;
    within("nobody leads", Duration::from_secs(10), || a_store.term().is_none() && b.store.term().is_none()).await;
    let started = Instant::now();
    let refused = tokio::task::spawn_blocking({
        let store = a_store.clone();
        move || store.apply(&[Op::Create(Object::Node(node("w9", 9)))])
    });
    let refused = refused.await.expect("joined").expect_err("no write without quorum");
    assert!(refused.to_string().contains("etcd is unavailable"), "{refused}");
    eprintln!("a write without quorum was refused after {:?}", started.elapsed());
    let lease = lease(9, "52:54:00:aa:00:09");
    let no_lease = tokio::task::spawn_blocking({
        let store = a_store.clone();
        move || store.put_leases(vec![lease])
    });
    assert!(no_lease.await.expect("joined").is_err(), "no lease without quorum");
    assert_eq!(a_store.snapshot(), in_force, "the inventory in force stays");

    // Quorum back: available again, someone leads, writes work.
    cluster.revive(0);
    cluster.revive(1);
    within("etcd available again", Duration::from_secs(30), || {
        shared(&a_store).is_none() && shared(&b.store).is_none()
    })
    .await;
    within("someone leads again", Duration::from_secs(20), || a_store.term().is_some() || b.store.term().is_some())
        .await;
    let again = tokio::task::spawn_blocking({
        let store = a_store.clone();
        move || store.apply(&[Op::Create(Object::Node(node("w9", 9)))])
    });
    again.await.expect("joined").expect("a write after quorum returned");
    let mut kinds = Vec::new();
    while let Ok(e) = seen.try_recv() {
        kinds.push(e.details.type_name());
    }
    let order: Vec<&str> =
        kinds.iter().copied().filter(|k| k.starts_with("store_") || k.starts_with("leadership_")).collect();
    assert!(order.contains(&"store_unavailable") && order.contains(&"store_available"), "{order:?}");
    let unavailable = order.iter().position(|k| *k == "store_unavailable");
    let available = order.iter().rposition(|k| *k == "store_available");
    assert!(unavailable < available, "{order:?}");
    a_stop.cancel();
    a_follow.await.expect("joined");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_files_written_through_one_instance_are_read_through_the_other() {
    use slipway::inventory::Role;
    use slipway::store::uploads;
    let cluster = Cluster::start();
    cluster.ready().await;
    let a = Instance::start(&cluster, "a").await;
    let b = Instance::start(&cluster, "b").await;
    // An upload through one, dated from its certificates, is served (and dated) by the other.
    let day_ago = std::time::SystemTime::now() - Duration::from_secs(86_400);
    let made = std::time::UNIX_EPOCH
        + Duration::from_millis(day_ago.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as u64);
    a.blocking(move |s| uploads::put(&s.files(), "prod", Role::Bootstrap, b"{\"ignition\":{}}", Some(made)))
        .await
        .expect("upload on a");
    until("b has the upload", &b.store, |s| uploads::get(&s.files(), "prod", Role::Bootstrap).ok().flatten().is_some())
        .await;
    let (text, dated) = uploads::get(&b.store.files(), "prod", Role::Bootstrap).expect("read").expect("there");
    assert_eq!((text.as_str(), dated), ("{\"ignition\":{}}", made));
    // Keys made on first use: both instances racing agree on one.
    let (fa, fb) = (a.store.files(), b.store.files());
    let (ka, kb) = tokio::join!(
        tokio::task::spawn_blocking(move || slipway::ssh::keys::client_public(&fa, "prod")),
        tokio::task::spawn_blocking(move || slipway::ssh::keys::client_public(&fb, "prod")),
    );
    let (ka, kb) = (ka.expect("joined").expect("key on a"), kb.expect("joined").expect("key on b"));
    assert_eq!(ka, kb, "one client key for the cluster, whoever made it");
    // A deleted cluster's files go for both.
    b.blocking(|s| uploads::remove_cluster(&s.files(), "prod")).await.expect("remove on b");
    b.blocking(|s| slipway::ssh::keys::remove_cluster(&s.files(), "prod")).await.expect("remove on b");
    until("a loses the upload", &a.store, |s| {
        uploads::get(&s.files(), "prod", Role::Bootstrap).ok().flatten().is_none()
    })
    .await;
    let key = a.blocking(|s| slipway::ssh::keys::existing_client(&s.files(), "prod")).await.expect("read");
    assert!(key.is_none(), "the key went too");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_engines_writes_hold_only_on_the_leader() {
    let cluster = Cluster::start();
    let etcd = cluster.ready().await;
    let a = Instance::start(&cluster, "a").await;
    let b = Instance::start(&cluster, "b").await;
    within("someone leads", Duration::from_secs(15), || a.store.term().is_some() || b.store.term().is_some()).await;
    let (leader, follower) = if a.store.term().is_some() { (&a, &b) } else { (&b, &a) };
    let record = |phase: &str| RecordWrite::put(Records::Phases, "w1", &serde_json::json!({ "phase": phase }));
    let write = |store: Store, record: RecordWrite| {
        tokio::task::spawn_blocking(move || store.fenced().write_records(&[record]))
    };
    let refused = write(follower.store.clone(), record("from-the-follower")).await.expect("joined");
    assert!(refused.is_err_and(|e| e.to_string().contains("does not lead")), "a follower's engine writes nothing");
    write(leader.store.clone(), record("from-the-leader")).await.expect("joined").expect("the leader's engine writes");
    // The same store unfenced (the API's writes) works on either.
    follower.blocking(move |s| s.write_records(&[record("through-the-api")])).await.expect("an API write anywhere");
    // The leader key goes behind the leader's back (as when its lease ran out): it stops
    // leading at once, though its own etcd lease still lives; whoever leads next writes.
    let old = leader.store.term();
    assert!(etcd.delete(b"/slipway/leader").await.expect("delete"), "the key was there");
    within("the old term ends", Duration::from_secs(10), || leader.store.term() != old).await;
    within("someone leads again", Duration::from_secs(15), || a.store.term().is_some() || b.store.term().is_some())
        .await;
    let (now, other) = if a.store.term().is_some() { (&a, &b) } else { (&b, &a) };
    assert!(other.store.term().is_none(), "one leader");
    write(now.store.clone(), record("next-term")).await.expect("joined").expect("the new leader writes");
    let refused = write(other.store.clone(), record("stale")).await.expect("joined");
    assert!(refused.is_err(), "the other does not");
    a.stop().await;
    b.stop().await;
}

/// A read-modify-write of records on the leader (the engine's, fenced) with another instance's
/// writes landing between its read and its write (an API action there, a section too, then a
/// plain write): each time the leader's write is refused and its section computes again from
/// what was written, so nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_section_computes_again_when_another_instance_writes_between_its_read_and_its_write() {
    let cluster = Cluster::start();
    cluster.ready().await;
    let a = Instance::start(&cluster, "a").await;
    let b = Instance::start(&cluster, "b").await;
    within("someone leads", Duration::from_secs(15), || a.store.term().is_some() || b.store.term().is_some()).await;
    let (leader, other) = if a.store.term().is_some() { (&a, &b) } else { (&b, &a) };
    let count = |s: &Store| s.record::<u64>(Records::Lifecycle, "counter").map(Option::unwrap_or_default);
    let set = |n: u64| [RecordWrite::put(Records::Lifecycle, "counter", &n)];
    let (engine, api) = (leader.store.fenced(), other.store.clone());
    let (runs, seen) = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let done = engine.records_section(|s| {
            let n = count(s)?;
            seen.push(n);
            match seen.len() {
                // The other instance's section adds 10 in between...
                1 => api.records_section(|t| t.write_records(&set(count(t)? + 10)))?,
                // ...then a plain write of 100 on its own.
                2 => api.write_records(&set(100))?,
                _ => {}
            }
            s.write_records(&set(n + 1))
        });
        done.expect("the section ends");
        (seen.len(), seen)
    })
    .await
    .expect("joined");
    assert_eq!((runs, seen), (3, vec![0, 10, 100]), "each write in between makes the section compute again");
    until("the other instance reads 101", &other.store, |s| count(s).ok() == Some(101)).await;
    assert_eq!(leader.blocking(count).await.expect("read"), 101);
    // A section without writes in between writes once, on either.
    let api = other.store.clone();
    let runs = tokio::task::spawn_blocking(move || {
        let mut runs = 0;
        api.records_section(|t| {
            runs += 1;
            t.write_records(&set(count(t)? + 1))
        })
        .map(|()| runs)
    })
    .await
    .expect("joined");
    assert_eq!(runs.expect("written"), 1);
    until("the leader reads 102", &leader.store, |s| count(s).ok() == Some(102)).await;
    // A change read before its section (an apply, a scale): a write after the mark ends it,
    // unwritten, for the caller to read again.
    let mark = other.store.records_mark();
    leader.blocking(move |s| s.write_records(&set(200))).await.expect("a write after the mark");
    let moved = other.blocking(move |s| s.records_section_since(mark, |t| t.write_records(&set(103)))).await;
    assert!(moved.is_err_and(|e| e.is_moved()), "the change computed from 102 is not written");
    let mark = other.store.records_mark();
    other.blocking(move |s| s.records_section_since(mark, |t| t.write_records(&set(201)))).await.expect("written");
    until("the leader reads 201", &leader.store, |s| count(s).ok() == Some(201)).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_the_history_and_a_follower_keeps_up() {
    let cluster = Cluster::start();
    let etcd = cluster.ready().await;
    let mut compacting = settings(&cluster, "a");
    compacting.compaction = slipway::store::shared::Compaction { every: Duration::from_millis(200), keep: 5 };
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = Shared::connect(compacting).await.expect("connect");
    let a = Store::open_shared(&dir.path().join("state"), declared(dir.path()), shared).expect("open");
    let stop = CancellationToken::new();
    let follow = tokio::spawn({
        let (store, stop) = (a.clone(), stop.clone());
        async move { store.follow(None, stop).await }
    });
    within("a leads", Duration::from_secs(15), || a.term().is_some()).await;
    let b = Instance::start(&cluster, "b").await;
    for i in 0..20u8 {
        let store = a.clone();
        let op = Op::Create(Object::Node(node(&format!("c{i}"), 60 + i)));
        tokio::task::spawn_blocking(move || store.apply(&[op])).await.expect("joined").expect("create");
    }
    // The history before the last few revisions goes; a watch from the start is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // etcd confirms the watch, then says its start is gone.
        let mut watch = etcd.watch(b"/slipway/", 1).await.expect("watch");
        match tokio::time::timeout(Duration::from_secs(2), watch.next()).await {
            Ok(Err(slipway::store::etcd::EtcdError::Compacted(_))) => break,
            other => {
                assert!(Instant::now() < deadline, "compacted within 10 s: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let version = a.snapshot().version;
    until("b keeps up", &b.store, |s| s.snapshot().version == version).await;
    assert_eq!(b.store.snapshot().nodes.len(), a.snapshot().nodes.len());
    stop.cancel();
    follow.await.expect("joined");
    b.stop().await;
}

/// `PUT /api/v1/nodes/<name>` (a worker of `prod` at 10.2.0.<last>) through `daemon`: the status.
async fn put_node(client: &reqwest::Client, daemon: &crate::support::Daemon, name: &str, last: u8) -> u16 {
    let body = serde_json::json!({"name": name, "mac": format!("52:54:00:6b:00:{last:02x}"), "ipv4": format!("10.2.0.{last}"), "cluster": "prod", "role": "worker"});
    let url = daemon.url(&format!("/api/v1/nodes/{name}"));
    let sent = client.put(url).bearer_auth(crate::support::TOKEN).json(&body).send().await;
    sent.map_or(0, |r| r.status().as_u16())
}

/// An instance that starts while no etcd member answers serves DNS from the copy of the shared
/// state it keeps in its own file, refuses writes (503) and allocates nothing; once etcd is
/// back it reads everything again and is a full member. One that never ran has no copy and
/// refuses to start, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_while_etcd_is_down_serves_its_last_copy_and_catches_up_when_etcd_returns() {
    let mut cluster = Cluster::start();
    cluster.ready().await;
    let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = daemon(dir_a.path(), &cluster, "a", "127.54.2.1");
    let b = daemon(dir_b.path(), &cluster, "b", "127.54.2.2");
    let client = crate::support::http();
    assert_eq!(put_node(&client, &a, "worker-1", 21).await, 201);
    let dig =
        |server: &str, name: &str| crate::dns::run("dig", server, &["+short", &format!("{name}.prod.lab.example")]);
    crate::support::eventually("b's DNS answers for worker-1", Duration::from_secs(10), || {
        dig("127.54.2.2", "worker-1").trim() == "10.2.0.21"
    });
    assert!(b.stop(Duration::from_secs(15)).is_some_and(|s| s.success()), "a clean stop");

    for i in 0..3 {
        cluster.kill(i);
    }
    // Never ran: no copy to serve from.
    let fresh = tempfile::tempdir().expect("tempdir");
    let config = paired(Config::prod(fresh.path()), &cluster, "c", "127.54.2.3").write();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run slipway");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no copy of the shared state from an earlier run"), "{err}");

    // b starts on its copy: DNS answers, writes are refused with the reason, nobody leads.
    let config = paired(Config::prod(dir_b.path()), &cluster, "b", "127.54.2.2").write();
    let b = crate::support::start(&config, &[]);
    assert_eq!(dig("127.54.2.2", "worker-1").trim(), "10.2.0.21", "served from the copy");
    assert_eq!(client.get(b.url("/readyz")).send().await.expect("readyz").status(), 200);
    let refused = client.put(b.url("/api/v1/nodes/worker-2")).bearer_auth(crate::support::TOKEN);
    let body = serde_json::json!({"name": "worker-2", "mac": "52:54:00:6b:00:22", "ipv4": "10.2.0.22", "cluster": "prod", "role": "worker"});
    let refused = refused.json(&body).send().await.expect("put");
    assert_eq!(refused.status(), 503);
    let reason = refused.text().await.unwrap_or_default();
    assert!(reason.contains("etcd"), "{reason}");
    assert_eq!(client.get(b.url("/readyz?role=leader")).send().await.expect("readyz").status(), 503);

    // etcd returns: b reads it whole and writes work; one of the two leads.
    for i in 0..3 {
        cluster.revive(i);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(put_node(&client, &b, "worker-2", 22).await, 200 | 201) {
        assert!(Instant::now() < deadline, "b writes again within 60 s of etcd's return");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    crate::support::eventually("a's DNS answers for the node made on b", Duration::from_secs(10), || {
        dig("127.54.2.1", "worker-2").trim() == "10.2.0.22"
    });
    let leader = leader(&client, &b, |_| true).await;
    assert!(["a", "b"].contains(&leader.as_str()), "{leader}");
    for d in [a, b] {
        assert!(d.stop(Duration::from_secs(15)).is_some_and(|s| s.success()), "a clean stop");
    }
}

/// A k3s cluster of three control-plane VMs on the Proxmox stand-in (no VMs behind it: nothing
/// boots, so the nodes wait powered on under a long boot deadline).
const ON_PROXMOX: &str = r#"
name: lab
kind: k3s
base_domain: lab.example
network: cluster
api_address: 10.2.0.1
api_int_address: 10.2.0.1
ingress_address: 10.2.0.1
hypervisor: pve
node_groups:
  - name: server
    role: control-plane
    count: 3
    cores: 1
    memory: 512MiB
    disks: [{ size: 1GiB }]
    nics: [{ bridge: vmbr0 }]
validation:
  phases:
    boot: 1h
"#;

/// The instance `a` or `b` of a pair on `cluster` with the Proxmox stand-in as hypervisor `pve`.
fn on_proxmox(dir: &Path, cluster: &Cluster, pve: &crate::pve::StandIn, name: &str, dns: &str) -> std::path::PathBuf {
    let config = Config::new(dir)
        .network("cluster", "lab0", "10.2.0.0/16")
        .set("gateway", "10.2.0.1")
        .set("domain", "lab.example")
        .value("static_range", r#"{ start = "10.2.1.10", end = "10.2.1.99" }"#);
    crate::boot::pve_hypervisor(paired(config, cluster, name, dns).section("[[hypervisors]]"), dir, pve).write()
}

/// The leader `daemon` names once `check` holds for it (bounded).
async fn leader(client: &reqwest::Client, daemon: &crate::support::Daemon, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let asked = client.get(daemon.url("/api/v1/cluster-members")).bearer_auth(crate::support::TOKEN).send().await;
        if let Ok(members) = asked {
            let members: serde_json::Value = members.json().await.unwrap_or_default();
            if let Some(name) = members["leader"].as_str().filter(|n| check(n)) {
                return name.to_owned();
            }
        }
        assert!(Instant::now() < deadline, "the leader expected within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leader is killed (SIGKILL) while a create task it started runs on Proxmox: the standby
/// takes the lead, waits for that task from its stored UPID, finds the VM made and carries on;
/// the stand-in ends with exactly the planned VMs, all powered on, and the killed instance,
/// started again as the standby, changes nothing.
#[test]
fn a_cluster_in_progress_carries_on_under_the_next_leader_with_no_vm_made_twice() {
    use crate::pve::StandIn;
    let dir = tempfile::tempdir().expect("tempdir");
    let pve = StandIn::start(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let cluster = Cluster::start();
        cluster.ready().await;
        let dirs = [tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir")];
        let configs = [
            on_proxmox(dirs[0].path(), &cluster, &pve, "a", "127.54.1.1"),
            on_proxmox(dirs[1].path(), &cluster, &pve, "b", "127.54.1.2"),
        ];
        let mut daemons = [crate::support::start(&configs[0], &[]), crate::support::start(&configs[1], &[])];
        let client = crate::support::http();
        let first = leader(&client, &daemons[0], |_| true).await;
        let (lead, stand_by) = if first == "a" { (0, 1) } else { (1, 0) };

        // Creates take 6 s; the definition goes in through the standby's API.
        pve.with(|s| s.faults.slow_tasks.insert("qmcreate".into(), Duration::from_secs(6)));
        let put = client
            .put(daemons[stand_by].url("/api/v1/clusters/lab/definition"))
            .bearer_auth(crate::support::TOKEN)
            .header("content-type", "application/yaml")
            .body(ON_PROXMOX)
            .send()
            .await
            .expect("put");
        assert_eq!(put.status(), 200, "{}", put.text().await.unwrap_or_default());
        let creating = || pve.with(|s| s.vms.values().any(|vm| vm.lock.is_some()));
        within("a create task running", Duration::from_secs(30), creating).await;
        crate::support::signal(&daemons[lead].child, "KILL");
        crate::support::wait_exit(&mut daemons[lead].child, Duration::from_secs(10)).expect("killed");
        let made_by_the_first = pve.with(|s| s.vms.len());
        pve.with(|s| s.faults.slow_tasks.clear());

        // The standby leads once the killed leader's lease ends.
        leader(&client, &daemons[stand_by], |n| n == ["a", "b"][stand_by]).await;
        within("three VMs, all running", Duration::from_secs(120), || {
            pve.with(|s| s.vms.len() == 3 && s.vms.values().all(|vm| vm.running && vm.lock.is_none()))
        })
        .await;
        // The killed instance comes back as the standby: nothing more is made.
        daemons[lead] = crate::support::start(&configs[lead], &[]);
        let status = client
            .get(daemons[lead].url("/api/v1/clusters/lab/status"))
            .bearer_auth(crate::support::TOKEN)
            .send()
            .await
            .expect("status")
            .json::<serde_json::Value>()
            .await
            .expect("json");
        let phases: Vec<&str> =
            status["nodes"].as_array().expect("nodes").iter().map(|n| n["phase"].as_str().unwrap_or("?")).collect();
        assert_eq!(phases, ["powering-on"; 3], "{status}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut names: Vec<String> = pve.with(|s| s.vms.values().map(|vm| vm.config["name"].clone()).collect());
        names.sort();
        assert_eq!(
            names,
            ["server-0", "server-1", "server-2"],
            "exactly the planned VMs ({made_by_the_first} made before the kill)"
        );
        let creates =
            pve.with(|s| s.requests.iter().filter(|r| r.starts_with("POST /nodes/") && r.ends_with("/qemu")).count());
        assert_eq!(creates, 3, "one create per VM across the kill");
        for d in daemons {
            assert!(d.stop(Duration::from_secs(15)).is_some_and(|s| s.success()), "a clean stop");
        }
    });
    drop(runtime);
}
