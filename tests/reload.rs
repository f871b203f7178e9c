//! Config reload without a restart (`slipway reload`, SIGHUP) against a running daemon: a
//! valid file applied (new nodes answer in DNS, API-made objects stay, a load-balancer frontend
//! comes and goes, DNS settings rebind), an invalid one refused whole with every problem named
//! and the old config serving on, and a reload while DHCP is under load.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use crate::dns::{run, status};
use crate::support::{self, Config, Daemon};

/// The base of the reload tests: `prod`, DNS on `listen`, the nodes `extra` adds.
fn dns_lab(dir: &Path, listen: &str, extra: impl FnOnce(Config) -> Config) -> Config {
    extra(Config::prod(dir)).section("[dns]").list("listen", [format!("{listen}:53")])
}

fn short(server: &str, name: &str) -> Vec<String> {
    run("dig", server, &["+short", name]).lines().map(str::to_owned).collect()
}

/// `slipway reload` as JSON: (success, stdout, stderr).
fn reload(daemon: &Daemon) -> (bool, String, String) {
    support::cli(daemon, &["reload", "-o", "json"])
}

fn changed(out: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["changed"].as_array().expect("changed").iter().map(|c| c.as_str().expect("line").to_owned()).collect()
}

fn events(daemon: &Daemon, kind: &str) -> Vec<serde_json::Value> {
    let (ok, out, err) = support::cli(daemon, &["get", "events", "--type", kind, "-o", "json"]);
    assert!(ok, "{err}");
    serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("json")
}

/// `/metrics` as Prometheus text.
fn scrape(daemon: &Daemon) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sf", "-H", &format!("Authorization: Bearer {}", support::TOKEN), &daemon.url("/metrics")])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port()
}

#[test]
fn a_valid_reload_applies_the_new_file_and_keeps_what_the_api_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = "127.53.9.1";
    let daemon = support::start(&dns_lab(dir.path(), s, |c| c).write(), &[]);
    // A node made through the API, and one the file will add.
    let manifest = dir.path().join("builder.yaml");
    std::fs::write(&manifest, "nodes:\n  - name: builder\n    mac: 52:54:00:6b:00:40\n    ipv4: 10.2.0.40\n")
        .expect("manifest");
    let (ok, _, err) = support::cli(&daemon, &["apply", "-f", &manifest.display().to_string()]);
    assert!(ok, "{err}");
    assert_eq!(short(s, "builder.lab.example"), ["10.2.0.40"]);
    assert!(short(s, "worker-1.prod.lab.example").is_empty());

    let frontend = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let next = dns_lab(dir.path(), s, |c| {
        c.node("worker-1", "52:54:00:6b:00:31", "10.2.0.31")
            .member("prod", "worker")
            .pool("web")
            .list("backends", ["127.0.0.1:9"])
            .frontend("web", frontend, "web")
    })
    .raw("ttl = \"30s\"");
    next.write();
    let (ok, out, err) = reload(&daemon);
    assert!(ok, "{err}");
    let lines = changed(&out);
    for expected in ["node worker-1 created", "pool web created", "frontend web created", "dns rebound", "lb rebound"] {
        assert!(lines.iter().any(|l| l == expected), "{expected:?} not in {lines:?}");
    }
    assert_eq!(short(s, "worker-1.prod.lab.example"), ["10.2.0.31"], "the new node answers");
    assert_eq!(short(s, "builder.lab.example"), ["10.2.0.40"], "the API's node stays");
    let answer = run("dig", s, &["+noall", "+answer", "worker-1.prod.lab.example"]);
    assert!(answer.split_whitespace().nth(1) == Some("30"), "the new TTL: {answer}");
    assert!(TcpStream::connect_timeout(&frontend, Duration::from_secs(2)).is_ok(), "the new frontend listens");
    let reloaded = events(&daemon, "config_reloaded");
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    // New load-balancer timeouts rebind it on the same frontend address.
    let web = |c: Config| {
        c.node("worker-1", "52:54:00:6b:00:31", "10.2.0.31")
            .member("prod", "worker")
            .section("[lb]")
            .set("connect_timeout", "2s")
    };
    let with_frontend =
        |c: Config| web(c).pool("web").list("backends", ["127.0.0.1:9"]).frontend("web", frontend, "web");
    dns_lab(dir.path(), s, with_frontend).raw("ttl = \"30s\"").write();
    let (ok, out, err) = reload(&daemon);
    assert!(ok, "{err}");
    assert_eq!(changed(&out), ["lb rebound"]);
    assert!(TcpStream::connect_timeout(&frontend, Duration::from_secs(2)).is_ok(), "the frontend listens again");
    // Rebound services keep their metric families: each is written once.
    let metrics = scrape(&daemon);
    for family in ["slipway_dns_queries_total", "slipway_lb_connections_total"] {
        let headers = metrics.lines().filter(|l| l.starts_with(&format!("# TYPE {family} "))).count();
        assert_eq!(headers, 1, "{family} once:\n{metrics}");
    }

    // The same file again changes nothing; SIGHUP applies a file without the frontend and node.
    let (ok, out, err) = reload(&daemon);
    assert!(ok && changed(&out).is_empty(), "{out} {err}");
    dns_lab(dir.path(), s, |c| c).raw("ttl = \"30s\"").write();
    support::signal(&daemon.child, "HUP");
    support::eventually("worker-1 gone from DNS", Duration::from_secs(10), || {
        status(&run("dig", s, &["worker-1.prod.lab.example"])) == "NXDOMAIN"
    });
    support::eventually("the frontend closed", Duration::from_secs(10), || {
        TcpStream::connect_timeout(&frontend, Duration::from_secs(1)).is_err()
    });
    assert_eq!(short(s, "builder.lab.example"), ["10.2.0.40"]);
    assert_eq!(short(s, "master-0.prod.lab.example"), ["10.2.0.11"]);
    assert_eq!(events(&daemon, "config_reloaded").len(), 4);

    // A cluster definition whose node takes the MAC of the node made through the API: the file
    // alone is valid, together with the store it is not; refused whole, naming the definition.
    dns_lab(dir.path(), s, |c| {
        c.section("[[cluster_definitions]]")
            .set("name", "lab")
            .set("kind", "k3s")
            .set("base_domain", "lab.example")
            .set("network", "cluster")
            .set("api_address", "10.2.0.1")
            .set("api_int_address", "10.2.0.1")
            .set("ingress_address", "10.2.0.1")
            .value(
                "nodes",
                r#"[{ name = "metal-0", role = "control-plane", mac = "52:54:00:6b:00:40", ipv4 = "10.2.0.60" }]"#,
            )
    })
    .raw("ttl = \"30s\"")
    .write();
    let (ok, _, err) = reload(&daemon);
    assert!(!ok && err.contains("cluster definition lab") && err.contains("52:54:00:6b:00:40"), "{err}");
    let (ok, _, _) = support::cli(&daemon, &["cluster", "status", "lab"]);
    assert!(!ok, "the refused definition was not applied");
}

