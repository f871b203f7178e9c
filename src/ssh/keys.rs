//! The SSH keys slipway makes (ed25519 only): one client key per cluster, whose public half
//! every node of the cluster gets for user `core` in its config, and one host key per node,
//! delivered in that node's own config and pinned when slipway logs in, so no host is ever
//! trusted on first use. Private files under `<state_dir>/ssh/<cluster>/`: `id_ed25519` (the
//! client key; an operator may use it too) and `hosts/<node>` (0600, directories 0700), beside
//! it `hosts/<node>.delivered` once a config carrying it was served (only then is it pinned). A
//! key is made once: concurrent first uses agree on one file (written aside, then linked in,
//! the directory synced before the key is handed out).

use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};

use crate::store::files::Files;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A stored key that is not an OpenSSH ed25519 private key (never its contents).
    #[error("{path}: not an OpenSSH ed25519 private key: {message}")]
    Format { path: PathBuf, message: String },
    #[error("cannot make an ed25519 key: {0}")]
    Generate(String),
}

/// A node's host key as its config carries it.
#[derive(Clone)]
pub struct HostKey {
    /// The OpenSSH private key file (`/etc/ssh/ssh_host_ed25519_key`).
    pub private: zeroize::Zeroizing<String>,
    /// Its public line (`ssh_host_ed25519_key.pub`).
    pub public: String,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKey").field("public", &self.public).finish_non_exhaustive()
    }
}

fn cluster_dir(files: &Files, cluster: &str) -> PathBuf {
    files.root().join("ssh").join(cluster)
}

fn host_path(files: &Files, cluster: &str, node: &str) -> PathBuf {
    cluster_dir(files, cluster).join("hosts").join(node)
}

/// The cluster's client key, made on first use.
pub fn client(files: &Files, cluster: &str) -> Result<PrivateKey, KeyError> {
    let path = cluster_dir(files, cluster).join("id_ed25519");
    get_or_make(files, &path, &format!("slipway@{cluster}"))
}

/// The public line of the cluster's client key (for `authorized_keys`), made on first use.
pub fn client_public(files: &Files, cluster: &str) -> Result<String, KeyError> {
    let key = client(files, cluster)?;
    openssh_public(key.public_key())
}

/// The node's host key, made on first use.
pub fn host(files: &Files, cluster: &str, node: &str) -> Result<HostKey, KeyError> {
    let path = host_path(files, cluster, node);
    let key = get_or_make(files, &path, node)?;
    let private = key.to_openssh(LineEnding::LF).map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok(HostKey { private: zeroize::Zeroizing::new(private.to_string()), public: openssh_public(key.public_key())? })
}

/// The cluster's client key, if one was made (never makes one).
pub fn existing_client(files: &Files, cluster: &str) -> Result<Option<PrivateKey>, KeyError> {
    read(files, &cluster_dir(files, cluster).join("id_ed25519"))
}

fn delivered_path(files: &Files, cluster: &str, node: &str) -> PathBuf {
    cluster_dir(files, cluster).join("hosts").join(format!("{node}.delivered"))
}

/// Notes that a config carrying the node's host key was served: from now on it is pinned.
pub fn delivered(files: &Files, cluster: &str, node: &str) -> Result<(), KeyError> {
    let path = delivered_path(files, cluster, node);
    if files.exists(&path).map_err(|source| KeyError::Io { path: path.clone(), source })? {
        return Ok(());
    }
    files.write_once(&path, b"").map(drop).map_err(|source| KeyError::Io { path, source })
}

/// The node's host key to pin: the one slipway made and served the node in its config; `None`
/// when it was never served.
pub fn pinned(files: &Files, cluster: &str, node: &str) -> Result<Option<PublicKey>, KeyError> {
    let delivered = delivered_path(files, cluster, node);
    if !files.exists(&delivered).map_err(|source| KeyError::Io { path: delivered, source })? {
        return Ok(None);
    }
    Ok(read(files, &host_path(files, cluster, node))?.map(|key| key.public_key().clone()))
}

/// Forgets a node's host key (slipway forgets the node; one made again gets a new key).
pub fn remove_host(files: &Files, cluster: &str, node: &str) -> Result<(), KeyError> {
    for path in [delivered_path(files, cluster, node), host_path(files, cluster, node)] {
        files.remove(&path).map_err(|source| KeyError::Io { path, source })?;
    }
    Ok(())
}

/// Forgets every key of a deleted cluster.
pub fn remove_cluster(files: &Files, cluster: &str) -> Result<(), KeyError> {
    let path = cluster_dir(files, cluster);
    files.remove_dir(&path).map_err(|e| KeyError::Io { path, source: e })
}

/// `SHA256:…`, as `ssh-keygen -l` shows it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn openssh_public(key: &PublicKey) -> Result<String, KeyError> {
    key.to_openssh().map_err(|e| KeyError::Generate(e.to_string()))
}

