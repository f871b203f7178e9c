use std::time::Duration;

use super::*;
use crate::inventory::lab::{lab, node};
use crate::inventory::{Action, ChangeError, Object, Op, Origin, Profile};

fn name(s: &str) -> crate::inventory::Name {
    s.parse().expect("test name")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test ip")
}

fn problems_after(change: impl FnOnce(&mut Inventory)) -> Vec<Problem> {
    let mut inv = lab();
    change(&mut inv);
    inv.reindex();
    validate(&inv)
}

/// Asserts exactly one problem, on `field` of `kind name`, showing `value`.
fn assert_one(problems: &[Problem], kind: Kind, obj: &str, field: &str, value: &str) {
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let p = &problems[0];
    assert_eq!((p.kind, p.name.as_str(), p.field.as_str(), p.value.as_str()), (kind, obj, field, value), "{p}");
    assert!(p.to_string().contains(field) && p.to_string().contains(value), "{p}");
}

#[test]
fn the_lab_inventory_is_valid() {
    assert_eq!(validate(&lab()), vec![]);
}

#[test]
fn duplicate_mac_names_both_nodes() {
    let p = problems_after(|inv| {
        inv.nodes.insert(name("w0"), node("w0", "52:54:00:00:00:02", "10.1.107.20", None, None));
    });
    assert_one(&p, Kind::Node, "w0", "mac", "52:54:00:00:00:02");
    assert!(p[0].message.contains("master-0"));
}

#[test]
fn duplicate_ip_is_refused() {
    let p = problems_after(|inv| {
        inv.nodes.insert(name("w0"), node("w0", "52:54:00:00:00:09", "10.1.107.11", None, None));
    });
    assert_one(&p, Kind::Node, "w0", "ipv4", "10.1.107.11");
}

#[test]
fn duplicate_hostname_in_one_domain_is_refused() {
    let p = problems_after(|inv| {
        let mut n = node("w0", "52:54:00:00:00:09", "10.1.107.20", Some("prod"), Some(Role::Worker));
        n.hostname = Some(name("master-0"));
        inv.nodes.insert(name("w0"), n);
    });
    assert_one(&p, Kind::Node, "w0", "hostname", "master-0");
    assert!(p[0].message.contains("master-0.prod.lab.example"), "{}", p[0]);
}

#[test]
fn address_outside_its_network_is_refused() {
    let p = problems_after(|inv| {
        inv.nodes.insert(name("w0"), node("w0", "52:54:00:00:00:09", "10.9.9.9", Some("prod"), Some(Role::Worker)));
    });
    assert_one(&p, Kind::Node, "w0", "ipv4", "10.9.9.9");
    assert!(p[0].message.contains("outside"));
}

#[test]
fn address_in_no_network_is_refused_for_a_plain_node() {
    let p = problems_after(|inv| {
        inv.nodes.insert(name("w0"), node("w0", "52:54:00:00:00:09", "172.16.0.5", None, None));
    });
    assert_one(&p, Kind::Node, "w0", "ipv4", "172.16.0.5");
}

#[test]
fn reserved_address_inside_the_dynamic_pool_is_refused() {
    let p = problems_after(|inv| {
        inv.nodes.insert(name("w0"), node("w0", "52:54:00:00:00:09", "10.1.107.150", None, None));
    });
    assert_one(&p, Kind::Node, "w0", "ipv4", "10.1.107.150");
    assert!(p[0].message.contains("dynamic pool"));
}

#[test]
fn reserved_address_outside_the_static_range_is_refused() {
    let p = problems_after(|inv| {
        inv.nodes.insert(name("w0"), node("w0", "52:54:00:00:00:09", "10.1.107.230", None, None));
    });
    assert_one(&p, Kind::Node, "w0", "ipv4", "10.1.107.230");
}

