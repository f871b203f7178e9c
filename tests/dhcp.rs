//! DHCP against real clients in network namespaces: dhclient, udhcpc and dhcpcd get their
//! reservations; the pool on and off; renew and release; relayed requests (perfdhcp); and a
//! kill -9 in the middle of a pool workload. Needs root.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::{Pair, in_netns};
use crate::support::{self, BIN, Config, Daemon, TOKEN};

const NODES: [(&str, &str, &str); 3] = [
    ("master-0", "52:54:00:6b:00:10", "10.1.107.11"),
    ("master-1", "52:54:00:6b:00:11", "10.1.107.12"),
    ("master-2", "52:54:00:6b:00:12", "10.1.107.13"),
];

/// A DHCP config on `srv0`: three reserved control-plane nodes and no pool. The network comes
/// last, so that a test adds its own keys to it (`pooled`, `proxy`, `probe`).
fn config(dir: &Path) -> Config {
    let config = Config::new(dir).section("[dhcp]").list("interfaces", ["srv0"]);
    let mut config = config.cluster("prod", "okd", "lab", "192.0.2.10", "10.1.107.1");
    for (name, mac, ip) in NODES {
        config = config.node(name, mac, ip).member("prod", "control-plane");
    }
    config
        .network("lab", "srv0", "10.1.107.0/24")
        .set("gateway", "10.1.107.1")
        .list("dns_servers", ["10.1.107.1"])
        .set("domain", "lab.example")
        .value("static_range", r#"{ start = "10.1.107.10", end = "10.1.107.99" }"#)
        .set("lease_time", "1h")
}

/// `config` with a pool from 10.1.107.100 to `end`.
pub(crate) fn pooled(dir: &Path, end: &str) -> Config {
    config(dir).value("pool", format!(r#"{{ start = "10.1.107.100", end = "{end}" }}"#))
}

/// The CLI inside the server namespace (where the admin API listens), as JSON.
fn api(pair: &Pair, daemon: &Daemon, args: &[&str]) -> Value {
    let out = Command::new("ip")
        .args(["netns", "exec", &pair.srv, BIN])
        .args(args)
        .args(["-o", "json"])
        .env("SLIPWAY_API", format!("http://{}", daemon.addr))
        .env("SLIPWAY_TOKEN", TOKEN)
        .output()
        .expect("cli");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// A hook script that appends `REASON ip host domain` lines to `log` (dhclient/dhcpcd variables).
pub(crate) fn hook(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("hook");
    Command::new("chmod").arg("+x").arg(&path).status().expect("chmod");
    path
}

fn wait_for_line(log: &Path, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(line) = std::fs::read_to_string(log).unwrap_or_default().lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no '{needle}' in {} within {limit:?}: {}", log.display(), std::fs::read_to_string(log).unwrap_or_default());
}

#[test]
fn dhclient_udhcpc_and_dhcpcd_each_get_their_reserved_address_and_hostname() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new("a");
    let daemon = support::start_in(Some(&pair.srv), &config(dir.path()).write(), &[]);
    let log = dir.path().join("bound.log");
    let log_s = log.display().to_string();

    pair.client_as(NODES[0].1);
    let udhcpc_hook = hook(
        dir.path(),
        "udhcpc.sh",
        &format!("[ \"$1\" = bound ] && echo \"udhcpc $ip $hostname $domain\" >> {log_s}; true"),
    );
    let out = pair.cli_run(
        "udhcpc",
        &["-i", "cli0", "-n", "-q", "-f", "-t", "5", "-T", "2", "-s", udhcpc_hook.to_str().expect("utf-8")],
    );
    assert!(out.status.success(), "udhcpc: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(wait_for_line(&log, "udhcpc", Duration::from_secs(5)), "udhcpc 10.1.107.11 master-0 prod.lab.example");

    pair.client_as(NODES[1].1);
    let dhclient_hook = hook(
        dir.path(),
        "dhclient.sh",
        &format!(
            "[ \"$reason\" = BOUND ] && echo \"dhclient $new_ip_address $new_host_name $new_domain_name\" >> {log_s}; true"
        ),
    );
    let lease_file = dir.path().join("dhclient.leases");
    let status = pair
        .cli_command("dhclient")
        .args([
            "-4",
            "-1",
            "-sf",
            dhclient_hook.to_str().expect("utf-8"),
            "-lf",
            lease_file.to_str().expect("utf-8"),
            "-pf",
        ])
        .arg(dir.path().join("dhclient.pid"))
        .arg("cli0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("dhclient");
    assert!(status.success(), "dhclient found no lease");
    assert_eq!(
        wait_for_line(&log, "dhclient", Duration::from_secs(5)),
        "dhclient 10.1.107.12 master-1 prod.lab.example"
    );
    pair.kill_clients();

    pair.client_as(NODES[2].1);
    let dhcpcd_hook = hook(
        dir.path(),
        "dhcpcd.sh",
        &format!(
            "[ \"$reason\" = BOUND ] && echo \"dhcpcd $new_ip_address $new_host_name $new_domain_name\" >> {log_s}; true"
        ),
    );
    let status = pair
        .cli_command("dhcpcd")
        .args([
            "-4",
            "-1",
            "-B",
            "-f",
            "/dev/null",
            "--noipv4ll",
            "-t",
            "20",
            "-c",
            dhcpcd_hook.to_str().expect("utf-8"),
            "cli0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("dhcpcd");
    assert!(status.success(), "dhcpcd found no lease");
    assert_eq!(wait_for_line(&log, "dhcpcd", Duration::from_secs(5)), "dhcpcd 10.1.107.13 master-2 prod.lab.example");
    assert!(pair.client_addresses().contains("10.1.107.13/24"), "{}", pair.client_addresses());
    pair.kill_clients();

    let leases = api(&pair, &daemon, &["get", "leases"]);
    let bound: BTreeMap<String, String> = leases
        .as_array()
        .expect("list")
        .iter()
        .filter(|l| l["state"] == "bound")
        .map(|l| (l["node"].as_str().unwrap_or("-").to_owned(), l["ip"].as_str().unwrap_or("-").to_owned()))
        .collect();
    let expect: BTreeMap<String, String> = NODES.iter().map(|(n, _, ip)| ((*n).to_owned(), (*ip).to_owned())).collect();
    assert_eq!(bound, expect);
}

pub(crate) fn udhcpc_once(pair: &Pair, dir: &Path, tries: &str) -> (bool, String) {
    let log = dir.join("once.log");
    let _ = std::fs::remove_file(&log);
    let h = hook(dir, "once.sh", &format!("[ \"$1\" = bound ] && echo \"$ip\" >> {}; true", log.display()));
    let out = pair
        .cli_run("udhcpc", &["-i", "cli0", "-n", "-q", "-f", "-t", tries, "-T", "1", "-s", h.to_str().expect("utf-8")]);
    (out.status.success(), std::fs::read_to_string(&log).unwrap_or_default().trim().to_owned())
}

#[test]
fn an_unknown_machine_gets_nothing_without_a_pool_and_a_pool_address_with_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new("b");
    let stranger = "52:54:00:99:00:01";
    {
        let daemon = support::start_in(Some(&pair.srv), &config(dir.path()).write(), &[]);
        pair.client_as(stranger);
        let (ok, ip) = udhcpc_once(&pair, dir.path(), "2");
        assert!(!ok && ip.is_empty(), "an unknown machine got {ip}");
        let ignored = api(&pair, &daemon, &["get", "events", "--mac", stranger, "--type", "dhcp_ignored"]);
        assert!(ignored.as_array().is_some_and(|a| !a.is_empty()), "the refusal is an event: {ignored}");
        assert_eq!(ignored[0]["details"]["reason"], "not a known node, and the network has no pool", "in words");
        assert!(daemon.stop(Duration::from_secs(5)).expect("stops").success());
    }
    let daemon = support::start_in(Some(&pair.srv), &pooled(dir.path(), "10.1.107.199").write(), &[]);
    let (ok, ip) = udhcpc_once(&pair, dir.path(), "5");
    assert!(ok, "no pool address");
    let last: u8 = ip.rsplit('.').next().and_then(|o| o.parse().ok()).expect("an address");
    assert!(ip.starts_with("10.1.107.") && (100..=199).contains(&last), "{ip} is not in the pool");
    let leases = api(&pair, &daemon, &["get", "leases"]);
    assert!(
        leases
            .as_array()
            .expect("list")
            .iter()
            .any(|l| l["ip"] == ip.as_str() && l["mac"] == stranger && l["state"] == "bound"),
        "{leases}"
    );
}

#[test]
fn renew_and_release_from_a_running_client_reach_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new("c");
    let daemon = support::start_in(Some(&pair.srv), &pooled(dir.path(), "10.1.107.199").write(), &[]);
    let mac = "52:54:00:99:00:02";
    pair.client_as(mac);
    let log = dir.path().join("udhcpc.log");
    // Like a real client script: configure the address (renewal ACKs are unicast to it).
    let h = hook(
        dir.path(),
        "events.sh",
        &format!(
            "case \"$1\" in bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/24\" dev \"$interface\";; deconfig) ip addr flush dev \"$interface\";; esac\necho \"$1 $ip\" >> {}",
            log.display()
        ),
    );
    let mut client = pair.cli_command("udhcpc");
    client
        .args(["-i", "cli0", "-f", "-R", "-t", "5", "-T", "1", "-s", h.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut client = client.spawn().expect("udhcpc");
    let bound = wait_for_line(&log, "bound", Duration::from_secs(20));
    let ip = bound.split_whitespace().nth(1).expect("ip").to_owned();
    support::signal(&client, "USR1"); // renew now (unicast REQUEST, RENEWING state)
    wait_for_line(&log, "renew", Duration::from_secs(20));
    support::signal(&client, "USR2"); // release
    wait_for_line(&log, "deconfig", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    let lease = loop {
        let leases = api(&pair, &daemon, &["get", "leases"]);
        let lease =
            leases.as_array().expect("list").iter().find(|l| l["ip"] == ip.as_str()).cloned().expect("the lease");
        if lease["state"] == "released" || Instant::now() > deadline {
            break lease;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(lease["state"], "released", "{lease}");
    assert_eq!(lease["active"], false);
    let acks = api(&pair, &daemon, &["get", "events", "--mac", mac, "--type", "lease_acked"]);
    assert_eq!(acks.as_array().map(Vec::len), Some(2), "bind and renew: {acks}");
    let _ = client.kill();
    let _ = client.wait();
}

/// perfdhcp's summary: (sent, received) over both exchanges (DISCOVER-OFFER, REQUEST-ACK).
pub(crate) fn perfdhcp_counts(text: &str) -> (u64, u64) {
    let sum = |key: &str| -> u64 {
        text.lines().filter_map(|l| l.trim().strip_prefix(key)).filter_map(|v| v.trim().parse::<u64>().ok()).sum()
    };
    (sum("sent packets:"), sum("received packets:"))
}

#[test]
fn relayed_requests_are_answered_to_the_relay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new("d");
    let daemon = support::start_in(Some(&pair.srv), &pooled(dir.path(), "10.1.107.199").write(), &[]);
    pair.client_address("10.1.107.5/24");
    // perfdhcp acts as a relay: giaddr 10.1.107.5, hops 1, replies expected on its port 67.
    relay_exchanges(&pair, 20, 20, 40);
    let leases = api(&pair, &daemon, &["get", "leases"]);
    let bound = leases.as_array().expect("list").iter().filter(|l| l["state"] == "bound").count();
    assert!((1..=20).contains(&bound), "{bound} bound leases for 20 relayed clients");
    // Faster: requests then share batches and replies leave several at a time.
    relay_exchanges(&pair, 60, 1000, 600);
}

#[test]
fn eight_machines_booting_at_once_each_get_their_own_pool_address() {
    // Eight udhcpc on eight macvlan interfaces (eight MACs) start together: their requests
    // share batches and their broadcast replies leave together. udhcpc reads with a packet
    // socket, which sees a datagram as it crossed the link: this failed when replies to one
    // address left in one segmentation-offload send (the eight arrived as one packet).
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new("s");
    let daemon = support::start_in(Some(&pair.srv), &pooled(dir.path(), "10.1.107.199").write(), &[]);
    let log = dir.path().join("storm.log");
    let h = hook(
        dir.path(),
        "storm.sh",
        &format!("[ \"$1\" = bound ] && echo \"$interface $ip\" >> {}; true", log.display()),
    );
    let interfaces: Vec<String> = (0..8).map(|i| format!("mv{i}")).collect();
    for (i, name) in interfaces.iter().enumerate() {
        let mac = format!("52:54:00:77:00:{i:02x}");
        let link = ["link", "add", name.as_str(), "link", "cli0", "address", &mac, "type", "macvlan", "mode", "bridge"];
        assert!(pair.cli_run("ip", &link).status.success(), "macvlan {name}");
        assert!(pair.cli_run("ip", &["link", "set", name, "up"]).status.success());
    }
    let clients: Vec<std::process::Child> = interfaces
        .iter()
        .map(|name| {
            let mut c = pair.cli_command("udhcpc");
            c.args(["-i", name, "-n", "-q", "-f", "-t", "5", "-T", "2", "-s", h.to_str().expect("utf-8")]);
            c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("udhcpc")
        })
        .collect();
    for mut c in clients {
        assert!(c.wait().expect("udhcpc").success(), "a client got no lease");
    }
    let got: BTreeMap<String, String> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(i, a)| (i.to_owned(), a.to_owned())))
        .collect();
    let addresses: std::collections::BTreeSet<&String> = got.values().collect();
    assert_eq!((got.len(), addresses.len()), (8, 8), "eight interfaces, eight distinct addresses: {got:?}");
    let leases = api(&pair, &daemon, &["get", "leases"]);
    let bound = leases.as_array().expect("list").iter().filter(|l| l["state"] == "bound").count();
    assert_eq!(bound, 8, "{leases}");
}

/// perfdhcp as the relay 10.1.107.5: `count` exchanges from `clients` clients at `rate` a
/// second; every message sent must be answered.
pub(crate) fn relay_exchanges(pair: &Pair, clients: u32, rate: u32, count: u32) {
    let (clients, rate, count_arg) = (clients.to_string(), rate.to_string(), count.to_string());
    let args = ["-4", "-R", &clients, "-r", &rate, "-n", &count_arg, "-W", "2000000", "-l", "10.1.107.5", "10.1.107.1"];
    let out = pair.cli_run("perfdhcp", &args);
    let text = String::from_utf8_lossy(&out.stdout);
    let (sent, received) = perfdhcp_counts(&text);
    assert!(sent >= u64::from(count) && received == sent, "sent {sent}, received {received}:\n{text}");
}

/// Every DHCPACK in a tcpdump -vv text capture: (your-ip, client MAC).
pub(crate) fn acks_in(capture: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut ip, mut mac, mut ack) = (None, None, false);
    let mut flush = |ip: &mut Option<String>, mac: &mut Option<String>, ack: &mut bool| {
        if *ack && let (Some(i), Some(m)) = (ip.take(), mac.take()) {
            out.push((i, m));
        }
        (*ip, *mac, *ack) = (None, None, false);
    };
    for line in capture.lines() {
        if !line.starts_with([' ', '\t']) {
            flush(&mut ip, &mut mac, &mut ack);
            continue;
        }
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Your-IP ") {
            ip = Some(v.trim().to_owned());
        } else if let Some(v) = l.strip_prefix("Client-Ethernet-Address ") {
            mac = Some(v.split_whitespace().next().unwrap_or_default().to_owned());
        } else if l.starts_with("DHCP-Message") && l.ends_with(": ACK") {
            ack = true;
        }
    }
    flush(&mut ip, &mut mac, &mut ack);
    out
}

/// Captures DHCP on the client side while `run` goes; returns the decoded text.
fn captured(pair: &Pair, dir: &Path, name: &str, run: impl FnOnce()) -> String {
    captured_in(&pair.cli, &dir.join(format!("{name}.pcap")), run)
}

/// Captures DHCP (port 67) on `cli0` in namespace `ns` into `pcap` while `run` goes; returns
/// the capture as `tcpdump -vv` text.
pub(crate) fn captured_in(ns: &str, pcap: &Path, run: impl FnOnce()) -> String {
    let mut tcpdump = Command::new("ip")
        .args(["netns", "exec", ns, "tcpdump"])
        .args(["-i", "cli0", "-n", "-U", "-w"])
        .arg(pcap)
        .args(["udp", "port", "67"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump must be installed");
    let mut stderr = std::io::BufReader::new(tcpdump.stderr.take().expect("stderr"));
    let mut line = String::new();
    let _ = stderr.read_line(&mut line); // "listening on cli0 ..." once capturing
    assert!(line.contains("listening"), "tcpdump: {line}");
    run();
    std::thread::sleep(Duration::from_millis(300));
    support::signal(&tcpdump, "INT");
    let _ = tcpdump.wait();
    let out = Command::new("tcpdump").args(["-n", "-vv", "-r"]).arg(pcap).output().expect("tcpdump -r");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn after_kill_9_under_load_every_ack_seen_is_stored_and_no_address_has_two_owners() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new("e");
    let config = pooled(dir.path(), "10.1.107.250").write();
    pair.client_address("10.1.107.5/24");
    let mut daemon = support::start_in(Some(&pair.srv), &config, &[]);
    let first = captured(&pair, dir.path(), "first", || {
        let mut load = pair.cli_command("perfdhcp");
        load.args([
            "-4",
            "-R",
            "120",
            "-r",
            "400",
            "-p",
            "20",
            "-b",
            "mac=00:0c:01:00:00:00",
            "-l",
            "10.1.107.5",
            "10.1.107.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut load = load.spawn().expect("perfdhcp");
        std::thread::sleep(Duration::from_millis(1500));
        support::signal(&daemon.child, "KILL");
        support::wait_exit(&mut daemon.child, Duration::from_secs(10)).expect("killed");
        let _ = load.kill();
        let _ = load.wait();
    });
    let acked = acks_in(&first);
    assert!(acked.len() >= 20, "only {} ACKs were seen before the kill", acked.len());
    eprintln!("{} ACKs seen on the wire before kill -9", acked.len());
    drop(daemon);

    let daemon = support::start_in(Some(&pair.srv), &config, &[]);
    let stored: HashMap<String, String> = api(&pair, &daemon, &["get", "leases"])
        .as_array()
        .expect("list")
        .iter()
        .filter(|l| l["state"] == "bound")
        .map(|l| (l["ip"].as_str().unwrap_or_default().to_owned(), l["mac"].as_str().unwrap_or_default().to_owned()))
        .collect();
    for (ip, mac) in &acked {
        assert_eq!(stored.get(ip), Some(mac), "ACK of {ip} to {mac} went out but is not in the store");
    }
    // A second crowd of clients after the restart: no address already bound goes to another MAC.
    let second = captured(&pair, dir.path(), "second", || {
        let out = pair.cli_run(
            "perfdhcp",
            &[
                "-4",
                "-R",
                "20",
                "-r",
                "50",
                "-n",
                "40",
                "-W",
                "2000000",
                "-b",
                "mac=00:0c:02:00:00:00",
                "-l",
                "10.1.107.5",
                "10.1.107.1",
            ],
        );
        assert!(perfdhcp_counts(&String::from_utf8_lossy(&out.stdout)).1 > 0);
    });
    let mut owner: HashMap<String, String> = stored.clone();
    for (ip, mac) in acked.iter().chain(acks_in(&second).iter()) {
        let first_owner = owner.entry(ip.clone()).or_insert_with(|| mac.clone());
        assert_eq!(first_owner, mac, "{ip} was acknowledged to two machines");
    }
}

/// A PXE firmware's DHCP message (BIOS, vendor class `PXEClient`), or an OS's when `pxe` is false.
pub(crate) fn pxe_message(
    kind: dhcproto::v4::MessageType,
    mac: [u8; 6],
    ciaddr: std::net::Ipv4Addr,
    pxe: bool,
) -> Vec<u8> {
    use dhcproto::Encodable;
    use dhcproto::v4::{DhcpOption, Flags, Message};
    let mut m = Message::new(ciaddr, [0, 0, 0, 0].into(), [0, 0, 0, 0].into(), [0, 0, 0, 0].into(), &mac);
    m.set_xid(0x5157_0001).set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    if pxe {
        m.opts_mut().insert(DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()));
        m.opts_mut().insert(DhcpOption::ClientSystemArchitecture(dhcproto::v4::Architecture::X86_Bios));
    }
    m.to_vec().expect("encodes")
}

/// Sends `bytes` from port 68 on `cli0` to `to`, and returns the first DHCP reply for our xid.
pub(crate) fn exchange(bytes: Vec<u8>, to: std::net::SocketAddrV4) -> Option<dhcproto::v4::Message> {
    use dhcproto::Decodable;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
    socket.set_broadcast(true).expect("broadcast");
    socket.set_reuse_address(true).expect("reuse");
    socket.bind_device(Some(b"cli0")).expect("bind to cli0");
    socket.bind(&std::net::SocketAddr::from(([0, 0, 0, 0], 68)).into()).expect("bind :68");
    let socket: std::net::UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 1500];
    socket.send_to(&bytes, to).expect("send");
    while Instant::now() < deadline {
        let Ok((n, _)) = socket.recv_from(&mut buf) else { continue };
        if let Ok(m) = dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&buf[..n]))
            && m.xid() == 0x5157_0001
            && m.opcode() == dhcproto::v4::Opcode::BootReply
        {
            return Some(m);
        }
    }
    None
}

#[test]
fn proxy_dhcp_answers_pxe_firmware_with_boot_information_only() {
    use dhcproto::v4::{DhcpOption, MessageType, OptionCode};
    use std::net::{Ipv4Addr, SocketAddrV4};
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new("p");
    let config = config(dir.path())
        .value("proxy", true)
        .section("[tftp]")
        .set("listen", "10.1.107.1:69")
        .section("[http]")
        .set("listen", "10.1.107.1:8080");
    let daemon = support::start_in(Some(&pair.srv), &config.write(), &[]);
    let mac = [0x52, 0x54, 0x00, 0x99, 0x00, 0x01];
    let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);

    // Firmware PXE: an offer with the boot file and no address.
    let discover = pxe_message(MessageType::Discover, mac, Ipv4Addr::UNSPECIFIED, true);
    let offer = in_netns(&pair.cli, move || exchange(discover, broadcast)).expect("a proxy offer");
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED, "proxyDHCP never offers an address");
    assert_eq!(offer.siaddr(), Ipv4Addr::new(10, 1, 107, 1));
    assert_eq!(
        offer.fname_str().and_then(Result::ok).map(|f| f.trim_end_matches('\0').to_owned()).as_deref(),
        Some("undionly.kpxe")
    );
    assert_eq!(
        offer.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert!(offer.opts().get(OptionCode::SubnetMask).is_none());

    // An operating system's DISCOVER is left to the network's real DHCP server.
    let os = pxe_message(MessageType::Discover, mac, Ipv4Addr::UNSPECIFIED, false);
    assert!(in_netns(&pair.cli, move || exchange(os, broadcast)).is_none());

    // With an address from the other server, the firmware asks the boot server on port 4011.
    pair.client_address("10.1.107.150/24");
    let request = pxe_message(MessageType::Request, mac, Ipv4Addr::new(10, 1, 107, 150), true);
    let boot_server = SocketAddrV4::new(Ipv4Addr::new(10, 1, 107, 1), 4011);
    let ack = in_netns(&pair.cli, move || exchange(request, boot_server)).expect("an ack from port 4011");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);

    let leases = api(&pair, &daemon, &["get", "leases"]);
    assert_eq!(leases.as_array().map(Vec::len), Some(0), "no lease is ever written: {leases}");
    let events = api(&pair, &daemon, &["get", "events", "--type", "dhcp_proxied"]);
    assert_eq!(events.as_array().map(Vec::len), Some(2), "an offer and an ack: {events}");
}

#[test]
fn a_pool_address_that_answers_ping_is_not_offered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = Pair::new("q");
    let config = pooled(dir.path(), "10.1.107.101").value("probe", true);
    let daemon = support::start_in(Some(&pair.srv), &config.write(), &[]);
    pair.client_as("52:54:00:99:00:02");
    // Something already uses 10.1.107.100 without a lease; the client asks for exactly that one.
    pair.client_address("10.1.107.100/24");
    let log = dir.path().join("probe.log");
    let h = hook(dir.path(), "probe.sh", &format!("[ \"$1\" = bound ] && echo \"$ip\" >> {}; true", log.display()));
    let out = pair.cli_run(
        "udhcpc",
        &["-i", "cli0", "-n", "-q", "-f", "-t", "6", "-T", "1", "-r", "10.1.107.100", "-s", h.to_str().expect("utf-8")],
    );
    assert!(out.status.success(), "udhcpc: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default().trim(), "10.1.107.101");
    let in_use = api(&pair, &daemon, &["get", "events", "--type", "address_in_use"]);
    assert_eq!(in_use.as_array().map(Vec::len), Some(1), "{in_use}");
    assert_eq!(in_use[0]["details"]["ip"], "10.1.107.100");
    let leases = api(&pair, &daemon, &["get", "leases"]);
    let state_of = |ip: &str| {
        leases.as_array().and_then(|a| a.iter().find(|l| l["ip"] == ip)).map(|l| l["state"].clone()).unwrap_or_default()
    };
    assert_eq!(state_of("10.1.107.100"), "declined", "kept out of use: {leases}");
    assert_eq!(state_of("10.1.107.101"), "bound");
    let owner = leases.as_array().and_then(|a| a.iter().find(|l| l["ip"] == "10.1.107.100")).map(|l| l["mac"].clone());
    assert_eq!(owner, Some("00:00:00:00:00:00".into()), "the quarantine is not the asking client's: {leases}");
    assert!(in_use[0].get("mac").is_none(), "the address in use is not the client's: {in_use}");
    // Only the offer that left is recorded as offered.
    let offered = api(&pair, &daemon, &["get", "events", "--type", "lease_offered"]);
    let ips: Vec<&Value> = offered.as_array().expect("list").iter().map(|e| &e["details"]["ip"]).collect();
    assert!(!ips.is_empty() && ips.iter().all(|ip| *ip == "10.1.107.101"), "{offered}");
}

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).status();
        assert!(ok.expect("mount").success(), "mount tmpfs at {}", at.display());
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `path` with a file of zeros until it refuses more.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    while file.write_all(&[0]).is_ok() {}
}

#[test]
fn with_the_disk_full_no_ack_leaves_and_serving_resumes_when_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _state = Tmpfs::mount(&dir.path().join("state"), "16m");
    let pair = Pair::new("f");
    let daemon = support::start_in(Some(&pair.srv), &pooled(dir.path(), "10.1.107.199").write(), &[]);
    let stranger = "52:54:00:99:00:0f";
    pair.client_as(stranger);
    let filler = dir.path().join("state").join("filler");
    // The lease journal holds no lease yet, so its first line needs a block the full disk
    // cannot give.
    fill(&filler);

    let (ok, ip) = udhcpc_once(&pair, dir.path(), "2");
    assert!(!ok && ip.is_empty(), "a lease that cannot be stored was acknowledged: {ip}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused =
        std::iter::from_fn(|| daemon.log.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok())
            .find(|line| line.contains("cannot persist leases"));
    assert!(refused.is_some(), "the failed commit is logged");

    std::fs::remove_file(&filler).expect("free the space");
    let (ok, ip) = udhcpc_once(&pair, dir.path(), "5");
    let later: Vec<String> = daemon.log.try_iter().collect();
    assert!(ok && ip.starts_with("10.1.107."), "no lease once the disk has room: {ip:?}\n{}", later.join("\n"));
    let leases = api(&pair, &daemon, &["get", "leases"]);
    let mine: Vec<&Value> = leases.as_array().expect("list").iter().filter(|l| l["mac"] == stranger).collect();
    assert!(mine.len() == 1 && mine[0]["ip"] == ip.as_str() && mine[0]["state"] == "bound", "{leases}");
    assert!(daemon.stop(Duration::from_secs(5)).expect("stops").success());
}
