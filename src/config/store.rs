//! `[store]`: the embedded file (the default) or etcd, shared by two or three instances.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawStore;
use super::{FieldPath, Report};
use crate::inventory::types::parse_duration;
use crate::store::shared::Settings;

/// Where etcd keeps slipway's keys unless `prefix` says otherwise.
pub const DEFAULT_PREFIX: &str = "/slipway/";
/// The leader's lease: how long a dead leader holds DHCP and the lifecycle engine at most.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The etcd settings when `backend = "etcd"`; `None` for the embedded store.
pub(super) fn check(raw: &RawStore, report: &mut Report<'_>, resolve: &dyn Fn(&Path) -> PathBuf) -> Option<Settings> {
    let at = |field: &str| FieldPath::parse("store").key(field);
    let etcd = match raw.backend.as_deref() {
        None | Some("local") => false,
        Some("etcd") => true,
        Some(other) => {
            report.add(&at("backend"), Some(other.into()), "must be \"local\" (the default) or \"etcd\"");
            return None;
        }
    };
    if !etcd {
        let given = [
            ("endpoints", !raw.endpoints.is_empty()),
            ("ca", raw.ca.is_some()),
            ("cert", raw.cert.is_some()),
            ("key", raw.key.is_some()),
            ("prefix", raw.prefix.is_some()),
            ("instance", raw.instance.is_some()),
            ("lease_ttl", raw.lease_ttl.is_some()),
            ("timeout", raw.timeout.is_some()),
        ];
        for (field, _) in given.iter().filter(|(_, set)| *set) {
            report.add(&at(field), None, "only means something with backend = \"etcd\"");
        }
        return None;
    }
    if raw.endpoints.is_empty() {
        report.add(&at("endpoints"), None, "backend = \"etcd\" needs the members' client URLs (https://host:2379)");
    }
    for (i, endpoint) in raw.endpoints.iter().enumerate() {
        let ok = endpoint
            .strip_prefix("https://")
            .is_some_and(|rest| !rest.is_empty() && !rest.trim_end_matches('/').contains('/'));
        if !ok {
            report.add(
                &at("endpoints").index(i),
                Some(endpoint.clone()),
                "must be an https:// URL of a member's client port (https://10.0.0.5:2379); etcd is reached with TLS only",
            );
        }
    }
    let mut file = |field: &str, value: &Option<PathBuf>| match value {
        Some(p) => resolve(p),
        None => {
            report.add(&at(field), None, "backend = \"etcd\" needs it (PEM file)");
            PathBuf::new()
        }
    };
    let (ca, cert, key) = (file("ca", &raw.ca), file("cert", &raw.cert), file("key", &raw.key));
    let prefix = raw.prefix.clone().unwrap_or_else(|| DEFAULT_PREFIX.into());
    if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() < 2 {
        report.add(
            &at("prefix"),
            Some(prefix.clone()),
            "must start and end with / (\"/slipway/\"), so no other prefix can hold it",
        );
    }
    let instance = match &raw.instance {
        Some(name) => name.clone(),
        None => hostname(),
    };
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    if !label(&instance) {
        report.add(
            &at("instance"),
            Some(instance.clone()),
            "must be 1-63 letters, digits, '-', '_' or '.' (it names this instance to the others; default: the host name)",
        );
    }
    let mut duration = |field: &str, value: &Option<String>, default: Duration, range: (u64, u64)| match value {
        None => default,
        Some(text) => match parse_duration(text) {
            Ok(d) if d >= Duration::from_secs(range.0) && d <= Duration::from_secs(range.1) => d,
            Ok(_) => {
                report.add(&at(field), Some(text.clone()), format!("must be from {} s to {} s", range.0, range.1));
                default
            }
            Err(e) => {
                report.add(&at(field), Some(text.clone()), e.to_string());
                default
            }
        },
    };
    let lease_ttl = duration("lease_ttl", &raw.lease_ttl, DEFAULT_LEASE_TTL, (3, 300));
    let timeout = duration("timeout", &raw.timeout, DEFAULT_TIMEOUT, (1, 60));
    if timeout >= lease_ttl {
        report.add(
            &at("timeout"),
            Some(format!("{timeout:?}")),
            format!("must be shorter than lease_ttl ({lease_ttl:?}): a leader must notice a slow etcd before its lease runs out"),
        );
    }
    Some(Settings {
        etcd: crate::store::etcd::Settings { endpoints: raw.endpoints.clone(), ca, cert, key, timeout },
        prefix,
        instance,
        lease_ttl,
        compaction: Default::default(),
    })
}

/// This machine's host name (`/proc/sys/kernel/hostname`); empty when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}