#[test]
fn broadcast_and_gateway_addresses_are_refused() {
    let p = problems_after(|inv| {
        if let Some(net) = inv.networks.get_mut("cluster") {
            net.static_range = None;
        }
        inv.nodes.insert(name("w0"), node("w0", "52:54:00:00:00:09", "10.1.107.255", None, None));
        inv.nodes.insert(name("w1"), node("w1", "52:54:00:00:00:0a", "10.1.107.1", None, None));
    });
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(p.iter().any(|p| p.name == "w0" && p.message.contains("broadcast")));
    assert!(p.iter().any(|p| p.name == "w1" && p.message.contains("gateway")));
}

#[test]
fn overlapping_pool_and_static_range_is_refused() {
    let p = problems_after(|inv| {
        if let Some(net) = inv.networks.get_mut("cluster") {
            net.pool = Some(AddrRange { start: ip("10.1.107.90"), end: ip("10.1.107.120") });
        }
    });
    assert_one(&p, Kind::Network, "cluster", "pool", "10.1.107.90-10.1.107.120");
}

#[test]
fn ranges_outside_the_cidr_or_reversed_are_refused() {
    let p = problems_after(|inv| {
        if let Some(net) = inv.networks.get_mut("cluster") {
            net.pool = Some(AddrRange { start: ip("10.1.107.200"), end: ip("10.1.108.10") });
            net.static_range = Some(AddrRange { start: ip("10.1.107.50"), end: ip("10.1.107.10") });
        }
        inv.nodes.clear();
    });
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(p.iter().any(|p| p.field == "pool" && p.message.contains("not inside")));
    assert!(p.iter().any(|p| p.field == "static_range" && p.message.contains("start is after end")));
}

#[test]
fn overlapping_networks_are_refused() {
    let p = problems_after(|inv| {
        let mut other = inv.networks["cluster"].clone();
        other.name = name("other");
        other.cidr = "10.1.0.0/16".parse().expect("cidr");
        other.static_range = None;
        other.pool = None;
        other.gateway = None;
        inv.networks.insert(other.name.clone(), other);
    });
    assert_eq!(p.iter().filter(|p| p.field == "cidr").count(), 1, "{p:#?}");
}

#[test]
fn unknown_references_are_refused() {
    let p = problems_after(|inv| {
        let mut n = node("w0", "52:54:00:00:00:09", "10.1.107.20", Some("nope"), Some(Role::Worker));
        n.profile = Some(name("missing"));
        inv.nodes.insert(name("w0"), n);
        if let Some(c) = inv.clusters.get_mut("prod") {
            c.network = name("elsewhere");
        }
    });
    let fields: Vec<(&str, &str)> = p.iter().map(|p| (p.field.as_str(), p.value.as_str())).collect();
    assert!(fields.contains(&("cluster", "nope")), "{p:#?}");
    assert!(fields.contains(&("profile", "missing")), "{p:#?}");
    assert!(fields.contains(&("network", "elsewhere")), "{p:#?}");
}

#[test]
fn second_bootstrap_node_in_a_cluster_is_refused() {
    let p = problems_after(|inv| {
        inv.nodes.insert(
            name("second-boot"),
            node("second-boot", "52:54:00:00:00:09", "10.1.107.20", Some("prod"), Some(Role::Bootstrap)),
        );
    });
    assert_one(&p, Kind::Node, "second-boot", "role", "bootstrap");
}

#[test]
fn profile_paths_must_stay_inside_the_images_directory() {
    let p = problems_after(|inv| {
        let prof = Profile {
            name: name("fcos"),
            kernel: "../etc/shadow".into(),
            initrds: vec!["/abs/initrd".into(), "https://mirror.example/initrd.img".into()],
            args: vec!["console=ttyS0".into(), "bad arg".into()],
            config: Default::default(),
            installs: false,
            selector: None,
            origin: Origin::Api,
        };
        inv.profiles.insert(prof.name.clone(), prof);
    });
    let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["kernel", "initrds", "args"], "{p:#?}");
}

