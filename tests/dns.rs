//! DNS against a running slipway with real clients (dig, kdig): cluster names, wildcards, reverse
//! lookups, NXDOMAIN, TCP, truncation, live updates through the API, forwarding to an upstream
//! (dnsmasq on loopback) and the recursion list. Each test listens on its own loopback address.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{self, Config, Daemon, TOKEN};

/// Starts a daemon serving DNS on `listen` (port 53) for `prod` with a worker, plus `extra`
/// config in `[dns]`.
pub(crate) fn serve(dir: &Path, listen: &str, extra: &str) -> Daemon {
    let config = Config::prod(dir)
        .node("worker-0", "52:54:00:6b:00:20", "10.2.0.21")
        .member("prod", "worker")
        .section("[dns]")
        .list("listen", [format!("{listen}:53")])
        .raw(extra);
    support::start(&config.write(), &[])
}

/// `dig` (or `kdig`) against `server`, bounded, returning stdout.
pub(crate) fn run(tool: &str, server: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(tool);
    cmd.arg(format!("@{server}"));
    if tool == "dig" {
        cmd.args(["+time=2", "+tries=1"]);
    } else {
        cmd.args(["+time=2", "+retry=0"]);
    }
    let out = cmd.args(args).output().unwrap_or_else(|e| panic!("{tool} must be installed: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn short(server: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["+short"];
    all.extend_from_slice(args);
    run("dig", server, &all).lines().map(str::to_owned).collect()
}

/// The `status:` of a dig answer (NOERROR, NXDOMAIN, REFUSED...).
pub(crate) fn status(output: &str) -> String {
    output
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output:\n{output}"))
        .to_owned()
}

/// The SOA serial of a zone.
fn serial(server: &str, zone: &str) -> u32 {
    let soa = short(server, &[zone, "SOA"]);
    let line = soa.first().unwrap_or_else(|| panic!("no SOA for {zone}"));
    line.split_whitespace().nth(2).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("SOA: {line}"))
}

/// Polls `check` for at most five seconds.
fn eventually(what: &str, check: impl FnMut() -> bool) {
    support::eventually(what, Duration::from_secs(5), check);
}

#[test]
fn cluster_names_answer_with_dig_and_kdig_over_udp_and_tcp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _daemon = serve(dir.path(), "127.53.0.1", "");
    let s = "127.53.0.1";
    assert_eq!(short(s, &["api.prod.lab.example"]), ["192.0.2.10"]);
    assert_eq!(short(s, &["api-int.prod.lab.example"]), ["10.2.0.1"]);
    assert_eq!(short(s, &["foo.apps.prod.lab.example"]), ["192.0.2.10"]);
    assert_eq!(short(s, &["a.b.apps.prod.lab.example"]), ["192.0.2.10"]);
    assert_eq!(short(s, &["master-0.prod.lab.example"]), ["10.2.0.11"]);
    assert_eq!(short(s, &["-x", "10.2.0.11"]), ["master-0.prod.lab.example."]);
    assert_eq!(short(s, &["-x", "10.2.0.1"]), ["api-int.prod.lab.example."]);
    assert_eq!(short(s, &["-x", "192.0.2.10"]), ["api.prod.lab.example."]);
    assert_eq!(short(s, &["+tcp", "worker-0.prod.lab.example"]), ["10.2.0.21"]);
    let soa = short(s, &["prod.lab.example", "SOA"]);
    assert!(soa[0].starts_with("ns.prod.lab.example. hostmaster.prod.lab.example. "), "{soa:?}");

    let nx = run("dig", s, &["nope.prod.lab.example"]);
    assert_eq!(status(&nx), "NXDOMAIN");
    assert!(nx.contains("flags: qr aa"), "authoritative: {nx}");
    let authority = nx.split(";; AUTHORITY SECTION:").nth(1).expect("an authority section");
    assert!(authority.trim_start().starts_with("prod.lab.example."), "SOA in authority: {authority}");

    let k = run("kdig", s, &["+short", "api.prod.lab.example", "A"]);
    assert_eq!(k.trim(), "192.0.2.10");
    let k = run("kdig", s, &["+tcp", "+short", "-x", "10.2.0.21"]);
    assert_eq!(k.trim(), "worker-0.prod.lab.example.");
    let k = run("kdig", s, &["nope.apps.prod.lab.example", "AAAA"]);
    assert!(k.contains("status: NOERROR") && k.contains("AUTHORITY SECTION"), "wildcard NODATA:\n{k}");
}

