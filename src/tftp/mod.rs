//! TFTP for firmware PXE: read-only, confined to one root directory (the iPXE binaries), plus
//! generated files (`autoexec.ipxe`, which chains to the HTTP boot service). `check` is the pure
//! request-name filter; `server` resolves what passes it against the file system (symlinks
//! included) and `transfer` sends it (blksize, tsize, timeout and windowsize negotiated).

pub mod fuzz;
pub mod ipxe;
pub mod packet;
pub mod server;
pub mod transfer;

use std::path::{Component, Path, PathBuf};

/// Longest file name accepted (TFTP has no limit of its own; firmware names are short).
pub const MAX_NAME: usize = 255;

/// What a read request asks for, once its name passed `check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// A file slipway writes itself.
    Generated(Generated),
    /// A path relative to the root (no `..`, no absolute part; symlinks are checked later).
    File(PathBuf),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generated {
    /// iPXE's default script name: chain to the HTTP boot service.
    AutoexecIpxe,
}

/// Why a request name is refused (answered with a TFTP access violation).
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

/// Filters a requested name without touching the file system.
pub fn check(name: &str) -> Result<Wanted, Refusal> {
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
    if name == "autoexec.ipxe" {
        return Ok(Wanted::Generated(Generated::AutoexecIpxe));
    }
    let path = PathBuf::from(name);
    // Belt and braces: after the checks above every component must be a plain name.
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Refusal::DotSegment);
    }
    Ok(Wanted::File(path))
}

/// Whether `resolved` (a canonical path) lies inside `root` (canonical), compared by component,
/// so `/srv/tftp-evil` is not inside `/srv/tftp`.
pub fn inside(root: &Path, resolved: &Path) -> bool {
    resolved.starts_with(root) && resolved != root
}

/// The body of a generated file. `http_port` is the HTTP boot service's port; iPXE fills in
/// `${next-server}` (slipway, from the DHCP answer) itself.
pub fn generate(file: Generated, http_port: Option<u16>) -> Vec<u8> {
    match (file, http_port) {
        (Generated::AutoexecIpxe, Some(port)) => format!(
            "#!ipxe\n:retry\ndhcp && chain --replace --autofree http://${{next-server}}:{port}/boot.ipxe || goto wait\n\
             :wait\necho slipway: no boot script yet, retrying in 10 s\nsleep 10\ngoto retry\n"
        ),
        (Generated::AutoexecIpxe, None) => {
            "#!ipxe\necho slipway: the HTTP boot service is not configured ([http] listen)\nsleep 60\nreboot\n"
                .to_string()
        }
    }
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_and_subdirectories_pass() {
        assert_eq!(check("undionly.kpxe"), Ok(Wanted::File("undionly.kpxe".into())));
        assert_eq!(check("arm64/snp.efi"), Ok(Wanted::File("arm64/snp.efi".into())));
        assert_eq!(check("autoexec.ipxe"), Ok(Wanted::Generated(Generated::AutoexecIpxe)));
        assert_eq!(check("a..b.efi"), Ok(Wanted::File("a..b.efi".into())), "dots inside a name are fine");
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
            assert_eq!(check(name), Err(*want), "{name:?}");
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

    #[test]
    fn autoexec_chains_to_the_http_boot_service() {
        let text = String::from_utf8(generate(Generated::AutoexecIpxe, Some(8080))).expect("utf-8");
        assert!(text.contains("chain --replace --autofree http://${next-server}:8080/boot.ipxe"), "{text}");
    }
}
