//! High availability with the real parts: two slipway instances in network namespaces on one
//! bridge, sharing a three-member etcd (Debian's etcd-server) in a third, keepalived in both
//! moving the DHCP server address to the leader, perfdhcp relaying from a fourth, tcpdump on its
//! side. The leader is killed with SIGKILL under load, then the new leader is cut off from etcd;
//! every DHCPACK on the wire must be in etcd afterwards, and no address may go to two MACs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::etcd::Cluster;
use crate::support::{self, BIN, Daemon, TOKEN};

/// The address keepalived moves to the leader; DHCP names it as its own.
const FLOATING: &str = "10.1.107.2";
/// Where the etcd members listen, in the hub namespace.
const ETCD_HOST: &str = "10.1.107.200";
const RELAY: &str = "10.1.107.5";
const ADMIN: &str = "127.0.0.1:9443";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip (iproute2)");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The namespaces: `hub` (the bridge and etcd), one per instance, `cli` (the relay).
struct Lab {
    hub: String,
    instances: [String; 2],
    cli: String,
}

impl Lab {
    fn new() -> Lab {
        let id = std::process::id() % 100_000;
        let lab = Lab {
            hub: format!("hah{id}"),
            instances: [format!("ha1{id}"), format!("ha2{id}")],
            cli: format!("hac{id}"),
        };
        for ns in lab.all() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &lab.hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lab.hub, "addr", "add", &format!("{ETCD_HOST}/24"), "dev", "br0"]);
        ip(&["-n", &lab.hub, "link", "set", "br0", "up"]);
        let ends = [(&lab.instances[0], "eth0", "10.1.107.11/24"), (&lab.instances[1], "eth0", "10.1.107.12/24")];
        for (i, (ns, name, cidr)) in ends.into_iter().chain([(&lab.cli, "cli0", "10.1.107.5/24")]).enumerate() {
            let (outer, inner) = (format!("vh{id}{i}"), format!("vi{id}{i}"));
            ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &outer, "netns", &lab.hub]);
            ip(&["-n", &lab.hub, "link", "set", &outer, "master", "br0", "up"]);
            ip(&["link", "set", &inner, "netns", ns, "name", name]);
            ip(&["-n", ns, "addr", "add", cidr, "dev", name]);
            ip(&["-n", ns, "link", "set", name, "up"]);
        }
        lab
    }

    fn all(&self) -> Vec<String> {
        vec![self.hub.clone(), self.instances[0].clone(), self.instances[1].clone(), self.cli.clone()]
    }

    fn command(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Whether instance `i` holds the floating address.
    fn holds_floating(&self, i: usize) -> bool {
        let out =
            Command::new("ip").args(["-n", &self.instances[i], "-4", "-o", "addr", "show", "dev", "eth0"]).output();
        String::from_utf8_lossy(&out.expect("ip").stdout).contains(&format!("{FLOATING}/"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.all() {
            if let Ok(pids) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).output();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
    }
}

/// Instance `name`'s config: DHCP on eth0 answering as the floating address, a pool, etcd.
fn config(dir: &Path, name: &str, etcd: &Cluster) -> PathBuf {
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("token");
    let endpoints: Vec<String> = etcd.endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let text = format!(
        r#"state_dir = "{state}"
[admin]
listen = "{ADMIN}"
token_file = "{token}"
[dhcp]
interfaces = ["eth0"]
server_addresses = ["{FLOATING}"]
[store]
backend = "etcd"
endpoints = [{endpoints}]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
instance = "{name}"
lease_ttl = "3s"
timeout = "2s"
[[networks]]
name = "lab"
interface = "eth0"
cidr = "10.1.107.0/24"
gateway = "10.1.107.1"
pool = {{ start = "10.1.107.100", end = "10.1.107.250" }}
lease_time = "1h"
"#,
        state = dir.join("state").display(),
        token = dir.join("token").display(),
        endpoints = endpoints.join(", "),
        ca = etcd.ca.0.display(),
        cert = etcd.client.0.display(),
        key = etcd.client.1.display(),
    );
    let path = dir.join("slipway.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// keepalived in `ns`: the floating address follows the instance whose `/readyz?role=leader`
/// passes (the shipped example's DHCP instance, with this lab's interface and address).
fn keepalived(ns: &str, dir: &Path) -> Child {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ha/keepalived.conf"))
        .expect("the shipped keepalived example");
    // The example's first vrrp_instance (DHCP) only, on this lab's interface and address.
    let dhcp = example.split("vrrp_instance slipway_frontends").next().expect("the DHCP part");
    let conf = dhcp.replace("eth1", "eth0").replace("10.1.107.2/24", &format!("{FLOATING}/24"));
    assert!(conf.contains("role=leader"), "the DHCP address follows the leader:\n{conf}");
    let path = dir.join("keepalived.conf");
    std::fs::write(&path, conf).expect("keepalived.conf");
    let log = std::fs::File::create(dir.join("keepalived.log")).expect("log");
    Lab::command(ns, "keepalived")
        .args(["--dont-fork", "--log-console", "--log-detail", "--vrrp", "--use-file"])
        .arg(&path)
        .arg(format!("--pid={}", dir.join("k.pid").display()))
        .arg(format!("--vrrp_pid={}", dir.join("v.pid").display()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("keepalived (scripts/test installs it)")
}

/// `slipway status -o json` asked inside `ns`.
fn status(ns: &str) -> Option<Value> {
    let out = Lab::command(ns, BIN)
        .args(["status", "-o", "json"])
        .env("SLIPWAY_API", format!("http://{ADMIN}"))
        .env("SLIPWAY_TOKEN", TOKEN)
        .output()
        .expect("cli");
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

fn leading(ns: &str) -> bool {
    status(ns).is_some_and(|s| s["leading"] == true)
}

/// Waits (bounded) until `check` holds; how long it took.
fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// perfdhcp relaying from the client namespace to the floating address for `seconds`.
fn load(lab: &Lab, seconds: u32) -> Child {
    Lab::command(&lab.cli, "perfdhcp")
        .args(["-4", "-R", "300", "-r", "40", "-p", &seconds.to_string(), "-b", "mac=00:0c:01:00:00:00"])
        .args(["-l", RELAY, FLOATING])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("perfdhcp (kea-admin)")
}

/// perfdhcp's (sent, received) once it is done.
fn finished(load: Child) -> (u64, u64) {
    let out = load.wait_with_output().expect("perfdhcp");
    crate::dhcp::perfdhcp_counts(&String::from_utf8_lossy(&out.stdout))
}

/// Every lease in etcd, address -> MAC, read with etcdctl inside the hub.
fn etcd_leases(lab: &Lab, etcd: &Cluster) -> BTreeMap<String, String> {
    let out = Lab::command(&lab.hub, "etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.endpoints.join(","), "--cacert"])
        .arg(&etcd.ca.0)
        .arg("--cert")
        .arg(&etcd.client.0)
        .arg("--key")
        .arg(&etcd.client.1)
        .args(["get", "--prefix", "/slipway/leases/", "--print-value-only"])
        .output()
        .expect("etcdctl (etcd-client)");
    assert!(out.status.success(), "etcdctl: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let lease: Value = serde_json::from_str(l).expect("a lease as JSON");
            (lease["ip"].as_str().expect("ip").to_owned(), lease["mac"].as_str().expect("mac").to_owned())
        })
        .collect()
}

#[test]
fn the_standby_takes_over_dhcp_after_kill_9_and_after_a_partition_with_every_ack_in_etcd() {
    let lab = Lab::new();
    let etcd = Cluster::start_in(&lab.hub, ETCD_HOST);
    let settings = etcd.settings(&etcd.endpoints);
    crate::netns::in_netns(&lab.hub, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let client = slipway::store::etcd::Etcd::new(&settings).expect("client");
            let deadline = Instant::now() + Duration::from_secs(60);
            while !client.status().await.is_ok_and(|s| s.leader.0 != 0) {
                assert!(Instant::now() < deadline, "etcd has no leader within 60 s");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    });
    let dirs = [tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir")];
    let configs = [config(dirs[0].path(), "s1", &etcd), config(dirs[1].path(), "s2", &etcd)];
    let mut daemons: [Option<Daemon>; 2] = [
        Some(support::start_in(Some(&lab.instances[0]), &configs[0], &[])),
        Some(support::start_in(Some(&lab.instances[1]), &configs[1], &[])),
    ];
    let _keepalived = [keepalived(&lab.instances[0], dirs[0].path()), keepalived(&lab.instances[1], dirs[1].path())];
    until("one instance leads", Duration::from_secs(15), || leading(&lab.instances[0]) || leading(&lab.instances[1]));
    let first = usize::from(!leading(&lab.instances[0]));
    let other = 1 - first;
    assert!(!leading(&lab.instances[other]), "one leader at a time");
    until("keepalived gives the leader the floating address", Duration::from_secs(20), || {
        lab.holds_floating(first) && !lab.holds_floating(other)
    });

    // tcpdump on the relay's side sees every reply, through both failovers.
    let pcap = dirs[0].path().join("dhcp.pcap");
    let capture = crate::dhcp::captured_in(&lab.cli, &pcap, || {
        // 1. The leader dies (SIGKILL) under load: the standby leads, keepalived moves the address
        //    to it, and DHCP answers again.
        let running = load(&lab, 8);
        std::thread::sleep(Duration::from_secs(4));
        support::signal(&daemons[first].as_ref().expect("running").child, "KILL");
        let killed = Instant::now();
        let _ = daemons[first].take().map(|mut d| d.child.wait());
        until("the floating address moves", Duration::from_secs(20), || lab.holds_floating(other));
        let moved = killed.elapsed();
        until("the standby leads", Duration::from_secs(15), || leading(&lab.instances[other]));
        let led = killed.elapsed();
        let (sent, received) = finished(running);
        assert!(received > 0 && received < sent, "answers until the kill, none during failover: {received}/{sent}");
        let (sent, received) = finished(load(&lab, 4));
        assert!(received * 10 >= sent * 9, "the new leader answers: {received}/{sent}");
        eprintln!("failover after kill -9: leading after {led:?}, floating address moved after {moved:?}");

        // 2. The dead one comes back as the standby; the leader is cut off from etcd (a blackhole
        //    route in its namespace): it stops allocating, the other takes over; then it heals.
        daemons[first] = Some(support::start_in(Some(&lab.instances[first]), &configs[first], &[]));
        until("the restarted instance stands by, current", Duration::from_secs(15), || {
            status(&lab.instances[first]).is_some_and(|s| s["leading"] == false && s["leader"].is_string())
        });
        let cut = other;
        let running = load(&lab, 12);
        std::thread::sleep(Duration::from_secs(2));
        ip(&["-n", &lab.instances[cut], "route", "add", "blackhole", &format!("{ETCD_HOST}/32")]);
        let partitioned = Instant::now();
        until("the cut-off leader stops leading", Duration::from_secs(15), || !leading(&lab.instances[cut]));
        let stepped_down = partitioned.elapsed();
        until("the other leads", Duration::from_secs(15), || leading(&lab.instances[first]));
        let took_over = partitioned.elapsed();
        until("the floating address moves back", Duration::from_secs(20), || lab.holds_floating(first));
        let (sent, received) = finished(running);
        assert!(received > 0, "answers around the partition: {received}/{sent}");
        ip(&["-n", &lab.instances[cut], "route", "del", "blackhole", &format!("{ETCD_HOST}/32")]);
        until("the healed one sees etcd again and stands by", Duration::from_secs(20), || {
            status(&lab.instances[cut]).is_some_and(|s| s["lag"].as_i64().is_some() && s["leading"] == false)
        });
        eprintln!("partition: stepped down after {stepped_down:?}, the other led after {took_over:?}");
        let (sent, received) = finished(load(&lab, 3));
        assert!(received * 10 >= sent * 9, "after healing, DHCP answers: {received}/{sent}");
    });
    let acks = crate::dhcp::acks_in(&capture);
    assert!(acks.len() > 100, "{} ACKs seen", acks.len());
    let mut owners: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (ip, mac) in &acks {
        owners.entry(ip.as_str()).or_default().insert(mac.as_str());
    }
    let doubled: Vec<_> = owners.iter().filter(|(_, macs)| macs.len() > 1).collect();
    assert!(doubled.is_empty(), "addresses acknowledged to two MACs: {doubled:?}");
    let stored = etcd_leases(&lab, &etcd);
    let missing: Vec<_> =
        owners.iter().filter(|(ip, macs)| stored.get(**ip).is_none_or(|m| !macs.contains(m.as_str()))).collect();
    assert!(missing.is_empty(), "ACKed but not in etcd as acknowledged: {missing:?}");
    for d in daemons.into_iter().flatten() {
        assert!(d.stop(Duration::from_secs(15)).is_some_and(|s| s.success()), "a clean stop");
    }
}