#[test]
fn a_large_answer_truncates_over_udp_and_arrives_whole_over_tcp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records: Vec<String> = (1..=100)
        .map(|i| format!("  {{ name = \"big.lab.example\", type = \"A\", value = \"10.2.1.{i}\" }},"))
        .collect();
    let _daemon = serve(dir.path(), "127.53.0.2", &format!("records = [\n{}\n]\n", records.join("\n")));
    let udp = run("dig", "127.53.0.2", &["+ignore", "+bufsize=1232", "big.lab.example"]);
    assert!(udp.contains(" tc"), "truncated over UDP:\n{udp}");
    let tcp = short("127.53.0.2", &["+tcp", "big.lab.example"]);
    assert_eq!(tcp.len(), 100);
    let retried = short("127.53.0.2", &["big.lab.example"]);
    assert_eq!(retried.len(), 100, "dig retries over TCP after TC");
}

/// A query for `name` TXT with EDNS buffer `bufsize` (none: no OPT record).
fn txt_query(id: u16, name: &str, bufsize: Option<u16>) -> Vec<u8> {
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut m = Message::query();
    m.metadata.id = id;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), RecordType::TXT));
    if let Some(size) = bufsize {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().expect("query")
}

#[test]
fn truncated_answers_are_well_formed_messages_at_every_buffer_size() {
    use hickory_proto::op::Message;
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
    let dir = tempfile::tempdir().expect("tempdir");
    let records: Vec<String> =
        (1..=60).map(|i| format!("  {{ name = \"txt.lab.example\", type = \"TXT\", value = \"t{i:02}\" }},")).collect();
    let _daemon = serve(dir.path(), "127.53.0.9", &format!("records = [\n{}\n]\n", records.join("\n")));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    socket.connect("127.53.0.9:53").expect("connect");
    let mut whole_size = None;
    let sizes = std::iter::once(None).chain((512..=4096).map(Some));
    for (id, bufsize) in sizes.enumerate() {
        let id = id as u16;
        socket.send(&txt_query(id, "txt.lab.example", bufsize)).expect("send");
        let mut buf = [0u8; 65535];
        let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("bufsize {bufsize:?}: no answer: {e}"));
        let reply = &buf[..n];
        let limit = bufsize.map_or(512, |b| b.min(1232));
        assert!(n <= usize::from(limit), "bufsize {bufsize:?}: {n} bytes, more than {limit}");
        let mut decoder = BinDecoder::new(reply);
        let message = Message::read(&mut decoder).unwrap_or_else(|e| panic!("bufsize {bufsize:?}: malformed: {e}"));
        assert_eq!(decoder.len(), 0, "bufsize {bufsize:?}: {} bytes after the message", decoder.len());
        assert_eq!(message.metadata.id, id);
        assert_eq!(message.queries.len(), 1, "bufsize {bufsize:?}: the question is kept");
        assert_eq!(message.edns.is_some(), bufsize.is_some(), "bufsize {bufsize:?}: OPT iff the query had one");
        if message.metadata.truncation {
            assert!(message.answers.is_empty(), "bufsize {bufsize:?}: no partial answer");
        } else {
            assert_eq!(message.answers.len(), 60, "bufsize {bufsize:?}");
            whole_size.get_or_insert(n);
        }
    }
    let whole = whole_size.expect("the whole answer fits in 1232 bytes");
    assert!(whole > 512, "the test needs an answer that is truncated at 512 bytes ({whole})");
    // The real clients agree: no warning about trailing bytes, TC set.
    for args in [&["+noedns", "+ignore"][..], &["+bufsize=700", "+ignore"], &["+bufsize=512", "+ignore"]] {
        let mut all = args.to_vec();
        all.extend(["txt.lab.example", "TXT"]);
        let out = run("dig", "127.53.0.9", &all);
        assert!(out.contains(" tc") && !out.contains("extra bytes"), "dig {args:?}:\n{out}");
        let out = run("kdig", "127.53.0.9", &all);
        let lower = out.to_lowercase();
        assert!(
            lower.contains(" tc") && !lower.contains("trailing") && !lower.contains("malformed"),
            "kdig {args:?}:\n{out}"
        );
    }
}

