use super::*;

const EXAMPLE: &str = include_str!("../../examples/slipway.toml");

fn errors(text: &str) -> Vec<ConfigError> {
    parse(text, Path::new("/etc/slipway/slipway.toml")).expect_err("invalid config").0
}

/// The example config with `from` replaced by `to` (which must occur).
fn example_with(from: &str, to: &str) -> String {
    assert!(EXAMPLE.contains(from), "{from}");
    EXAMPLE.replacen(from, to, 1)
}

/// The line of `needle`; `needle` may end in `#N` to pick its N-th occurrence (1-based).
fn line_of(text: &str, needle: &str) -> usize {
    let (needle, nth) = match needle.rsplit_once('#') {
        Some((n, k)) if k.parse::<usize>().is_ok() => (n, k.parse().unwrap_or(1)),
        _ => (needle, 1),
    };
    text.lines().enumerate().filter(|(_, l)| l.contains(needle)).nth(nth - 1).expect("needle").0 + 1
}

/// Asserts a single error on `field` showing `value`, on the line holding `needle`.
fn assert_error(text: &str, field: &str, value: &str, needle: &str) -> ConfigError {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = errs.into_iter().next().expect("one");
    assert_eq!(e.field, field, "{e}");
    assert_eq!(e.line, Some(line_of(text, needle)), "{e}");
    let shown = e.to_string();
    assert!(shown.starts_with(&format!("/etc/slipway/slipway.toml:{}: {field}", line_of(text, needle))), "{shown}");
    assert!(shown.contains(value), "{shown}");
    e
}

#[test]
fn the_example_config_is_valid() {
    let config = parse(EXAMPLE, Path::new("/etc/slipway/slipway.toml")).expect("valid");
    assert_eq!(config.inventory.nodes.len(), 2);
    assert!(config.inventory.nodes.values().all(|n| n.origin == Origin::Config));
    assert_eq!(config.admin.token, TokenSource::Default);
    assert_eq!(config.events.max_age, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(
        config.inventory.node_by_mac("52:54:00:6b:00:10".parse().expect("mac")).map(|n| n.name.as_str()),
        Some("master-0")
    );
}

#[test]
fn an_empty_file_gives_built_in_defaults() {
    let config = parse("", Path::new("/etc/slipway/slipway.toml")).expect("valid");
    assert_eq!(config.state_dir, Path::new(DEFAULT_STATE_DIR));
    assert_eq!(config.admin.listen.to_string(), DEFAULT_ADMIN_LISTEN);
}

#[test]
fn an_unknown_field_names_the_field_and_line() {
    let text = example_with("lease_time = \"1h\"", "lease_time = \"1h\"\nleese = 3");
    let e = assert_error(&text, "networks[0].leese", "unknown field `leese`", "leese");
    assert!(e.message.contains("expected one of"), "{e}");
}

#[test]
fn a_malformed_mac_names_the_field_the_line_and_the_value() {
    let text = example_with("52:54:00:6b:00:10", "52:54:00:6b:00:1z");
    assert_error(&text, "nodes[1].mac", "'52:54:00:6b:00:1z'", "00:1z");
}

#[test]
fn a_malformed_cidr_names_the_field() {
    let text = example_with("10.1.107.0/24", "10.1.107.0/33");
    assert_error(&text, "networks[0].cidr", "networks[0].cidr", "/33");
}

#[test]
fn a_bad_duration_names_the_field_and_value() {
    let text = example_with("lease_time = \"1h\"", "lease_time = \"soon\"");
    assert_error(&text, "networks[0].lease_time", "'soon'", "soon");
}

#[test]
fn a_duplicate_mac_is_reported_on_the_second_node() {
    let text = example_with("52:54:00:6b:00:10", "52:54:00:6b:00:01");
    let e = assert_error(&text, "nodes[1].mac", "52:54:00:6b:00:01", "mac = \"52:54:00:6b:00:01\"#2");
    assert!(e.message.contains("already used by node bootstrap"), "{e}");
}

#[test]
fn a_clash_names_the_node_declared_later_whatever_the_names_sort() {
    let text =
        example_with("52:54:00:6b:00:10", "52:54:00:6b:00:01").replace("name = \"master-0\"", "name = \"aa-master\"");
    let e = assert_error(&text, "nodes[1].mac", "52:54:00:6b:00:01", "mac = \"52:54:00:6b:00:01\"#2");
    assert!(e.message.contains("node aa-master: already used by node bootstrap"), "{e}");
}

#[test]
fn a_duplicate_ip_is_reported() {
    let text = example_with("ipv4 = \"10.1.107.11\"", "ipv4 = \"10.1.107.10\"");
    let errs = errors(&text);
    assert!(errs.iter().any(|e| e.field == "nodes[0].ipv4" || e.field == "nodes[1].ipv4"), "{errs:#?}");
}

#[test]
fn an_address_outside_the_network_is_reported() {
    let text = example_with("ipv4 = \"10.1.107.11\"", "ipv4 = \"10.2.0.11\"");
    assert_error(&text, "nodes[1].ipv4", "10.2.0.11", "10.2.0.11");
}

#[test]
fn a_reserved_address_in_the_pool_is_reported() {
    let text = example_with("ipv4 = \"10.1.107.11\"", "ipv4 = \"10.1.107.150\"");
    let e = assert_error(&text, "nodes[1].ipv4", "10.1.107.150", "10.1.107.150");
    assert!(e.message.contains("dynamic pool"), "{e}");
}

#[test]
fn overlapping_ranges_are_reported() {
    let text = example_with("start = \"10.1.107.100\"", "start = \"10.1.107.90\"");
    assert_error(&text, "networks[0].pool", "10.1.107.90-10.1.107.199", "pool = ");
}

#[test]
fn unknown_references_are_reported() {
    let text = example_with("network = \"cluster\"", "network = \"nowhere\"");
    let errs = errors(&text);
    assert!(
        errs.iter().any(|e| e.field == "clusters[0].network" && e.value.as_deref() == Some("nowhere")),
        "{errs:#?}"
    );
}

#[test]
fn every_error_is_listed_in_file_order() {
    let text = example_with("ipv4 = \"10.1.107.11\"", "ipv4 = \"10.1.107.150\"")
        .replacen("port = 6443", "port = 0", 1)
        .replacen("pool = \"api\"", "pool = \"apii\"", 1);
    let errs = errors(&text);
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["nodes[1].ipv4", "lb.pools[0].port", "lb.frontends[0].pool"], "{errs:#?}");
}

