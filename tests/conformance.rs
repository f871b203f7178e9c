//! What a running slipway emits, fed to the validators its users' tools are built on; any
//! finding fails the test. OpenAPI: `openapi-spec-validator` on the served document, and a
//! Python client generated from it by `openapi-python-client` drives the daemon (every answer
//! parsed, an undocumented status raises). Prometheus: `promtool check metrics` on `/metrics`
//! after traffic on every service. DNS zones: the zone-file export passes `named-checkzone`
//! and every record in it answers the same over dig. DHCP on the wire: `tshark` decodes every
//! reply slipway sent with no malformed packet and no expert warning.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{self, Config, Daemon, TOKEN};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The PyPI validators' virtualenv (scripts/validator-kit makes it once).
fn validators() -> PathBuf {
    let dir = Path::new(ROOT).join("target/validators");
    let out = Command::new(Path::new(ROOT).join("scripts/validator-kit")).arg(&dir).output().expect("validator-kit");
    assert!(out.status.success(), "scripts/validator-kit failed: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn text_of(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// GET `path` from the admin API with the token.
fn get(daemon: &Daemon, path: &str) -> String {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let response = support::http().get(daemon.url(path)).bearer_auth(TOKEN).send().await.expect("GET");
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.text().await.expect("body")
    })
}

#[test]
fn the_openapi_document_validates_and_a_client_generated_from_it_drives_the_daemon() {
    let venv = validators();
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = support::start(&Config::prod(dir.path()).write(), &[]);
    let document = dir.path().join("openapi.json");
    std::fs::write(&document, get(&daemon, "/api/v1/openapi.json")).expect("write the document");

    let out = Command::new(venv.join("bin/openapi-spec-validator")).arg(&document).output().expect("validator");
    assert!(out.status.success(), "openapi-spec-validator:\n{}", text_of(&out));

    let fixtures = Path::new(ROOT).join("tests/fixtures/openapi");
    let client = dir.path().join("slipway_client");
    let path = format!("{}:{}", venv.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new(venv.join("bin/openapi-python-client"))
        .args(["generate", "--meta", "none", "--path"])
        .arg(&document)
        .arg("--output-path")
        .arg(&client)
        .arg("--config")
        .arg(fixtures.join("generator.yml"))
        .env("PATH", &path)
        .output()
        .expect("openapi-python-client");
    let said = text_of(&out);
    assert!(out.status.success(), "openapi-python-client generate:\n{said}");
    assert!(!said.to_lowercase().contains("warning"), "the generator left parts out:\n{said}");

    let out =
        Command::new(venv.join("bin/python")).args(["-m", "compileall", "-q"]).arg(&client).output().expect("python");
    assert!(out.status.success(), "the generated client does not compile:\n{}", text_of(&out));
    let out = Command::new(venv.join("bin/python"))
        .arg(fixtures.join("round_trip.py"))
        .arg(format!("http://{}", daemon.addr))
        .arg(dir.path().join("token"))
        .env("PYTHONPATH", dir.path())
        .output()
        .expect("python");
    let said = text_of(&out);
    assert!(out.status.success(), "the generated client's round trip:\n{said}");
    assert_eq!(said.lines().filter(|l| l.starts_with("ok: ")).count(), 15, "{said}");
}

/// The records of a zone file, `(owner, type)` -> sorted values, from `name ttl IN type value`
/// lines (dig's `+noall +answer` lines have the same shape).
fn records(text: &str) -> std::collections::BTreeMap<(String, String), Vec<String>> {
    let mut out: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    for line in text.lines().filter(|l| !l.starts_with([';', '$']) && !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() >= 5 && fields[2] == "IN", "not a record line: {line}");
        out.entry((fields[0].to_lowercase(), fields[3].to_owned())).or_default().push(fields[4..].join(" "));
    }
    for values in out.values_mut() {
        values.sort();
    }
    out
}