#[test]
fn nodes_added_through_the_api_resolve_at_once_and_vanish_when_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = serve(dir.path(), "127.53.0.3", "");
    let s = "127.53.0.3";
    let before = serial(s, "prod.lab.example");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let node = serde_json::json!({
        "name": "worker-7", "cluster": "prod", "role": "worker", "mac": "52:54:00:6b:00:77", "ipv4": "10.2.0.77"
    });
    let created = rt.block_on(async {
        support::http().post(daemon.url("/api/v1/nodes")).bearer_auth(TOKEN).json(&node).send().await
    });
    assert!(created.expect("POST").status().is_success());
    eventually("worker-7's A record", || short(s, &["worker-7.prod.lab.example"]) == ["10.2.0.77"]);
    assert_eq!(short(s, &["-x", "10.2.0.77"]), ["worker-7.prod.lab.example."]);
    let after = serial(s, "prod.lab.example");
    assert!(after > before, "serial {before} -> {after}");

    let (ok, out, err) = support::cli(&daemon, &["get", "dns", "prod.lab.example"]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.contains("worker-7.prod.lab.example.") && l.contains("10.2.0.77")), "{out}");

    let deleted = rt.block_on(async {
        support::http().delete(daemon.url("/api/v1/nodes/worker-7")).bearer_auth(TOKEN).send().await
    });
    assert!(deleted.expect("DELETE").status().is_success());
    eventually("worker-7 to be gone", || status(&run("dig", s, &["worker-7.prod.lab.example"])) == "NXDOMAIN");
    assert!(serial(s, "prod.lab.example") > after);

    let metrics = rt.block_on(async { support::http().get(daemon.url("/metrics")).send().await?.text().await });
    let metrics = metrics.expect("GET /metrics");
    let count = |series: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("{series} in:\n{metrics}"));
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a count")
    };
    assert!(count(r#"slipway_dns_queries_total{qtype="A",rcode="NOERROR"}"#) >= 1);
    assert!(count(r#"slipway_dns_queries_total{qtype="PTR",rcode="NOERROR"}"#) >= 1);
    assert!(count(r#"slipway_dns_queries_total{qtype="A",rcode="NXDOMAIN"}"#) >= 1);
    assert!(count(r#"slipway_dns_queries_total{qtype="SOA",rcode="NOERROR"}"#) >= 3);
}

/// A dnsmasq on loopback standing in for the site's resolver.
struct Upstream(Child);

impl Upstream {
    fn start(addr: &str, dir: &Path) -> Upstream {
        let child = Command::new("dnsmasq")
            .args(["-k", "-C", "/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces", "--port=53"])
            .arg(format!("--listen-address={addr}"))
            .arg("--address=/upstream.test/203.0.113.7")
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (dnsmasq-base) must be installed");
        let up = Upstream(child);
        eventually("dnsmasq to answer", || short(addr, &["upstream.test"]) == ["203.0.113.7"]);
        up
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn other_names_are_forwarded_for_allowed_clients_and_refused_for_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _upstream = Upstream::start("127.53.1.1", dir.path());
    let _daemon =
        serve(dir.path(), "127.53.0.4", "upstream = [\"127.53.1.1:53\"]\nallow_recursion = [\"127.53.0.0/24\"]\n");
    let s = "127.53.0.4";
    // An allowed client (source 127.53.0.9) gets the upstream's answer, over UDP and TCP.
    assert_eq!(short(s, &["-b", "127.53.0.9", "upstream.test"]), ["203.0.113.7"]);
    assert_eq!(short(s, &["-b", "127.53.0.9", "+tcp", "upstream.test"]), ["203.0.113.7"]);
    let answer = run("dig", s, &["-b", "127.53.0.9", "upstream.test"]);
    assert!(answer.contains(" ra"), "recursion available to allowed clients:\n{answer}");
    // A client outside the list is refused for outside names but still gets our zones.
    let refused = run("dig", s, &["-b", "127.53.2.2", "upstream.test"]);
    assert_eq!(status(&refused), "REFUSED");
    assert_eq!(short(s, &["-b", "127.53.2.2", "api.prod.lab.example"]), ["192.0.2.10"]);
    // Without recursion desired, outside names are refused even for allowed clients.
    let norec = run("dig", s, &["-b", "127.53.0.9", "+norecurse", "upstream.test"]);
    assert_eq!(status(&norec), "REFUSED");
}

#[test]
fn an_unreachable_upstream_gives_servfail_not_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on 127.53.1.9:53: the forwarder fails, the client gets SERVFAIL.
    let _daemon = serve(dir.path(), "127.53.0.5", "upstream = [\"127.53.1.9:53\"]\n");
    let out = run("dig", "127.53.0.5", &["+time=5", "elsewhere.test"]);
    assert_eq!(status(&out), "SERVFAIL");
}

#[test]
fn the_okd_dns_checks_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _daemon = serve(dir.path(), "127.53.0.6", "");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/okd-dns-check");
    let out = Command::new(script)
        .args(["127.53.0.6", "prod.lab.example", "master-0.prod.lab.example", "worker-0.prod.lab.example"])
        .output()
        .expect("run okd-dns-check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("all DNS checks passed"), "{text}");
    // And it does fail when a name is missing.
    let bad = Command::new(script).args(["127.53.0.6", "other.lab.example"]).output().expect("run okd-dns-check");
    assert!(!bad.status.success());
}

#[test]
fn malformed_queries_do_not_stop_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = serve(dir.path(), "127.53.0.7", "");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    socket.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let header = |qd: u16| {
        let mut h = vec![0x12, 0x34, 0x01, 0x00];
        h.extend_from_slice(&qd.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        h
    };
    let question = |name: &[u8]| {
        let mut q = name.to_vec();
        q.extend_from_slice(&[0, 1, 0, 1]);
        q
    };
    let mut two = header(2);
    two.extend(question(b"\x03api\x04prod\x03lab\x07example\x00"));
    two.extend(question(b"\x03api\x04prod\x03lab\x07example\x00"));
    let mut long_label = header(1);
    long_label.extend(question(&[&[200u8][..], &[b'a'; 200][..], &[0u8][..]].concat()));
    let mut pointer_loop = header(1);
    pointer_loop.extend([0xc0, 12, 0, 1, 0, 1]);
    let garbage: Vec<Vec<u8>> =
        vec![vec![], vec![0; 5], header(0), two.clone(), long_label, pointer_loop, vec![0xff; 600]];
    for datagram in &garbage {
        socket.send_to(datagram, "127.53.0.7:53").expect("send");
        let mut buf = [0u8; 1500];
        let _ = socket.recv_from(&mut buf);
    }
    socket.send_to(&two, "127.53.0.7:53").expect("send");
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).expect("two questions get an answer");
    assert!(n >= 12 && buf[3] & 0x0f == 1, "FORMERR for two questions (rcode {})", buf[3] & 0x0f);
    assert!(matches!(daemon.child.try_wait(), Ok(None)), "the daemon is still running");
    assert_eq!(short("127.53.0.7", &["api.prod.lab.example"]), ["192.0.2.10"]);
}

#[test]
fn without_listen_dns_serves_the_provisioning_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = crate::netns::Pair::new("n");
    let config = Config::new(dir.path()).section("[dns]").network("lab", "srv0", "10.1.107.0/24");
    let config = config.cluster("prod", "k3s", "lab", "10.1.107.1", "10.1.107.1");
    let _daemon = support::start_in(Some(&pair.srv), &config.write(), &[]);
    pair.client_address("10.1.107.9/24");
    let out = pair.cli_run("dig", &["+short", "+time=2", "+tries=1", "@10.1.107.1", "api.prod.lab.example"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10.1.107.1");
}

/// One framed DNS-over-TCP message (RFC 7766: a two-byte length, then the message).
fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(message.len()).expect("short").to_be_bytes().to_vec();
    out.extend_from_slice(message);
    out
}

fn read_framed(stream: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).expect("length");
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).expect("message");
    message
}

#[test]
fn tcp_answers_pipelined_queries_in_order_and_formerr_keeps_the_connection() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let _daemon = serve(dir.path(), "127.53.0.10", "");
    let mut stream = std::net::TcpStream::connect("127.53.0.10:53").expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut first = txt_query(0x0101, "api.prod.lab.example.", None);
    let qtype = first.len() - 3;
    first[qtype] = 1; // QTYPE A instead of TXT
    let second = txt_query(0x0202, "nothing-here.prod.lab.example.", None);
    let garbage = vec![0x03, 0x03, 0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0]; // two questions promised, none sent
    let mut all = framed(&first);
    all.extend(framed(&garbage));
    all.extend(framed(&second));
    stream.write_all(&all).expect("send three at once");
    let (a, b, c) = (read_framed(&mut stream), read_framed(&mut stream), read_framed(&mut stream));
    assert_eq!((&a[..2], a[3] & 0x0f), (&[0x01, 0x01][..], 0), "the first query: NOERROR, its ID");
    assert!(a.ends_with(&[192, 0, 2, 10]), "api's address: {a:?}");
    assert_eq!((&b[..2], b[3] & 0x0f), (&[0x03, 0x03][..], 1), "the malformed one: FORMERR, its ID");
    assert_eq!((&c[..2], c[3] & 0x0f), (&[0x02, 0x02][..], 3), "the third: NXDOMAIN, its ID");
}

/// `ss -K` destroys sockets the way the kernel does when one breaks under a process. A UDP socket
/// reports it once and goes on working, so DNS goes on; a TCP listener stops listening for good,
/// so the daemon stops, names the DNS service and its listener, and exits non-zero (systemd's
/// `Restart=on-failure` then starts it afresh) instead of serving half of DNS or spinning.
#[test]
fn a_broken_dns_listener_stops_the_daemon_naming_it_and_a_passing_error_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = serve(dir.path(), "127.53.0.11", "");
    let kill = |proto: &str| {
        let filter = ["-K", proto, "-a", "src", "127.53.0.11:53"];
        let out = Command::new("ss").args(filter).output().expect("ss must be installed (iproute2)");
        assert!(out.status.success(), "ss -K: {}", String::from_utf8_lossy(&out.stderr));
    };
    kill("-u");
    assert_eq!(short("127.53.0.11", &["api.prod.lab.example"]), ["192.0.2.10"], "UDP still answers");
    assert!(matches!(daemon.child.try_wait(), Ok(None)), "a passing UDP error does not stop the daemon");
    kill("-t");
    let status = support::wait_exit(&mut daemon.child, Duration::from_secs(10)).expect("exits");
    assert!(!status.success(), "{status:?}");
    // The process has exited: its log pipe ends after the last line.
    let mut lines: Vec<serde_json::Value> = Vec::new();
    while let Ok(line) = daemon.log.recv_timeout(Duration::from_secs(5)) {
        lines.extend(serde_json::from_str(&line).ok());
    }
    let stopped = lines
        .iter()
        .find(|l| l["message"] == "a service stopped on its own; stopping the daemon")
        .unwrap_or_else(|| panic!("no stop line in {lines:?}"));
    assert_eq!(stopped["service"], "dns", "{stopped}");
    let error = stopped["error"].as_str().unwrap_or_default();
    assert!(error.contains("DNS TCP on 127.53.0.11:53 no longer works"), "{stopped}");
    assert!(lines.iter().any(|l| l["message"] == "stopped"), "the others were stopped cleanly");
}
