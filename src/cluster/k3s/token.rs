//! A k3s cluster's token: a random password slipway makes once per cluster and keeps private at
//! `<state_dir>/k3s/<cluster>/token` (never logged, never in an event or an API answer). The
//! first server starts with it; every node joining later gets the secure form,
//! `K10<SHA-256 of the cluster's CA bundle>::server:<password>`, so it checks that `/cacerts`
//! is the cluster's before it sends the password (k3s's `clientaccess` token format). The
//! password is 48 letters and digits: never shaped like a kubeadm bootstrap token
//! (`[a-z0-9]{6}.[a-z0-9]{16}`), which `--cluster-init` cannot take (k3s#7499).

use std::path::PathBuf;

use sha2::Digest;
use zeroize::Zeroizing;

use crate::store::files::Files;

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const LENGTH: usize = 48;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The stored token is not one slipway made (never its contents).
    #[error("{path}: not a k3s token slipway made ({LENGTH} letters and digits)")]
    Format { path: PathBuf },
    #[error("no randomness: {0}")]
    Random(String),
}

/// The cluster's password. Shown nowhere: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Zeroizing<String>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// The password itself (the first server's `token`).
    pub fn password(&self) -> &str {
        &self.0
    }

    /// The secure form for joiners, pinned to the CA bundle `/cacerts` serves.
    pub fn secure(&self, cacerts: &[u8]) -> Zeroizing<String> {
        self.secure_with_hash(&ca_hash(cacerts))
    }

    /// The secure form for a CA bundle of this SHA-256 (hex).
    pub fn secure_with_hash(&self, hash: &str) -> Zeroizing<String> {
        Zeroizing::new(format!("K10{hash}::server:{}", self.password()))
    }
}

/// The SHA-256 (hex) of a CA bundle as `/cacerts` serves it: what a secure token carries.
pub fn ca_hash(cacerts: &[u8]) -> String {
    sha2::Sha256::digest(cacerts).iter().map(|b| format!("{b:02x}")).collect()
}

fn path(files: &Files, cluster: &str) -> PathBuf {
    files.root().join("k3s").join(cluster).join("token")
}

/// The cluster's token, made on first use (concurrent first uses agree on one).
pub fn get_or_make(files: &Files, cluster: &str) -> Result<Token, TokenError> {
    if let Some(token) = existing(files, cluster)? {
        return Ok(token);
    }
    let path = path(files, cluster);
    let made = random()?;
    files.write_once(&path, made.as_bytes()).map_err(|source| TokenError::Io { path: path.clone(), source })?;
    existing(files, cluster)?.ok_or(TokenError::Io { path, source: std::io::ErrorKind::NotFound.into() })
}

/// The cluster's token, if one was made.
pub fn existing(files: &Files, cluster: &str) -> Result<Option<Token>, TokenError> {
    let path = path(files, cluster);
    let Some(bytes) = files.read(&path).map_err(|source| TokenError::Io { path: path.clone(), source })? else {
        return Ok(None);
    };
    let valid = bytes.len() == LENGTH && bytes.iter().all(|b| ALPHABET.contains(b));
    if !valid {
        return Err(TokenError::Format { path });
    }
    Ok(Some(Token(Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned()))))
}

/// Forgets a deleted cluster's token.
pub fn remove_cluster(files: &Files, cluster: &str) -> Result<(), TokenError> {
    let dir = files.root().join("k3s").join(cluster);
    files.remove_dir(&dir).map_err(|e| TokenError::Io { path: dir, source: e })
}

/// `LENGTH` characters of `ALPHABET`, uniformly (bytes past the last whole multiple of its
/// size are drawn again).
fn random() -> Result<Zeroizing<String>, TokenError> {
    let limit = 256 - 256 % ALPHABET.len();
    let mut out = Zeroizing::new(String::with_capacity(LENGTH));
    let mut bytes = Zeroizing::new([0u8; 64]);
    while out.len() < LENGTH {
        getrandom::fill(&mut *bytes).map_err(|e| TokenError::Random(e.to_string()))?;
        for b in bytes.iter().filter(|b| usize::from(**b) < limit) {
            if out.len() < LENGTH {
                out.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_made_once_per_cluster_and_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(existing(&Files::Local(dir.path().to_owned()), "edge").expect("read").is_none());
        let token = get_or_make(&Files::Local(dir.path().to_owned()), "edge").expect("made");
        assert_eq!(token.password().len(), LENGTH);
        assert!(!token.password().contains('.'), "never a kubeadm token's shape");
        assert_eq!(get_or_make(&Files::Local(dir.path().to_owned()), "edge").expect("again"), token);
        assert_ne!(get_or_make(&Files::Local(dir.path().to_owned()), "lab").expect("another"), token);
        assert_eq!(format!("{token:?}"), "Token(…)");
        remove_cluster(&Files::Local(dir.path().to_owned()), "edge").expect("remove");
        assert!(existing(&Files::Local(dir.path().to_owned()), "edge").expect("read").is_none());
    }

    #[test]
    fn the_secure_form_carries_the_sha256_of_the_ca_bundle() {
        let ca =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ignition/root-ca.pem")).expect("ca");
        let token = Token(Zeroizing::new("p".repeat(LENGTH)));
        // `sha256sum tests/fixtures/ignition/root-ca.pem`
        let want = format!(
            "K103651c07d42c4af61a85edc3861854f891762b25120f1b7704aabe778a1373a6d::server:{}",
            "p".repeat(LENGTH)
        );
        assert_eq!(*token.secure(&ca), want);
    }

    #[test]
    fn a_damaged_token_file_is_named_without_its_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("k3s/edge/token");
        std::fs::create_dir_all(file.parent().expect("dir")).expect("dir");
        std::fs::write(&file, "abcdef.0123456789abcdef").expect("write");
        let err = get_or_make(&Files::Local(dir.path().to_owned()), "edge").expect_err("refused").to_string();
        assert!(err.contains("k3s/edge/token") && !err.contains("abcdef"), "{err}");
    }

    #[test]
    fn every_character_is_drawn() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            seen.extend(random().expect("random").chars());
        }
        assert_eq!(seen.len(), ALPHABET.len(), "1920 draws cover all 62 characters");
    }
}
