//! The approval decision against real PKCS#10 requests (made with openssl, in
//! tests/fixtures/csr/), one hostile change at a time.

use super::*;
use crate::kube::objects::{CsrSpec, Meta};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/csr/", $name, ".pem"))
    };
}

const ZONE: &str = "prod.lab.example";

fn at(secs: u64) -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000 + secs * 1000)
}

fn machine() -> Machine {
    Machine {
        name: "worker-0".into(),
        names: vec!["worker-0".into(), format!("worker-0.{ZONE}")],
        ips: vec!["10.1.107.21".parse().expect("ip")],
        started: Some(at(1000)),
    }
}

fn csr(pem: &str, signer: &str, username: &str, groups: &[&str], usages: &[&str], created: u64) -> Csr {
    Csr {
        metadata: Meta {
            name: "csr-test".into(),
            resource_version: Some("1".into()),
            creation_timestamp: Some(humantime::format_rfc3339_seconds(at(created).0).to_string()),
        },
        spec: CsrSpec {
            request: base64::engine::general_purpose::STANDARD.encode(pem),
            signer_name: signer.into(),
            username: username.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            usages: usages.iter().map(|u| u.to_string()).collect(),
        },
        status: Default::default(),
    }
}

fn client(pem: &str) -> Csr {
    csr(pem, CLIENT_SIGNER, BOOTSTRAPPER, &BOOTSTRAPPER_GROUPS, &["digital signature", "client auth"], 1060)
}

fn serving(pem: &str) -> Csr {
    let groups = ["system:nodes", "system:authenticated"];
    csr(pem, SERVING_SIGNER, "system:node:worker-0", &groups, &["digital signature", "server auth"], 1200)
}

fn verdict(csr: &Csr, nodes: &[&str]) -> Verdict {
    let nodes: BTreeSet<String> = nodes.iter().map(|n| n.to_string()).collect();
    decide(csr, &[machine()], &nodes, ZONE)
}

fn left(csr: &Csr, nodes: &[&str]) -> String {
    match verdict(csr, nodes) {
        Verdict::Leave(why) => why,
        approved => panic!("approved: {approved:?}"),
    }
}

#[test]
fn a_kubelets_first_client_csr_for_a_machine_of_the_cluster_is_approved() {
    for pem in [fixture!("client-worker-0"), fixture!("client-worker-0-fqdn")] {
        let Verdict::Approve { node, .. } = verdict(&client(pem), &[]) else { panic!("left") };
        assert_eq!(node, "worker-0");
    }
    let mut rsa = client(fixture!("client-worker-0"));
    rsa.spec.usages.insert(0, "key encipherment".into());
    assert!(matches!(verdict(&rsa, &[]), Verdict::Approve { .. }), "the legacy usages too");
}

#[test]
fn hostile_client_csrs_stay_pending_with_the_reason() {
    assert_eq!(left(&client(fixture!("client-stranger")), &[]), "stranger is not a machine of this cluster");
    assert!(left(&client(fixture!("client-worker-0-with-san")), &[]).contains("names or addresses"));
    assert!(left(&client(fixture!("client-worker-0-masters")), &[]).contains("O=system:masters"));
    assert!(left(&client(fixture!("client-worker-0")), &["worker-0"]).contains("already exists"));
    let mut wrong = client(fixture!("client-worker-0"));
    wrong.spec.username = "system:serviceaccount:default:builder".into();
    assert!(left(&wrong, &[]).contains("not the node-bootstrapper"));
    let mut groups = client(fixture!("client-worker-0"));
    groups.spec.groups.push("system:masters".into());
    assert!(left(&groups, &[]).contains("groups"));
    let mut usages = client(fixture!("client-worker-0"));
    usages.spec.usages.push("server auth".into());
    assert!(left(&usages, &[]).contains("usages"));
    let mut signer = client(fixture!("client-worker-0"));
    signer.spec.signer_name = "kubernetes.io/kube-apiserver-client".into();
    assert!(left(&signer, &[]).contains("is not a kubelet's"));
    let mut early = client(fixture!("client-worker-0"));
    early.metadata.creation_timestamp = Some(humantime::format_rfc3339_seconds(at(900).0).to_string());
    assert!(left(&early, &[]).contains("outside 10 s before to 2 h after"), "older than the VM");
    let mut late = client(fixture!("client-worker-0"));
    late.metadata.creation_timestamp = Some(humantime::format_rfc3339_seconds(at(1000 + 7201).0).to_string());
    assert!(left(&late, &[]).contains("outside"));
    let mut garbage = client(fixture!("client-worker-0"));
    garbage.spec.request = "bm90IGEgY3Ny".into();
    assert_eq!(left(&garbage, &[]), "spec.request is not PEM");
    let never = Machine { started: None, ..machine() };
    let verdict = decide(&client(fixture!("client-worker-0")), &[never], &BTreeSet::new(), ZONE);
    assert!(matches!(verdict, Verdict::Leave(why) if why.contains("not been powered on")));
}

#[test]
fn a_serving_csr_is_approved_only_with_the_nodes_own_names_and_addresses() {
    assert!(matches!(verdict(&serving(fixture!("serving-worker-0")), &["worker-0"]), Verdict::Approve { .. }));
    assert_eq!(
        left(&serving(fixture!("serving-worker-0-extra-ip")), &["worker-0"]),
        "IP address 10.1.107.99 is not one of worker-0's"
    );
    assert!(left(&serving(fixture!("serving-worker-0-email")), &["worker-0"]).contains("e-mail x@example.com"));
    let mut other = serving(fixture!("serving-worker-0"));
    other.spec.username = "system:node:worker-1".into();
    assert!(left(&other, &["worker-0"]).contains("not by system:node:worker-0 itself"));
    let mut client_usages = serving(fixture!("serving-worker-0"));
    client_usages.spec.usages = vec!["digital signature".into(), "client auth".into()];
    assert!(left(&client_usages, &["worker-0"]).contains("usages"));
    let mut groups = serving(fixture!("serving-worker-0"));
    groups.spec.groups = vec!["system:authenticated".into()];
    assert!(left(&groups, &["worker-0"]).contains("lack system:nodes"));
}