#[test]
fn every_zone_exports_to_a_file_named_checkzone_accepts_and_each_record_answers_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = "127.53.2.1";
    let config = Config::prod(dir.path())
        .node("worker-0", "52:54:00:6b:00:20", "10.2.0.21")
        .member("prod", "worker")
        .section("[dns]")
        .list("listen", [format!("{server}:53")])
        .raw(concat!(
            "records = [\n",
            "  { name = \"registry.lab.example\", type = \"A\", value = \"10.2.1.5\" },\n",
            "  { name = \"registry.lab.example\", type = \"AAAA\", value = \"fd00::5\" },\n",
            "  { name = \"www.lab.example\", type = \"CNAME\", value = \"registry.lab.example\" },\n",
            "  { name = \"_etcd-server-ssl._tcp.lab.example\", type = \"SRV\", value = \"0 10 2380 registry.lab.example\" },\n",
            "  { name = \"lab.example\", type = \"TXT\", value = \"v=spf1 -all; say \\\"hi\\\" caf\u{e9}\" },\n",
            "]\n",
        ));
    let daemon = support::start(&config.write(), &[]);
    let (ok, listed, err) = support::cli(&daemon, &["get", "dns", "-o", "json"]);
    assert!(ok, "get dns: {err}");
    let zones: Vec<serde_json::Value> = serde_json::from_str(&listed).expect("json");
    let names: Vec<&str> = zones.iter().filter_map(|z| z["zone"].as_str()).collect();
    assert!(names.contains(&"prod.lab.example") && names.contains(&"lab.example"), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".in-addr.arpa")), "a reverse zone: {names:?}");

    let (ok, _, err) = support::cli(&daemon, &["get", "nodes", "-o", "zone"]);
    assert!(!ok && err.contains("-o zone: only `get dns`"), "{err}");

    let mut checked = 0;
    for zone in names {
        let (ok, text, err) = support::cli(&daemon, &["get", "dns", zone, "-o", "zone"]);
        assert!(ok, "get dns {zone} -o zone: {err}");
        let file = dir.path().join(format!("{zone}.zone"));
        std::fs::write(&file, &text).expect("zone file");
        // Every check named-checkzone has, failing rather than warning.
        let out = Command::new("named-checkzone")
            .args(["-i", "full", "-k", "fail", "-n", "fail", "-m", "fail", "-M", "fail", "-S", "fail", "-r", "fail"])
            .args(["-T", "warn", "-W", "warn", zone])
            .arg(&file)
            .output()
            .expect("named-checkzone must be installed (bind9-utils)");
        let said = text_of(&out);
        assert!(out.status.success() && said.contains("OK"), "named-checkzone {zone}:\n{said}\n{text}");
        assert!(!said.to_lowercase().contains("warning"), "named-checkzone {zone} warns:\n{said}\n{text}");

        // Each record set of the file, asked for over DNS, is answered with exactly that set.
        for ((owner, rtype), values) in records(&text) {
            let out = Command::new("dig")
                .args([&format!("@{server}"), "+time=2", "+tries=1", "+norec", "+noall", "+answer", &owner, &rtype])
                .output()
                .expect("dig");
            let answered = records(&String::from_utf8_lossy(&out.stdout));
            let got = answered.get(&(owner.clone(), rtype.clone())).cloned().unwrap_or_default();
            assert_eq!(got, values, "{owner} {rtype}: dig and the export differ");
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} record sets compared");
}

