//! Uploaded OKD installer output: the Ignition configs (bootstrap/master/worker.ign), one file
//! per cluster and role under `<state_dir>/ignition/<cluster>/<role>.ign`, and the admin
//! kubeconfig as `<state_dir>/ignition/<cluster>/auth/kubeconfig` (the installer's own layout):
//! private files (`super::files`: under the state directory, or in etcd when it is shared).

use std::path::PathBuf;
use std::time::SystemTime;

use super::files::Files;
use crate::inventory::Role;

/// The `openshift-install` file name for a role.
pub fn okd_name(role: Role) -> &'static str {
    match role {
        Role::Bootstrap => "bootstrap",
        Role::ControlPlane => "master",
        Role::Worker | Role::Infra => "worker",
    }
}

fn path(files: &Files, cluster: &str, role: Role) -> PathBuf {
    files.root().join("ignition").join(cluster).join(format!("{}.ign", okd_name(role)))
}

fn kubeconfig_path(files: &Files, cluster: &str) -> PathBuf {
    files.root().join("ignition").join(cluster).join("auth").join("kubeconfig")
}

/// Stores `body` as the cluster's config for `role`; dated when it was made (`made`, from its
/// certificates) or else now: the age a stale config is refused by.
pub fn put(files: &Files, cluster: &str, role: Role, body: &[u8], made: Option<SystemTime>) -> std::io::Result<()> {
    files.replace(&path(files, cluster, role), body, made)
}

/// Removes everything uploaded for the cluster (once it is deleted).
pub fn remove_cluster(files: &Files, cluster: &str) -> std::io::Result<()> {
    files.remove_dir(&files.root().join("ignition").join(cluster))
}

/// When the cluster's config for `role` was made, if there is one.
pub fn made(files: &Files, cluster: &str, role: Role) -> std::io::Result<Option<SystemTime>> {
    files.made(&path(files, cluster, role))
}

/// Removes the cluster's config for `role` (the bootstrap node's, once it is gone).
pub fn remove(files: &Files, cluster: &str, role: Role) -> std::io::Result<()> {
    files.remove(&path(files, cluster, role))
}

/// Stores the cluster's admin kubeconfig.
pub fn put_kubeconfig(files: &Files, cluster: &str, body: &[u8]) -> std::io::Result<()> {
    files.replace(&kubeconfig_path(files, cluster), body, None)
}

/// The cluster's admin kubeconfig, if uploaded.
pub fn get_kubeconfig(files: &Files, cluster: &str) -> std::io::Result<Option<Vec<u8>>> {
    Ok(files.read(&kubeconfig_path(files, cluster))?.map(|bytes| bytes.to_vec()))
}

/// The stored config for `role` and when it was made, if there is one.
pub fn get(files: &Files, cluster: &str, role: Role) -> std::io::Result<Option<(String, SystemTime)>> {
    let p = path(files, cluster, role);
    let Some(bytes) = files.read(&p)? else { return Ok(None) };
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", p.display())))?;
    let made = files.made(&p)?.unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(Some((text, made)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn files(dir: &tempfile::TempDir) -> Files {
        Files::Local(dir.path().to_owned())
    }

    #[test]
    fn uploads_are_private_files_per_cluster_and_role() {
        let dir = tempfile::tempdir().expect("tempdir");
        put(&files(&dir), "prod", Role::ControlPlane, b"{}", None).expect("put");
        let day_ago = SystemTime::now() - std::time::Duration::from_secs(86400);
        put(&files(&dir), "dated", Role::Bootstrap, b"{}", Some(day_ago)).expect("put");
        assert_eq!(made(&files(&dir), "dated", Role::Bootstrap).expect("made"), Some(day_ago));
        let file = dir.path().join("ignition/prod/master.ign");
        assert_eq!(std::fs::metadata(&file).expect("file").permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(file.parent().expect("dir")).expect("dir").permissions().mode() & 0o777, 0o700);
        assert_eq!(get(&files(&dir), "prod", Role::ControlPlane).expect("get").map(|(t, _)| t), Some("{}".into()));
        assert!(get(&files(&dir), "prod", Role::Bootstrap).expect("get").is_none());
        assert!(get(&files(&dir), "other", Role::ControlPlane).expect("get").is_none());
        remove_cluster(&files(&dir), "dated").expect("remove a cluster's uploads");
        assert_eq!(made(&files(&dir), "dated", Role::Bootstrap).expect("made"), None);
        remove(&files(&dir), "prod", Role::ControlPlane).expect("remove");
        remove(&files(&dir), "prod", Role::ControlPlane).expect("removing nothing is fine");
        assert!(get(&files(&dir), "prod", Role::ControlPlane).expect("get").is_none());
    }

    #[test]
    fn the_kubeconfig_is_a_private_file_where_the_installer_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(get_kubeconfig(&files(&dir), "prod").expect("get"), None);
        put_kubeconfig(&files(&dir), "prod", b"apiVersion: v1").expect("put");
        let file = dir.path().join("ignition/prod/auth/kubeconfig");
        assert_eq!(std::fs::metadata(&file).expect("file").permissions().mode() & 0o777, 0o600);
        assert_eq!(get_kubeconfig(&files(&dir), "prod").expect("get").as_deref(), Some(&b"apiVersion: v1"[..]));
    }
}
