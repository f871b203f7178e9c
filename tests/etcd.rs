//! The etcd client (`store::etcd`) against a real three-member etcd (Debian's etcd-server, 3.4)
//! on loopback with client and peer certificates: keys, fenced transactions, leases, watches
//! that resume and that see compaction, a member lost (the next one answers) and quorum lost
//! (calls fail, a watch ends instead of going stale).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use slipway::store::etcd::leader::{Leadership, Term};
use slipway::store::etcd::wire::{B64, Compare, RequestOp, ResponseOp, TxnRequest};
use slipway::store::etcd::{Change, Etcd, EtcdError, Seen, Settings};
use tokio_util::sync::CancellationToken;

use crate::pki;

/// A three-member cluster; its processes are ended (by PID) on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    members: Vec<Option<Child>>,
    /// Each member's command line, to start it again after `kill`.
    commands: Vec<Vec<String>>,
    pub endpoints: Vec<String>,
    pub ca: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
    /// The network namespace the members run in (`None`: this one, on loopback).
    ns: Option<String>,
}

/// `n` distinct free ports: all bound at once before any is let go (one at a time, the
/// system may hand the same port out twice).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("free port")).collect();
    held.iter().map(|l| l.local_addr().expect("addr").port()).collect()
}

impl Cluster {
    /// Three members on loopback, on free ports.
    pub fn start() -> Cluster {
        let ports: Vec<(u16, u16)> = free_ports(6).chunks(2).map(|p| (p[0], p[1])).collect();
        Cluster::start_on(None, "127.0.0.1", &ports)
    }

    /// Three members on `host` inside network namespace `ns` (its own ports: fixed ones).
    pub fn start_in(ns: &str, host: &str) -> Cluster {
        Cluster::start_on(Some(ns.to_owned()), host, &[(2379, 2380), (12379, 12380), (22379, 22380)])
    }

