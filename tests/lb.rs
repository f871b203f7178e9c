//! The load balancer with real TCP backends on loopback: round-robin spread, source-hash
//! stickiness, a killed backend leaving and coming back, and a cluster pool that follows the
//! inventory while an open stream keeps flowing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{self, Config, Daemon, TOKEN, eventually};

/// A backend that greets each connection with its name, then echoes.
struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn start(addr: &str, name: &str) -> Backend {
        let listener = TcpListener::bind(addr).expect("bind backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, name) = (stop.clone(), name.to_owned());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let name = name.clone();
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = writeln!(conn, "{name}");
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = conn.read(&mut buf) {
                                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Backend { addr, stop, thread: Some(thread) }
    }

    /// Closes the listener: new connections are refused.
    fn kill(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).expect("free port").local_addr().expect("addr").port()
}

/// Connects through the frontend (optionally from `from`) and returns the backend's greeting
/// and the open stream.
fn through(frontend: SocketAddr, from: Option<&str>) -> (String, TcpStream) {
    let stream = match from {
        Some(ip) => {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
            socket.bind(&SocketAddr::from((ip.parse::<std::net::Ipv4Addr>().expect("ip"), 0)).into()).expect("bind");
            socket.connect(&frontend.into()).expect("connect");
            TcpStream::from(socket)
        }
        None => TcpStream::connect(frontend).expect("connect to the frontend"),
    };
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut line = String::new();
    BufReader::new(stream.try_clone().expect("clone")).read_line(&mut line).expect("greeting");
    (line.trim().to_owned(), stream)
}

/// `n` greeting backends on loopback and a daemon balancing them as pool `web` (with `options`
/// added to the pool); returns them and the frontend address.
fn static_pool(
    dir: &std::path::Path,
    n: usize,
    options: impl FnOnce(Config) -> Config,
) -> (Vec<Backend>, SocketAddr, Daemon) {
    let backends: Vec<Backend> = (0..n).map(|i| Backend::start("127.0.0.1:0", &format!("b{i}"))).collect();
    let frontend = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
    let pool = options(Config::prod(dir).pool("web").list("backends", backends.iter().map(|b| b.addr)));
    let daemon = support::start(&web(pool, frontend), &[]);
    (backends, frontend, daemon)
}

/// `config` (with a pool `web`) and frontend `web` on `frontend` for it, written.
fn web(config: Config, frontend: SocketAddr) -> std::path::PathBuf {
    config.frontend("web", frontend, "web").write()
}

fn status(daemon: &Daemon) -> serde_json::Value {
    let (ok, out, err) = support::cli(daemon, &["get", "lb", "-o", "json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).expect("json")
}

fn backend_state(daemon: &Daemon, addr: SocketAddr) -> String {
    let s = status(daemon);
    s["pools"][0]["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["address"] == addr.to_string()))
        .map(|b| b["state"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|| "absent".into())
}

#[test]
fn round_robin_spreads_connections_evenly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_backends, frontend, daemon) = static_pool(dir.path(), 3, |pool| pool);
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..30 {
        let (name, mut stream) = through(frontend, None);
        stream.write_all(b"ping\n").expect("send");
        let mut echo = [0u8; 5];
        stream.read_exact(&mut echo).expect("echo through the balancer");
        assert_eq!(&echo, b"ping\n");
        *counts.entry(name).or_insert(0) += 1;
    }
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [10, 10, 10], "{counts:?}");
    let (ok, out, _) = support::cli(&daemon, &["get", "lb"]);
    assert!(ok && out.contains("FRONTEND") && out.lines().filter(|l| l.contains(" up ")).count() == 3, "{out}");
}

#[test]
fn source_hashing_keeps_each_client_on_one_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_backends, frontend, _daemon) = static_pool(dir.path(), 3, |pool| pool.set("algorithm", "source-hash"));
    let mut used = std::collections::BTreeSet::new();
    for client in 2..12 {
        let from = format!("127.0.0.{client}");
        let first = through(frontend, Some(&from)).0;
        for _ in 0..4 {
            assert_eq!(through(frontend, Some(&from)).0, first, "client {from} moved");
        }
        used.insert(first);
    }
    assert!(used.len() >= 2, "ten clients all hashed to one backend: {used:?}");
}

