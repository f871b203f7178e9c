//! Starting and stopping a real `slipway serve` for tests, with bounded waits.

use std::fmt::Display;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const TOKEN: &str = "integration-token-0123456789";
pub const BIN: &str = env!("CARGO_BIN_EXE_slipway");

/// The shared base config for a test daemon with OKD cluster `prod` and its node master-0, plus
/// `extra` appended as written (see [`Config::prod`]).
pub fn config(dir: &Path, extra: &str) -> PathBuf {
    Config::prod(dir).raw(extra).write()
}

/// A test daemon's config file, built from the shared base: the token file, `state_dir` and an
/// admin API on an ephemeral loopback port, all in `dir`. Each table method (`section`, `network`,
/// `cluster`, `node`, `profile`, `pool`, `frontend`) adds a table after the ones before; the key
/// methods (`set`, `value`, `list`, `member`) add keys to the table added last.
pub struct Config {
    dir: PathBuf,
    text: String,
}

impl Config {
    /// The base: writes `dir/token`; state in `dir/state`.
    pub fn new(dir: &Path) -> Self {
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("token");
        Config { dir: dir.to_owned(), text: String::new() }
            .set("state_dir", dir.join("state").display())
            .section("[admin]")
            .set("listen", "127.0.0.1:0")
            .set("token_file", dir.join("token").display())
    }

    /// The base with network `cluster` (10.2.0.0/16 on lab0), OKD cluster `prod` on it and its
    /// control-plane node master-0 (10.2.0.11).
    pub fn prod(dir: &Path) -> Self {
        Self::new(dir)
            .network("cluster", "lab0", "10.2.0.0/16")
            .set("gateway", "10.2.0.1")
            .set("domain", "lab.example")
            .cluster("prod", "okd", "cluster", "192.0.2.10", "10.2.0.1")
            .node("master-0", "52:54:00:6b:00:10", "10.2.0.11")
            .member("prod", "control-plane")
    }

    /// A table as its header is written: `[dhcp]`, `[[lb.pools]]`...
    pub fn section(mut self, header: &str) -> Self {
        assert!(header.starts_with('[') && header.ends_with(']'), "a table header: {header}");
        self.text.push_str(header);
        self.text.push('\n');
        self
    }

    /// A network with no gateway, domain or ranges (add them with `set` and `value`).
    pub fn network(self, name: &str, interface: &str, cidr: &str) -> Self {
        self.section("[[networks]]").set("name", name).set("interface", interface).set("cidr", cidr)
    }

    /// A cluster under lab.example on `network`: the API and ingress on `public`, the internal
    /// API on `internal`.
    pub fn cluster(self, name: &str, kind: &str, network: &str, public: &str, internal: &str) -> Self {
        self.section("[[clusters]]")
            .set("name", name)
            .set("kind", kind)
            .set("base_domain", "lab.example")
            .set("network", network)
            .set("api_address", public)
            .set("api_int_address", internal)
            .set("ingress_address", public)
    }

    /// A node of no cluster (see `member`) and no profile.
    pub fn node(self, name: &str, mac: &str, ipv4: &str) -> Self {
        self.section("[[nodes]]").set("name", name).set("mac", mac).set("ipv4", ipv4)
    }

    /// Puts the node added last in `cluster` with `role`.
    pub fn member(self, cluster: &str, role: &str) -> Self {
        self.set("cluster", cluster).set("role", role)
    }

    /// A boot profile with only its kernel.
    pub fn profile(self, name: &str, kernel: &str) -> Self {
        self.section("[[profiles]]").set("name", name).set("kernel", kernel)
    }

    /// A load-balancer pool with only its name.
    pub fn pool(self, name: &str) -> Self {
        self.section("[[lb.pools]]").set("name", name)
    }

    /// A load-balancer frontend on `listen` for `pool`.
    pub fn frontend(self, name: &str, listen: impl Display, pool: &str) -> Self {
        self.section("[[lb.frontends]]").set("name", name).set("listen", listen).set("pool", pool)
    }