fn read(files: &Files, path: &Path) -> Result<Option<PrivateKey>, KeyError> {
    let Some(text) = files.read(path).map_err(|e| KeyError::Io { path: path.to_owned(), source: e })? else {
        return Ok(None);
    };
    let format = |message: String| KeyError::Format { path: path.to_owned(), message };
    let key = PrivateKey::from_openssh(&*text).map_err(|e| format(e.to_string()))?;
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(format(format!("it is {}", key.algorithm())));
    }
    Ok(Some(key))
}

/// The key at `path`, or a new one stored there (when several callers race, the first's).
fn get_or_make(files: &Files, path: &Path, comment: &str) -> Result<PrivateKey, KeyError> {
    if let Some(key) = read(files, path)? {
        return Ok(key);
    }
    let io = |source: std::io::Error| KeyError::Io { path: path.to_owned(), source };
    let mut key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    key.set_comment(comment);
    let text = key.to_openssh(LineEnding::LF).map_err(|e| KeyError::Generate(e.to_string()))?;
    if files.write_once(path, text.as_bytes()).map_err(io)? {
        return Ok(key);
    }
    read(files, path)?.ok_or_else(|| io(std::io::ErrorKind::NotFound.into()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_key_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = client_public(&Files::Local(dir.path().to_owned()), "prod").expect("client key");
        assert!(first.starts_with("ssh-ed25519 AAAA") && first.ends_with(" slipway@prod"), "{first}");
        assert_eq!(client_public(&Files::Local(dir.path().to_owned()), "prod").expect("again"), first);
        assert_ne!(client_public(&Files::Local(dir.path().to_owned()), "lab").expect("another cluster"), first);
        let file = dir.path().join("ssh/prod/id_ed25519");
        assert_eq!(std::fs::metadata(&file).expect("file").permissions().mode() & 0o777, 0o600);
        let parent = file.parent().expect("dir");
        assert_eq!(std::fs::metadata(parent).expect("dir").permissions().mode() & 0o777, 0o700);
        let names: Vec<_> = std::fs::read_dir(parent).expect("dir").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("id_ed25519")], "no temporary file left");
    }

    #[test]
    fn concurrent_first_uses_agree_on_one_host_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys: Vec<String> = std::thread::scope(|s| {
            let all: Vec<_> =
                (0..8).map(|_| s.spawn(|| host(&Files::Local(dir.path().to_owned()), "prod", "bootstrap"))).collect();
            all.into_iter().map(|h| h.join().expect("thread").expect("host key").public).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
        assert!(
            pinned(&Files::Local(dir.path().to_owned()), "prod", "bootstrap").expect("read").is_none(),
            "made, never served"
        );
        delivered(&Files::Local(dir.path().to_owned()), "prod", "bootstrap").expect("served");
        delivered(&Files::Local(dir.path().to_owned()), "prod", "bootstrap").expect("served again");
        let pinned = pinned(&Files::Local(dir.path().to_owned()), "prod", "bootstrap").expect("read").expect("pinned");
        assert_eq!(openssh_public(&pinned).expect("line"), keys[0]);
        let private = host(&Files::Local(dir.path().to_owned()), "prod", "bootstrap").expect("host key").private;
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        assert!(fingerprint(&pinned).starts_with("SHA256:"));
    }

    #[test]
    fn a_host_key_is_forgotten_with_its_node_and_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(pinned(&Files::Local(dir.path().to_owned()), "prod", "m0").expect("read").is_none(), "never made");
        assert!(existing_client(&Files::Local(dir.path().to_owned()), "prod").expect("read").is_none(), "never made");
        let before = host(&Files::Local(dir.path().to_owned()), "prod", "m0").expect("made").public;
        delivered(&Files::Local(dir.path().to_owned()), "prod", "m0").expect("served");
        remove_host(&Files::Local(dir.path().to_owned()), "prod", "m0").expect("remove");
        remove_host(&Files::Local(dir.path().to_owned()), "prod", "m0").expect("removing nothing is fine");
        assert!(pinned(&Files::Local(dir.path().to_owned()), "prod", "m0").expect("read").is_none());
        assert!(!dir.path().join("ssh/prod/hosts/m0.delivered").exists());
        assert_ne!(host(&Files::Local(dir.path().to_owned()), "prod", "m0").expect("made again").public, before);
        remove_cluster(&Files::Local(dir.path().to_owned()), "prod").expect("remove the cluster's keys");
        assert!(!dir.path().join("ssh/prod").exists());
    }

    #[test]
    fn a_damaged_key_file_is_named_without_its_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ssh/prod/id_ed25519");
        std::fs::create_dir_all(file.parent().expect("dir")).expect("dir");
        std::fs::write(&file, "secret-ish garbage").expect("write");
        let err = client(&Files::Local(dir.path().to_owned()), "prod").expect_err("not a key").to_string();
        assert!(err.contains("ssh/prod/id_ed25519") && err.contains("not an OpenSSH"), "{err}");
        assert!(!err.contains("garbage"), "{err}");
    }
}