#[test]
fn duplicate_names_are_reported() {
    let text = example_with("name = \"master-0\"", "name = \"bootstrap\"");
    let errs = errors(&text);
    assert!(errs.iter().any(|e| e.field == "nodes[1].name" && e.message.contains("another node")), "{errs:#?}");
}

#[test]
fn tls_needs_both_files_and_they_must_exist() {
    let text = example_with("# tls_cert = \"/etc/slipway/tls/cert.pem\"", "tls_cert = \"/nonexistent/cert.pem\"");
    assert_error(&text, "admin.tls_cert", "tls_cert needs tls_key", "tls_cert =");
    let text = text.replacen("# tls_key = \"/etc/slipway/tls/key.pem\"", "tls_key = \"/nonexistent/key.pem\"", 1);
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].to_string().contains("admin.tls_cert = /nonexistent/cert.pem: cannot read"), "{}", errs[0]);
}

#[test]
fn token_file_and_credential_are_exclusive() {
    let text = example_with(
        "# token_file = \"/etc/slipway/admin.token\"   # or token_credential = \"admin-token\" (systemd)",
        "token_file = \"t\"\ntoken_credential = \"c\"",
    );
    assert_error(&text, "admin.token_credential", "not both", "token_credential");
}

#[test]
fn colliding_listeners_are_reported() {
    let text = format!("{EXAMPLE}\n[http]\nlisten = \"127.0.0.1:9443\"\n");
    assert_error(&text, "http.listen", "already used by admin.listen", "listen = \"127.0.0.1:9443\"#2");
}

#[test]
fn dhcp_interfaces_must_belong_to_a_network() {
    let text = format!("{EXAMPLE}\n[dhcp]\ninterfaces = [\"eth0\"]\n");
    assert_error(&text, "dhcp.interfaces[0]", "eth0", "interfaces = [\"eth0\"]");
}

#[test]
fn a_pool_needs_exactly_one_backend_source() {
    let text = example_with("port = 6443", "port = 6443\nbackends = [\"10.1.107.11:6443\"]");
    assert_error(&text, "lb.pools[0].backends", "not both", "backends =");
}

#[test]
fn a_toml_syntax_error_gives_the_line() {
    let errs = errors("[admin\nlisten = 1");
    assert_eq!(errs[0].line, Some(1), "{errs:#?}");
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let config =
        parse("state_dir = \"state\"\n[admin]\ntoken_file = \"token\"\n", Path::new("/etc/slipway/slipway.toml"))
            .expect("valid");
    assert_eq!(config.state_dir, Path::new("/etc/slipway/state"));
    assert_eq!(config.admin.token, TokenSource::File("/etc/slipway/token".into()));
}

/// The example with a local QEMU hypervisor and a k3s cluster defined for slipway to make.
fn with_definition(group: &str) -> String {
    format!(
        r#"{EXAMPLE}
[[hypervisors]]
name = "local"
kind = "qemu"
bridge = "br0"

[[cluster_definitions]]
name = "edge"
kind = "k3s"
base_domain = "lab.example"
network = "cluster"
api_address = "10.1.107.2"
api_int_address = "10.1.107.2"
ingress_address = "10.1.107.2"
hypervisor = "local"

[[cluster_definitions.node_groups]]
{group}
"#
    )
}