#[test]
fn an_invalid_file_is_refused_whole_with_every_problem_and_the_old_one_serves_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = "127.53.9.2";
    let mut daemon = support::start(&dns_lab(dir.path(), s, |c| c).write(), &[]);
    // Two problems at once (a MAC that is not one, an address outside every network) beside a
    // valid new node: none of it is applied.
    dns_lab(dir.path(), s, |c| {
        c.node("worker-1", "52:54:00:6b:00:31", "10.2.0.31")
            .member("prod", "worker")
            .node("worker-2", "52:54:00:zz:00:32", "10.2.0.32")
            .node("worker-3", "52:54:00:6b:00:33", "10.9.0.33")
    })
    .write();
    let (ok, _, err) = reload(&daemon);
    assert!(!ok, "refused");
    assert!(err.contains("the running config stays"), "{err}");
    assert!(err.contains("nodes[2].mac") && err.contains("52:54:00:zz:00:32"), "names the MAC: {err}");
    assert!(err.contains("10.9.0.33"), "names the address: {err}");
    assert!(short(s, "worker-1.prod.lab.example").is_empty(), "nothing of the refused file applied");
    assert_eq!(short(s, "master-0.prod.lab.example"), ["10.2.0.11"]);
    let refused = events(&daemon, "config_reload_refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0]["details"]["problems"].as_array().is_some_and(|p| p.len() >= 2), "{refused:?}");
    let mut logged = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while logged.len() < 2 && std::time::Instant::now() < deadline {
        if let Ok(line) = daemon.log.recv_timeout(Duration::from_millis(200))
            && line.contains("reload refused")
        {
            logged.push(line);
        }
    }
    assert!(logged.len() >= 2, "each problem logged: {logged:?}");

    // A change only a restart can make is refused, naming the field.
    let path = dns_lab(dir.path(), s, |c| c).write();
    let state = dir.path().join("state").display().to_string();
    let moved = std::fs::read_to_string(&path).expect("config").replace(&state, &format!("{state}-elsewhere"));
    std::fs::write(&path, moved).expect("config");
    let (ok, _, err) = reload(&daemon);
    assert!(!ok && err.contains("state_dir") && err.contains("needs a restart"), "{err}");

    // A new DNS address that cannot be bound (taken): refused, DNS answers on the old one.
    let taken = UdpSocket::bind("127.53.9.3:53").expect("take the address");
    let next = Config::prod(dir.path())
        .node("worker-1", "52:54:00:6b:00:31", "10.2.0.31")
        .section("[dns]")
        .list("listen", [format!("{s}:53"), "127.53.9.3:53".into()]);
    next.write();
    let (ok, _, err) = reload(&daemon);
    assert!(!ok && err.contains("127.53.9.3:53"), "{err}");
    assert!(short(s, "worker-1.lab.example").is_empty(), "the inventory was not changed either");
    assert_eq!(short(s, "master-0.prod.lab.example"), ["10.2.0.11"], "DNS serves on its old address");
    drop(taken);
    // Once the address is free the same file applies.
    let (ok, out, err) = reload(&daemon);
    assert!(ok, "{err}");
    assert!(changed(&out).contains(&"dns rebound".to_owned()), "{out}");
    assert_eq!(short("127.53.9.3", "worker-1.lab.example"), ["10.2.0.31"]);
    assert!(matches!(daemon.child.try_wait(), Ok(None)), "the daemon runs on");
}

