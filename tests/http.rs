//! The HTTP boot service from a client namespace: Range requests on images; the config
//! isolation matrix (another node's address, `?mac=`, the public side, a forged
//! `X-Forwarded-For`) answered 403/404 without a byte of any document; rendered Ignition passes
//! `ignition-validate` and rendered user-data passes `cloud-init schema`; an installed node
//! boots its disk until a reinstall is requested. Needs root.

use std::path::Path;
use std::process::{Command, Output};

use crate::netns::{Pair, in_netns};
use crate::support::{self, Config, TOKEN};

const SECRET_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAISECRETMARKER ops@lab";

/// Two clusters on `lab`: k3s `prod` with worker w1 (booting `fcos`, Ignition from a template)
/// and OKD `okd` with m0; w0 in no cluster boots `ubuntu` (cloud-init). Images in `dir/images`.
fn config(dir: &Path) -> Config {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).expect("images");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(images.join("vmlinuz"), &data).expect("image");
    let templates = dir.join("templates/ignition");
    std::fs::create_dir_all(&templates).expect("templates");
    std::fs::write(
        templates.join("worker.ign"),
        r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/motd","mode":420,"contents":{"source":"data:,{{fqdn}}"}}]}}"#,
    )
    .expect("template");
    Config::new(dir)
        .section("[http]")
        .set("listen", "0.0.0.0:8080")
        .set("images", images.display())
        .section("[boot]")
        .list("ssh_authorized_keys", [SECRET_KEY])
        .set("templates", dir.join("templates").display())
        .network("lab", "srv0", "10.1.107.0/24")
        .set("gateway", "10.1.107.1")
        .cluster("prod", "k3s", "lab", "192.0.2.10", "10.1.107.1")
        .profile("ubuntu", "vmlinuz")
        .list("args", ["ds=nocloud;s={{config_url}}"])
        .set("config", "cloud-init")
        .value("installs", true)
        .profile("fcos", "vmlinuz")
        .list("args", ["coreos.inst.ignition_url={{config_url}}"])
        .set("config", "ignition")
        .value("match", r#"{ cluster = "prod", role = "worker" }"#)
        .node("w0", "52:54:00:00:00:20", "10.1.107.20")
        .set("profile", "ubuntu")
        .node("w1", "52:54:00:00:00:21", "10.1.107.21")
        .member("prod", "worker")
        .cluster("okd", "okd", "lab", "192.0.2.11", "10.1.107.1")
        .node("m0", "52:54:00:00:00:30", "10.1.107.30")
        .member("okd", "control-plane")
}

