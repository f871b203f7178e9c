//! TFTP for firmware PXE: read-only, confined to one root directory (the iPXE binaries), plus
//! generated files (`autoexec.ipxe`, which chains to the HTTP boot service). `check` is the pure
//! request-name filter; `server` resolves what passes it against the file system (symlinks
//! included) and `transfer` sends it (blksize, tsize, timeout and windowsize negotiated).

#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod ipxe;
pub mod packet;
pub mod server;
pub mod transfer;

use std::path::PathBuf;

pub use crate::confine::{MAX_NAME, Refusal, inside, relative};

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

/// Filters a requested name without touching the file system (`confine::relative`), and picks
/// out the names slipway generates.
pub fn check(name: &str) -> Result<Wanted, Refusal> {
    let path = relative(name)?;
    if name == "autoexec.ipxe" {
        return Ok(Wanted::Generated(Generated::AutoexecIpxe));
    }
    Ok(Wanted::File(path))
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
    fn autoexec_chains_to_the_http_boot_service() {
        let text = String::from_utf8(generate(Generated::AutoexecIpxe, Some(8080))).expect("utf-8");
        assert!(text.contains("chain --replace --autofree http://${next-server}:8080/boot.ipxe"), "{text}");
    }
}