    fn start_on(ns: Option<String>, host: &str, ports: &[(u16, u16)]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = pki::ca(dir.path(), "ca", "/CN=etcd-ca");
        // The gateway calls its own gRPC server with the server certificate: it must be a client
        // certificate too.
        let server_ext =
            format!("subjectAltName=IP:127.0.0.1,IP:{host},DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n");
        let server = pki::issue(dir.path(), "server", "/CN=etcd", &server_ext, &pki::EC_KEY, &ca);
        let client =
            pki::issue(dir.path(), "client", "/CN=slipway", "extendedKeyUsage=clientAuth\n", &pki::EC_KEY, &ca);
        let initial: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, peer))| format!("m{i}=https://{host}:{peer}")).collect();
        let s = |p: &Path| p.display().to_string();
        let mut commands = Vec::new();
        let mut endpoints = Vec::new();
        for (i, (client_port, peer_port)) in ports.iter().enumerate() {
            let client_url = format!("https://{host}:{client_port}");
            let peer_url = format!("https://{host}:{peer_port}");
            let (name, data) = (format!("m{i}"), s(&dir.path().join(format!("m{i}"))));
            let mut args: Vec<String> = Vec::new();
            let mut add = |more: &[&str]| args.extend(more.iter().map(|a| a.to_string()));
            add(&["--name", &name, "--data-dir", &data]);
            add(&["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url]);
            add(&["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url]);
            add(&["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"]);
            add(&["--initial-cluster-token", "slipway-test"]);
            add(&["--client-cert-auth", "--trusted-ca-file", &s(&ca.0)]);
            add(&["--cert-file", &s(&server.0), "--key-file", &s(&server.1)]);
            add(&["--peer-client-cert-auth", "--peer-trusted-ca-file", &s(&ca.0)]);
            add(&["--peer-cert-file", &s(&server.0), "--peer-key-file", &s(&server.1)]);
            add(&["--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn", "--unsafe-no-fsync"]);
            add(&["--heartbeat-interval", "50", "--election-timeout", "500"]);
            add(&["--experimental-watch-progress-notify-interval", "1s"]);
            commands.push(args);
            endpoints.push(client_url);
        }
        let mut cluster = Cluster { dir, members: vec![None, None, None], commands, endpoints, ca, client, ns };
        for i in 0..3 {
            cluster.revive(i);
        }
        cluster
    }

    /// Starts member `i` (again, after `kill`: from its data directory).
    pub fn revive(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("m{i}.log")))
            .expect("log");
        let mut command = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcd"]);
                c
            }
            None => Command::new("etcd"),
        };
        let child = command
            .args(&self.commands[i])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (scripts/test installs etcd-server)");
        self.members[i] = Some(child);
    }

    pub fn settings(&self, endpoints: &[String]) -> Settings {
        Settings {
            endpoints: endpoints.to_vec(),
            ca: self.ca.0.clone(),
            cert: self.client.0.clone(),
            key: self.client.1.clone(),
            timeout: Duration::from_secs(3),
        }
    }

    /// Waits (bounded) until the members agree on a leader.
    pub async fn ready(&self) -> Etcd {
        let etcd = Etcd::new(&self.settings(&self.endpoints)).expect("client");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match etcd.status().await {
                Ok(s) if s.leader.0 != 0 => return etcd,
                other => {
                    let logs: Vec<String> = (0..3)
                        .map(|i| std::fs::read_to_string(self.dir.path().join(format!("m{i}.log"))).unwrap_or_default())
                        .collect();
                    assert!(
                        Instant::now() < deadline,
                        "etcd has no leader within 60 s: {other:?}\n{}",
                        logs.join("\n")
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut member) = self.members[i].take() {
            let _ = member.kill();
            let _ = member.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in self.members.iter_mut().flatten() {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

fn put_op(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp::RequestPut(slipway::store::etcd::wire::PutRequest {
        key: B64(key.to_vec()),
        value: B64(value.to_vec()),
        lease: None,
    })
}

/// `key`'s mod revision must be `revision` for `op` to run (the store's fencing compare).
fn unchanged_since(key: &[u8], revision: i64, op: RequestOp) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare::modified_at(key, revision)],
        success: vec![op],
        failure: vec![RequestOp::RequestRange(slipway::store::etcd::wire::RangeRequest {
            key: B64(key.to_vec()),
            ..Default::default()
        })],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_fenced_transactions_leases_and_watches_work_on_a_real_etcd_that_loses_members() {
    let mut cluster = Cluster::start();
    let etcd = cluster.ready().await;

    // Keys under a prefix.
    let r1 = etcd.put(b"/slipway/nodes/a", b"one", None).await.expect("put");
    etcd.put(b"/slipway/nodes/b", b"two", None).await.expect("put");
    etcd.put(b"/slipwayx", b"outside", None).await.expect("put");
    let (revision, kvs) = etcd.prefix(b"/slipway/").await.expect("prefix");
    assert!(revision > r1);
    let keys: Vec<&[u8]> = kvs.iter().map(|kv| kv.key.0.as_slice()).collect();
    assert_eq!(keys, [b"/slipway/nodes/a".as_slice(), b"/slipway/nodes/b"]);
    assert_eq!(etcd.get(b"/slipway/nodes/a").await.expect("get").expect("there").value.0, b"one");
    assert!(etcd.get(b"/slipway/nothing").await.expect("get").is_none());

    // A write fenced on the revision it read: the first wins, the stale one fails and reads.
    let read = etcd.get(b"/slipway/nodes/a").await.expect("get").expect("there").mod_revision.0;
    let won = etcd.txn(&unchanged_since(b"/slipway/nodes/a", read, put_op(b"/slipway/nodes/a", b"mine"))).await;
    assert!(won.expect("txn").succeeded);
    let lost = etcd.txn(&unchanged_since(b"/slipway/nodes/a", read, put_op(b"/slipway/nodes/a", b"theirs"))).await;
    let lost = lost.expect("txn");
    assert!(!lost.succeeded, "a stale revision does not write");
    let Some(ResponseOp::ResponseRange(now)) = lost.responses.first() else { panic!("the failure branch reads") };
    assert_eq!(now.kvs[0].value.0, b"mine");

    // A key bound to a lease lives while the lease is kept alive and goes with it.
    let (lease, ttl) = etcd.grant(Duration::from_secs(5)).await.expect("grant");
    assert_eq!(ttl, Duration::from_secs(5));
    etcd.put(b"/slipway/leader", b"me", Some(lease)).await.expect("put with lease");
    assert!(etcd.keepalive(lease).await.expect("keepalive").is_some());
    assert_eq!(etcd.get(b"/slipway/leader").await.expect("get").expect("there").lease.0, lease);
    etcd.revoke(lease).await.expect("revoke");
    assert!(etcd.get(b"/slipway/leader").await.expect("get").is_none(), "the key went with its lease");
    assert_eq!(etcd.keepalive(lease).await.expect("keepalive"), None, "a revoked lease is gone");
    etcd.revoke(lease).await.expect("revoking twice is not an error");

    // A watch from a revision sees every change after it, in order; one opened again from the
    // last revision seen + 1 sees only what came later.
    let from = etcd.put(b"/slipway/nodes/c", b"three", None).await.expect("put");
    let mut watch = etcd.watch(b"/slipway/nodes/", from).await.expect("watch");
    etcd.delete(b"/slipway/nodes/b").await.expect("delete");
    let mut seen = Vec::new();
    let mut last = from;
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("within 10 s") {
            Ok(Some(Seen::Changes { revision, changes })) => {
                last = revision;
                seen.extend(changes);
            }
            Ok(Some(Seen::Progress { .. })) => {}
            other => panic!("watch: {other:?}"),
        }
    }
    assert!(matches!(&seen[0], Change::Put(kv) if kv.key.0 == b"/slipway/nodes/c" && kv.value.0 == b"three"));
    assert!(matches!(&seen[1], Change::Delete { key, .. } if key == b"/slipway/nodes/b"));
    drop(watch);
    etcd.put(b"/slipway/nodes/d", b"four", None).await.expect("put");
    let mut resumed = etcd.watch(b"/slipway/nodes/", last + 1).await.expect("watch");
    match tokio::time::timeout(Duration::from_secs(10), resumed.next()).await.expect("within 10 s") {
        Ok(Some(Seen::Changes { changes, .. })) => {
            assert!(matches!(&changes[..], [Change::Put(kv)] if kv.key.0 == b"/slipway/nodes/d"), "{changes:?}")
        }
        other => panic!("resumed watch: {other:?}"),
    }
    drop(resumed);

    // History compacted away: a watch from before it says so (read everything again).
    let head = etcd.put(b"/slipway/nodes/e", b"five", None).await.expect("put");
    etcd.compact(head).await.expect("compact");
    let mut stale = etcd.watch(b"/slipway/nodes/", from).await.expect("watch");
    let compacted = tokio::time::timeout(Duration::from_secs(10), stale.next()).await.expect("within 10 s");
    assert!(matches!(compacted, Err(EtcdError::Compacted(r)) if r >= head), "{compacted:?}");

    // The member the client used is killed: the next one answers.
    cluster.kill(0);
    let mut answered = None;
    for _ in 0..20 {
        match etcd.put(b"/slipway/nodes/f", b"six", None).await {
            Ok(r) => {
                answered = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    assert!(answered.is_some(), "the surviving members answer");
    assert_eq!(etcd.get(b"/slipway/nodes/f").await.expect("get").expect("there").value.0, b"six");

    // Quorum lost: writes fail with an error (no member pretends), and a watch on the last
    // member ends instead of going quietly stale.
    let mut watch = etcd.watch(b"/slipway/", 0).await.expect("watch");
    cluster.kill(1);
    let started = Instant::now();
    let failed = etcd.put(b"/slipway/nodes/g", b"seven", None).await;
    assert!(failed.is_err(), "no quorum, no write: {failed:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "bounded by the call timeout");
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match watch.next().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch ends within 30 s");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
}

#[tokio::test]
async fn a_client_whose_certificate_the_cluster_does_not_trust_is_refused() {
    let cluster = Cluster::start();
    cluster.ready().await;
    let other = pki::ca(cluster.dir.path(), "other-ca", "/CN=other");
    let stranger =
        pki::issue(cluster.dir.path(), "stranger", "/CN=x", "extendedKeyUsage=clientAuth\n", &pki::EC_KEY, &other);
    let mut settings = cluster.settings(&cluster.endpoints);
    (settings.cert, settings.key) = stranger;
    let etcd = Etcd::new(&settings).expect("client");
    let refused = etcd.get(b"/slipway/x").await;
    assert!(matches!(refused, Err(EtcdError::Unreachable { .. })), "{refused:?}");
}

/// Waits (bounded) until `terms` holds a term, returning it and when it came.
async fn leads(terms: &mut tokio::sync::watch::Receiver<Option<Term>>, within: Duration) -> (Term, Instant) {
    let term = tokio::time::timeout(within, terms.wait_for(Option::is_some)).await.expect("leads in time");
    (term.expect("the leadership runs").clone().expect("a term"), Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_leads_and_a_leader_cut_off_from_etcd_steps_down_before_the_other_takes_over() {
    let mut cluster = Cluster::start();
    let etcd = cluster.ready().await;
    let ttl = Duration::from_secs(3);
    // A reaches etcd through the first member only; B through the other two.
    let a_etcd = Etcd::new(&cluster.settings(&cluster.endpoints[..1])).expect("client");
    let b_etcd = Etcd::new(&cluster.settings(&cluster.endpoints[1..])).expect("client");
    let a = Leadership::new(a_etcd, b"/slipway/leader", "a", ttl);
    let b = Leadership::new(b_etcd.clone(), b"/slipway/leader", "b", ttl);
    let (a_tx, mut a_terms) = tokio::sync::watch::channel(None);
    let (b_tx, mut b_terms) = tokio::sync::watch::channel(None);
    let (a_stop, b_stop) = (CancellationToken::new(), CancellationToken::new());
    tokio::spawn(a.run(a_tx, a_stop.clone()));
    let (a_term, _) = leads(&mut a_terms, Duration::from_secs(10)).await;
    let b_run = tokio::spawn(b.clone().run(b_tx, b_stop.clone()));
    tokio::time::sleep(ttl).await;
    assert!(b_terms.borrow().is_none(), "one leader at a time");
    let held = b.leader().await.expect("leader").expect("held");
    assert_eq!((held.name.as_str(), held.term), ("a", a_term.revision));

    // The leader's writes are fenced by its term.
    let write = |value: &[u8]| {
        vec![RequestOp::RequestPut(slipway::store::etcd::wire::PutRequest {
            key: B64(b"/slipway/leases/10.1.107.100".to_vec()),
            value: B64(value.to_vec()),
            lease: None,
        })]
    };
    assert!(etcd.txn(&b.fenced(&a_term, write(b"by a"))).await.expect("txn").succeeded);

    // A loses etcd: it stops leading on its own side before its lease can expire, and only
    // then does B begin (each change timed as it happens, by a watcher of its own).
    let a_down = tokio::spawn({
        let mut a_terms = a_terms.clone();
        async move {
            let _ = a_terms.wait_for(Option::is_none).await;
            Instant::now()
        }
    });
    let b_up = tokio::spawn({
        let mut b_terms = b_terms.clone();
        async move {
            let _ = b_terms.wait_for(Option::is_some).await;
            Instant::now()
        }
    });
    cluster.kill(0);
    let a_down = tokio::time::timeout(Duration::from_secs(10), a_down).await.expect("A steps down").expect("task");
    let b_up = tokio::time::timeout(Duration::from_secs(15), b_up).await.expect("B leads").expect("task");
    assert!(a_down < b_up, "A stopped leading before B began");
    let (b_term, _) = leads(&mut b_terms, Duration::from_secs(1)).await;
    assert!(b_term.revision > a_term.revision);
    // A write fenced by A's old term fails; B's goes in.
    let stale = b_etcd.txn(&b.fenced(&a_term, write(b"late by a"))).await.expect("txn");
    assert!(!stale.succeeded, "an old leader's write is refused by etcd");
    assert!(b_etcd.txn(&b.fenced(&b_term, write(b"by b"))).await.expect("txn").succeeded);
    let lease = b_etcd.get(b"/slipway/leases/10.1.107.100").await.expect("get").expect("there");
    assert_eq!(lease.value.0, b"by b");

    // B resigns on shutdown: the key goes at once, not after the TTL.
    b_stop.cancel();
    b_run.await.expect("B's leadership ends");
    assert!(b.leader().await.expect("leader").is_none(), "resigned");
    a_stop.cancel();
}
