//! The properties the `api_body` fuzz target checks, callable from the unit tests too: any bytes
//! as a write request's body (JSON, or YAML when the first byte is odd) through the same
//! decoding the handlers use, then through what the handler does with it against the lab
//! inventory: a manifest is applied as one change, a cluster definition is planned.

use crate::cluster::definition::Definition;
use crate::cluster::plan::{Facts, plan};
use crate::inventory::{Inventory, validate};

use super::error::decode;
use super::objects::Manifest;

/// Panics if a body breaks a promise: a manifest that decodes and applies leaves an inventory
/// that validates, holding every object it named; a definition that plans gives a node per
/// planned name, each inside the lab's network.
pub fn body(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let yaml = selector & 1 == 1;
    let inv = crate::inventory::lab::Lab::okd().build();
    match selector >> 1 & 1 {
        0 => {
            if let Ok(manifest) = decode::<Manifest>(bytes, yaml) {
                manifest_applies(&inv, manifest);
            }
        }
        _ => {
            if let Ok(definition) = decode::<Definition>(bytes, yaml) {
                definition_plans(&inv, &definition);
            }
        }
    }
}

fn manifest_applies(inv: &Inventory, manifest: Manifest) {
    let names: Vec<String> = manifest
        .nodes
        .iter()
        .map(|n| n.name.to_string())
        .chain(manifest.clusters.iter().map(|c| c.name.to_string()))
        .collect();
    let ops = manifest.into_ops();
    if let Ok((next, outcomes)) = inv.apply(&ops) {
        assert_eq!(outcomes.len(), ops.len(), "one outcome per object");
        let problems = validate(&next);
        assert!(problems.is_empty(), "an applied manifest left problems: {problems:?}");
        for name in names {
            assert!(
                next.nodes.contains_key(name.as_str()) || next.clusters.contains_key(name.as_str()),
                "{name} is missing after the apply"
            );
        }
    }
}

fn definition_plans(inv: &Inventory, definition: &Definition) {
    let facts = Facts { hypervisors: vec!["pve".into()], ..Facts::default() };
    match plan(definition, inv, &facts) {
        Ok(plan) => {
            let network = &inv.networks[&definition.network];
            for planned in &plan.nodes {
                let node = &planned.node;
                assert!(network.cidr.contains(&node.ipv4), "{} got {} outside {}", node.name, node.ipv4, network.cidr);
            }
        }
        Err(problems) => assert!(!problems.is_empty(), "a refused plan names its problems"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Object, Op};

    #[test]
    fn bodies_of_every_kind_go_through_without_a_panic() {
        let manifest = br#"{"nodes":[{"name":"worker-9","mac":"52:54:00:00:09:09","ipv4":"10.1.107.59","cluster":"prod","role":"worker"}]}"#;
        let definition = br#"{"name":"k","kind":"k3s","base_domain":"lab.example","network":"cluster","api_address":"10.1.107.2","api_int_address":"10.1.107.2","ingress_address":"10.1.107.2","hypervisor":"pve","node_groups":[{"name":"server","role":"control-plane","count":3,"cores":2,"memory":"4GiB","disks":[{"size":"20GiB"}]}]}"#;
        // The seeds reach past decoding: the manifest applies, the definition plans.
        let inv = crate::inventory::lab::Lab::okd().build();
        let decoded = decode::<Manifest>(manifest, false).expect("the manifest decodes");
        assert!(inv.apply(&[Op::Put(Object::Node(decoded.nodes[0].clone()))]).is_ok());
        let decoded = decode::<Definition>(definition, false).expect("the definition decodes");
        let facts = Facts { hypervisors: vec!["pve".into()], ..Facts::default() };
        let planned = plan(&decoded, &inv, &facts).expect("the definition plans");
        assert_eq!(planned.nodes.len(), 3);
        for (selector, text) in [(0u8, &manifest[..]), (2, &definition[..]), (1, b"nodes: [{name: x}]"), (3, b"{")] {
            let mut data = vec![selector];
            data.extend_from_slice(text);
            body(&data);
        }
    }
}
