//! The tokens the admin API accepts: the admin token (role `admin`, named `admin`) and those of
//! an optional tokens file, each with a name and a role (`admin` or `read-only`). The file is
//! read at start and again on SIGHUP (`systemctl reload slipway`), so tokens rotate without a
//! restart; a file that does not read or parse leaves the tokens in force as they were. Names
//! reach the audit trail and logs; tokens never do.
//!
//! The tokens file, one token per line (`#` starts a comment):
//!
//! ```text
//! # name      role       token
//! ci          admin      3f0c...
//! dashboard   read-only  9a41...
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq;

/// A bearer token. Compared in constant time; never printed.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token from its text; surrounding whitespace (a trailing newline) is dropped.
    pub fn new(text: &str) -> Result<Token, BadToken> {
        let text = text.trim();
        if text.len() < 16 {
            return Err(BadToken::TooShort);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(BadToken::Spaces);
        }
        Ok(Token(text.as_bytes().to_vec()))
    }

    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.len() == presented.len() && bool::from(self.0.ct_eq(presented))
    }
}

/// Why a token's text is not a token (the text itself is never shown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadToken {
    #[error("the admin token must be at least 16 characters")]
    TooShort,
    #[error("the admin token must not contain spaces or control characters")]
    Spaces,
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// `GET` and `HEAD` only: every write answers 403.
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }
}

/// The name the admin token goes by.
pub const ADMIN: &str = "admin";

#[derive(Clone, Debug)]
struct Key {
    name: String,
    role: Role,
    token: Token,
}

/// A problem with the tokens file, naming the file and line (never a token).
#[derive(Debug, thiserror::Error)]
#[error("tokens file {path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct KeysError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// Every accepted token, swapped whole on a reload.
#[derive(Debug)]
pub struct Keys {
    set: RwLock<Arc<Set>>,
}

/// The admin token and the tokens file's tokens.
#[derive(Debug)]
struct Set {
    admin: Token,
    listed: Vec<Key>,
}

impl Keys {
    /// Only the admin token.
    pub fn single(admin: Token) -> Keys {
        Keys { set: RwLock::new(Arc::new(Set { admin, listed: Vec::new() })) }
    }

    /// The admin token and the tokens of `file` (read now: an error stops the start).
    pub fn with_file(admin: Token, file: &Path) -> Result<Keys, KeysError> {
        Keys::read(admin, Some(file))
    }

    /// The admin token and, with a file, the tokens it lists (read now).
    pub fn read(admin: Token, file: Option<&Path>) -> Result<Keys, KeysError> {
        let listed = match file {
            Some(path) => read(path)?,
            None => Vec::new(),
        };
        Ok(Keys { set: RwLock::new(Arc::new(Set { admin, listed })) })
    }

    /// Puts every token of `other` in force at once (a reload, after its checks passed).
    /// Whether that changed any token, name or role.
    pub fn install(&self, other: Keys) -> bool {
        let next = other.current();
        let mut set = self.set.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let same = set.admin.0 == next.admin.0
            && set.listed.len() == next.listed.len()
            && set
                .listed
                .iter()
                .zip(&next.listed)
                .all(|(a, b)| a.name == b.name && a.role == b.role && a.token.0 == b.token.0);
        *set = next;
        !same
    }

    /// How many tokens the tokens file lists.
    pub fn listed(&self) -> usize {
        self.current().listed.len()
    }