#[test]
fn lease_time_must_fit_dhcp() {
    let p = problems_after(|inv| {
        if let Some(net) = inv.networks.get_mut("cluster") {
            net.lease_time = Duration::from_secs(5);
        }
    });
    assert_one(&p, Kind::Network, "cluster", "lease_time", "5s");
}

#[test]
fn apply_refuses_invalid_changes_and_keeps_the_old_inventory() {
    let inv = lab();
    let bad = node("w0", "52:54:00:00:00:01", "10.1.107.20", None, None);
    let err = inv.apply(&[Op::Create(Object::Node(bad))]).expect_err("duplicate mac");
    assert!(matches!(err, ChangeError::Invalid(ref p) if p[0].field == "mac"), "{err}");
    assert_eq!(inv, lab());
}

#[test]
fn apply_bumps_the_version_only_when_something_changed() {
    let inv = lab();
    let w0 = node("w0", "52:54:00:00:00:09", "10.1.107.20", Some("prod"), Some(Role::Worker));
    let (next, outcomes) = inv.apply(&[Op::Create(Object::Node(w0.clone()))]).expect("valid");
    assert_eq!(outcomes[0].action, Action::Created);
    assert_eq!(next.version, inv.version + 1);
    assert_eq!(next.node_by_mac(w0.mac).map(|n| n.name.as_str()), Some("w0"));
    let (same, outcomes) = next.apply(&[Op::Put(Object::Node(w0))]).expect("valid");
    assert_eq!(outcomes[0].action, Action::Unchanged);
    assert_eq!(same.version, next.version);
}

#[test]
fn apply_refuses_to_touch_config_objects_and_missing_ones() {
    let mut inv = lab();
    if let Some(n) = inv.nodes.get_mut("master-0") {
        n.origin = Origin::Config;
    }
    let err = inv.apply(&[Op::Delete(Kind::Node, name("master-0"))]).expect_err("declared");
    assert!(matches!(err, ChangeError::Declared { .. }), "{err}");
    let err = inv.apply(&[Op::Delete(Kind::Node, name("ghost"))]).expect_err("missing");
    assert_eq!(err.to_string(), "node ghost does not exist");
    let err = inv.apply(&[Op::Create(Object::Node(inv.nodes["bootstrap"].clone()))]).expect_err("exists");
    assert!(matches!(err, ChangeError::AlreadyExists { .. }), "{err}");
}

#[test]
fn deleting_a_cluster_that_nodes_use_is_refused() {
    let err = lab().apply(&[Op::Delete(Kind::Cluster, name("prod"))]).expect_err("in use");
    assert!(err.to_string().contains("cluster = prod: no such cluster"), "{err}");
}

#[test]
fn a_batch_is_all_or_nothing() {
    let inv = lab();
    let good = node("w0", "52:54:00:00:00:09", "10.1.107.20", Some("prod"), Some(Role::Worker));
    let bad = node("w1", "52:54:00:00:00:09", "10.1.107.21", Some("prod"), Some(Role::Worker));
    assert!(inv.apply(&[Op::Put(Object::Node(good)), Op::Put(Object::Node(bad))]).is_err());
    assert!(!inv.nodes.contains_key("w0"));
}

#[test]
fn a_nodes_own_dhcp_options_are_checked_like_a_networks() {
    let p = problems_after(|inv| {
        let n = inv.nodes.get_mut("master-0").expect("node");
        n.dhcp.mtu = Some(300);
    });
    assert_one(&p, Kind::Node, "master-0", "dhcp.mtu", "300");
    let p = problems_after(|inv| {
        let n = inv.nodes.get_mut("master-0").expect("node");
        n.dhcp.routes =
            Some(vec![crate::inventory::Route { to: "192.0.2.0/24".parse().expect("net"), via: ip("192.0.2.1") }]);
    });
    assert_one(&p, Kind::Node, "master-0", "dhcp.routes", "192.0.2.1");
}