const SERVERS: &str = "name = \"server\"\nrole = \"control-plane\"\ncount = 3\nmemory = \"2GiB\"";

#[test]
fn a_cluster_definition_in_the_file_is_read_whole() {
    let config = parse(&with_definition(SERVERS), Path::new("/etc/slipway/slipway.toml")).expect("valid");
    assert_eq!(config.definitions.len(), 1);
    let def = &config.definitions[0];
    assert_eq!((def.name.as_str(), def.node_groups[0].count), ("edge", 3));
    assert_eq!(def.node_groups[0].memory.map(|m| m.mib), Some(2048));
    assert!(!config.inventory.clusters.contains_key(&def.name), "made by the engine, not declared as an object");
}

#[test]
fn a_bad_cluster_definition_names_its_field_and_line() {
    // Every problem at once: the count, and the control plane it leaves empty.
    let text = with_definition(&SERVERS.replace("count = 3", "count = 0"));
    let found: Vec<(String, Option<usize>)> = errors(&text).into_iter().map(|e| (e.to_string(), e.line)).collect();
    let count = found.iter().find(|(e, _)| e.contains("cluster_definitions[0].node_groups[0].count"));
    assert_eq!(count.and_then(|(_, line)| *line), Some(line_of(&text, "count = 0")), "{found:#?}");
    assert!(
        found.iter().any(|(e, _)| e.contains("cluster_definitions[0].node_groups") && e.contains("no control-plane"))
    );
    let text = with_definition(&SERVERS.replace("count = 3", "count = 3\ncolour = \"blue\""));
    assert_error(&text, "cluster_definitions[0].node_groups[0].colour", "unknown field `colour`", "colour");
    let text = with_definition(SERVERS).replace(
        "hypervisor = \"local\"\n\n[[cluster_definitions.node_groups]]",
        "hypervisor = \"pve\"\n\n[[cluster_definitions.node_groups]]",
    );
    assert_error(&text, "cluster_definitions[0].hypervisor", "pve", "hypervisor = \"pve\"");
    let text = with_definition(SERVERS).replace("name = \"edge\"", "name = \"prod\"");
    assert_error(&text, "cluster_definitions[0].name", "a [[clusters]] entry has this name", "name = \"prod\"#2");
}

#[test]
fn two_cluster_definitions_that_claim_one_machine_clash_in_the_check() {
    let second = with_definition(SERVERS)
        + r#"
[[cluster_definitions]]
name = "edge2"
kind = "k3s"
base_domain = "lab.example"
network = "cluster"
api_address = "10.1.107.3"
api_int_address = "10.1.107.3"
ingress_address = "10.1.107.3"
nodes = [{ name = "server-0", role = "control-plane", mac = "52:54:00:aa:00:01" }]
"#;
    let found: Vec<String> = errors(&second).iter().map(ToString::to_string).collect();
    assert!(
        found.iter().any(
            |e| e.contains("cluster_definitions[1].nodes[0].name = server-0: a node of cluster edge has this name")
        ),
        "{found:#?}"
    );
}

#[test]
fn a_proxmox_entry_takes_several_urls_and_fingerprints() {
    let (a, b) = ("AB:".repeat(31) + "CD", "12:".repeat(31) + "34");
    let text = format!(
        "{EXAMPLE}\n[[hypervisors]]\nname = \"pve\"\nkind = \"proxmox\"\nurl = [\"https://pve1:8006\", \"https://pve2:8006\"]\n\
         token_id = \"slipway@pve!provision\"\ntoken_credential = \"pve-token\"\nfingerprint = [\"{a}\", \"{b}\"]\n"
    );
    let config = parse(&text, Path::new("/etc/slipway/slipway.toml")).expect("valid");
    let Backend::Proxmox(p) = &config.hypervisors[0].backend else { panic!("a Proxmox entry") };
    assert_eq!(p.urls, ["https://pve1:8006", "https://pve2:8006"]);
    assert!(matches!(&p.trust, crate::hypervisor::proxmox::Trust::Fingerprints(pins) if pins.len() == 2));
    let bad = text.replace("\"https://pve2:8006\"", "\"http://pve2:8006\"");
    assert_error(&bad, "hypervisors[0].url", "http://pve2:8006", "url = [");
}