    /// A string key.
    pub fn set(self, key: &str, value: impl Display) -> Self {
        self.value(key, quote(value))
    }

    /// A key with `value` written as TOML: `true`, `20`, `{ start = "a", end = "b" }`...
    pub fn value(mut self, key: &str, value: impl Display) -> Self {
        self.text.push_str(&format!("{key} = {value}\n"));
        self
    }

    /// A key holding an array of strings.
    pub fn list<T: Display>(self, key: &str, items: impl IntoIterator<Item = T>) -> Self {
        let items: Vec<String> = items.into_iter().map(quote).collect();
        self.value(key, format!("[{}]", items.join(", ")))
    }

    /// TOML text appended as written, ending a line (keys in it go to the table added last).
    pub fn raw(mut self, text: &str) -> Self {
        self.text.push_str(text);
        if !self.text.ends_with('\n') {
            self.text.push('\n');
        }
        self
    }

    /// Writes `dir/slipway.toml` and returns its path.
    pub fn write(&self) -> PathBuf {
        let path = self.dir.join("slipway.toml");
        std::fs::write(&path, &self.text).expect("config");
        path
    }
}

/// A TOML basic string.
fn quote(value: impl Display) -> String {
    format!("\"{}\"", value.to_string().replace('\\', "\\\\").replace('"', "\\\""))
}

/// A running daemon; killed on drop if the test did not stop it.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    /// The daemon's log lines after "ready" (JSON); also keeps the stderr pipe open.
    pub log: mpsc::Receiver<String>,
}

/// Starts `slipway serve` and waits (bounded) for its "ready" log line.
pub fn start(config: &Path, env: &[(&str, &str)]) -> Daemon {
    start_in(None, config, env)
}

/// Starts `slipway serve` inside network namespace `ns` (`ip netns exec` keeps the PID).
pub fn start_in(ns: Option<&str>, config: &Path, env: &[(&str, &str)]) -> Daemon {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    cmd.args(["--log-format", "json", "serve", "--config"]).arg(config).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn slipway");
    let lines = pipe_lines(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if v["message"] == "slipway is ready" {
                    let addr = v["admin"].as_str().expect("admin field").parse().expect("admin address");
                    return Daemon { child, addr, log: lines };
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("slipway did not report ready within 30 s (status {:?})", child.try_wait());
            }
        }
    }
}

pub fn pipe_lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a child to exit, at most `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

impl Daemon {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, then wait up to `limit` for the exit status.
    pub fn stop(mut self, limit: Duration) -> Option<ExitStatus> {
        signal(&self.child, "TERM");
        wait_exit(&mut self.child, limit)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client")
}

/// Runs the CLI against a daemon, returning (success, stdout, stderr).
pub fn cli(daemon: &Daemon, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("SLIPWAY_API", format!("http://{}", daemon.addr))
        .env("SLIPWAY_TOKEN", TOKEN)
        .output()
        .expect("run cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `check` until it holds, at most `limit`; panics naming `what` otherwise.
pub fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not happen within {limit:?}");
}

/// Makes a self-signed certificate for 127.0.0.1 with openssl.
pub fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    crate::pki::openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=slipway-test",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-keyout",
        &k,
        "-out",
        &c,
    ]);
    (cert, key)
}

/// Runs the CLI inside network namespace `ns` (where the daemon's loopback admin API is).
pub fn cli_in(ns: Option<&str>, daemon: &Daemon, args: &[&str]) -> (bool, String, String) {
    let Some(ns) = ns else { return cli(daemon, args) };
    let out = Command::new("ip")
        .args(["netns", "exec", ns, BIN])
        .args(args)
        .env("SLIPWAY_API", format!("http://{}", daemon.addr))
        .env("SLIPWAY_TOKEN", TOKEN)
        .output()
        .expect("run cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A TLS acceptor for a PEM certificate chain and key (test servers).
pub fn tls_acceptor(cert: &Path, key: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    let certs =
        rustls_pki_types::CertificateDer::pem_file_iter(cert).expect("cert").map(|c| c.expect("cert")).collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).expect("key");
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}
