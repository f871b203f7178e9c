//! Which profile a machine boots (as matchbox selects a group): the node's own `profile` first,
//! else the most specific profile whose `match` fits the machine; ties go to the profile whose
//! name sorts first. Pure.

use crate::inventory::{Inventory, MacAddr, Node, Profile, Selector};

/// What is known about the machine asking.
#[derive(Clone, Copy, Debug, Default)]
pub struct Machine<'a> {
    /// The inventory node, when its address or MAC is reserved.
    pub node: Option<&'a Node>,
    pub mac: Option<MacAddr>,
    /// iPXE's `${buildarch}`, when the script request carried it.
    pub arch: Option<&'a str>,
}

/// The profile for `machine`, or `None` when nothing names or matches it.
pub fn select<'a>(inv: &'a Inventory, machine: &Machine) -> Option<&'a Profile> {
    if let Some(name) = machine.node.and_then(|n| n.profile.as_ref()) {
        return inv.profiles.get(name);
    }
    inv.profiles
        .values()
        .filter_map(|p| p.selector.as_ref().filter(|s| matches(s, machine)).map(|s| (s.specificity(), p)))
        // max_by_key keeps the last maximum; iterate names in reverse so the first name wins ties.
        .rev()
        .max_by_key(|(specificity, _)| *specificity)
        .map(|(_, p)| p)
}

fn matches(sel: &Selector, m: &Machine) -> bool {
    let node = m.node;
    sel.mac.is_none_or(|mac| m.mac == Some(mac) || node.is_some_and(|n| n.mac == mac))
        && sel.cluster.as_ref().is_none_or(|c| node.and_then(|n| n.cluster.as_ref()) == Some(c))
        && sel.role.is_none_or(|r| node.and_then(|n| n.role) == Some(r))
        && sel.arch.as_deref().is_none_or(|a| m.arch == Some(a))
        && sel.labels.iter().all(|(k, v)| node.and_then(|n| n.labels.get(k)) == Some(v))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::inventory::{ConfigKind, Name, Origin, Role};

    fn name(s: &str) -> Name {
        s.parse().expect("test input")
    }

    fn profile(n: &str, selector: Option<Selector>) -> Profile {
        Profile {
            name: name(n),
            kernel: "k".into(),
            initrds: vec![],
            args: vec![],
            config: ConfigKind::None,
            installs: false,
            selector,
            origin: Origin::Config,
        }
    }

    fn node(role: Role) -> Node {
        serde_json::from_value(serde_json::json!({
            "name": "w0", "cluster": "prod", "role": role, "mac": "52:54:00:00:00:01",
            "ipv4": "10.0.0.5", "labels": {"disk": "nvme"},
        }))
        .expect("test input")
    }

    fn inventory(profiles: Vec<Profile>) -> Inventory {
        let mut inv = Inventory::default();
        inv.profiles = profiles.into_iter().map(|p| (p.name.clone(), p)).collect();
        inv
    }

    fn by_role(role: Role) -> Selector {
        Selector { cluster: Some(name("prod")), role: Some(role), ..Selector::default() }
    }

    #[test]
    fn the_nodes_own_profile_wins_over_every_match() {
        let inv = inventory(vec![profile("own", None), profile("workers", Some(by_role(Role::Worker)))]);
        let mut n = node(Role::Worker);
        n.profile = Some(name("own"));
        assert_eq!(
            select(&inv, &Machine { node: Some(&n), ..Machine::default() }).expect("test input").name,
            name("own")
        );
    }

    #[test]
    fn cluster_and_role_beat_the_default_and_a_mac_beats_both() {
        let mut inv = inventory(vec![
            profile("default", Some(Selector::default())),
            profile("workers", Some(by_role(Role::Worker))),
            profile("masters", Some(by_role(Role::ControlPlane))),
        ]);
        let n = node(Role::Worker);
        let m = Machine { node: Some(&n), ..Machine::default() };
        assert_eq!(select(&inv, &m).expect("test input").name, name("workers"));
        let stranger = Machine { mac: Some("52:54:00:99:99:99".parse().expect("test input")), ..Machine::default() };
        assert_eq!(
            select(&inv, &stranger).expect("test input").name,
            name("default"),
            "unknown machines get the default"
        );

        let pinned = profile("pinned", Some(Selector { mac: n.mac.into(), ..Selector::default() }));
        inv.profiles.insert(pinned.name.clone(), pinned);
        assert_eq!(select(&inv, &m).expect("test input").name, name("pinned"));
    }

    #[test]
    fn labels_and_arch_must_all_match() {
        let nvme = Selector { labels: BTreeMap::from([("disk".into(), "nvme".into())]), ..Selector::default() };
        let arm = Selector { arch: Some("arm64".into()), ..Selector::default() };
        let inv = inventory(vec![profile("nvme", Some(nvme)), profile("arm", Some(arm))]);
        let n = node(Role::Worker);
        assert_eq!(
            select(&inv, &Machine { node: Some(&n), arch: Some("x86_64"), ..Machine::default() })
                .expect("test input")
                .name,
            name("nvme")
        );
        let arm_stranger = Machine { arch: Some("arm64"), ..Machine::default() };
        assert_eq!(select(&inv, &arm_stranger).expect("test input").name, name("arm"));
        assert!(select(&inv, &Machine::default()).is_none());
    }

    #[test]
    fn equally_specific_matches_go_to_the_first_name_and_unmatched_profiles_are_never_picked() {
        let by_cluster = Selector { cluster: Some(name("prod")), ..Selector::default() };
        let by_worker = Selector { role: Some(Role::Worker), ..Selector::default() };
        let inv = inventory(vec![
            profile("b-cluster", Some(by_cluster)),
            profile("a-role", Some(by_worker)),
            profile("named-only", None),
        ]);
        let n = node(Role::Worker);
        assert_eq!(
            select(&inv, &Machine { node: Some(&n), ..Machine::default() }).expect("test input").name,
            name("a-role")
        );
        assert!(select(&inv, &Machine::default()).is_none(), "a profile without match is never a default");
    }
}