/// curl from the client namespace with source address `from`: (HTTP status, body).
pub fn get(pair: &Pair, from: &str, url: &str, extra: &[&str]) -> (u16, Vec<u8>) {
    let out: Output = pair
        .cli_command("curl")
        .args(["-s", "--max-time", "10", "--interface", from, "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    let mut body = out.stdout;
    let split = body.iter().rposition(|b| *b == b'\n').expect("status line");
    let status = String::from_utf8_lossy(&body[split + 1..]).trim().parse().unwrap_or(0);
    body.truncate(split);
    (status, body)
}

fn lab() -> (Pair, tempfile::TempDir, support::Daemon) {
    lab_with("h", |config| config)
}

/// The lab with its config changed by `edit`.
fn lab_with(tag: &str, edit: impl FnOnce(Config) -> Config) -> (Pair, tempfile::TempDir, support::Daemon) {
    let pair = Pair::new(tag);
    for cidr in ["10.1.107.20/24", "10.1.107.21/24", "10.1.107.30/24", "10.1.107.99/24", "192.0.2.20/24"] {
        pair.client_address(cidr);
    }
    let out =
        Command::new("ip").args(["-n", &pair.srv, "addr", "add", "192.0.2.1/24", "dev", "srv0"]).output().expect("ip");
    assert!(out.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = support::start_in(Some(&pair.srv), &edit(config(dir.path())).write(), &[]);
    (pair, dir, daemon)
}

const BASE: &str = "http://10.1.107.1:8080";

#[test]
fn configs_only_go_to_their_own_node() {
    let (pair, _dir, _daemon) = lab();
    let (status, body) = get(&pair, "10.1.107.20", &format!("{BASE}/nocloud/w0/user-data"), &[]);
    assert_eq!(status, 200);
    crate::validate::user_data("w0's user-data", &body);
    let user_data = String::from_utf8(body).expect("utf-8");
    assert!(user_data.contains(SECRET_KEY) && user_data.contains("hostname: \"w0\""), "{user_data}");
    let (status, body) = get(&pair, "10.1.107.21", &format!("{BASE}/ignition"), &[]);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("SECRETMARKER"));

    let refused: &[(&str, String, &[&str], u16)] = &[
        ("10.1.107.21", format!("{BASE}/nocloud/w0/user-data"), &[], 403),
        ("10.1.107.21", format!("{BASE}/nocloud/w0/user-data?mac=52:54:00:00:00:20"), &[], 403),
        ("10.1.107.99", format!("{BASE}/nocloud/w0/user-data"), &[], 404),
        ("10.1.107.99", format!("{BASE}/ignition?mac=52:54:00:00:00:21"), &[], 404),
        ("10.1.107.99", format!("{BASE}/ignition"), &["-H", "X-Forwarded-For: 10.1.107.21"], 404),
        ("10.1.107.99", format!("{BASE}/nocloud/w0/meta-data"), &["-H", "X-Real-IP: 10.1.107.20"], 404),
        ("10.1.107.20", "http://192.0.2.1:8080/nocloud/w0/user-data".to_string(), &[], 404),
        ("10.1.107.21", "http://192.0.2.1:8080/ignition".to_string(), &[], 404),
        ("192.0.2.20", "http://192.0.2.1:8080/ignition".to_string(), &[], 404),
    ];
    for (from, url, extra, want) in refused {
        let (status, body) = get(&pair, from, url, extra);
        assert_eq!(status, *want, "{from} {url} {extra:?}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("SECRETMARKER") && !text.contains("w0") && !text.contains("ignition"),
            "{from} {url}: body {text:?}"
        );
    }

    // Both documents pass their own validators.
    let merged = get(&pair, "10.1.107.21", &format!("{BASE}/ignition"), &[]).1;
    crate::validate::ignition("w1's Ignition", &merged);
    let merged = String::from_utf8(merged).expect("utf-8");
    assert!(merged.contains("data:,w1.prod.lab.example") && merged.contains("slipway-phone-home.service"), "{merged}");
    crate::validate::user_data("w0's user-data", user_data.as_bytes());
}

#[test]
fn images_answer_range_requests() {
    let (pair, dir, _daemon) = lab();
    let whole = std::fs::read(dir.path().join("images/vmlinuz")).expect("image");
    let (status, body) = get(&pair, "10.1.107.99", &format!("{BASE}/images/vmlinuz"), &[]);
    assert_eq!((status, body.len()), (200, whole.len()));
    assert!(body == whole);
    let (status, body) = get(&pair, "10.1.107.99", &format!("{BASE}/images/vmlinuz"), &["-r", "1000-1999"]);
    assert_eq!(status, 206);
    assert!(body == whole[1000..2000]);
    let (status, body) = get(&pair, "10.1.107.99", &format!("{BASE}/images/vmlinuz"), &["-r", "99990-"]);
    assert_eq!(status, 206);
    assert!(body == whole[99990..]);
    let (status, _) = get(&pair, "10.1.107.99", &format!("{BASE}/images/vmlinuz"), &["-r", "200000-300000"]);
    assert_eq!(status, 416);
    let (status, _) = get(&pair, "10.1.107.99", &format!("{BASE}/images/../slipway.toml"), &["--path-as-is"]);
    assert_eq!(status, 404, "no path out of the images directory");
    let evil = dir.path().join("images-evil");
    std::fs::create_dir_all(&evil).expect("sibling");
    std::fs::write(evil.join("secret"), "SECRET").expect("secret");
    std::os::unix::fs::symlink(&evil, dir.path().join("images/link")).expect("symlink");
    std::os::unix::fs::symlink(evil.join("secret"), dir.path().join("images/file-link")).expect("symlink");
    for path in ["link/secret", "file-link", "%2e%2e/images-evil/secret", "..%2fimages-evil%2fsecret", "", "."] {
        let (status, body) = get(&pair, "10.1.107.99", &format!("{BASE}/images/{path}"), &["--path-as-is"]);
        assert_eq!(status, 404, "{path}: nothing outside the images directory, no directory listing");
        assert!(!String::from_utf8_lossy(&body).contains("SECRET"), "{path}");
    }
}

/// One response read off a raw connection: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Splits what a server sent on one connection into responses; `head_only[i]` marks the
/// answers to HEAD requests (a length but no body).
fn answers(mut raw: &[u8], head_only: &[bool]) -> Vec<Answer> {
    let mut out = Vec::new();
    for &head in head_only {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head") + 4;
        let text = String::from_utf8_lossy(&raw[..end]).to_string();
        let mut lines = text.split("\r\n");
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize =
            headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().expect("length"));
        let body_len = if head { 0 } else { length };
        out.push(Answer { status, headers, body: raw[end..end + body_len].to_vec() });
        raw = &raw[end + body_len..];
    }
    assert!(raw.is_empty(), "bytes after the last response: {:?}", String::from_utf8_lossy(raw));
    out
}

#[test]
fn one_connection_carries_pipelined_scripts_and_images_then_the_routed_handlers() {
    let (pair, dir, daemon) = lab();
    let whole = std::fs::read(dir.path().join("images/vmlinuz")).expect("image");
    // Five requests in one write: the direct path answers the first three (script, HEAD of an
    // image, a range), the fourth goes to hyper's routed handler, which keeps the connection
    // and answers the fifth (an image again) and closes as asked.
    let requests = "GET /boot.ipxe?arch=x86_64 HTTP/1.1\r\nHost: s\r\n\r\n\
                    HEAD /images/vmlinuz HTTP/1.1\r\nHost: s\r\n\r\n\
                    GET /images/vmlinuz HTTP/1.1\r\nHost: s\r\nRange: bytes=10-19\r\n\r\n\
                    GET /nocloud/w0/meta-data HTTP/1.1\r\nHost: s\r\n\r\n\
                    GET /images/vmlinuz HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n";
    let raw = in_netns(&pair.cli, move || {
        use std::io::{Read, Write};
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.bind(&"10.1.107.20:0".parse::<std::net::SocketAddr>().expect("addr").into()).expect("bind");
        socket.connect(&"10.1.107.1:8080".parse::<std::net::SocketAddr>().expect("addr").into()).expect("connect");
        let mut stream: std::net::TcpStream = socket.into();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
        stream.write_all(requests.as_bytes()).expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("the server closes after the last request");
        raw
    });
    let got = answers(&raw, &[false, true, false, false, false]);
    assert_eq!(got.iter().map(|a| a.status).collect::<Vec<_>>(), [200, 200, 206, 200, 200]);
    let script = String::from_utf8_lossy(&got[0].body);
    assert!(script.contains("kernel http://10.1.107.1:8080/images/vmlinuz ds=nocloud"), "{script}");
    assert_eq!(got[1].header("content-length"), Some("100000"));
    assert_eq!(got[1].header("accept-ranges"), Some("bytes"));
    assert!(got[1].body.is_empty());
    assert_eq!(got[2].header("content-range"), Some("bytes 10-19/100000"));
    assert!(got[2].body == whole[10..20]);
    assert_eq!(String::from_utf8_lossy(&got[3].body), "instance-id: slipway-w0\nlocal-hostname: w0\n");
    assert!(got[4].body == whole);
    // Both paths record the image fetches in w0's timeline.
    support::eventually("the timeline shows the image fetches", std::time::Duration::from_secs(5), || {
        let (ok, out, _) = support::cli_in(Some(&pair.srv), &daemon, &["get", "timeline", "w0"]);
        ok && out.contains("vmlinuz (10 bytes)") && out.contains("vmlinuz (100000 bytes)")
    });
}

#[test]
fn an_installed_node_boots_its_disk_until_a_reinstall_is_asked() {
    let (pair, _dir, daemon) = lab();
    let script = |from| {
        String::from_utf8(get(&pair, from, &format!("{BASE}/boot.ipxe?arch=x86_64&platform=pcbios"), &[]).1)
            .expect("utf-8")
    };
    assert!(
        script("10.1.107.20")
            .contains("kernel http://10.1.107.1:8080/images/vmlinuz ds=nocloud;s=http://10.1.107.1:8080/nocloud/w0/")
    );
    assert!(
        script("10.1.107.21").contains("coreos.inst.ignition_url=http://10.1.107.1:8080/ignition"),
        "w1 gets fcos by cluster and role"
    );
    assert!(script("10.1.107.99").contains("no profile for 10.1.107.99"));
    let probe = String::from_utf8(get(&pair, "10.1.107.20", &format!("{BASE}/boot.ipxe"), &[]).1).expect("utf-8");
    assert!(probe.contains("boot.ipxe?arch=${buildarch:uristring}"), "{probe}");

    let (status, _) = get(&pair, "10.1.107.20", &format!("{BASE}/phone-home"), &["-X", "POST", "-d", "instance_id=x"]);
    assert_eq!(status, 204);
    assert!(script("10.1.107.20").contains("is installed; booting from its disk"));
    let (status, _) = get(&pair, "10.1.107.99", &format!("{BASE}/phone-home"), &["-X", "POST"]);
    assert_eq!(status, 404, "an unknown machine cannot phone home");

    let (ok, out, err) = support::cli_in(Some(&pair.srv), &daemon, &["reinstall", "w0"]);
    assert!(ok, "{out}{err}");
    assert!(
        script("10.1.107.20").contains("kernel http://10.1.107.1:8080/images/vmlinuz"),
        "reinstalls after the request"
    );
    // Events reach the log's file in batches: poll briefly.
    support::eventually(
        "the timeline shows script, phone-home and reinstall",
        std::time::Duration::from_secs(5),
        || {
            let (ok, out, _) = support::cli_in(Some(&pair.srv), &daemon, &["get", "timeline", "w0"]);
            ok && ["script", "phone-home", "reinstall"].iter().all(|step| out.contains(step))
        },
    );
}

#[test]
fn an_unknown_machine_boots_the_default_profile_only_when_it_needs_no_node() {
    let script = |pair: &Pair| {
        String::from_utf8(get(pair, "10.1.107.99", &format!("{BASE}/boot.ipxe?arch=x86_64&platform=pcbios"), &[]).1)
            .expect("utf-8")
    };
    let live = |config: Config| config.profile("live", "vmlinuz").value("match", "{}");
    let args = ["ip=dhcp", "url={{server}}/images/live.iso"];
    let (pair, _dir, _daemon) = lab_with("u", |config| live(config).list("args", args));
    let text = script(&pair);
    assert!(
        text.contains(
            "kernel http://10.1.107.1:8080/images/vmlinuz ip=dhcp url=http://10.1.107.1:8080/images/live.iso"
        ),
        "{text}"
    );
    drop(pair);
    // A default profile that needs the node's own config cannot boot a stranger: it is told so
    // on its console instead of booting with an empty `ds=nocloud;s=`.
    let (pair, _dir, _daemon) = lab_with("v", |config| {
        live(config).list("args", [args[0], args[1], "ds=nocloud;s={{config_url}}"]).set("config", "cloud-init")
    });
    let text = script(&pair);
    assert!(!text.contains("kernel ") && !text.contains("ds=nocloud;s="), "{text}");
    assert!(
        text.contains("10.1.107.99 is not a node, and profile live needs one ({{config_url}}); add it as a node"),
        "{text}"
    );
}

/// `curl` against the admin API inside the server namespace: (status, body).
pub fn admin(pair: &Pair, daemon: &support::Daemon, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pair.srv,
            "curl",
            "-s",
            "-X",
            method,
            "--data-binary",
            "@-",
            "-w",
            "\n%{http_code}",
            "-H",
        ])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .arg(daemon.url(path))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    child.stdin.take().expect("stdin").write_all(body).expect("body");
    let out = child.wait_with_output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn okd_ignition_uploads_are_checked_stored_privately_and_served_to_their_role() {
    let (pair, dir, daemon) = lab();
    let master = br#"{"ignition":{"version":"3.2.0","config":{"merge":[{"source":"https://api-int.okd.lab.example:22623/config/master"}]}},"storage":{"files":[{"path":"/etc/okd-token","mode":384,"contents":{"source":"data:,OKD-SECRET"}}]}}"#;

    let (status, body) = admin(
        &pair,
        &daemon,
        "PUT",
        "/api/v1/clusters/okd/ignition/master",
        b"{\"ignition\": {\"version\": \"3.2.0\"}, \"storage\": {\"files\": \"OKD-SECRET\"}}",
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("not a valid Ignition config") && body.contains("line 1") && !body.contains("OKD-SECRET"),
        "{body}"
    );
    let (status, body) = admin(&pair, &daemon, "PUT", "/api/v1/clusters/okd/ignition/etcd", master);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("etcd"), "{body}");
    let (status, body) = admin(&pair, &daemon, "PUT", "/api/v1/clusters/prod/ignition/master", master);
    assert_eq!(status, 409, "a k3s cluster takes no uploads: {body}");
    let stored = dir.path().join("state/ignition/okd/master.ign");
    assert!(!stored.exists(), "nothing stored after refusals");

    let (status, body) = admin(&pair, &daemon, "PUT", "/api/v1/clusters/okd/ignition/master", master);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"version\":\"3.2.0\""), "{body}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&stored).expect("stored").permissions().mode() & 0o777, 0o600);

    let (status, served) = get(&pair, "10.1.107.30", &format!("{BASE}/ignition"), &[]);
    assert_eq!(status, 200);
    let served = String::from_utf8(served).expect("utf-8");
    assert!(
        served.contains("OKD-SECRET") && served.contains("api-int.okd.lab.example:22623"),
        "the upload is the base: {served}"
    );
    assert!(
        served.contains("data:,m0") && served.contains("slipway-phone-home.service"),
        "slipway's fragment is merged: {served}"
    );
    crate::validate::ignition("m0's Ignition", served.as_bytes());
    let (status, body) = get(&pair, "10.1.107.21", &format!("{BASE}/ignition"), &[]);
    assert_eq!(status, 200);
    crate::validate::ignition("w1's Ignition", &body);

    // A day-old upload is still served, with a warning event.
    let out = Command::new("touch").args(["-d", "25 hours ago"]).arg(&stored).output().expect("touch");
    assert!(out.status.success());
    let (status, _) = get(&pair, "10.1.107.30", &format!("{BASE}/ignition"), &[]);
    assert_eq!(status, 200);
    support::eventually("an ignition_stale event", std::time::Duration::from_secs(5), || {
        let (_, events) = admin(&pair, &daemon, "GET", "/api/v1/events?type=ignition_stale", b"");
        events.contains("\"age_hours\":25") && events.contains("\"role\":\"master\"")
    });
}