/// Runs `program` in network namespace `ns`, bounded by `timeout`.
fn in_ns(ns: &str, program: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["20", "ip", "netns", "exec", ns, program])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// A daemon serving every service on the provisioning side (`srv0`, 10.1.107.1): DHCP with
/// reservations and a pool, DNS (forwarding to an upstream that does not answer), TFTP, HTTP
/// boot, a load-balanced frontend (8443, onto the
/// HTTP boot port) and the admin API.
fn every_service(dir: &Path, pair: &crate::netns::Pair) -> Daemon {
    let config = Config::new(dir)
        .section("[dhcp]")
        .list("interfaces", ["srv0"])
        .cluster("prod", "okd", "lab", "192.0.2.10", "10.1.107.1")
        .node("master-0", "52:54:00:6b:00:10", "10.1.107.11")
        .member("prod", "control-plane")
        .section("[dns]")
        .list("listen", ["10.1.107.1:53"])
        // Nothing answers there (loopback in the server's namespace): forwarding fails, counted.
        .list("upstream", ["127.0.0.1:5399"])
        .section("[tftp]")
        .set("listen", "10.1.107.1:69")
        .section("[http]")
        .set("listen", "10.1.107.1:8080")
        .pool("web")
        .list("backends", ["10.1.107.1:8080"])
        .frontend("web", "10.1.107.1:8443", "web")
        .network("lab", "srv0", "10.1.107.0/24")
        .set("gateway", "10.1.107.1")
        .list("dns_servers", ["10.1.107.1"])
        .set("domain", "lab.example")
        .value("static_range", r#"{ start = "10.1.107.10", end = "10.1.107.99" }"#)
        .value("pool", r#"{ start = "10.1.107.100", end = "10.1.107.150" }"#)
        .set("lease_time", "1h");
    support::start_in(Some(&pair.srv), &config.write(), &[])
}

/// DHCP as people's machines speak it, captured where slipway sends from (`srv0`; the client
/// side's interface goes down and up as it takes each machine's MAC): udhcpc for a reserved
/// node, dhclient and dhcpcd from the pool, a PXE firmware's DISCOVER, and perfdhcp as a relay.
fn dhcp_traffic(pair: &crate::netns::Pair, dir: &Path) -> PathBuf {
    use crate::dhcp::{exchange, hook, pxe_message, relay_exchanges};
    use std::io::BufRead;
    let pcap = dir.join("dhcp.pcap");
    let mut tcpdump = Command::new("ip")
        .args(["netns", "exec", &pair.srv, "tcpdump", "-i", "srv0", "-n", "-U", "-w"])
        .arg(&pcap)
        .args(["udp", "port", "67", "or", "udp", "port", "68"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpdump must be installed");
    let mut line = String::new();
    let _ = std::io::BufReader::new(tcpdump.stderr.take().expect("stderr")).read_line(&mut line);
    assert!(line.contains("listening"), "tcpdump: {line}");

    pair.client_as("52:54:00:6b:00:10");
    let h = hook(dir, "udhcpc.sh", "true");
    let out = pair
        .cli_run("udhcpc", &["-i", "cli0", "-n", "-q", "-f", "-t", "5", "-T", "2", "-s", h.to_str().expect("utf-8")]);
    assert!(out.status.success(), "udhcpc: {}", String::from_utf8_lossy(&out.stderr));
    pair.client_as("52:54:00:c0:0f:01");
    let lease = dir.join("dhclient.leases");
    let pid = dir.join("dhclient.pid");
    let out = pair.cli_run(
        "dhclient",
        &[
            "-4",
            "-1",
            "-sf",
            "/bin/true",
            "-lf",
            lease.to_str().expect("utf-8"),
            "-pf",
            pid.to_str().expect("utf-8"),
            "cli0",
        ],
    );
    assert!(out.status.success(), "dhclient: {}", String::from_utf8_lossy(&out.stderr));
    pair.kill_clients();
    pair.client_as("52:54:00:c0:0f:02");
    let out = pair
        .cli_run("dhcpcd", &["-4", "-1", "-B", "-f", "/dev/null", "--noipv4ll", "-t", "20", "-c", "/bin/true", "cli0"]);
    assert!(out.status.success(), "dhcpcd: {}", String::from_utf8_lossy(&out.stderr));
    pair.kill_clients();
    pair.client_as("52:54:00:c0:0f:03");
    let discover =
        pxe_message(dhcproto::v4::MessageType::Discover, [0x52, 0x54, 0, 0xc0, 0x0f, 3], [0, 0, 0, 0].into(), true);
    let broadcast = std::net::SocketAddrV4::new(std::net::Ipv4Addr::BROADCAST, 67);
    let cli = pair.cli.clone();
    assert!(crate::netns::in_netns(&cli, move || exchange(discover, broadcast)).is_some(), "a PXE offer");
    pair.client_address("10.1.107.5/24");
    relay_exchanges(pair, 4, 40, 16);

    std::thread::sleep(std::time::Duration::from_millis(300));
    support::signal(&tcpdump, "INT");
    let _ = tcpdump.wait();
    pcap
}

/// Every PromQL query of a Grafana dashboard's panels.
fn dashboard_queries(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .flat_map(|(key, v)| match (key.as_str(), v) {
                ("expr", serde_json::Value::String(e)) => vec![e.clone()],
                _ => dashboard_queries(v),
            })
            .collect(),
        serde_json::Value::Array(items) => items.iter().flat_map(dashboard_queries).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn after_traffic_on_every_service_promtool_passes_the_metrics_and_tshark_the_dhcp_replies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = crate::netns::Pair::new("k");
    let daemon = every_service(dir.path(), &pair);
    let pcap = dhcp_traffic(&pair, dir.path());

    // DNS, TFTP, HTTP boot and the load balancer, from the client side.
    let dig = in_ns(&pair.cli, "dig", &["@10.1.107.1", "+time=2", "+tries=1", "+short", "api-int.prod.lab.example"]);
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), "10.1.107.1", "dig");
    let _ = in_ns(&pair.cli, "dig", &["@10.1.107.1", "+time=2", "+tries=1", "nope.prod.lab.example"]);
    let _ = in_ns(&pair.cli, "dig", &["@10.1.107.1", "+time=2", "+tries=1", "elsewhere.example.org"]);
    let tftp = in_ns(&pair.cli, "tftp", &["10.1.107.1", "-m", "binary", "-c", "get", "undionly.kpxe", "/dev/null"]);
    let _ = tftp; // the file may not be installed: the request is the traffic
    for url in ["http://10.1.107.1:8080/boot.ipxe", "http://10.1.107.1:8443/boot.ipxe"] {
        let out = in_ns(&pair.cli, "curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", url]);
        assert!(!String::from_utf8_lossy(&out.stdout).starts_with('0'), "{url}: no HTTP answer");
    }
    let out = in_ns(
        &pair.srv,
        "curl",
        &[
            "-sf",
            "--max-time",
            "10",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            &format!("http://{}/api/v1/leases", daemon.addr),
        ],
    );
    assert!(out.status.success(), "the admin API");

    let out = in_ns(&pair.srv, "curl", &["-sf", "--max-time", "10", &format!("http://{}/metrics", daemon.addr)]);
    assert!(out.status.success(), "GET /metrics");
    let metrics = String::from_utf8_lossy(&out.stdout).into_owned();
    for family in [
        "slipway_dhcp_messages_total{",
        "slipway_dhcp_pool_used{",
        "slipway_dns_queries_total{",
        "slipway_lb_connections_total{",
        "slipway_lb_backend_up{",
        "slipway_api_requests_total{",
        "slipway_inventory_version ",
        "slipway_events_dropped_total ",
        "slipway_store_errors_total{",
    ] {
        assert!(metrics.contains(family), "{family} is not in /metrics:\n{metrics}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be installed (prometheus)");
    std::io::Write::write_all(&mut promtool.stdin.take().expect("stdin"), metrics.as_bytes()).expect("feed promtool");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && text_of(&out).trim().is_empty(),
        "promtool check metrics:\n{}\n{metrics}",
        text_of(&out)
    );
    // The alerting rules shipped in monitoring/ check, pass their own unit tests, and name
    // only series this daemon serves (a renamed metric would leave an alert that never fires).
    let monitoring = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring");
    for args in [["check", "rules", "slipway-rules.yml"], ["test", "rules", "slipway-rules.test.yml"]] {
        let out = Command::new("promtool").args(args).current_dir(&monitoring).output().expect("promtool");
        assert!(out.status.success(), "promtool {}:\n{}", args.join(" "), text_of(&out));
    }
    let rules = std::fs::read_to_string(monitoring.join("slipway-rules.yml")).expect("rules");
    // The Grafana dashboard's panel queries: each one PromQL promtool accepts (as a recording
    // rule, Grafana's variables filled in); it names only series this daemon serves, like the
    // rules.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(monitoring.join("slipway-dashboard.json")).expect("dashboard"))
            .expect("the dashboard is JSON");
    let exprs = dashboard_queries(&dashboard);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let recording: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let filled = e.replace("$__rate_interval", "5m").replace("$instance", ".*");
            serde_json::json!({ "record": format!("dashboard:query_{i}"), "expr": filled })
        })
        .collect();
    let checked = dir.path().join("dashboard-queries.yml");
    let doc = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": recording }] });
    std::fs::write(&checked, doc.to_string()).expect("write");
    let out = Command::new("promtool").args(["check", "rules"]).arg(&checked).output().expect("promtool");
    assert!(out.status.success(), "the dashboard's queries:\n{}", text_of(&out));
    // Its variables' queries (`label_values(...)`) too, for the series they name.
    let rules = format!("{rules}\n{dashboard}");
    let named: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("slipway_") && w.len() > "slipway_".len())
        .collect();
    assert!(named.len() >= 4, "{named:?}");
    // A family with no series now (no cluster node, no upload in this daemon) still has its
    // TYPE line.
    for name in named {
        let served = metrics.lines().any(|l| {
            (!l.starts_with('#') && l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
                || l.strip_prefix("# TYPE ").is_some_and(|t| t.split(' ').next() == Some(name))
        });
        assert!(served, "the rules name {name}, which /metrics does not serve:\n{metrics}");
    }

    // Every reply slipway sent decodes in Wireshark's dissector with no malformed packet and no
    // expert warning or error.
    let tshark = |filter: &str, extra: &[&str]| {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&pcap)
            .args(["-Y", filter])
            .args(extra)
            .output()
            .expect("tshark must be installed");
        assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let replies = tshark("dhcp && udp.srcport == 67", &["-T", "fields", "-e", "dhcp.option.dhcp"]);
    let kinds: Vec<&str> = replies.lines().collect();
    assert!(kinds.len() >= 20, "slipway's replies in the capture: {kinds:?}");
    assert!(kinds.contains(&"2") && kinds.contains(&"5"), "offers and acks: {kinds:?}");
    let flagged = tshark("udp.srcport == 67 && (_ws.malformed || _ws.expert.severity >= 6291456)", &["-V"]);
    assert!(flagged.trim().is_empty(), "tshark flags slipway's replies:\n{flagged}");
}
