//! Uploaded OKD installer output: the Ignition configs (bootstrap/master/worker.ign), one file
//! per cluster and role under `<state_dir>/ignition/<cluster>/<role>.ign`, and the admin
//! kubeconfig as `<state_dir>/ignition/<cluster>/auth/kubeconfig` (the installer's own layout):
//! private files (`super::private`).

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

fn kubeconfig_path(state_dir: &Path, cluster: &str) -> PathBuf {
    state_dir.join("ignition").join(cluster).join("auth").join("kubeconfig")
}

/// Stores `body` as the cluster's config for `role`; its modification time is when it was
/// made (`made`, from its certificates) or else now: the age a stale config is refused by.
pub fn put(state_dir: &Path, cluster: &str, role: Role, body: &[u8], made: Option<SystemTime>) -> std::io::Result<()> {
    write_private(state_dir, &path(state_dir, cluster, role), body, made)
}

/// Removes everything uploaded for the cluster (once it is deleted).
pub fn remove_cluster(state_dir: &Path, cluster: &str) -> std::io::Result<()> {
    super::private::remove_dir(&state_dir.join("ignition").join(cluster))
}

/// When the cluster's config for `role` was made (its modification time), if there is one.
pub fn made(state_dir: &Path, cluster: &str, role: Role) -> std::io::Result<Option<SystemTime>> {
    match std::fs::metadata(path(state_dir, cluster, role)) {
        Ok(meta) => Ok(Some(meta.modified()?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the cluster's config for `role` (the bootstrap node's, once it is gone).
pub fn remove(state_dir: &Path, cluster: &str, role: Role) -> std::io::Result<()> {
    match std::fs::remove_file(path(state_dir, cluster, role)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Stores the cluster's admin kubeconfig.
pub fn put_kubeconfig(state_dir: &Path, cluster: &str, body: &[u8]) -> std::io::Result<()> {
    write_private(state_dir, &kubeconfig_path(state_dir, cluster), body, None)
}

/// The cluster's admin kubeconfig, if uploaded.
pub fn get_kubeconfig(state_dir: &Path, cluster: &str) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(kubeconfig_path(state_dir, cluster)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_private(state_dir: &Path, target: &Path, body: &[u8], made: Option<SystemTime>) -> std::io::Result<()> {
    super::private::replace(state_dir, target, body, made)
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
        put(dir.path(), "prod", Role::ControlPlane, b"{}", None).expect("put");
        let day_ago = SystemTime::now() - std::time::Duration::from_secs(86400);
        put(dir.path(), "dated", Role::Bootstrap, b"{}", Some(day_ago)).expect("put");
        assert_eq!(made(dir.path(), "dated", Role::Bootstrap).expect("made"), Some(day_ago));
        let file = dir.path().join("ignition/prod/master.ign");
        assert_eq!(std::fs::metadata(&file).expect("file").permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(file.parent().expect("dir")).expect("dir").permissions().mode() & 0o777, 0o700);
        assert_eq!(get(dir.path(), "prod", Role::ControlPlane).expect("get").map(|(t, _)| t), Some("{}".into()));
        assert!(get(dir.path(), "prod", Role::Bootstrap).expect("get").is_none());
        assert!(get(dir.path(), "other", Role::ControlPlane).expect("get").is_none());
        remove_cluster(dir.path(), "dated").expect("remove a cluster's uploads");
        assert_eq!(made(dir.path(), "dated", Role::Bootstrap).expect("made"), None);
        remove(dir.path(), "prod", Role::ControlPlane).expect("remove");
        remove(dir.path(), "prod", Role::ControlPlane).expect("removing nothing is fine");
        assert!(get(dir.path(), "prod", Role::ControlPlane).expect("get").is_none());
    }

    #[test]
    fn the_kubeconfig_is_a_private_file_where_the_installer_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(get_kubeconfig(dir.path(), "prod").expect("get"), None);
        put_kubeconfig(dir.path(), "prod", b"apiVersion: v1").expect("put");
        let file = dir.path().join("ignition/prod/auth/kubeconfig");
        assert_eq!(std::fs::metadata(&file).expect("file").permissions().mode() & 0o777, 0o600);
        assert_eq!(get_kubeconfig(dir.path(), "prod").expect("get").as_deref(), Some(&b"apiVersion: v1"[..]));
    }
}