#[test]
fn a_killed_backend_leaves_the_pool_and_returns_after_rise_successes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = r#"{ interval = "200ms", timeout = "100ms", rise = 2, fall = 2 }"#;
    let (mut backends, frontend, daemon) = static_pool(dir.path(), 2, |pool| pool.value("check", check));
    let dead = backends[1].addr;
    backends[1].kill();
    eventually("the killed backend to be marked down", Duration::from_secs(5), || {
        backend_state(&daemon, dead) == "down"
    });
    for _ in 0..10 {
        assert_eq!(through(frontend, None).0, "b0", "a down backend gets no connection");
    }
    let (ok, out, _) = support::cli(&daemon, &["get", "events", "--type", "backend_down", "-o", "json"]);
    assert!(ok && out.contains(&dead.to_string()), "{out}");
    // Back on the same address: up again after two good checks.
    let _again = Backend::start(&dead.to_string(), "b1");
    eventually("the backend to come back", Duration::from_secs(5), || backend_state(&daemon, dead) == "up");
    let names: std::collections::BTreeSet<String> = (0..6).map(|_| through(frontend, None).0).collect();
    assert!(names.contains("b1"), "{names:?}");
}

#[test]
fn deleting_the_bootstrap_node_drops_it_from_the_api_pool_without_cutting_a_master_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port("127.0.0.11");
    let _bootstrap = Backend::start(&format!("127.0.0.11:{port}"), "bootstrap");
    let _master = Backend::start(&format!("127.0.0.12:{port}"), "master-0");
    let frontend = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
    let config = Config::prod(dir.path())
        .network("loop", "lo", "127.0.0.0/8")
        .cluster("okd", "okd", "loop", "127.0.0.1", "127.0.0.1")
        .pool("web")
        .set("cluster", "okd")
        .set("members", "control-plane")
        .value("port", port);
    let daemon = support::start(&web(config, frontend), &[]);
    let yaml = dir.path().join("nodes.yaml");
    std::fs::write(
        &yaml,
        "nodes:\n  - {name: okd-bootstrap, cluster: okd, role: bootstrap, mac: \"52:54:00:00:0b:01\", ipv4: 127.0.0.11}\n  \
         - {name: okd-master, cluster: okd, role: control-plane, mac: \"52:54:00:00:0b:02\", ipv4: 127.0.0.12}\n",
    )
    .expect("yaml");
    let (ok, _, err) = support::cli(&daemon, &["apply", "-f", yaml.to_str().expect("utf-8")]);
    assert!(ok, "{err}");
    eventually("both nodes in the pool", Duration::from_secs(5), || {
        status(&daemon)["pools"][0]["backends"].as_array().is_some_and(|b| b.len() == 2)
    });
    // A long-lived stream to the master (round-robin alternates, so one of two lands there).
    let (mut master_stream, mut seen) = (None, Vec::new());
    for _ in 0..4 {
        let (name, stream) = through(frontend, None);
        seen.push(name.clone());
        if name == "master-0" {
            master_stream = Some(stream);
            break;
        }
    }
    let mut master_stream = master_stream.unwrap_or_else(|| panic!("no connection reached the master: {seen:?}"));

    let (ok, _, err) = support::cli(&daemon, &["delete", "node", "okd-bootstrap"]);
    assert!(ok, "{err}");
    let bootstrap: SocketAddr = format!("127.0.0.11:{port}").parse().expect("addr");
    eventually("the bootstrap node to leave the pool", Duration::from_secs(5), || {
        matches!(backend_state(&daemon, bootstrap).as_str(), "absent" | "draining")
    });
    for _ in 0..6 {
        assert_eq!(through(frontend, None).0, "master-0", "new connections go to the master only");
    }
    master_stream.write_all(b"still here\n").expect("the master stream is open");
    let mut echo = [0u8; 11];
    master_stream.read_exact(&mut echo).expect("and still answers");
    assert_eq!(&echo, b"still here\n");
    let _ = TOKEN;
}

