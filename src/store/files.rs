//! Private files the lifecycle keeps beside the store (uploaded Ignition and kubeconfigs, SSH
//! keys, k3s tokens), named by their path under the state directory. On the embedded store
//! they are files there (`private`); on etcd they are keys under `files/<path>` (and their
//! date under `dated/<path>`), so every instance serves and drives with the same ones.
//!
//! Blocking, like the rest of the store: call from `spawn_blocking`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use super::private;
use super::shared::Shared;

/// Where the private files are. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Files {
    /// Files under this directory.
    Local(PathBuf),
    /// Keys in etcd, named by their path under `root`.
    Shared { root: PathBuf, shared: Arc<Shared> },
}

impl Files {
    /// The state directory every path is under.
    pub fn root(&self) -> &Path {
        match self {
            Files::Local(root) | Files::Shared { root, .. } => root,
        }
    }

    /// `target`'s name under the root, as etcd keys it.
    fn name(root: &Path, target: &Path) -> io::Result<String> {
        let rest = target.strip_prefix(root).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{} is outside {}", target.display(), root.display()))
        })?;
        Ok(rest.to_string_lossy().into_owned())
    }

    /// Stores `body` at `target` unless something is there; whether this call stored it
    /// (concurrent callers, on any instance, agree on one).
    pub fn write_once(&self, target: &Path, body: &[u8]) -> io::Result<bool> {
        match self {
            Files::Local(root) => private::write_once(root, target, body),
            Files::Shared { root, shared } => {
                shared.file_once(&Files::name(root, target)?, body).map_err(io::Error::other)
            }
        }
    }

    /// Stores `body` at `target` in place of what is there, dated `made` (else now).
    pub fn replace(&self, target: &Path, body: &[u8], made: Option<SystemTime>) -> io::Result<()> {
        match self {
            Files::Local(root) => private::replace(root, target, body, made),
            Files::Shared { root, shared } => {
                let made = made.unwrap_or_else(SystemTime::now);
                let millis = made.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
                let millis = u64::try_from(millis).unwrap_or(u64::MAX);
                shared.file_replace(&Files::name(root, target)?, body, millis).map_err(io::Error::other)
            }
        }
    }

    /// The bytes at `target`, if there are any.
    pub fn read(&self, target: &Path) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
        match self {
            Files::Local(_) => private::read(target),
            Files::Shared { root, shared } => Ok(shared.file(&Files::name(root, target)?).map(Zeroizing::new)),
        }
    }

    /// When `target` was made (its modification time, or the date stored with it).
    pub fn made(&self, target: &Path) -> io::Result<Option<SystemTime>> {
        match self {
            Files::Local(_) => match std::fs::metadata(target) {
                Ok(meta) => Ok(Some(meta.modified()?)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
            Files::Shared { root, shared } => {
                let name = Files::name(root, target)?;
                Ok(shared.file_made(&name).map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)))
            }
        }
    }

    /// Whether something is stored at `target`.
    pub fn exists(&self, target: &Path) -> io::Result<bool> {
        match self {
            Files::Local(_) => Ok(target.exists()),
            Files::Shared { root, shared } => Ok(shared.file(&Files::name(root, target)?).is_some()),
        }
    }

    /// Removes `target`; one not there is removed already.
    pub fn remove(&self, target: &Path) -> io::Result<()> {
        match self {
            Files::Local(_) => match std::fs::remove_file(target) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            Files::Shared { root, shared } => {
                shared.files_remove(&Files::name(root, target)?, false).map_err(io::Error::other)
            }
        }
    }

    /// Removes `dir` and everything under it.
    pub fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        match self {
            Files::Local(_) => private::remove_dir(dir),
            Files::Shared { root, shared } => {
                shared.files_remove(&Files::name(root, dir)?, true).map_err(io::Error::other)
            }
        }
    }
}
