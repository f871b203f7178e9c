//! Fills slipway's own TFTP root with the iPXE binaries of Debian's `ipxe` package. The package
//! links some of them out of its directory (ipxe.efi -> /boot/ipxe.efi), which a confined root
//! must refuse, so the files are copied (each written to a temporary name, then renamed).

use std::path::{Path, PathBuf};

/// The binaries DHCP hands to firmware PXE clients by default.
pub const FILES: [&str; 3] = ["undionly.kpxe", "ipxe.efi", "snponly.efi"];

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("iPXE files: cannot create {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("iPXE files: cannot copy {from} to {to}: {source}")]
    Copy { from: PathBuf, to: PathBuf, source: std::io::Error },
}

/// Copies `FILES` from `from` into `dir` where missing or different; returns the files that
/// `from` does not have (the `ipxe` package is not installed).
pub fn copy(from: &Path, dir: &Path) -> Result<Vec<&'static str>, CopyError> {
    std::fs::create_dir_all(dir).map_err(|source| CopyError::Dir { path: dir.to_owned(), source })?;
    let mut missing = Vec::new();
    for name in FILES {
        let src = from.join(name);
        let Ok(data) = std::fs::read(&src) else {
            missing.push(name);
            continue;
        };
        let dst = dir.join(name);
        if std::fs::read(&dst).is_ok_and(|have| have == data) {
            continue;
        }
        let tmp = dir.join(format!(".{name}.part"));
        let err = |source| CopyError::Copy { from: src.clone(), to: dst.clone(), source };
        std::fs::write(&tmp, &data).map_err(err)?;
        std::fs::rename(&tmp, &dst).map_err(err)?;
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_behind_symlinks_are_copied_as_files_and_missing_ones_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pkg = dir.path().join("pkg");
        let elsewhere = dir.path().join("boot");
        std::fs::create_dir_all(&pkg).expect("pkg");
        std::fs::create_dir_all(&elsewhere).expect("boot");
        std::fs::write(elsewhere.join("ipxe.efi"), b"efi").expect("efi");
        std::os::unix::fs::symlink(elsewhere.join("ipxe.efi"), pkg.join("ipxe.efi")).expect("link");
        std::fs::write(pkg.join("undionly.kpxe"), b"kpxe").expect("kpxe");
        let root = dir.path().join("tftp");
        assert_eq!(copy(&pkg, &root).expect("copy"), vec!["snponly.efi"]);
        let meta = std::fs::symlink_metadata(root.join("ipxe.efi")).expect("copied");
        assert!(meta.is_file(), "a regular file, not a link");
        assert_eq!(std::fs::read(root.join("ipxe.efi")).expect("read"), b"efi");
        std::fs::write(pkg.join("undionly.kpxe"), b"kpxe v2").expect("update");
        copy(&pkg, &root).expect("again");
        assert_eq!(std::fs::read(root.join("undionly.kpxe")).expect("read"), b"kpxe v2");
    }
}
