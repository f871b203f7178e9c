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
    assert_eq!(said.lines().filter(|l| l.starts_with("ok: ")).count(), 11, "{said}");
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
