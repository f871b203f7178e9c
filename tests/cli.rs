//! The CLI against a running daemon: get, apply, delete, events --follow, TLS; and the shell
//! completions and man pages it generates.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{self, BIN, TOKEN, cli};

const MANIFEST: &str = "
clusters:
  - name: lab
    kind: k3s
    base_domain: lab.example
    network: cluster
    api_address: 10.2.0.2
    api_int_address: 10.2.0.2
    ingress_address: 10.2.0.2
nodes:
  - name: k3s-0
    cluster: lab
    role: bootstrap
    mac: 52:54:00:aa:00:01
    ipv4: 10.2.1.10
    labels:
      rack: b
";

#[test]
fn apply_get_and_delete_round_trip_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = support::start(&support::config(dir.path(), ""), &[]);
    let file = dir.path().join("lab.yaml");
    std::fs::write(&file, MANIFEST).expect("manifest");
    let (ok, out, err) = cli(&daemon, &["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(ok, "{err}");
    assert_eq!(out, "cluster lab created\nnode k3s-0 created\n");
    let (ok, out, _) = cli(&daemon, &["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(ok && out.contains("node k3s-0 unchanged"), "{out}");

    let (ok, out, err) = cli(&daemon, &["get", "nodes"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("MAC"), "{out}");
    assert!(
        lines.iter().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["k3s-0", "lab", "bootstrap", "52:54:00:aa:00:01", "10.2.1.10", "k3s-0", "-", "api"]),
        "{out}"
    );

    let (ok, out, _) = cli(&daemon, &["get", "nodes", "k3s-0", "-o", "json"]);
    let node: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(ok && node["labels"]["rack"] == "b", "{out}");
    let (_, out, _) = cli(&daemon, &["get", "clusters"]);
    assert!(out.contains("lab.lab.example"), "{out}");
    let (_, out, _) = cli(&daemon, &["get", "networks"]);
    assert!(out.contains("10.2.0.0/16"), "{out}");

    let (ok, _, err) = cli(&daemon, &["delete", "cluster", "lab"]);
    assert!(!ok && err.contains("422") && err.contains("node k3s-0: cluster = lab: no such cluster"), "{err}");
    let (ok, out, _) = cli(&daemon, &["delete", "node", "k3s-0"]);
    assert!(ok && out == "node k3s-0 deleted\n", "{out}");
    let (ok, _, err) = cli(&daemon, &["delete", "node", "master-0"]);
    assert!(!ok && err.contains("declared in the config file"), "{err}");
    let (ok, _, err) = cli(&daemon, &["get", "nodes", "k3s-0"]);
    assert!(!ok && err.contains("404"), "{err}");
}

#[test]
fn a_bad_manifest_names_the_field_and_sends_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = support::start(&support::config(dir.path(), ""), &[]);
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "nodes:\n  - name: w0\n    mac: 52:54:00:aa:00:0g\n    ipv4: 10.2.1.10\n").expect("manifest");
    let (ok, _, err) = cli(&daemon, &["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(!ok && err.contains("nodes[0].mac") && err.contains("52:54:00:aa:00:0g"), "{err}");
    let (_, out, _) = cli(&daemon, &["get", "events", "--type", "inventory_changed", "-o", "json"]);
    assert_eq!(out.trim(), "[]");
}

#[test]
fn a_wrong_token_is_refused_with_401() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = support::start(&support::config(dir.path(), ""), &[]);
    let out = Command::new(BIN)
        .args(["get", "nodes"])
        .env("SLIPWAY_API", format!("http://{}", daemon.addr))
        .env("SLIPWAY_TOKEN", "not-the-token-0123456789")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401 Unauthorized"), "{out:?}");
}

/// `slipway get events --follow --type inventory_changed` against `daemon`, stdout piped.
fn follow_inventory_changes(daemon: &support::Daemon, stderr: Stdio) -> std::process::Child {
    Command::new(BIN)
        .args(["get", "events", "--follow", "--type", "inventory_changed"])
        .env("SLIPWAY_API", format!("http://{}", daemon.addr))
        .env("SLIPWAY_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn follower")
}

#[test]
fn get_events_follow_prints_new_events_as_they_happen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = support::start(&support::config(dir.path(), ""), &[]);
    let mut follower = follow_inventory_changes(&daemon, Stdio::null());
    let lines = support::pipe_lines(follower.stdout.take().expect("stdout"));
    let header = lines.recv_timeout(Duration::from_secs(20)).expect("header");
    assert!(header.starts_with("TIME"), "{header}");
    // The header is printed once the stream is open; every later change must arrive.
    let file = dir.path().join("one.yaml");
    std::fs::write(&file, "nodes:\n  - name: w7\n    mac: 52:54:00:aa:00:07\n    ipv4: 10.2.1.7\n").expect("manifest");
    let (ok, _, err) = cli(&daemon, &["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(ok, "{err}");
    let line = lines.recv_timeout(Duration::from_secs(20)).expect("an event line");
    assert!(line.contains("inventory_changed") && line.contains("w7") && line.contains("\"created\""), "{line}");
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn a_command_whose_reader_goes_away_ends_quietly() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = support::start(&support::config(dir.path(), ""), &[]);
    // `slipway get events --follow | head -1`: the reader closes after one line, and the next
    // event the command writes meets a closed pipe.
    let mut follower = follow_inventory_changes(&daemon, Stdio::piped());
    let mut reader = std::io::BufReader::new(follower.stdout.take().expect("stdout"));
    let mut header = String::new();
    reader.read_line(&mut header).expect("header");
    assert!(header.starts_with("TIME"), "{header}");
    drop(reader);
    let file = dir.path().join("one.yaml");
    std::fs::write(&file, "nodes:\n  - name: w8\n    mac: 52:54:00:aa:00:08\n    ipv4: 10.2.1.8\n").expect("manifest");
    let (ok, _, err) = cli(&daemon, &["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(ok, "{err}");
    let status = support::wait_exit(&mut follower, Duration::from_secs(20));
    if status.is_none() {
        let _ = follower.kill();
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follower.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    assert!(status.is_some_and(|s| s.success()), "exit {status:?}: {stderr}");
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
}

#[test]
fn every_command_takes_c_names_filter_and_json_output_applies_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free = || std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let (port, lb_port) = (free(), free());
    let lb = format!(
        "[[lb.pools]]\nname = \"api\"\nbackends = [\"127.0.0.1:9\"]\ncheck = {{ kind = \"tcp\" }}\n\
         [[lb.frontends]]\nname = \"api\"\nlisten = \"127.0.0.1:{lb_port}\"\npool = \"api\"\n"
    );
    let config = support::config(dir.path(), &lb);
    let text = std::fs::read_to_string(&config).expect("config").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&config, text).expect("config");
    let daemon = support::start(&config, &[]);
    let file = dir.path().join("one.yaml");
    std::fs::write(&file, "nodes:\n  - name: w9\n    mac: 52:54:00:aa:00:09\n    ipv4: 10.2.1.9\n").expect("manifest");
    // -c finds the API and the token in the daemon's config, for every client command.
    let c = |args: &[&str]| {
        let out = Command::new(BIN).args(args).arg("-c").arg(&config).env_remove("SLIPWAY_API").output().expect("cli");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = c(&["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = c(&["get", "nodes", "w9", "-o", "json"]);
    assert!(ok && out.contains("\"name\": \"w9\""), "{out}{err}");
    // A name narrows get events (to that node), get leases (an IP) and get lb.
    let (ok, out, err) = c(&["get", "events", "w9", "-o", "json"]);
    let events: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert!(
        ok && events.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(|e| e["node"] == "w9")),
        "{out}{err}"
    );
    let (ok, _, err) = c(&["get", "leases", "10.2.1.9"]);
    assert!(!ok && err.contains("no lease for 10.2.1.9"), "{err}");
    let (ok, _, err) = c(&["get", "leases", "w9"]);
    assert!(!ok && err.contains("not an IPv4 address"), "{err}");
    let (ok, out, err) = c(&["get", "lb", "api", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert!(ok && v["frontends"][0]["name"] == "api" && v["pools"][0]["name"] == "api", "{out}{err}");
    let (ok, _, err) = c(&["get", "lb", "nothing"]);
    assert!(!ok && err.contains("no load-balancer frontend or pool named nothing"), "{err}");
    // Unknown event types are refused like unknown sources, naming the known ones.
    let (ok, _, err) = c(&["get", "events", "--type", "nonsense"]);
    assert!(!ok && err.contains("'nonsense' is not an event type") && err.contains("lease_acked"), "{err}");
    let (ok, _, err) = c(&["get", "events", "--follow", "--type", "nonsense"]);
    assert!(!ok && err.contains("'nonsense' is not an event type"), "{err}");
    // -o json is honoured by reinstall and delete.
    let (ok, out, err) = c(&["reinstall", "w9", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert!(ok && v["node"] == "w9", "{out}{err}");
    let (ok, out, err) = c(&["delete", "node", "w9", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert!(ok && v == serde_json::json!({"kind": "node", "name": "w9", "action": "deleted"}), "{out}{err}");
    drop(daemon);
}

#[test]
fn the_api_serves_tls_and_the_cli_verifies_it_with_a_ca_file_or_the_daemons_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = support::self_signed(dir.path());
    let config = support::config(dir.path(), "");
    let text = std::fs::read_to_string(&config).expect("read").replacen(
        "[admin]\n",
        &format!("[admin]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n", cert.display(), key.display()),
        1,
    );
    std::fs::write(&config, text).expect("write");
    let daemon = support::start(&config, &[]);
    let run = |ca: Option<&std::path::Path>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["get", "nodes"]).env("SLIPWAY_API", format!("https://{}", daemon.addr)).env("SLIPWAY_TOKEN", TOKEN);
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.output().expect("run")
    };
    let trusted = run(Some(&cert));
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    assert!(String::from_utf8_lossy(&trusted.stdout).contains("master-0"));
    let untrusted = run(None);
    assert!(!untrusted.status.success(), "an unknown self-signed certificate must be refused");
    // Reading the daemon's config for the address (as `systemctl reload` does), the CLI trusts
    // the daemon's own certificate: the config names it.
    // (A copy naming the port the daemon took.)
    let copy = dir.path().join("bound.toml");
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(&copy, text.replace("127.0.0.1:0", &daemon.addr.to_string())).expect("write");
    let on_the_appliance = Command::new(BIN)
        .args(["get", "nodes", "--config"])
        .arg(&copy)
        .env_remove("SLIPWAY_API")
        .env("SLIPWAY_TOKEN", TOKEN)
        .output()
        .expect("run");
    assert!(on_the_appliance.status.success(), "{}", String::from_utf8_lossy(&on_the_appliance.stderr));
    assert!(String::from_utf8_lossy(&on_the_appliance.stdout).contains("master-0"));
    // Plain HTTP to the TLS port gets nothing useful.
    let mut plain = std::net::TcpStream::connect(daemon.addr).expect("connect");
    plain.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut plain, &mut buf).unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
}

/// `slipway completions SHELL` prints a script each shell reads without error, and bash's
/// completes a subcommand from its start; `slipway man` writes one page per command that groff
/// renders without a warning and `man -l` shows by its name.
#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().expect("slipway");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let check = |shell: &str, script: &str, syntax: &[&str]| {
        let file = dir.path().join(format!("slipway.{shell}"));
        std::fs::write(&file, script).expect("script");
        let out = std::process::Command::new(syntax[0]).args(&syntax[1..]).arg(&file).output().expect(shell);
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        file
    };
    let bash = check("bash", &run(&["completions", "bash"]), &["bash", "-n"]);
    check("zsh", &run(&["completions", "zsh"]), &["zsh", "-n"]);
    check("fish", &run(&["completions", "fish"]), &["fish", "--no-execute"]);
    let complete = |words: &str, cword: usize| {
        let script = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; _slipway slipway \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[*]}}\"",
            bash.display()
        );
        let out = std::process::Command::new("bash").args(["-c", &script]).output().expect("bash");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(complete("slipway cl", 1), "cluster");
    assert!(complete("slipway cluster ", 2).split(' ').any(|w| w == "addons"), "{}", complete("slipway cluster ", 2));

    let man = dir.path().join("man");
    run(&["man", "--dir", man.to_str().expect("path")]);
    let pages: Vec<String> = std::fs::read_dir(&man)
        .expect("pages")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for page in ["slipway.1", "slipway-serve.1", "slipway-cluster-apply.1", "slipway-cluster-addons.1", "slipway-get.1"]
    {
        assert!(pages.iter().any(|p| p == page), "{page} in {pages:?}");
    }
    for page in &pages {
        let out = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(man.join(page))
            .output()
            .expect("groff (apt install groff-base)");
        assert!(out.status.success() && out.stderr.is_empty(), "{page}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let shown = std::process::Command::new("man")
        .args(["-l", man.join("slipway-cluster-apply.1").to_str().expect("path")])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man (apt install man-db)");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("slipway-cluster-apply - Apply a definition"), "{shown}");
}
