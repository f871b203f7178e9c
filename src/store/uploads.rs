//! Uploaded Ignition configs (OKD's bootstrap/master/worker.ign), one file per cluster and role
//! under `<state_dir>/ignition/<cluster>/<role>.ign`, mode 0600 in 0700 directories, each
//! written to a temporary file and renamed so a reader never sees half a config.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::inventory::Role;

/// The `openshift-install` file name for a role.
pub fn okd_name(role: Role) -> &'static str {
    match role {
        Role::Bootstrap => "bootstrap",
        Role::ControlPlane => "master",
        Role::Worker | Role::Infra => "worker",
    }
}

fn path(state_dir: &Path, cluster: &str, role: Role) -> PathBuf {
    state_dir.join("ignition").join(cluster).join(format!("{}.ign", okd_name(role)))
}

/// Stores `body` as the cluster's config for `role`.
pub fn put(state_dir: &Path, cluster: &str, role: Role, body: &[u8]) -> std::io::Result<()> {
    let target = path(state_dir, cluster, role);
    let dir = target.parent().unwrap_or(state_dir);
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = dir.join(format!(".{}.ign.part", okd_name(role)));
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    file.write_all(body)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &target)
}

/// The stored config for `role` and when it was uploaded, if there is one.
pub fn get(state_dir: &Path, cluster: &str, role: Role) -> std::io::Result<Option<(String, SystemTime)>> {
    let p = path(state_dir, cluster, role);
    match std::fs::read_to_string(&p) {
        Ok(text) => Ok(Some((text, std::fs::metadata(&p)?.modified()?))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn uploads_are_private_files_per_cluster_and_role() {
        let dir = tempfile::tempdir().expect("tempdir");
        put(dir.path(), "prod", Role::ControlPlane, b"{}").expect("put");
        let file = dir.path().join("ignition/prod/master.ign");
        assert_eq!(std::fs::metadata(&file).expect("file").permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(file.parent().expect("dir")).expect("dir").permissions().mode() & 0o777, 0o700);
        assert_eq!(get(dir.path(), "prod", Role::ControlPlane).expect("get").map(|(t, _)| t), Some("{}".into()));
        assert!(get(dir.path(), "prod", Role::Bootstrap).expect("get").is_none());
        assert!(get(dir.path(), "other", Role::ControlPlane).expect("get").is_none());
    }
}
