//! Hostile and greedy clients against the admin API and the HTTP boot service, on the real
//! daemon: 2,000 slowloris connections (a request head one byte a second, never finished) and
//! 2,000 idle keep-alive connections from 100 loopback addresses do not stop a normal client,
//! and are still open while it is served; one address over its limit has the extra connections
//! closed at once, counted in `slipway_connections_refused_total` and recorded as one event;
//! the server closes an unfinished head after its header timeout and an unfinished body after
//! its body timeout; a 100 MB body is refused with 413 from its declared length alone.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::{self, Config, TOKEN};

/// Slow and idle connections, each kind from 50 addresses.
const EACH_KIND: usize = 2000;
const ADDRESSES: usize = 50;

/// A connection from `source` (a loopback address) to `target`.
fn connect_from(source: Ipv4Addr, target: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    // The port is chosen at connect, per destination: binding thousands of sockets to port 0
    // first would search the whole port range for each.
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::IpBindAddressNoPort, &true).expect("no port");
    socket.bind(&SocketAddr::new(IpAddr::V4(source), 0).into()).expect("bind a source address");
    socket.connect(&target.into()).expect("connect");
    socket.into()
}

/// The status code and body of one whole HTTP/1.1 response read from `stream`.
fn read_response(stream: &mut TcpStream) -> (u16, String) {
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status code");
                return (status, String::from_utf8_lossy(&got[end + 4..end + 4 + length]).to_string());
            }
        }
        let n = stream.read(&mut buf).expect("read the response");
        assert!(n > 0, "the connection closed before a whole response: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

/// Whether the server closes `stream` within `limit` (EOF or reset when read).
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Whether the server has neither closed `stream` nor sent anything on it, without waiting.
fn still_open(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 1];
    let open = matches!(stream.peek(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).expect("blocking");
    open
}

/// 2,000 slowloris connections (a head started, then one byte a second from `drip`) and 2,000
/// idle keep-alive ones (one whole request answered, then nothing) to `target`.
struct Siege {
    slow: Vec<TcpStream>,
    idle: Vec<TcpStream>,
}

impl Siege {
    /// `slow_head`: the start of a request head the listener reads itself (never finished).
    fn lay(target: SocketAddr, slow_head: &str, request: &str) -> Siege {
        let per = EACH_KIND / ADDRESSES;
        let source = |block: u8, i: usize| Ipv4Addr::new(127, 0, block, 1 + (i / per) as u8);
        let slow: Vec<TcpStream> = (0..EACH_KIND)
            .map(|i| {
                let mut s = connect_from(source(1, i), target);
                s.write_all(slow_head.as_bytes()).expect("start a head");
                s
            })
            .collect();
        // Every idle client's request first, then every answer: laid within the header timeout.
        let mut idle: Vec<TcpStream> = (0..EACH_KIND)
            .map(|i| {
                let mut s = connect_from(source(2, i), target);
                s.write_all(request.as_bytes()).expect("request");
                s
            })
            .collect();
        for s in &mut idle {
            let (status, _) = read_response(s);
            assert!(status < 500, "the idle client's request: {status}");
        }
        Siege { slow, idle }
    }

    /// One more byte of every slow head.
    fn drip(&mut self) {
        for s in &mut self.slow {
            let _ = s.write_all(b"a");
        }
    }

    /// How many of each kind the server has not closed (nothing to read yet, no EOF).
    fn open(&self) -> (usize, usize) {
        let count = |streams: &[TcpStream]| streams.iter().filter(|s| still_open(s)).count();
        (count(&self.slow), count(&self.idle))
    }
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    assert!(hard >= 8192, "the open-file hard limit ({hard}) is too low for this test");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A normal request from 127.0.0.1, timed: (status, body, how long it took).
fn normal(target: SocketAddr, request: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(target).expect("the normal client connects");
    s.write_all(request.as_bytes()).expect("send");
    let (status, body) = read_response(&mut s);
    (status, body, started.elapsed())
}

#[test]
fn slow_and_idle_clients_do_not_stop_a_normal_one_and_one_address_cannot_take_every_connection() {
    raise_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("images")).expect("images");
    std::fs::write(dir.path().join("images/vmlinuz"), vec![7u8; 4096]).expect("image");
    let boot_port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let config = Config::prod(dir.path())
        .section("[http]")
        .set("listen", format!("127.0.0.1:{boot_port}"))
        .set("images", dir.path().join("images").display())
        .write();
    let daemon = support::start(&config, &[]);
    let pid = daemon.child.id();
    let admin = daemon.addr;
    let boot = SocketAddr::from(([127, 0, 0, 1], boot_port));
    let healthz = "GET /healthz HTTP/1.1\r\nHost: slipway\r\n\r\n";
    let nodes = format!("GET /api/v1/nodes HTTP/1.1\r\nHost: slipway\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    let image = "GET /images/vmlinuz HTTP/1.1\r\nHost: slipway\r\n\r\n";

    for (name, target, slow_head, idle_request, request) in [
        ("admin API", admin, "GET /api/v1/nodes HTTP/1.1\r\nHost: slipway\r\nX-Slow: ", healthz, nodes.as_str()),
        ("HTTP boot", boot, "GET /images/vmlinuz HTTP/1.1\r\nHost: slipway\r\nX-Slow: ", image, image),
    ] {
        let before = rss_kib(pid);
        let laying = Instant::now();
        let mut siege = Siege::lay(target, slow_head, idle_request);
        eprintln!("{name}: the siege laid in {:?}", laying.elapsed());
        siege.drip();
        let (status, body, took) = normal(target, request);
        assert_eq!(status, 200, "{name}: {body}");
        let (slow, idle) = siege.open();
        eprintln!(
            "{name}: a normal request answered in {took:?} with {slow} slow and {idle} idle connections open; RSS {before} -> {} KiB",
            rss_kib(pid)
        );
        // Served while the siege held: not because the slow and idle ones had been closed.
        assert!(slow > EACH_KIND * 9 / 10 && idle > EACH_KIND * 9 / 10, "{name}: {slow} slow, {idle} idle still open");
        // The header timeout ends both kinds: a slow head still dripping a byte a second (it
        // is never finished), and an idle keep-alive connection (no next head).
        let started = Instant::now();
        while !closed_within(&mut siege.slow[0], Duration::from_secs(1)) {
            assert!(started.elapsed() < Duration::from_secs(40), "{name}: a dripping slow head is never closed");
            siege.drip();
        }
        eprintln!("{name}: a slow head dripping a byte a second was closed after {:?}", started.elapsed());
        assert!(
            closed_within(&mut siege.idle[0], Duration::from_secs(30)),
            "{name}: an idle connection is never closed"
        );
    }

    // One address may hold 64 connections: the 65th and later are closed at once, counted, and
    // recorded as one event.
    // (Counted over all 100: which ones the server accepted first is its business; an accepted
    // one stays open until the header timeout.)
    let greedy: Vec<TcpStream> = (0..100).map(|_| connect_from(Ipv4Addr::new(127, 0, 3, 1), admin)).collect();
    let started = Instant::now();
    let mut refused = 0;
    while refused < 36 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        refused = greedy.iter().filter(|s| !still_open(s)).count();
    }
    assert_eq!(refused, 36, "connections past the per-address limit are closed at once");
    let (status, metrics, _) = normal(admin, "GET /metrics HTTP/1.1\r\nHost: slipway\r\n\r\n");
    assert_eq!(status, 200);
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("slipway_connections_refused_total{listener=\"admin\",reason=\"per_address\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(counted, Some(36), "{metrics}");
    support::eventually("one connection_refused event", Duration::from_secs(5), || {
        let (ok, out, _) = support::cli(&daemon, &["get", "events", "--type", "connection_refused", "-o", "json"]);
        let events: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
        ok && events.len() == 1
            && events[0]["details"]["client"] == "127.0.3.1"
            && events[0]["details"]["reason"] == "per_address"
            && events[0]["details"]["listener"] == "admin"
    });
}

#[test]
fn an_unfinished_body_times_out_and_a_declared_100_mb_body_is_refused_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = support::start(&support::config(dir.path(), ""), &[]);
    let pid = daemon.child.id();
    let before = rss_kib(pid);
    // 100 MB declared, none sent: refused from the header.
    let mut s = TcpStream::connect(daemon.addr).expect("connect");
    let head = format!(
        "POST /api/v1/apply HTTP/1.1\r\nHost: slipway\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        100 << 20
    );
    s.write_all(head.as_bytes()).expect("send");
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("too_large") && body.contains("104857600"), "{body}");
    // A body that stops halfway: the request ends (not the daemon) after the body timeout.
    let mut s = TcpStream::connect(daemon.addr).expect("connect");
    let head = format!(
        "POST /api/v1/apply HTTP/1.1\r\nHost: slipway\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"nodes\": ["
    );
    s.write_all(head.as_bytes()).expect("send");
    let started = Instant::now();
    let (status, body) = read_response(&mut s);
    eprintln!("an unfinished body was answered {status} after {:?}", started.elapsed());
    assert!(status == 400 || status == 408, "{status}: {body}");
    assert!(body.to_ascii_lowercase().contains("time"), "{body}");
    eprintln!("RSS {before} -> {} KiB", rss_kib(pid));
    let (ok, out, err) = support::cli(&daemon, &["get", "nodes"]);
    assert!(ok, "the daemon still serves: {out}{err}");
}

