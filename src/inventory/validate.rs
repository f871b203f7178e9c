//! Whole-inventory validation: every rule that spans objects (duplicates, ranges, references).
//!
//! Pure: takes an inventory, returns every problem found, in a stable order. The store runs it
//! before every commit and the config loader before the daemon starts.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;
use utoipa::ToSchema;

use super::model::{AddrRange, Backends, CheckKind, ClusterKind, Inventory, Kind, Network, Role};
use super::types::shown;

/// One reason an inventory is invalid, naming the object, the field and the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    pub kind: Kind,
    pub name: String,
    pub field: String,
    pub value: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {} = {}: {}", self.kind, self.name, self.field, self.value, self.message)
    }
}

struct Problems(Vec<Problem>);

impl Problems {
    fn add(
        &mut self,
        kind: Kind,
        name: &impl fmt::Display,
        field: &str,
        value: impl fmt::Display,
        message: impl Into<String>,
    ) {
        self.0.push(Problem {
            kind,
            name: name.to_string(),
            field: field.to_owned(),
            value: shown(&value.to_string()),
            message: message.into(),
        });
    }
}

/// Checks every cross-object rule; an empty result means the inventory may be published.
/// When two objects clash (a MAC, an address, a name, a listen address), the one that sorts
/// later by name is named.
pub fn validate(inv: &Inventory) -> Vec<Problem> {
    validate_ranked(inv, &|_, _| 0)
}

/// `validate`, naming the newcomer in a clash: objects are taken in the order of `rank` (lower
/// first: the config file's line order, or 0 for what exists and 1 for what a request brings),
/// then by name, and the later of two that clash is the one the problem names.
pub fn validate_ranked(inv: &Inventory, rank: &dyn Fn(Kind, &str) -> usize) -> Vec<Problem> {
    let mut p = Problems(Vec::new());
    networks(inv, &mut p);
    clusters(inv, &mut p);
    nodes(inv, rank, &mut p);
    profiles(inv, &mut p);
    lb(inv, rank, &mut p);
    p.0
}

/// The usable host addresses of a network: all but the network and broadcast addresses
/// (except in /31 and /32, which have none to spare).
fn is_host_address(net: &Ipv4Net, ip: Ipv4Addr) -> bool {
    net.contains(&ip) && (net.prefix_len() >= 31 || (ip != net.network() && ip != net.broadcast()))
}

fn check_range(p: &mut Problems, net: &Network, field: &str, range: &AddrRange) {
    if range.is_empty() {
        p.add(Kind::Network, &net.name, field, range, "start is after end");
    } else if !is_host_address(&net.cidr, range.start) || !is_host_address(&net.cidr, range.end) {
        p.add(Kind::Network, &net.name, field, range, format!("not inside the host addresses of {}", net.cidr));
    }
}

