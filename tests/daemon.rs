//! The daemon as a process: readiness, signals, systemd notify, bind errors, crash safety.

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{self, TOKEN, http};

#[tokio::test]
async fn starts_reports_ready_and_stops_on_sigterm_within_5_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = support::start(&support::config(dir.path(), ""), &[]);
    let ready = http().get(daemon.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["listeners"][0]["service"], "admin");
    assert_eq!(body["listeners"][0]["bound"], true);
    let status = daemon.stop(Duration::from_secs(5)).expect("exited within 5 s of SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn sigint_stops_it_too_and_an_open_event_stream_does_not_hold_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = support::start(&support::config(dir.path(), ""), &[]);
    let mut stream =
        http().get(daemon.url("/api/v1/events?follow=true")).bearer_auth(TOKEN).send().await.expect("follow");
    assert_eq!(stream.status(), 200);
    let first =
        tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await.expect("backlog in time").expect("chunk");
    assert!(String::from_utf8_lossy(&first.expect("data")).contains("daemon_started"));
    support::signal(&daemon.child, "INT");
    let status = support::wait_exit(&mut daemon.child, Duration::from_secs(5)).expect("exited within 5 s of SIGINT");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn systemd_is_told_ready_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let notify = socket_path.to_str().expect("utf-8 path");
    let daemon = support::start(&support::config(dir.path(), ""), &[("NOTIFY_SOCKET", notify)]);
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("READY=1 datagram");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    // READY only after the listener is bound: the API answers now.
    assert_eq!(http().get(daemon.url("/healthz")).send().await.expect("healthz").status(), 200);
    let stopped = tokio::task::spawn_blocking(move || daemon.stop(Duration::from_secs(5)));
    let n = socket.recv(&mut buf).expect("STOPPING=1 datagram");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "STOPPING=1");
    assert!(stopped.await.expect("join").expect("exited").success());
}

#[test]
fn a_port_in_use_fails_the_start_naming_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let config = support::config(dir.path(), "");
    let text = std::fs::read_to_string(&config).expect("read").replace("127.0.0.1:0", &addr.to_string());
    std::fs::write(&config, text).expect("write");
    let mut child = std::process::Command::new(support::BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let status = support::wait_exit(&mut child, Duration::from_secs(30)).expect("exits");
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read");
    assert!(stderr.contains(&format!("admin API: cannot listen on {addr}")), "{stderr}");
    assert!(stderr.to_lowercase().contains("address already in use"), "{stderr}");
}

#[test]
fn an_invalid_config_stops_serve_before_anything_binds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config =
        support::config(dir.path(), "\n[[nodes]]\nname = \"w0\"\nmac = \"52:54:00:6b:00:10\"\nipv4 = \"10.2.0.12\"\n");
    let out = std::process::Command::new(support::BIN).args(["serve", "--config"]).arg(&config).output().expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nodes[1].mac = 52:54:00:6b:00:10") && stderr.contains("already used by node master-0"),
        "{stderr}"
    );
    assert!(!dir.path().join("state").exists(), "nothing was created");
}

fn node(i: u32) -> Value {
    json!({
        "name": format!("w{i}"),
        "cluster": "prod",
        "role": "worker",
        "mac": format!("52:54:01:00:{:02x}:{:02x}", i / 256, i % 256),
        "ipv4": format!("10.2.{}.{}", 1 + i / 250, 1 + i % 250),
    })
}

/// Writers hammer the API; the daemon is killed with SIGKILL mid-stream; after a restart every
/// acknowledged write is there and the store is consistent (no torn state).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9_and_nothing_is_torn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = support::config(dir.path(), "");
    let mut daemon = support::start(&config, &[]);
    let base = daemon.url("/api/v1/nodes");
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let (base, stop) = (base.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let client = http();
            let mut acked = Vec::new();
            for i in (w..4000).step_by(4) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let body = node(i);
                let sent = client.put(format!("{base}/w{i}")).bearer_auth(TOKEN).json(&body).send().await;
                match sent {
                    Ok(r) if r.status() == 201 => acked.push(i),
                    Ok(r) => panic!("unexpected status {} for w{i}", r.status()),
                    Err(_) => break, // the daemon died under us
                }
            }
            acked
        }));
    }
    // Let writes flow, then kill without warning while they are in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let count = http()
            .get(&base)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("list")
            .json::<Vec<Value>>()
            .await
            .expect("json")
            .len();
        // The event query reads only persisted events: wait until the start is on disk too.
        let started = http()
            .get(daemon.url("/api/v1/events?type=daemon_started"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("events");
        let started = started.json::<Vec<Value>>().await.expect("json").len();
        if (count > 60 && started == 1) || std::time::Instant::now() > deadline {
            break;
        }
    }
    support::signal(&daemon.child, "KILL");
    support::wait_exit(&mut daemon.child, Duration::from_secs(10)).expect("killed");
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeSet::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    assert!(acked.len() > 20, "only {} writes were acknowledged before the kill", acked.len());
    eprintln!("{} writes acknowledged before kill -9", acked.len());
    drop(daemon);

    let daemon = support::start(&config, &[]);
    let base = daemon.url("/api/v1/nodes");
    let nodes: Vec<Value> =
        http().get(&base).bearer_auth(TOKEN).send().await.expect("list").json().await.expect("json");
    let present: BTreeSet<u32> =
        nodes.iter().filter_map(|n| n["name"].as_str()?.strip_prefix('w')?.parse().ok()).collect();
    eprintln!("{} nodes present after restart", present.len());
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged but lost after kill -9: {lost:?}");
    for n in nodes.iter().filter(|n| n["origin"] == "api") {
        let i: u32 = n["name"].as_str().and_then(|s| s.strip_prefix('w')).and_then(|s| s.parse().ok()).expect("name");
        let expect = node(i);
        assert_eq!((&n["mac"], &n["ipv4"]), (&expect["mac"], &expect["ipv4"]), "torn object {n}");
    }
    let metrics = http().get(daemon.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let version = metrics.lines().find_map(|l| l.strip_prefix("slipway_inventory_version ")).expect("version metric");
    assert_eq!(
        version.trim().parse::<usize>().expect("number"),
        present.len(),
        "one committed version per created node"
    );
    let events =
        http().get(daemon.url("/api/v1/events?type=daemon_started")).bearer_auth(TOKEN).send().await.expect("events");
    assert_eq!(events.json::<Vec<Value>>().await.expect("json").len(), 2, "the event log survived too");
    assert!(daemon.stop(Duration::from_secs(5)).expect("stops").success());
}