#[test]
fn a_proxy_network_has_no_pool() {
    let p = problems_after(|inv| {
        let net = inv.networks.get_mut("cluster").expect("network");
        net.proxy = true;
    });
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!((p[0].kind, p[0].field.as_str()), (Kind::Network, "pool"));
}

#[test]
fn profile_matches_and_variables_are_checked() {
    let p = problems_after(|inv| {
        for (n, arch, arg) in [("a", "x86_64", "x={{ip}}"), ("b", "x86_64", "y={{hostnme}}"), ("c", "sparc", "z")] {
            let prof = Profile {
                name: name(n),
                kernel: "k".into(),
                initrds: vec![],
                args: vec![arg.into()],
                config: Default::default(),
                installs: false,
                selector: Some(crate::inventory::Selector { arch: Some(arch.into()), ..Default::default() }),
                origin: Origin::Api,
            };
            inv.profiles.insert(prof.name.clone(), prof);
        }
    });
    let text: Vec<String> = p.iter().map(|p| format!("{} {} {}", p.name, p.field, p.message)).collect();
    assert!(text.iter().any(|t| t.starts_with("b args unknown variable {{hostnme}}")), "{text:?}");
    assert!(text.iter().any(|t| t.starts_with("b match profile a has the same match")), "{text:?}");
    assert!(text.iter().any(|t| t.starts_with("c match.arch must be one of")), "{text:?}");
    assert_eq!(p.len(), 3, "{text:?}");
}

#[test]
fn an_https_check_a_k3s_api_would_refuse_is_refused_with_the_reason() {
    use crate::inventory::{Algorithm, Backends, CheckKind, ClusterKind, HealthCheck, Members, Pool};
    let pool = |path: &str, kind: CheckKind| Pool {
        name: name("api"),
        algorithm: Algorithm::RoundRobin,
        backends: Backends::Cluster { cluster: name("prod"), members: Members::ControlPlane, port: 6443 },
        check: HealthCheck { kind, path: path.into(), ..HealthCheck::default() },
    };
    let with = |kind: ClusterKind, pool: Pool| {
        problems_after(move |inv| {
            inv.clusters.get_mut(&name("prod")).expect("prod").kind = kind;
            inv.nodes.retain(|_, n| n.role != Some(Role::Bootstrap));
            inv.pools.insert(pool.name.clone(), pool);
        })
    };
    let p = with(ClusterKind::K3s, pool("/readyz", CheckKind::Https));
    assert_one(&p, Kind::Pool, "api", "check.path", "/readyz");
    assert!(p[0].message.contains("401") && p[0].message.contains("/ping"), "{}", p[0]);
    for fine in [pool("/ping", CheckKind::Https), pool("/readyz", CheckKind::Tcp)] {
        assert_eq!(with(ClusterKind::K3s, fine), vec![]);
    }
    assert_eq!(with(ClusterKind::Okd, pool("/readyz", CheckKind::Https)), vec![], "OKD's /readyz is open");
}

#[test]
fn a_taint_kubernetes_would_refuse_is_named() {
    let p = problems_after(|inv| {
        let n = inv.nodes.get_mut(&name("master-0")).expect("master-0");
        n.taints = vec!["dedicated=edge:NoSchedule".into(), "gpu:NoExecute".into(), "dedicated=edge:Sometimes".into()];
    });
    assert_one(&p, Kind::Node, "master-0", "taints[2]", "dedicated=edge:Sometimes");
    assert!(p[0].message.contains("NoSchedule, PreferNoSchedule, NoExecute"), "{}", p[0]);
    let p = problems_after(|inv| {
        inv.nodes.get_mut(&name("master-0")).expect("master-0").taints = vec!["no effect".into()];
    });
    assert_one(&p, Kind::Node, "master-0", "taints[0]", "no effect");
}