#[test]
fn connection_limits_are_at_least_one_and_the_per_address_one_at_most_the_total() {
    let config = parse(EXAMPLE, Path::new("/etc/slipway/slipway.toml")).expect("valid");
    assert_eq!(config.admin.limits, crate::listen::Limits::default());
    let text = example_with("listen = \"127.0.0.1:9443\"", "listen = \"127.0.0.1:9443\"\nmax_connections = 0");
    assert_error(&text, "admin.max_connections", "must be at least 1", "max_connections");
    let text = example_with(
        "listen = \"127.0.0.1:9443\"",
        "listen = \"127.0.0.1:9443\"\nmax_connections = 100\nmax_connections_per_address = 200",
    );
    assert_error(&text, "admin.max_connections_per_address", "more than max_connections (100)", "per_address");
    // A total under the default per-address limit lowers that one with it.
    let text = example_with("listen = \"127.0.0.1:9443\"", "listen = \"127.0.0.1:9443\"\nmax_connections = 10");
    let config = parse(&text, Path::new("/etc/slipway/slipway.toml")).expect("valid");
    assert_eq!(config.admin.limits, crate::listen::Limits { total: 10, per_address: 10 });
}

#[test]
fn the_etcd_store_is_read_with_defaults_and_paths_beside_the_file() {
    let text = "[store]\nbackend = \"etcd\"\nendpoints = [\"https://10.0.0.5:2379\", \"https://10.0.0.6:2379/\"]\n\
                ca = \"etcd/ca.pem\"\ncert = \"/etc/etcd/client.pem\"\nkey = \"/etc/etcd/client-key.pem\"\n\
                instance = \"slipway-a\"\n";
    let config = parse(text, Path::new("/etc/slipway/slipway.toml")).expect("valid");
    let shared = config.shared.expect("etcd");
    assert_eq!(shared.etcd.ca, Path::new("/etc/slipway/etcd/ca.pem"));
    assert_eq!(shared.etcd.endpoints.len(), 2);
    assert_eq!((shared.prefix.as_str(), shared.instance.as_str()), ("/slipway/", "slipway-a"));
    assert_eq!(shared.lease_ttl, store::DEFAULT_LEASE_TTL);
    assert!(parse("", Path::new("/x.toml")).expect("valid").shared.is_none(), "the embedded store by default");
}

#[test]
fn bad_etcd_settings_each_name_their_field() {
    let base = "[store]\nbackend = \"etcd\"\nendpoints = [\"https://10.0.0.5:2379\"]\nca = \"/ca\"\ncert = \"/c\"\nkey = \"/k\"\n";
    assert_error(&format!("{base}prefix = \"slipway\"\n"), "store.prefix", "slipway", "prefix");
    assert_error(&format!("{base}lease_ttl = \"1s\"\n"), "store.lease_ttl", "1s", "lease_ttl");
    assert_error(&format!("{base}instance = \"a b\"\n"), "store.instance", "a b", "instance");
    assert_error(&format!("{base}timeout = \"10s\"\n"), "store.timeout", "must be shorter than lease_ttl", "timeout");
    let plain = base.replace("https://10.0.0.5:2379", "http://10.0.0.5:2379");
    assert_error(&plain, "store.endpoints[0]", "http://10.0.0.5:2379", "endpoints");
    let no_key = base.replace("key = \"/k\"\n", "");
    assert_error(&no_key, "store.key", "needs it", "[store]");
    assert_error("[store]\nbackend = \"consul\"\n", "store.backend", "consul", "backend");
    assert_error(
        "[store]\nendpoints = [\"https://10.0.0.5:2379\"]\n",
        "store.endpoints",
        "only means something",
        "endpoints",
    );
}

#[test]
fn a_dhcp_server_address_must_be_a_host_of_a_served_network_one_per_network() {
    let base = "[dhcp]\ninterfaces = [\"eth1\"]\n{}\n[[networks]]\nname = \"cluster\"\ninterface = \"eth1\"\ncidr = \"10.1.107.0/24\"\n";
    let with = |line: &str| base.replace("{}", line);
    let config = parse(&with("server_addresses = [\"10.1.107.2\"]"), Path::new("/etc/slipway/slipway.toml"));
    let addresses = config.expect("valid").dhcp.expect("dhcp").server_addresses;
    assert_eq!(addresses, ["10.1.107.2".parse::<std::net::Ipv4Addr>().expect("ip")]);
    assert_error(
        &with("server_addresses = [\"10.9.0.2\"]"),
        "dhcp.server_addresses[0]",
        "10.9.0.2",
        "server_addresses",
    );
    assert_error(
        &with("server_addresses = [\"10.1.107.255\"]"),
        "dhcp.server_addresses[0]",
        "broadcast",
        "server_addresses",
    );
    let two = with("server_addresses = [\"10.1.107.2\", \"10.1.107.3\"]");
    assert_error(&two, "dhcp.server_addresses[1]", "has a server address already (10.1.107.2)", "server_addresses");
}