fn networks(inv: &Inventory, p: &mut Problems) {
    let nets: Vec<&Network> = inv.networks.values().collect();
    for (i, net) in nets.iter().enumerate() {
        let iface = &net.interface;
        if iface.is_empty()
            || iface.len() > 15
            || iface.contains(['/', ' ', '\t', '\0'])
            || iface == "."
            || iface == ".."
        {
            p.add(
                Kind::Network,
                &net.name,
                "interface",
                iface,
                "not a network interface name (1-15 characters, no '/' or spaces)",
            );
        }
        if let Some(gw) = net.gateway
            && !is_host_address(&net.cidr, gw)
        {
            p.add(Kind::Network, &net.name, "gateway", gw, format!("not a host address of {}", net.cidr));
        }
        if let Some(range) = &net.static_range {
            check_range(p, net, "static_range", range);
        }
        if let Some(pool) = &net.pool {
            check_range(p, net, "pool", pool);
            if let Some(range) = &net.static_range
                && pool.overlaps(range)
            {
                p.add(Kind::Network, &net.name, "pool", pool, format!("overlaps static_range {range}"));
            }
            if let Some(gw) = net.gateway
                && pool.contains(gw)
            {
                p.add(Kind::Network, &net.name, "pool", pool, format!("contains the gateway {gw}"));
            }
        }
        if let Some(mtu) = net.mtu
            && mtu < 576
        {
            p.add(Kind::Network, &net.name, "mtu", mtu, "must be at least 576");
        }
        if net.proxy
            && let Some(pool) = net.pool
        {
            p.add(Kind::Network, &net.name, "pool", pool, "a proxyDHCP network (proxy = true) hands out no addresses");
        }
        for route in &net.routes {
            if !net.cidr.contains(&route.via) {
                p.add(
                    Kind::Network,
                    &net.name,
                    "routes",
                    route.via,
                    format!("the gateway of route {} is not inside {}", route.to, net.cidr),
                );
            }
        }
        let secs = net.lease_time.as_secs();
        if !(60..=u64::from(u32::MAX - 1)).contains(&secs) {
            p.add(
                Kind::Network,
                &net.name,
                "lease_time",
                super::types::format_duration(net.lease_time),
                "must be between 1 minute and 136 years",
            );
        }
        for other in &nets[..i] {
            if other.cidr.contains(&net.cidr.network()) || net.cidr.contains(&other.cidr.network()) {
                p.add(
                    Kind::Network,
                    &net.name,
                    "cidr",
                    net.cidr,
                    format!("overlaps network {} ({})", other.name, other.cidr),
                );
            }
        }
    }
}

fn clusters(inv: &Inventory, p: &mut Problems) {
    for c in inv.clusters.values() {
        match inv.networks.get(&c.network) {
            None => p.add(Kind::Cluster, &c.name, "network", &c.network, "no such network"),
            Some(net) if !net.cidr.contains(&c.api_int_address) => {
                p.add(
                    Kind::Cluster,
                    &c.name,
                    "api_int_address",
                    c.api_int_address,
                    format!("not inside network {} ({})", net.name, net.cidr),
                );
            }
            Some(_) => {}
        }
    }
}

fn nodes(inv: &Inventory, rank: &dyn Fn(Kind, &str) -> usize, p: &mut Problems) {
    let mut macs = HashMap::new();
    let mut ips = HashMap::new();
    let mut names = HashMap::new();
    let mut bootstraps = HashMap::new();
    let mut ordered: Vec<_> = inv.nodes.values().collect();
    ordered.sort_by_key(|n| rank(Kind::Node, n.name.as_str()));
    for n in ordered {
        for (i, taint) in n.taints.iter().enumerate() {
            if let Some(why) = taint_problem(taint) {
                p.add(Kind::Node, &n.name, &format!("taints[{i}]"), taint, why);
            }
        }
        if let Some(first) = macs.insert(n.mac, &n.name) {
            p.add(Kind::Node, &n.name, "mac", n.mac, format!("already used by node {first}"));
            macs.insert(n.mac, first);
        }
        if let Some(first) = ips.insert(n.ipv4, &n.name) {
            p.add(Kind::Node, &n.name, "ipv4", n.ipv4, format!("already used by node {first}"));
            ips.insert(n.ipv4, first);
        }
        match &n.cluster {
            Some(cluster) if !inv.clusters.contains_key(cluster) => {
                p.add(Kind::Node, &n.name, "cluster", cluster, "no such cluster");
            }
            Some(cluster) if n.role == Some(Role::Bootstrap) => {
                if let Some(first) = bootstraps.insert(cluster, &n.name) {
                    p.add(
                        Kind::Node,
                        &n.name,
                        "role",
                        "bootstrap",
                        format!("cluster {cluster} already has bootstrap node {first}"),
                    );
                    bootstraps.insert(cluster, first);
                }
            }
            None if n.role.is_some() => {
                let role =
                    serde_json::to_value(n.role).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                p.add(Kind::Node, &n.name, "role", role, "a role needs a cluster");
            }
            _ => {}
        }
        if let Some(profile) = &n.profile
            && !inv.profiles.contains_key(profile)
        {
            p.add(Kind::Node, &n.name, "profile", profile, "no such profile");
        }
        node_address(inv, n, p);
        node_dhcp(inv, n, p);
        let domain = match inv.fqdn(n) {
            Some(fqdn) => fqdn,
            None => format!("{} on {}", n.hostname(), inv.network_of(n).map_or("", |net| net.name.as_str())),
        };
        if let Some(first) = names.insert(domain.clone(), &n.name) {
            p.add(Kind::Node, &n.name, "hostname", n.hostname(), format!("{domain} is already node {first}'s name"));
            names.insert(domain, first);
        }
    }
}