#[test]
fn reloads_under_dhcp_load_answer_every_request_and_keep_every_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = crate::netns::Pair::new("u");
    let base = || crate::dhcp::pooled(dir.path(), "10.1.107.199");
    let daemon = support::start_in(Some(&pair.srv), &base().write(), &[]);
    pair.client_address("10.1.107.5/24");
    let reload_in = |config: Config| {
        config.write();
        let (ok, out, err) = support::cli_in(Some(&pair.srv), &daemon, &["reload", "-o", "json"]);
        assert!(ok, "{err}");
        changed(&out)
    };
    let with_late = |count: usize| {
        (0..count).fold(base(), |c, j| {
            c.node(&format!("late-{j}"), &format!("52:54:00:99:00:0{j}"), &format!("10.1.107.6{j}"))
        })
    };
    std::thread::scope(|scope| {
        // 1,500 relayed exchanges from 50 clients at 300 a second, while three reloads add a
        // node each: DHCP is not rebound and answers every one.
        let load = scope.spawn(|| crate::dhcp::relay_exchanges(&pair, 50, 300, 1500));
        for i in 0..3 {
            std::thread::sleep(Duration::from_millis(700));
            assert_eq!(reload_in(with_late(i + 1)), [format!("node late-{i} created")]);
        }
        load.join().expect("the load ran");
    });
    // A change to what DHCP tells machines rebinds it, while perfdhcp keeps asking: requests
    // in the moment between the two servers may go unanswered, but no address is given to two
    // machines, and the new server answers every request after.
    std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let args = ["-4", "-R", "50", "-r", "200", "-p", "4", "-W", "2000000", "-l", "10.1.107.5", "10.1.107.1"];
            pair.cli_run("perfdhcp", &args)
        });
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(reload_in(with_late(3).section("[boot]").set("bios_file", "ipxe.pxe")), ["dhcp rebound"]);
        let out = load.join().expect("the load ran");
        let (sent, received) = crate::dhcp::perfdhcp_counts(&String::from_utf8_lossy(&out.stdout));
        assert!(sent > 0 && received > 0, "sent {sent}, received {received}");
    });
    let (ok, out, err) = support::cli_in(Some(&pair.srv), &daemon, &["get", "leases", "-o", "json"]);
    assert!(ok, "{err}");
    let leases: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    let bound: Vec<&serde_json::Value> = leases.iter().filter(|l| l["state"] == "bound").collect();
    let ips: std::collections::HashSet<&str> = bound.iter().filter_map(|l| l["ip"].as_str()).collect();
    let macs: std::collections::HashSet<&str> = bound.iter().filter_map(|l| l["mac"].as_str()).collect();
    assert!(
        !bound.is_empty() && ips.len() == bound.len() && macs.len() == bound.len(),
        "one address per machine: {out}"
    );
    crate::dhcp::relay_exchanges(&pair, 20, 100, 40);
}