/// An HTTPS backend: `/readyz` answers 200 or 500 as `ready` says; `/stream` sends `tick` lines
/// every 100 ms for four seconds (a long-lived stream, like a Kubernetes watch).
/// Lines `/stream` sends, 100 ms apart: open longer than the checks take to mark it down.
const STREAM_TICKS: usize = 80;

async fn https_backend(cert: &std::path::Path, key: &std::path::Path, ready: Arc<AtomicBool>) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let acceptor = crate::support::tls_acceptor(cert, key);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, ready) = (acceptor.clone(), ready.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && tls.read_exact(&mut byte).await.is_ok() {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                if head.starts_with("GET /stream ") {
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
                        .await;
                    for _ in 0..STREAM_TICKS {
                        if tls.write_all(b"tick\n").await.is_err() || tls.flush().await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                } else {
                    let status = if ready.load(Ordering::Relaxed) { "200 OK" } else { "500 Internal Server Error" };
                    let _ = tls
                        .write_all(
                            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
                        )
                        .await;
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[test]
fn a_backend_whose_readyz_fails_leaves_the_pool_while_its_open_stream_keeps_flowing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = support::self_signed(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ready = Arc::new(AtomicBool::new(true));
    let backend = runtime.block_on(https_backend(&cert, &key, ready.clone()));
    let frontend = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
    // A generous check timeout: on a loaded machine a 150 ms one can expire before the 500
    // arrives, and the down event would name the timeout instead.
    let check = r#"{ kind = "https", path = "/readyz", interval = "500ms", timeout = "500ms", rise = 2, fall = 2 }"#;
    let pool = Config::prod(dir.path()).pool("web").list("backends", [backend]).value("check", check);
    let daemon = support::start(&web(pool, frontend), &[]);
    let pem = std::fs::read(&cert).expect("cert");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = |path: &str| format!("https://{frontend}{path}");
    let (ticks_before, ticks_after) = runtime.block_on(async {
        let mut stream = client.get(url("/stream")).send().await.expect("a stream through the balancer");
        assert!(stream.status().is_success());
        let mut before = 0;
        while before < 3 {
            let chunk = stream.chunk().await.expect("chunk").expect("more");
            before += chunk.iter().filter(|b| **b == b'\n').count();
        }
        ready.store(false, Ordering::Relaxed);
        let state = {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            loop {
                let state = tokio::task::block_in_place(|| backend_state(&daemon, backend));
                if state == "down" || std::time::Instant::now() > deadline {
                    break state;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        assert_eq!(state, "down", "/readyz answering 500 takes the backend out");
        assert!(client.get(url("/readyz")).send().await.is_err(), "no backend is usable: new connections are refused");
        let mut after = 0;
        while let Some(chunk) = stream.chunk().await.expect("the open stream is not cut") {
            after += chunk.iter().filter(|b| **b == b'\n').count();
        }
        (before, after)
    });
    assert_eq!(ticks_before + ticks_after, STREAM_TICKS, "every tick of the open stream arrived");
    assert!(ticks_after > 0);
    ready.store(true, Ordering::Relaxed);
    eventually("the backend to come back after rise successes", Duration::from_secs(15), || {
        backend_state(&daemon, backend) == "up"
    });
    let (ok, out, _) = support::cli(&daemon, &["get", "events", "--type", "backend_down,backend_up", "-o", "json"]);
    assert!(ok && out.contains("500"), "the down event names the failure: {out}");
}

#[test]
fn thousands_of_idle_connections_do_not_stop_a_normal_client() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // The test holds 2,000 idle client sockets and the backend their 2,000 peers.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    assert!(hard >= 8192, "the open-file hard limit ({hard}) is too low for this test");
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // A tokio echo backend: one cheap task per connection.
    let backend = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    });
    let frontend = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
    let pool = Config::prod(dir.path()).pool("web").list("backends", [backend]);
    let daemon = support::start(&web(pool, frontend), &[]);
    // 2,000 clients that connect and never send anything.
    let idle: Vec<TcpStream> = (0..2000).map(|_| TcpStream::connect(frontend).expect("idle connection")).collect();
    eventually("the idle connections to be proxied", Duration::from_secs(60), || {
        status(&daemon)["frontends"][0]["active"].as_u64() == Some(2000)
    });
    // A normal client still connects and moves data both ways.
    let mut normal = TcpStream::connect(frontend).expect("connect");
    normal.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let payload = vec![7u8; 256 * 1024];
    let writer = {
        let mut w = normal.try_clone().expect("clone");
        let payload = payload.clone();
        std::thread::spawn(move || w.write_all(&payload).expect("send"))
    };
    let mut back = vec![0u8; payload.len()];
    normal.read_exact(&mut back).expect("the echo arrives");
    writer.join().expect("writer");
    assert_eq!(back, payload);
    drop(idle);
}

/// A backend that accepts and then does `behave` with each connection.
fn odd_backend(behave: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || behave(conn));
        }
    });
    addr
}

