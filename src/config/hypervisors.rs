//! `[[hypervisors]]` checked into what the backends take: a Proxmox VE endpoint (URL, API token
//! id, where its secret is, how its certificate is trusted, default storage and bridge, allowed
//! nodes, task timeout, how placement counts memory) or a local QEMU host (VM directory, bridge, namespace, accelerator).
//! The token secret is not read here: the daemon reads it when it starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{HypervisorKind, Items, OneOrMany, RawHypervisor};
use super::{FieldPath, Report};
use crate::hypervisor::proxmox::tls::{Trust, parse_fingerprint};
use crate::hypervisor::qemu::Accel;
use crate::inventory::Name;
use crate::inventory::types::parse_duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HypervisorConfig {
    pub name: Name,
    pub backend: Backend,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Proxmox(ProxmoxConfig),
    Qemu(QemuConfig),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxmoxConfig {
    /// One node's API, or several nodes' of one cluster (asked in turn).
    pub urls: Vec<String>,
    /// `USER@REALM!TOKENID`
    pub token_id: String,
    pub secret: SecretSource,
    pub trust: Trust,
    pub storage: String,
    pub bridge: String,
    pub nodes: Vec<String>,
    pub task_timeout: Duration,
    /// The CPU model of a VM whose group names none.
    pub cpu: String,
    /// How placement counts a node's free memory.
    pub placement_memory: crate::hypervisor::proxmox::MemoryView,
}

/// Where an API token secret is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    /// A systemd credential (`LoadCredential=`), read from `$CREDENTIALS_DIRECTORY`.
    Credential(String),
}

/// Why a secret could not be read; names the file or credential, never the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("credential {0}: $CREDENTIALS_DIRECTORY is not set")]
    NoCredentials(String),
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}: empty")]
    Empty(PathBuf),
}

impl SecretSource {
    /// Reads the secret: the first line, trimmed.
    pub fn read(&self) -> Result<String, SecretError> {
        let path = match self {
            SecretSource::File(path) => path.clone(),
            SecretSource::Credential(name) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) => Path::new(&dir).join(name),
                None => return Err(SecretError::NoCredentials(name.clone())),
            },
        };
        let text = std::fs::read_to_string(&path).map_err(|source| SecretError::Read { path: path.clone(), source })?;
        let secret = text.lines().next().unwrap_or("").trim().to_owned();
        if secret.is_empty() {
            return Err(SecretError::Empty(path));
        }
        Ok(secret)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuConfig {
    pub dir: PathBuf,
    pub bridge: String,
    pub netns: Option<String>,
    pub accel: Accel,
    /// The CPU model of a VM whose group names none; `None`: QEMU's `max`.
    pub cpu: Option<String>,
}

pub const DEFAULT_STORAGE: &str = "local-lvm";
pub const DEFAULT_BRIDGE: &str = "vmbr0";
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(300);

/// `USER@REALM!TOKENID`, as `pveum user token add` names a token.
fn token_id_ok(id: &str) -> bool {
    let Some((user, token)) = id.split_once('!') else { return false };
    let Some((name, realm)) = user.split_once('@') else { return false };
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    plain(name) && plain(realm) && plain(token) && token.starts_with(|c: char| c.is_ascii_alphabetic())
}

pub(super) fn check(
    raw: &Items<RawHypervisor>,
    state_dir: &Path,
    resolve: &dyn Fn(&Path) -> PathBuf,
    report: &mut Report<'_>,
) -> Vec<HypervisorConfig> {
    let mut out: Vec<HypervisorConfig> = Vec::new();
    for (i, h) in raw.parsed() {
        let at = |f: &str| FieldPath::parse("hypervisors").index(i).key(f);
        if out.iter().any(|o| o.name == h.name) {
            report.add(&at("name"), Some(h.name.to_string()), "declared twice");
        }
        let (foreign, kind): (&[(&str, bool)], &str) = match h.kind {
            HypervisorKind::Proxmox => {
                (&[("dir", h.dir.is_some()), ("netns", h.netns.is_some()), ("accel", h.accel.is_some())], "qemu")
            }
            HypervisorKind::Qemu => (
                &[
                    ("url", h.url.is_some()),
                    ("token_id", h.token_id.is_some()),
                    ("token_file", h.token_file.is_some()),
                    ("token_credential", h.token_credential.is_some()),
                    ("fingerprint", h.fingerprint.is_some()),
                    ("ca_file", h.ca_file.is_some()),
                    ("storage", h.storage.is_some()),
                    ("nodes", !h.nodes.is_empty()),
                    ("task_timeout", h.task_timeout.is_some()),
                    ("placement_memory", h.placement_memory.is_some()),
                ],
                "proxmox",
            ),
        };
        for (field, set) in foreign {
            if *set {
                report.add(&at(field), None, format!("applies to kind = \"{kind}\" only"));
            }
        }
        if let Some(cpu) = h.cpu.as_ref().filter(|c| !crate::hypervisor::cpu_model_ok(c)) {
            report.add(&at("cpu"), Some(cpu.clone()), "a CPU model name, e.g. x86-64-v2-AES or host (no flags)");
        }
        let backend = match h.kind {
            HypervisorKind::Proxmox => proxmox(h, &at, resolve, report).map(Backend::Proxmox),
            HypervisorKind::Qemu => {
                let bridge = h.bridge.clone().unwrap_or_default();
                if bridge.is_empty() {
                    report.add(&at("bridge"), None, "required: the bridge the VMs' taps join");
                }
                let dir = h.dir.as_deref().map_or_else(|| state_dir.join("vms").join(h.name.as_str()), resolve);
                Some(Backend::Qemu(QemuConfig {
                    dir,
                    bridge,
                    netns: h.netns.clone(),
                    accel: h.accel.unwrap_or_default(),
                    cpu: h.cpu.clone(),
                }))
            }
        };
        if let Some(backend) = backend {
            out.push(HypervisorConfig { name: h.name.clone(), backend });
        }
    }
    out
}

