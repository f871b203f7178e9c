use super::*;
use crate::inventory::Origin;

const SERVER: &str = "http://10.1.107.1:8080";

/// One network, one cluster `prod.lab.example`, one worker node `w0` at 10.1.107.20.
pub(crate) fn inventory() -> Inventory {
    let mut inv = Inventory::default();
    let net: crate::inventory::Network = serde_json::from_value(serde_json::json!({
        "name": "prov", "interface": "eth1", "cidr": "10.1.107.0/24",
    }))
    .expect("test input");
    let cluster: crate::inventory::Cluster = serde_json::from_value(serde_json::json!({
        "name": "prod", "kind": "k3s", "base_domain": "lab.example", "network": "prov",
        "api_address": "192.0.2.10", "api_int_address": "10.1.107.1", "ingress_address": "192.0.2.10",
    }))
    .expect("test input");
    let node: Node = serde_json::from_value(serde_json::json!({
        "name": "w0", "cluster": "prod", "role": "worker", "mac": "52:54:00:00:00:20", "ipv4": "10.1.107.20",
    }))
    .expect("test input");
    inv.networks.insert(net.name.clone(), net);
    inv.clusters.insert(cluster.name.clone(), cluster);
    inv.nodes.insert(node.name.clone(), node);
    inv.reindex();
    inv
}

fn profile(config: ConfigKind, args: &[&str]) -> Profile {
    Profile {
        name: "live".parse().expect("test input"),
        kernel: "debian/vmlinuz".into(),
        initrds: vec!["debian/initrd.img".into(), "https://mirror.example/extra.cpio?x=1".into()],
        args: args.iter().map(|a| a.to_string()).collect(),
        config,
        installs: false,
        selector: None,
        origin: Origin::Config,
    }
}

#[test]
fn a_profile_script_loads_kernel_and_initrds_from_the_images_directory_and_retries() {
    let inv = inventory();
    let node = inv.nodes.values().next().expect("test input");
    let p = profile(ConfigKind::CloudInit, &["console=ttyS0", "ds=nocloud;s={{config_url}}", "hostname={{hostname}}"]);
    let vars = variables(&inv, Some(node), node.ipv4, None, Some(&p), SERVER);
    let script = boot(&p, &vars).expect("test input");
    let expected = format!(
        "#!ipxe\necho slipway: profile live for {n}\n\
         kernel {SERVER}/images/debian/vmlinuz initrd=initrd.img initrd=extra.cpio console=ttyS0 ds=nocloud;s={SERVER}/nocloud/{n}/ hostname={h} || goto retry\n\
         initrd --name initrd.img {SERVER}/images/debian/initrd.img || goto retry\n\
         initrd --name extra.cpio https://mirror.example/extra.cpio?x=1 || goto retry\n\
         boot || goto retry\n\
         :retry\necho slipway: retrying in 10 s\nsleep 10\ndhcp ||\nchain --replace --autofree {SERVER}/boot.ipxe || goto retry\n",
        n = node.name,
        h = node.hostname()
    );
    assert_eq!(script, expected);
}

#[test]
fn ignition_profiles_point_at_the_ignition_endpoint_and_unknown_machines_get_no_config_url() {
    let inv = inventory();
    let node = inv.nodes.values().next().expect("test input");
    let p = profile(ConfigKind::Ignition, &["coreos.inst.ignition_url={{config_url}}"]);
    let vars = variables(&inv, Some(node), node.ipv4, None, Some(&p), SERVER);
    assert!(boot(&p, &vars).expect("test input").contains(&format!("coreos.inst.ignition_url={SERVER}/ignition ")));
    let stranger = variables(&inv, None, "10.1.107.200".parse().expect("test input"), None, Some(&p), SERVER);
    assert_eq!(stranger["config_url"], "");
    assert!(boot(&p, &stranger).expect("test input").contains("for an unknown machine"));
}

#[test]
fn an_unknown_variable_in_an_argument_is_an_error_not_a_literal() {
    let inv = inventory();
    let p = profile(ConfigKind::None, &["x={{nope}}"]);
    let vars = variables(&inv, None, "10.1.107.200".parse().expect("test input"), None, Some(&p), SERVER);
    assert!(matches!(boot(&p, &vars), Err(TemplateError::Unknown(name, _)) if name == "nope"));
}

#[test]
fn the_probe_asks_ipxe_for_its_architecture_and_platform() {
    let s = probe(SERVER);
    assert!(s.starts_with("#!ipxe\nchain --replace --autofree http://10.1.107.1:8080/boot.ipxe?arch=${buildarch:uristring}&platform=${platform:uristring} || goto retry\n"), "{s}");
}

#[test]
fn installed_nodes_boot_their_disk_and_nothing_scripts_retry() {
    let inv = inventory();
    let node = inv.nodes.values().next().expect("test input");
    let s = local_disk(node);
    assert!(s.contains("sanboot --no-describe --drive 0x80") && s.contains("exit 0"), "{s}");
    let n = nothing(SERVER, "no profile for 10.1.107.200");
    assert!(n.contains("echo slipway: no profile for 10.1.107.200\ngoto retry\n:retry\n"), "{n}");
}
