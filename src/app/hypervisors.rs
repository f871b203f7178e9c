//! The hypervisor backends the config describes, built for the daemon (and checked by
//! `slipway check`).

use std::sync::Arc;

use crate::config::{Backend, HypervisorConfig};
use crate::hypervisor::Hypervisor;

/// Why a backend could not be built; names the config entry.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("hypervisor {name}: API token secret: {source}")]
    Secret { name: String, source: crate::config::SecretError },
    #[error("hypervisor {name}: {source}")]
    Client { name: String, source: Box<crate::hypervisor::proxmox::api::ClientError> },
}

/// The backend a config entry describes. Reads the Proxmox token secret now, so a missing
/// or unreadable secret stops the daemon at start with the entry named.
pub fn build(config: &HypervisorConfig) -> Result<Arc<dyn Hypervisor>, BuildError> {
    let name = config.name.to_string();
    Ok(match &config.backend {
        Backend::Proxmox(p) => {
            let settings = crate::hypervisor::proxmox::Settings {
                name: name.clone(),
                urls: p.urls.clone(),
                token_id: p.token_id.clone(),
                token_secret: p.secret.read().map_err(|source| BuildError::Secret { name: name.clone(), source })?,
                trust: p.trust.clone(),
                defaults: crate::hypervisor::proxmox::params::Defaults {
                    storage: p.storage.clone(),
                    bridge: p.bridge.clone(),
                    cpu: p.cpu.clone(),
                },
                nodes: p.nodes.clone(),
                task_timeout: p.task_timeout,
                memory: p.placement_memory,
            };
            Arc::new(
                crate::hypervisor::proxmox::Proxmox::new(settings)
                    .map_err(|source| BuildError::Client { name: name.clone(), source: Box::new(source) })?,
            )
        }
        Backend::Qemu(q) => {
            let mut settings = crate::hypervisor::qemu::Settings::new(&name, q.dir.clone(), &q.bridge);
            settings.netns.clone_from(&q.netns);
            settings.accel = q.accel;
            settings.cpu.clone_from(&q.cpu);
            Arc::new(crate::hypervisor::qemu::Qemu::new(settings))
        }
    })
}
