//! Path confinement shared by TFTP and the HTTP boot service: which request names may stand for
//! a file under a served root (no `..`, no absolute or encoded parts), and whether a resolved
//! path (symlinks followed) is still inside that root. Neutral and pure.

use std::path::{Component, Path, PathBuf};

/// Longest file name accepted (TFTP has no limit of its own; firmware names are short).
pub const MAX_NAME: usize = 255;

/// Why a request name is refused (TFTP answers an access violation, HTTP a 404).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("empty file name")]
    Empty,
    #[error("file name longer than {MAX_NAME} bytes")]
    TooLong,
    #[error("control character in the file name")]
    Control,
    #[error("absolute path")]
    Absolute,
    #[error("backslash in the file name")]
    Backslash,
    #[error("percent-encoding in the file name")]
    Encoded,
    #[error("empty path segment (`//`)")]
    EmptySegment,
    #[error("`..` or `.` path segment")]
    DotSegment,
}

/// The relative path a requested name (a TFTP file name, a decoded image URL path) stands for,
/// checked without touching the file system.
pub fn relative(name: &str) -> Result<PathBuf, Refusal> {
    if name.is_empty() {
        return Err(Refusal::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(Refusal::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(Refusal::Control);
    }
    if name.starts_with('/') {
        return Err(Refusal::Absolute);
    }
    if name.contains('\\') {
        return Err(Refusal::Backslash);
    }
    if name.contains('%') {
        return Err(Refusal::Encoded);
    }
    if name.split('/').any(str::is_empty) {
        return Err(Refusal::EmptySegment);
    }
    if name.split('/').any(|s| s == "." || s == "..") {
        return Err(Refusal::DotSegment);
    }
    let path = PathBuf::from(name);
    // Belt and braces: after the checks above every component must be a plain name.
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Refusal::DotSegment);
    }
    Ok(path)
}

/// Whether `resolved` (a canonical path) lies inside `root` (canonical), compared by component,
/// so `/srv/tftp-evil` is not inside `/srv/tftp`.
pub fn inside(root: &Path, resolved: &Path) -> bool {
    resolved.starts_with(root) && resolved != root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_and_subdirectories_pass() {
        assert_eq!(relative("undionly.kpxe"), Ok(PathBuf::from("undionly.kpxe")));
        assert_eq!(relative("arm64/snp.efi"), Ok(PathBuf::from("arm64/snp.efi")));
        assert_eq!(relative("a..b.efi"), Ok(PathBuf::from("a..b.efi")), "dots inside a name are fine");
    }

    #[test]
    fn the_traversal_matrix_is_refused() {
        let long = "a".repeat(MAX_NAME + 1);
        let cases: &[(&str, Refusal)] = &[
            ("", Refusal::Empty),
            (&long, Refusal::TooLong),
            ("../etc/passwd", Refusal::DotSegment),
            ("ipxe/../../etc/passwd", Refusal::DotSegment),
            ("..", Refusal::DotSegment),
            ("./undionly.kpxe", Refusal::DotSegment),
            ("..\\windows\\win.ini", Refusal::Backslash),
            ("/etc/passwd", Refusal::Absolute),
            ("//etc/passwd", Refusal::Absolute),
            ("ipxe//undionly.kpxe", Refusal::EmptySegment),
            ("dir/", Refusal::EmptySegment),
            ("%2e%2e/etc/passwd", Refusal::Encoded),
            ("%2E%2E%2Fetc", Refusal::Encoded),
            ("undionly.kpxe\0../x", Refusal::Control),
            ("a\nb", Refusal::Control),
        ];
        for (name, want) in cases {
            assert_eq!(relative(name), Err(*want), "{name:?}");
        }
    }

    #[test]
    fn a_sibling_whose_name_starts_with_the_roots_is_outside() {
        let root = Path::new("/srv/tftp");
        assert!(inside(root, Path::new("/srv/tftp/undionly.kpxe")));
        assert!(!inside(root, Path::new("/srv/tftp-evil/undionly.kpxe")));
        assert!(!inside(root, Path::new("/srv/tftp")));
        assert!(!inside(root, Path::new("/etc/passwd")));
    }
}