/// A node's own DHCP options follow the same rules as its network's.
fn node_dhcp(inv: &Inventory, n: &super::model::Node, p: &mut Problems) {
    if let Some(mtu) = n.dhcp.mtu
        && mtu < 576
    {
        p.add(Kind::Node, &n.name, "dhcp.mtu", mtu, "must be at least 576");
    }
    let Some(net) = inv.network_of(n) else { return };
    for route in n.dhcp.routes.iter().flatten() {
        if !net.cidr.contains(&route.via) {
            p.add(
                Kind::Node,
                &n.name,
                "dhcp.routes",
                route.via,
                format!("the gateway of route {} is not inside {}", route.to, net.cidr),
            );
        }
    }
}

fn node_address(inv: &Inventory, n: &super::model::Node, p: &mut Problems) {
    let Some(net) = inv.network_of(n) else {
        if n.cluster.as_ref().is_none_or(|c| inv.clusters.contains_key(c)) {
            p.add(Kind::Node, &n.name, "ipv4", n.ipv4, "not inside any network");
        }
        return;
    };
    let ip = n.ipv4;
    if !net.cidr.contains(&ip) {
        p.add(Kind::Node, &n.name, "ipv4", ip, format!("outside its network {} ({})", net.name, net.cidr));
    } else if !is_host_address(&net.cidr, ip) {
        p.add(Kind::Node, &n.name, "ipv4", ip, format!("is the network or broadcast address of {}", net.cidr));
    } else if net.gateway == Some(ip) {
        p.add(Kind::Node, &n.name, "ipv4", ip, format!("is the gateway of network {}", net.name));
    } else if net.pool.is_some_and(|pool| pool.contains(ip)) {
        let pool = net.pool.map(|r| r.to_string()).unwrap_or_default();
        p.add(Kind::Node, &n.name, "ipv4", ip, format!("inside the dynamic pool {pool} of network {}", net.name));
    } else if let Some(range) = net.static_range
        && !range.contains(ip)
    {
        p.add(Kind::Node, &n.name, "ipv4", ip, format!("outside the static_range {range} of network {}", net.name));
    }
}

fn profiles(inv: &Inventory, p: &mut Problems) {
    for prof in inv.profiles.values() {
        let paths = std::iter::once(("kernel", &prof.kernel)).chain(prof.initrds.iter().map(|i| ("initrds", i)));
        for (field, path) in paths {
            if let Some(problem) = image_path_problem(path) {
                p.add(Kind::Profile, &prof.name, field, path, problem);
            }
        }
        for text in std::iter::once(&prof.kernel).chain(&prof.initrds).chain(&prof.args) {
            if let Err(e) = crate::template::check(text) {
                p.add(Kind::Profile, &prof.name, "args", text, e.to_string());
            }
        }
        if let Some(sel) = &prof.selector {
            if let Some(arch) = &sel.arch
                && !["x86_64", "i386", "arm64", "arm32"].contains(&arch.as_str())
            {
                p.add(
                    Kind::Profile,
                    &prof.name,
                    "match.arch",
                    arch,
                    "must be one of x86_64, i386, arm64, arm32 (iPXE's ${buildarch})",
                );
            }
            if let Some(cluster) = &sel.cluster
                && !inv.clusters.contains_key(cluster)
            {
                p.add(Kind::Profile, &prof.name, "match.cluster", cluster, "no such cluster");
            }
            if let Some(twin) = inv.profiles.values().find(|o| o.name < prof.name && o.selector.as_ref() == Some(sel)) {
                p.add(
                    Kind::Profile,
                    &prof.name,
                    "match",
                    serde_json::to_string(sel).unwrap_or_default(),
                    format!("profile {} has the same match; which one boots would be arbitrary", twin.name),
                );
            }
        }
        for arg in &prof.args {
            if arg.is_empty() || arg.chars().any(|c| c.is_whitespace() || c.is_control()) {
                p.add(
                    Kind::Profile,
                    &prof.name,
                    "args",
                    arg,
                    "a kernel argument must be non-empty, without spaces or control characters",
                );
            }
        }
    }
}