fn proxmox(
    h: &RawHypervisor,
    at: &dyn Fn(&str) -> FieldPath,
    resolve: &dyn Fn(&Path) -> PathBuf,
    report: &mut Report<'_>,
) -> Option<ProxmoxConfig> {
    let urls = h.url.as_ref().map(OneOrMany::values).unwrap_or_default();
    if urls.is_empty() {
        report.add(&at("url"), None, "required, e.g. https://pve1.lab.example:8006 (or a list, one per node)");
    }
    for url in &urls {
        match reqwest::Url::parse(url) {
            Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
            Ok(_) => {
                report.add(&at("url"), Some(url.to_string()), "must be an https:// URL (the API token travels in it)")
            }
            Err(e) => report.add(&at("url"), Some(url.to_string()), format!("not a URL: {e}")),
        }
    }
    let token_id = h.token_id.clone().unwrap_or_default();
    if !token_id_ok(&token_id) {
        report.add(&at("token_id"), Some(token_id.clone()), "must be USER@REALM!TOKENID, e.g. slipway@pve!provision");
    }
    let secret = match (&h.token_file, &h.token_credential) {
        (Some(file), None) => Some(SecretSource::File(resolve(file))),
        (None, Some(name)) if !name.is_empty() && !name.contains(['/', '\0']) => {
            Some(SecretSource::Credential(name.clone()))
        }
        (None, Some(name)) => {
            report.add(&at("token_credential"), Some(name.clone()), "not a credential name");
            None
        }
        (Some(_), Some(_)) => {
            report.add(&at("token_credential"), None, "set token_file or token_credential, not both");
            None
        }
        (None, None) => {
            report.add(&at("token_file"), None, "required (or token_credential): where the API token secret is");
            None
        }
    };
    let trust = match (&h.fingerprint, &h.ca_file) {
        (Some(fp), None) => {
            let parsed: Result<Vec<[u8; 32]>, _> = fp.values().iter().map(|f| parse_fingerprint(f)).collect();
            match parsed {
                Ok(pins) if !pins.is_empty() => Some(Trust::Fingerprints(pins)),
                Ok(_) => {
                    report.add(&at("fingerprint"), None, "an empty list: give at least one fingerprint");
                    None
                }
                Err(e) => {
                    report.add(&at("fingerprint"), None, e.to_string());
                    None
                }
            }
        }
        (None, Some(ca)) => {
            let ca = resolve(ca);
            if let Err(e) = std::fs::metadata(&ca) {
                report.add(&at("ca_file"), Some(ca.display().to_string()), format!("cannot read: {e}"));
            }
            Some(Trust::CaFile(ca))
        }
        (Some(_), Some(_)) => {
            report.add(&at("ca_file"), None, "set fingerprint or ca_file, not both");
            None
        }
        (None, None) => {
            report.add(
                &at("fingerprint"),
                None,
                "required (or ca_file): Proxmox's certificate is self-signed, so pin its SHA-256 fingerprint or name the cluster CA (pve-root-ca.pem)",
            );
            None
        }
    };
    let task_timeout = match &h.task_timeout {
        None => DEFAULT_TASK_TIMEOUT,
        Some(text) => parse_duration(text).unwrap_or_else(|e| {
            report.add(&at("task_timeout"), Some(text.clone()), e.to_string());
            DEFAULT_TASK_TIMEOUT
        }),
    };
    Some(ProxmoxConfig {
        urls,
        token_id,
        secret: secret?,
        trust: trust?,
        storage: h.storage.clone().unwrap_or_else(|| DEFAULT_STORAGE.into()),
        bridge: h.bridge.clone().unwrap_or_else(|| DEFAULT_BRIDGE.into()),
        nodes: h.nodes.clone(),
        task_timeout,
        cpu: h.cpu.clone().unwrap_or_else(|| crate::hypervisor::proxmox::params::DEFAULT_CPU.into()),
        placement_memory: h.placement_memory.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_are_user_at_realm_bang_token() {
        assert!(token_id_ok("slipway@pve!provision"));
        assert!(token_id_ok("root@pam!ci-1"));
        for bad in ["slipway@pve", "slipway!provision", "@pve!x", "slipway@pve!", "slipway@pve!1abc", "a b@pve!x"] {
            assert!(!token_id_ok(bad), "{bad}");
        }
    }
}
