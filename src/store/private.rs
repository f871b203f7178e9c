//! Private files under the state directory (uploads, keys, tokens): mode 0600 in 0700
//! directories, written to a file of their own first so a reader never sees half of one, and
//! synced (the file, then the directory entries) before they count. `write_once` keeps the
//! first writer's file when several race; `replace` swaps a file in whole.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Stores `body` at `target` unless a file is there already; whether this call stored it.
/// Concurrent callers agree: exactly one wins, and every caller may then read the winner's.
pub fn write_once(state_dir: &Path, target: &Path, body: &[u8]) -> std::io::Result<bool> {
    let (dir, tmp) = aside(state_dir, target)?;
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(&tmp)?;
        file.write_all(body)?;
        file.sync_all()?;
        // A link fails when the name exists: the first writer's file stays.
        std::fs::hard_link(&tmp, target)?;
        sync_dir(dir)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Stores `body` at `target` in place of what is there (dated `made` if given).
pub fn replace(
    state_dir: &Path,
    target: &Path,
    body: &[u8],
    made: Option<std::time::SystemTime>,
) -> std::io::Result<()> {
    let (dir, tmp) = aside(state_dir, target)?;
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(&tmp)?;
        file.write_all(body)?;
        if let Some(made) = made {
            file.set_modified(made)?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, target)?;
        sync_dir(dir)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The file's bytes, if it exists.
pub fn read(path: &Path) -> std::io::Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(zeroize::Zeroizing::new(bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a directory of private files and everything in it; one that is not there is
/// already removed.
pub fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The target's directory (made, with its parents up to `state_dir`, and their entries synced)
/// and a name of this call's own beside the target.
fn aside<'a>(state_dir: &Path, target: &'a Path) -> std::io::Result<(&'a Path, std::path::PathBuf)> {
    let dir = target.parent().unwrap_or(target);
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let mut at = dir;
        while let Some(parent) = at.parent() {
            sync_dir(parent)?;
            if parent == state_dir {
                break;
            }
            at = parent;
        }
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.{}.part", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    Ok((dir, tmp))
}

/// Makes a directory's entries durable (a new file's name survives a crash).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_first_writer_wins_and_nothing_is_left_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("k3s/prod/token");
        let (root, at) = (dir.path(), target.as_path());
        let won: Vec<bool> = std::thread::scope(|s| {
            let all: Vec<_> = (0..8u8).map(|i| s.spawn(move || write_once(root, at, &[b'a' + i]))).collect();
            all.into_iter().map(|h| h.join().expect("thread").expect("write")).collect()
        });
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
        let kept = read(&target).expect("read").expect("there");
        assert_eq!(kept.len(), 1);
        assert_eq!(std::fs::metadata(&target).expect("file").permissions().mode() & 0o777, 0o600);
        let parent = dir.path().join("k3s");
        assert_eq!(std::fs::metadata(parent).expect("dir").permissions().mode() & 0o777, 0o700);
        let names: Vec<_> = std::fs::read_dir(target.parent().expect("dir"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("token")]);
        assert!(!write_once(dir.path(), &target, b"later").expect("write"), "kept");
        assert_eq!(*read(&target).expect("read").expect("there"), *kept);
    }

    #[test]
    fn a_replaced_file_is_whole_and_dated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("ignition/prod/master.ign");
        replace(dir.path(), &target, b"one", None).expect("write");
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86400);
        replace(dir.path(), &target, b"two", Some(day_ago)).expect("write");
        assert_eq!(*read(&target).expect("read").expect("there"), b"two".to_vec());
        assert_eq!(std::fs::metadata(&target).expect("file").modified().expect("mtime"), day_ago);
        assert!(read(&dir.path().join("nothing")).expect("read").is_none());
    }
}
