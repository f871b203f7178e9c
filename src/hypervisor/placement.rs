//! Which host (Proxmox node) a new VM goes to: the allowed nodes (explicit targets, else all online
//! ones) that have the memory free, hard anti-affinity removing nodes that already run a member
//! of the VM's group; then preferred nodes first, soft anti-affinity preferring nodes with fewer
//! members, most free memory, name. Pure.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{AntiAffinity, Placement};

/// Why no node can take a VM.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoHost {
    #[error("target node '{target}' is not in the cluster (nodes: {})", known.join(", "))]
    UnknownTarget { target: String, known: Vec<String> },
    #[error("no allowed node is online (allowed: {})", allowed.join(", "))]
    NoneOnline { allowed: Vec<String> },
    #[error("no node has {need_mib} MiB of memory free (free: {})", free.iter().map(|(h, m)| format!("{h} {m} MiB")).collect::<Vec<_>>().join(", "))]
    NoMemory { need_mib: u64, free: Vec<(String, u64)> },
    #[error("every node with room already runs a member of group '{group}' (hard anti-affinity)")]
    AntiAffinity { group: String },
}

/// One hypervisor host: a Proxmox node, or `local` for QEMU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Host {
    pub name: String,
    pub online: bool,
    pub mem_free_mib: u64,
    /// A VM whose placement names no targets may go here (the hypervisor's `nodes` setting
    /// lists it, or sets none).
    #[serde(skip)]
    pub default_target: bool,
}

/// `members`: how many VMs of the spec's group each host runs now.
pub fn choose(
    placement: &Placement,
    hosts: &[Host],
    members: &BTreeMap<String, usize>,
    need_mib: u64,
) -> Result<String, NoHost> {
    for target in &placement.targets {
        if !hosts.iter().any(|h| &h.name == target) {
            let known = hosts.iter().map(|h| h.name.clone()).collect();
            return Err(NoHost::UnknownTarget { target: target.clone(), known });
        }
    }
    let allowed: Vec<&Host> = hosts.iter().filter(|h| allowed(placement, h)).collect();
    let online: Vec<&Host> = allowed.iter().copied().filter(|h| h.online).collect();
    if online.is_empty() {
        return Err(NoHost::NoneOnline { allowed: allowed.iter().map(|h| h.name.clone()).collect() });
    }
    let roomy: Vec<&Host> = online.iter().copied().filter(|h| h.mem_free_mib >= need_mib).collect();
    if roomy.is_empty() {
        let free = online.iter().map(|h| (h.name.clone(), h.mem_free_mib)).collect();
        return Err(NoHost::NoMemory { need_mib, free });
    }
    let count = |h: &Host| members.get(&h.name).copied().unwrap_or(0);
    let mut candidates: Vec<&Host> = match placement.anti_affinity {
        AntiAffinity::Hard => roomy.into_iter().filter(|h| count(h) == 0).collect(),
        AntiAffinity::Soft | AntiAffinity::None => roomy,
    };
    if candidates.is_empty() {
        let group = placement.group.as_ref().map_or("?".into(), |g| g.to_string());
        return Err(NoHost::AntiAffinity { group });
    }
    let preference = |h: &Host| placement.preferred.iter().position(|p| p == &h.name).unwrap_or(usize::MAX);
    let spread = |h: &Host| if placement.anti_affinity == AntiAffinity::Soft { count(h) } else { 0 };
    candidates.sort_by(|a, b| {
        (preference(a), spread(a), std::cmp::Reverse(a.mem_free_mib), &a.name).cmp(&(
            preference(b),
            spread(b),
            std::cmp::Reverse(b.mem_free_mib),
            &b.name,
        ))
    });
    Ok(candidates[0].name.clone())
}