#[test]
fn api_writes_are_audited_with_the_callers_address_and_the_tokens_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = support::start(&support::config(dir.path(), ""), &[]);
    let (ok, _, _) = support::cli(&daemon, &["reinstall", "master-0"]);
    assert!(ok);
    let (ok, _, _) = support::cli(&daemon, &["delete", "node", "nope"]);
    assert!(!ok, "no such node");
    support::eventually("both writes in the audit trail", Duration::from_secs(5), || {
        let (ok, out, _) = support::cli(&daemon, &["get", "events", "--kind", "audit", "-o", "json"]);
        let events: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
        let seen: Vec<(String, String, String, String)> = events
            .iter()
            .map(|e| &e["details"])
            .map(|d| {
                let text = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
                (text("method"), text("object"), text("client"), text("token"))
            })
            .collect();
        ok && seen
            == [
                ("POST".into(), "nodes/master-0/reinstall".into(), "127.0.0.1".into(), "admin".into()),
                ("DELETE".into(), "nodes/nope".into(), "127.0.0.1".into(), "admin".into()),
            ]
    });
    let (ok, out, _) = support::cli(&daemon, &["get", "events", "-o", "json"]);
    assert!(ok && !out.contains("\"audit\""), "the event log holds no audit events: {out}");
    assert!(out.contains("reinstall_requested"), "{out}");
}