/// Whether the server side closes `stream` within `limit` (EOF or reset on read).
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

#[test]
fn silent_and_resetting_backends_and_a_connection_flood_stay_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Accepts, reads, never answers.
    let silent = odd_backend(|mut c| {
        let mut buf = [0u8; 64];
        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
    });
    // Reads the first bytes, then resets the connection (SO_LINGER 0).
    let resetting = odd_backend(|mut c| {
        let mut buf = [0u8; 64];
        let _ = c.read(&mut buf);
        let socket = socket2::Socket::from(c);
        let _ = socket.set_linger(Some(Duration::ZERO));
    });
    let echo = Backend::start("127.0.0.1:0", "echo");
    let port = |_| SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
    let (f_silent, f_reset, f_small, f_echo) = (port(0), port(1), port(2), port(3));
    let config = Config::prod(dir.path())
        .section("[lb]")
        .set("idle_timeout", "2s")
        .pool("silent")
        .list("backends", [silent])
        .pool("resetting")
        .list("backends", [resetting])
        .pool("echo")
        .list("backends", [echo.addr])
        .frontend("silent", f_silent, "silent")
        .frontend("reset", f_reset, "resetting")
        .frontend("small", f_small, "echo")
        .value("max_connections", 20)
        .frontend("echo", f_echo, "echo");
    let daemon = support::start(&config.write(), &[]);

    // A backend that never answers: the idle timeout closes the client's connection.
    let mut c = TcpStream::connect(f_silent).expect("connect");
    c.write_all(b"hello?").expect("send");
    assert!(closed_within(&mut c, Duration::from_secs(10)), "an idle connection to a silent backend is closed");

    // A backend that resets mid-stream: the client's connection ends, nothing else does.
    let mut c = TcpStream::connect(f_reset).expect("connect");
    c.write_all(b"x").expect("send");
    assert!(closed_within(&mut c, Duration::from_secs(5)), "a reset backend ends the client connection");

    // A flood past max_connections: the surplus is closed at once, the frontend's own clients
    // and the other frontends keep working.
    let held: Vec<(String, TcpStream)> = (0..20).map(|_| through(f_small, None)).collect();
    assert!(held.iter().all(|(g, _)| g == "echo"));
    let mut flood: Vec<TcpStream> = (0..200).filter_map(|_| TcpStream::connect(f_small).ok()).collect();
    let refused = flood.iter_mut().map(|s| closed_within(s, Duration::from_secs(3))).filter(|closed| *closed).count();
    assert_eq!(refused, flood.len(), "every connection past the limit is closed");
    let (greeting, mut normal) = through(f_echo, None);
    assert_eq!(greeting, "echo");
    normal.write_all(b"ping\n").expect("send");
    let mut line = String::new();
    BufReader::new(normal.try_clone().expect("clone")).read_line(&mut line).expect("echo");
    assert_eq!(line, "ping\n");
    let (_, mut first) = held.into_iter().next().expect("held");
    first.write_all(b"still\n").expect("send");
    let mut line = String::new();
    BufReader::new(first).read_line(&mut line).expect("echo on a held connection");
    assert_eq!(line, "still\n");
    assert_eq!(status(&daemon)["frontends"].as_array().map(Vec::len), Some(4), "the daemon still answers");
}