/// Image references are http(s) URLs or relative paths that stay inside the images directory.
fn image_path_problem(path: &str) -> Option<&'static str> {
    if path.starts_with("http://") || path.starts_with("https://") {
        return path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
            .then_some("URL contains spaces or control characters");
    }
    if path.is_empty() {
        return Some("must not be empty");
    }
    if path.starts_with('/') || path.split(['/', '\\']).any(|seg| seg == ".." || seg.is_empty()) || path.contains('\0')
    {
        return Some("must be a relative path inside the images directory (no '..', no leading '/') or an http(s) URL");
    }
    None
}

/// Why `taint` is not `key[=value]:Effect` as Kubernetes takes it, if it is not.
fn taint_problem(taint: &str) -> Option<String> {
    const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
    let Some((spec, effect)) = taint.rsplit_once(':') else {
        return Some("a taint is key[=value]:Effect".into());
    };
    if !EFFECTS.contains(&effect) {
        return Some(format!("the effect must be one of {}", EFFECTS.join(", ")));
    }
    let (key, value) = spec.split_once('=').unwrap_or((spec, ""));
    let word = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if key.is_empty() || key.len() > 253 || !word(key) || value.len() > 63 || !word(value) || value.contains('/') {
        return Some("key and value are Kubernetes label names and values".into());
    }
    None
}

/// What k3s serves on its API port without credentials (`/ping` answers `pong`).
const K3S_OPEN_PATHS: &[&str] = &["/ping", "/cacerts"];

fn lb(inv: &Inventory, rank: &dyn Fn(Kind, &str) -> usize, p: &mut Problems) {
    for pool in inv.pools.values() {
        match &pool.backends {
            Backends::Static { addresses } if addresses.is_empty() => {
                p.add(Kind::Pool, &pool.name, "backends", "[]", "a static pool needs at least one backend")
            }
            // A pool may name a cluster that does not exist (yet): one defined through the API
            // later, or deleted; it has no backends until then.
            Backends::Cluster { port: 0, .. } => p.add(Kind::Pool, &pool.name, "port", 0, "port must not be 0"),
            _ => {}
        }
        // k3s's apiserver runs with anonymous requests off: an HTTPS check of any path but
        // k3s's own open ones gets 401 from every healthy server.
        if let Backends::Cluster { cluster, .. } = &pool.backends
            && inv.clusters.get(cluster).is_some_and(|c| c.kind == ClusterKind::K3s)
            && pool.check.kind == CheckKind::Https
            && !K3S_OPEN_PATHS.contains(&pool.check.path.as_str())
        {
            let why = format!(
                "cluster {cluster} is k3s, whose API answers 401 to a request without credentials, so this check would mark every healthy server down: use kind = \"tcp\" or path = \"/ping\""
            );
            p.add(Kind::Pool, &pool.name, "check.path", &pool.check.path, why);
        }
    }
    let mut listens = HashMap::new();
    let mut ordered: Vec<_> = inv.frontends.values().collect();
    ordered.sort_by_key(|f| rank(Kind::Frontend, f.name.as_str()));
    for fe in ordered {
        if !inv.pools.contains_key(&fe.pool) {
            p.add(Kind::Frontend, &fe.name, "pool", &fe.pool, "no such pool");
        }
        if let Some(first) = listens.insert(fe.listen, &fe.name) {
            p.add(Kind::Frontend, &fe.name, "listen", fe.listen, format!("already used by frontend {first}"));
        }
    }
}

#[cfg(test)]
mod tests;