    fn current(&self) -> Arc<Set> {
        self.set.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The name and role of the token `presented` is, if any. Every token is compared (in
    /// constant time), whichever matches, so the time taken says nothing about which.
    pub fn check(&self, presented: &[u8]) -> Option<(String, Role)> {
        let set = self.current();
        let mut found = set.admin.matches(presented).then(|| (ADMIN.to_owned(), Role::Admin));
        for key in &set.listed {
            if key.token.matches(presented) && found.is_none() {
                found = Some((key.name.clone(), key.role));
            }
        }
        found
    }
}

fn read(path: &Path) -> Result<Vec<Key>, KeysError> {
    let err = |line: Option<usize>, message: String| KeysError { path: path.to_owned(), line, message };
    let meta = std::fs::metadata(path).map_err(|e| err(None, e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "the tokens file is readable by other users; chmod 600 it");
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(None, e.to_string()))?;
    let mut keys: Vec<Key> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = Some(i + 1);
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, role, token] = fields[..] else {
            return Err(err(at, format!("want `name role token`, found {} fields", fields.len())));
        };
        let named = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !named {
            // Not echoed: with its fields swapped, a line's first field may be its token.
            return Err(err(
                at,
                "the first field is not a token name (a-z, 0-9, - and _, at most 63; `name role token`)".into(),
            ));
        }
        if name == ADMIN || keys.iter().any(|k| k.name == name) {
            return Err(err(at, format!("the name {name} is taken")));
        }
        let role = match role {
            "admin" => Role::Admin,
            "read-only" => Role::ReadOnly,
            _ => return Err(err(at, "the second field is not a role (admin, read-only; `name role token`)".into())),
        };
        let token = Token::new(token).map_err(|e: BadToken| err(at, format!("token {name}: {e}")))?;
        keys.push(Key { name: name.to_owned(), role, token });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN_TOKEN: &str = "admin-token-0123456789";

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        (dir, path)
    }

    #[test]
    fn tokens_have_names_and_roles_and_rotate_on_reload() {
        let (_dir, path) = file(
            "# name role token\nci admin ci-token-0123456789\nboard read-only board-token-0123456789 # a screen\n",
        );
        let keys = Keys::with_file(Token::new(ADMIN_TOKEN).expect("token"), &path).expect("keys");
        assert_eq!(keys.check(ADMIN_TOKEN.as_bytes()), Some((ADMIN.into(), Role::Admin)));
        assert_eq!(keys.check(b"ci-token-0123456789"), Some(("ci".into(), Role::Admin)));
        assert_eq!(keys.check(b"board-token-0123456789"), Some(("board".into(), Role::ReadOnly)));
        assert_eq!(keys.check(b"nobody-0123456789"), None);
        std::fs::write(&path, "ci admin ci-token-rotated-0123456789\n").expect("rotate");
        let admin = Token::new(ADMIN_TOKEN).expect("token");
        assert!(keys.install(Keys::read(admin.clone(), Some(&path)).expect("reload")), "the tokens changed");
        assert_eq!(keys.listed(), 1);
        assert_eq!(keys.check(b"ci-token-0123456789"), None, "the old token is gone");
        assert_eq!(keys.check(b"ci-token-rotated-0123456789"), Some(("ci".into(), Role::Admin)));
        assert_eq!(keys.check(b"board-token-0123456789"), None);
        // A broken file leaves the tokens in force.
        std::fs::write(&path, "ci admin short\n").expect("break");
        assert!(Keys::read(admin.clone(), Some(&path)).is_err());
        std::fs::write(&path, "ci admin ci-token-rotated-0123456789\n").expect("restore");
        assert!(!keys.install(Keys::read(admin, Some(&path)).expect("read")), "the same tokens");
        assert_eq!(keys.check(b"ci-token-rotated-0123456789"), Some(("ci".into(), Role::Admin)));
    }

    #[test]
    fn a_bad_line_names_the_file_and_line_and_never_the_token() {
        for (text, line, words) in [
            ("ci admin\n", 1, "found 2 fields"),
            ("\nci owner ci-token-0123456789\n", 2, "not a role"),
            ("Ci admin ci-token-0123456789\n", 1, "not a token name"),
            ("admin admin ci-token-0123456789\n", 1, "taken"),
            ("a admin a-token-0123456789\na read-only b-token-0123456789\n", 2, "taken"),
            ("ci admin ci-secret\n", 1, "at least 16"),
            // Fields swapped: the token is where the name or the role goes, and is not shown.
            ("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0 admin ci\n", 1, "not a token name"),
            ("ci 0123456789abcdef-token-0123456789 admin\n", 1, "not a role"),
        ] {
            let (_dir, path) = file(text);
            let e = Keys::with_file(Token::new(ADMIN_TOKEN).expect("token"), &path).expect_err(text);
            let shown = e.to_string();
            assert!(shown.contains(&format!("{}:{line}: ", path.display())) && shown.contains(words), "{shown}");
            assert!(!shown.contains("token-0123456789") && !shown.contains("ci-secret"), "{shown}");
            assert!(!shown.contains("0123456789abcdef"), "{shown}");
        }
    }
}
