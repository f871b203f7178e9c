//! How slipway trusts a Proxmox API endpoint: a CA file (the cluster's `pve-root-ca.pem`, with
//! the host name checked) or the SHA-256 fingerprint of the node's certificate, pinned (what
//! the Proxmox web UI shows under Certificates). Never "accept any certificate".

use std::path::PathBuf;

use rustls::ClientConfig;

use crate::tls::ServerTrust;
pub use crate::tls::format_fingerprint;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    CaFile(PathBuf),
    /// Any of these certificates: one per node, or the old and the new one across a renewal.
    Fingerprints(Vec<[u8; 32]>),
}

/// A fingerprint that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a SHA-256 fingerprint (32 bytes in hex, e.g. AB:CD:…)")]
pub struct BadFingerprint(String);

/// Parses `AB:CD:…` (as Proxmox shows it) or plain hex, any case.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], BadFingerprint> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| BadFingerprint(crate::inventory::types::shown(text)))
}

/// The TLS client settings for `trust` (the shared verifiers of `crate::tls`).
pub fn client_config(trust: &Trust) -> Result<ClientConfig, crate::tls::TrustError> {
    match trust {
        Trust::CaFile(path) => crate::tls::client_config(&ServerTrust::CaFile(path.clone()), "CA file"),
        Trust::Fingerprints(pins) => {
            crate::tls::client_config(&ServerTrust::Pinned(pins.clone()), "pinned certificate")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let colons = "AB:".repeat(31) + "CD";
        let parsed = parse_fingerprint(&colons).expect("parse");
        assert_eq!(parsed[0], 0xab);
        assert_eq!(parsed[31], 0xcd);
        assert_eq!(parse_fingerprint(&colons.replace(':', "").to_lowercase()), Ok(parsed));
        assert_eq!(format_fingerprint(&parsed), colons);
    }

    #[test]
    fn short_or_odd_fingerprints_are_refused_by_value() {
        let err = parse_fingerprint("AB:CD").expect_err("too short");
        assert!(err.to_string().contains("'AB:CD'"), "{err}");
        assert!(parse_fingerprint(&"ZZ".repeat(32)).is_err());
    }
}