/// Whether the placement's targets (or, naming none, the hypervisor's defaults) include `host`.
pub fn allowed(placement: &Placement, host: &Host) -> bool {
    if placement.targets.is_empty() { host.default_target } else { placement.targets.contains(&host.name) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<Host> {
        vec![
            Host { name: "pve1".into(), online: true, mem_free_mib: 32_000, default_target: true },
            Host { name: "pve2".into(), online: true, mem_free_mib: 64_000, default_target: true },
            Host { name: "pve3".into(), online: false, mem_free_mib: 128_000, default_target: true },
            Host { name: "pve4".into(), online: true, mem_free_mib: 4_000, default_target: true },
        ]
    }

    fn placement(anti_affinity: AntiAffinity) -> Placement {
        Placement { group: Some("prod-cp".parse().expect("name")), anti_affinity, ..Placement::default() }
    }

    fn members(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(h, n)| ((*h).to_owned(), *n)).collect()
    }

    #[test]
    fn the_online_node_with_most_free_memory_wins_by_default() {
        assert_eq!(choose(&Placement::default(), &hosts(), &members(&[]), 8_000), Ok("pve2".into()));
    }

    #[test]
    fn preferred_nodes_come_first_when_they_have_room() {
        let p = Placement { preferred: vec!["pve4".into(), "pve1".into()], ..Placement::default() };
        assert_eq!(choose(&p, &hosts(), &members(&[]), 8_000), Ok("pve1".into()));
        assert_eq!(choose(&p, &hosts(), &members(&[]), 2_000), Ok("pve4".into()));
    }

    #[test]
    fn targets_restrict_and_an_unknown_target_is_named() {
        let p = Placement { targets: vec!["pve1".into()], ..Placement::default() };
        assert_eq!(choose(&p, &hosts(), &members(&[]), 8_000), Ok("pve1".into()));
        let p = Placement { targets: vec!["pve9".into()], ..Placement::default() };
        let err = choose(&p, &hosts(), &members(&[]), 8_000).expect_err("unknown");
        assert!(err.to_string().contains("'pve9'"), "{err}");
        let p = Placement { targets: vec!["pve3".into()], ..Placement::default() };
        assert!(choose(&p, &hosts(), &members(&[]), 8_000).expect_err("offline").to_string().contains("online"));
    }

    #[test]
    fn too_much_memory_names_what_each_node_has_free() {
        let err = choose(&Placement::default(), &hosts(), &members(&[]), 100_000).expect_err("too big");
        assert!(err.to_string().contains("100000 MiB") && err.to_string().contains("pve2 64000 MiB"), "{err}");
    }

    #[test]
    fn hard_anti_affinity_skips_nodes_with_a_member_and_fails_when_none_is_left() {
        let m = members(&[("pve2", 1)]);
        assert_eq!(choose(&placement(AntiAffinity::Hard), &hosts(), &m, 2_000), Ok("pve1".into()));
        let m = members(&[("pve1", 1), ("pve2", 1), ("pve4", 1)]);
        let err = choose(&placement(AntiAffinity::Hard), &hosts(), &m, 2_000).expect_err("full");
        assert!(err.to_string().contains("prod-cp"), "{err}");
    }

    #[test]
    fn soft_anti_affinity_spreads_but_shares_when_it_must() {
        let m = members(&[("pve2", 1)]);
        assert_eq!(choose(&placement(AntiAffinity::Soft), &hosts(), &m, 8_000), Ok("pve1".into()));
        let m = members(&[("pve1", 1), ("pve2", 1)]);
        assert_eq!(choose(&placement(AntiAffinity::Soft), &hosts(), &m, 8_000), Ok("pve2".into()));
    }

    #[test]
    fn without_targets_only_the_hypervisors_default_hosts_are_used() {
        let mut hosts = hosts();
        hosts[1].default_target = false;
        assert_eq!(choose(&Placement::default(), &hosts, &members(&[]), 8_000), Ok("pve1".into()));
        let p = Placement { targets: vec!["pve2".into()], ..Placement::default() };
        assert_eq!(choose(&p, &hosts, &members(&[]), 8_000), Ok("pve2".into()), "a target may name any host");
    }
}