/// A tmpfs mounted at a directory for the test, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(out.status.success(), "mount tmpfs (needs root): {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system under `dir` with one file until it is full.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    let mut byte = [0u8; 1];
    while file.write_all(&byte).is_ok() {
        byte[0] = byte[0].wrapping_add(1);
    }
    path
}

#[test]
fn a_full_disk_refuses_writes_whole_and_loses_nothing_acknowledged() {
    use crate::http::admin;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let _tmpfs = Tmpfs::mount(&state, "16m");
    let pair = crate::netns::Pair::new("z");
    let config = crate::dhcp::pooled(dir.path(), "10.1.107.150").write();
    let mut daemon = support::start_in(Some(&pair.srv), &config, &[]);
    // A node with 200 labels: about 15 KB stored.
    let node = |name: &str, last: u8| {
        let labels: Vec<String> = (0..200).map(|i| format!(r#""label-{i:03}": "{}""#, "v".repeat(60))).collect();
        format!(
            r#"{{"name": "{name}", "mac": "52:54:00:00:0f:{last:02x}", "ipv4": "10.1.107.{last}", "labels": {{{}}}}}"#,
            labels.join(", ")
        )
    };
    let ignition = br#"{"ignition":{"version":"3.2.0"}}"#;

    // Before: a lease, a node.
    pair.client_as("52:54:00:99:0f:01");
    let (ok, first) = crate::dhcp::udhcpc_once(&pair, dir.path(), "3");
    assert!(ok && first.starts_with("10.1.107.1"), "a pool lease: {first}");
    let (status, body) = admin(&pair, &daemon, "POST", "/api/v1/nodes", node("n1", 21).as_bytes());
    assert_eq!(status, 201, "{body}");

    // Full: the API says so and changes nothing, DHCP acknowledges nothing, no file is half-written.
    let filler = fill(&state);
    // The store file may still have room inside it: writes go in until it has none, and then
    // each is refused, whole.
    let mut created = vec!["n1".to_owned()];
    let refused_node = (22..90u8).find_map(|last| {
        let name = format!("n{last}");
        let (status, body) = admin(&pair, &daemon, "POST", "/api/v1/nodes", node(&name, last).as_bytes());
        match status {
            201 => {
                created.push(name);
                None
            }
            507 => Some((name, body)),
            other => panic!("{name}: {other} {body}"),
        }
    });
    let (refused_node, body) = refused_node.expect("with the disk full, some write must be refused");
    eprintln!("{} nodes stored before the store file was full", created.len() - 1);
    assert!(body.contains("insufficient_storage") && body.contains("full"), "{body}");
    let (status, _) = admin(&pair, &daemon, "GET", &format!("/api/v1/nodes/{refused_node}"), b"");
    assert_eq!(status, 404, "a refused write leaves nothing");
    let (status, body) = admin(&pair, &daemon, "PUT", "/api/v1/clusters/prod/ignition/worker", ignition);
    assert_eq!(status, 507, "{body}");
    let leftovers: Vec<_> = walk(&state.join("ignition"));
    assert!(leftovers.is_empty(), "an upload refused whole: {leftovers:?}");
    // The lease journal's last page may still hold a few lines: machines get leases until it
    // is full, and then none; each one acknowledged was stored (checked after the restart).
    let mut acked = vec![first.clone()];
    let refused = (2..40u8).find(|i| {
        pair.client_as(&format!("52:54:00:99:0f:{i:02x}"));
        let (ok, got) = crate::dhcp::udhcpc_once(&pair, dir.path(), "1");
        if ok {
            acked.push(got);
        }
        !ok
    });
    assert!(refused.is_some(), "with the disk full, some machine must go without a lease: {acked:?}");
    let (_, metrics) = admin(&pair, &daemon, "GET", "/metrics", b"");
    let journal_errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix("slipway_store_errors_total{part=\"lease_journal\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(journal_errors.is_some_and(|n| n > 0), "{metrics}");

    // Freed: everything works again.
    std::fs::remove_file(&filler).expect("free the space");
    let (status, body) = admin(&pair, &daemon, "POST", "/api/v1/nodes", node(&refused_node, 90).as_bytes());
    assert_eq!(status, 201, "{body}");
    created.push(refused_node);
    let (status, body) = admin(&pair, &daemon, "PUT", "/api/v1/clusters/prod/ignition/worker", ignition);
    assert_eq!(status, 200, "{body}");
    let (ok, second) = crate::dhcp::udhcpc_once(&pair, dir.path(), "3");
    assert!(ok && second.starts_with("10.1.107.1") && !acked.contains(&second), "{second}");
    acked.push(second);

    // Restarted: everything acknowledged is there.
    daemon.stop(Duration::from_secs(10)).expect("stopped");
    daemon = support::start_in(Some(&pair.srv), &config, &[]);
    for name in &created {
        let (status, _) = admin(&pair, &daemon, "GET", &format!("/api/v1/nodes/{name}"), b"");
        assert_eq!(status, 200, "{name} was created, then lost");
    }
    let (_, leases) = admin(&pair, &daemon, "GET", "/api/v1/leases", b"");
    for ip in &acked {
        assert!(leases.contains(&format!("\"{ip}\"")), "{ip} was acknowledged, then lost: {leases}");
    }
    // No line of the lease journal is cut short or damaged.
    let journal = std::fs::read_to_string(state.join("leases.journal")).expect("journal");
    for line in journal.lines() {
        let (crc, json) = line.split_once(' ').expect("a CRC and the lease");
        assert_eq!(crc.len(), 8, "{line}");
        serde_json::from_str::<serde_json::Value>(json).unwrap_or_else(|e| panic!("a damaged line ({e}): {line}"));
    }
    drop(daemon);
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().flat_map(|e| if e.path().is_dir() { walk(&e.path()) } else { vec![e.path()] }).collect()
}

/// One request from `source` to `target`: (status, the response head, the body).
fn ask_from(source: Ipv4Addr, target: SocketAddr, method: &str, path: &str, token: &str) -> (u16, String, String) {
    let mut s = connect_from(source, target);
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: slipway\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    s.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.read_to_end(&mut raw).expect("the whole response");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status");
    (status, head.to_owned(), body.to_owned())
}

#[test]
fn named_tokens_have_roles_rotate_on_sighup_and_wrong_ones_back_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    let write_tokens = |text: &str| {
        std::fs::write(&tokens, text).expect("tokens");
        std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    };
    write_tokens("# name role token\nci admin ci-token-0123456789\nboard read-only board-token-0123456789\n");
    let extra = format!("[admin]\ntokens_file = \"{}\"\n", tokens.display());
    // (The shared base has [admin] already: put the key in it.)
    let config = support::config(dir.path(), "");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replacen("[admin]\n", &extra, 1);
    std::fs::write(&config, text).expect("config");
    let daemon = support::start(&config, &[]);
    let admin = daemon.addr;
    let me = Ipv4Addr::new(127, 0, 0, 1);

    let (status, _, body) = ask_from(me, admin, "GET", "/api/v1/nodes", "board-token-0123456789");
    assert_eq!(status, 200, "a read-only token reads: {body}");
    let (status, _, body) = ask_from(me, admin, "POST", "/api/v1/nodes/master-0/reinstall", "board-token-0123456789");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("forbidden") && body.contains("board is read-only"), "{body}");
    let (status, _, body) = ask_from(me, admin, "POST", "/api/v1/nodes/master-0/reinstall", "ci-token-0123456789");
    assert_eq!(status, 200, "{body}");
    support::eventually("the audit trail names the tokens", Duration::from_secs(5), || {
        let (_, out, _) = support::cli(&daemon, &["get", "events", "--kind", "audit", "-o", "json"]);
        let events: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
        let seen: Vec<(String, u64)> = events
            .iter()
            .map(|e| {
                (
                    e["details"]["token"].as_str().unwrap_or_default().to_owned(),
                    e["details"]["status"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        seen == [("board".to_owned(), 403), ("ci".to_owned(), 200)]
    });

    // Rotation: the file changes, SIGHUP, the old token is refused and the new one taken.
    write_tokens("board read-only board-token-rotated-0123456789\n");
    support::signal(&daemon.child, "HUP");
    support::eventually("the rotated token in force", Duration::from_secs(10), || {
        ask_from(me, admin, "GET", "/api/v1/nodes", "board-token-rotated-0123456789").0 == 200
    });
    assert_eq!(ask_from(me, admin, "GET", "/api/v1/nodes", "board-token-0123456789").0, 401);
    assert_eq!(ask_from(me, admin, "GET", "/api/v1/nodes", "ci-token-0123456789").0, 401, "ci is gone");
    // A file that does not read refuses the reload: the tokens in force stay.
    let mut lines = Vec::new();
    write_tokens("board read-only short\n");
    support::signal(&daemon.child, "HUP");
    let started = Instant::now();
    while !lines.iter().any(|l: &String| l.contains("reload refused") && l.contains("tokens:1:")) {
        assert!(started.elapsed() < Duration::from_secs(10), "no reload logged: {lines:?}");
        if let Ok(line) = daemon.log.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
    }
    assert_eq!(ask_from(me, admin, "GET", "/api/v1/nodes", "board-token-rotated-0123456789").0, 200);

    // An address guessing tokens: five wrong ones are answered 401, then it backs off (429,
    // Retry-After) and even the right token is not looked at; other addresses go on.
    let guesser = Ipv4Addr::new(127, 0, 4, 1);
    let guess = |i: usize| ask_from(guesser, admin, "GET", "/api/v1/nodes", &format!("guess-{i:016}"));
    let first: Vec<u16> = (0..6).map(|i| guess(i).0).collect();
    assert_eq!(first, [401; 6], "five are free; the sixth starts the backoff");
    // Waited out, each further wrong token doubles the wait (1 s, 2 s, 4 s ...).
    let retry_after = |head: &str| {
        head.lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after: ").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let started = Instant::now();
    let mut i = 6;
    loop {
        assert!(started.elapsed() < Duration::from_secs(30), "no backoff of 4 s or more");
        let (status, head, _) = guess(i);
        i += 1;
        match (status, retry_after(&head)) {
            (429, Some(wait)) if wait >= 4 => break,
            (429, Some(wait)) => std::thread::sleep(Duration::from_secs(wait)),
            (401, _) => {}
            other => panic!("a wrong token answered {other:?}"),
        }
    }
    let (status, head, body) = ask_from(guesser, admin, "GET", "/api/v1/nodes", TOKEN);
    assert_eq!(status, 429, "the right token is not looked at while backing off: {body}");
    assert!(retry_after(&head).is_some(), "{head}");
    assert_eq!(ask_from(me, admin, "GET", "/api/v1/nodes", TOKEN).0, 200, "others are not held back");
    let (status, _, metrics) = ask_from(me, admin, "GET", "/metrics", TOKEN);
    assert_eq!(status, 200);
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("slipway_api_auth_failures_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(failures.is_some_and(|n| n >= 8), "{metrics}");
    let (ok, out, _) = support::cli(&daemon, &["get", "events", "--type", "api_backoff", "-o", "json"]);
    assert!(ok && out.contains("127.0.4.1"), "{out}");
    // The log names tokens, never shows one.
    while let Ok(line) = daemon.log.recv_timeout(Duration::from_millis(200)) {
        lines.push(line);
    }
    let log = lines.join("\n");
    assert!(log.contains("config reloaded"), "{log}");
    for secret in ["ci-token-0123456789", "board-token-", TOKEN, "guess-0"] {
        assert!(!log.contains(secret), "a token in the log: {log}");
    }
}

#[test]
fn fifty_thousand_unknown_machines_with_the_pool_full_get_nothing_and_memory_stays_flat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = crate::netns::Pair::new("m");
    let daemon = support::start_in(Some(&pair.srv), &crate::dhcp::pooled(dir.path(), "10.1.107.109").write(), &[]);
    pair.client_address("10.1.107.5/24");
    let perfdhcp = |args: &[&str]| {
        let out = std::process::Command::new("timeout")
            .args(["90", "ip", "netns", "exec", &pair.cli, "perfdhcp", "-4", "-l", "10.1.107.5"])
            .args(args)
            .arg("10.1.107.1")
            .output()
            .expect("perfdhcp");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let leases = || -> usize {
        let (ok, out, _) = support::cli_in(Some(&pair.srv), &daemon, &["get", "leases", "-o", "json"]);
        assert!(ok, "{out}");
        serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("leases").len()
    };
    // Machines take the ten pool addresses (perfdhcp draws its MACs at random from 200).
    perfdhcp(&["-R", "200", "-r", "200", "-n", "200", "-p", "20"]);
    assert_eq!(leases(), 10, "the pool is full");
    let pid = daemon.child.id();
    let before = rss_kib(pid);
    // 50,000 requests from MACs drawn from 50,000 (perfdhcp as a relay, 5,000 a second, bounded
    // by count and by a 60 s test period). Only the machines that hold the pool's addresses
    // (their MACs are among the 50,000) may be answered.
    let text = perfdhcp(&["-R", "50000", "-r", "5000", "-n", "50000", "-p", "60"]);
    let (sent, received) = crate::dhcp::perfdhcp_counts(&text);
    let after = rss_kib(pid);
    eprintln!("{sent} requests, {received} answered; RSS {before} -> {after} KiB");
    assert!(sent >= 40_000, "perfdhcp sent {sent}:\n{text}");
    assert!(received <= 20, "nothing beyond the pool's ten holders (an offer and an ack each):\n{text}");
    assert_eq!(leases(), 10, "no lease beyond the pool");
    assert!(after < before + 8 * 1024, "memory grew from {before} to {after} KiB");
    // Flat: a second flood like it adds nothing to speak of.
    let text = perfdhcp(&["-R", "50000", "-r", "5000", "-n", "50000", "-p", "60"]);
    let again = rss_kib(pid);
    eprintln!("a second flood: {:?}; RSS {after} -> {again} KiB", crate::dhcp::perfdhcp_counts(&text));
    assert!(again < after + 2 * 1024, "memory grew again, from {after} to {again} KiB");
    assert_eq!(leases(), 10);
}
