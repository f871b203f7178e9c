//! The admin token: where it comes from, how it is compared, and the middleware that guards
//! every `/api/` path (tokens and roles: `keys`; repeated failures: `backoff`). The token
//! never reaches a log line (its `Debug` is redacted).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;
use super::keys::Role;
pub use super::keys::{BadToken, Token};
use crate::config::{DEFAULT_TOKEN_CREDENTIAL, TokenSource};
use crate::store::events::{EventKind, Source, Subject};

/// The file slipway generates in the state directory when no token source is configured.
pub const GENERATED_TOKEN_FILE: &str = "admin.token";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("admin token file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("admin token credential {name}: $CREDENTIALS_DIRECTORY is not set (is the unit missing LoadCredential=?)")]
    NoCredentials { name: String },
}

/// Where the token is read from. `Default` looks, in order, for the systemd credential
/// `admin-token`, for `admin.token` beside the config file (what the unit passes as that
/// credential, and what the CLI on the same machine reads), and for the token slipway
/// generates in the state directory.
pub fn token_path(source: &TokenSource, state_dir: &Path, config_dir: Option<&Path>) -> Result<PathBuf, TokenError> {
    let creds = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    Ok(match source {
        TokenSource::File(path) => path.clone(),
        TokenSource::Credential(name) => match creds {
            Some(dir) => dir.join(name),
            None => return Err(TokenError::NoCredentials { name: name.clone() }),
        },
        TokenSource::Default => {
            let candidates =
                [creds.map(|d| d.join(DEFAULT_TOKEN_CREDENTIAL)), config_dir.map(|d| d.join(GENERATED_TOKEN_FILE))];
            match candidates.into_iter().flatten().find(|p| p.exists()) {
                Some(path) => path,
                None => state_dir.join(GENERATED_TOKEN_FILE),
            }
        }
    })
}

/// Loads the token; for `Default` with no token anywhere, generates one on first start.
pub fn load(source: &TokenSource, state_dir: &Path, config_dir: Option<&Path>) -> Result<(Token, PathBuf), TokenError> {
    let path = token_path(source, state_dir, config_dir)?;
    let err = |message: String| TokenError::File { path: path.clone(), message };
    if *source == TokenSource::Default && path.starts_with(state_dir) && !path.exists() {
        generate(&path).map_err(|e| err(format!("cannot create: {e}")))?;
        tracing::info!(path = %path.display(), "generated an admin token");
    }
    let meta = fs::metadata(&path).map_err(|e| err(e.to_string()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        tracing::warn!(path = %path.display(), "the admin token file is readable by every user; chmod 600 it");
    }
    let text = fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    let token = Token::new(&text).map_err(|e| err(e.to_string()))?;
    Ok((token, path))
}

fn generate(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut random = [0u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let text: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The credentials of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
}

/// Which token a request to `/api` was let in with, by name (never the token itself): put on
/// its response for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller(pub String);

/// Every path under `/api` needs `Authorization: Bearer <token>`, whether or not it routes: a
/// token of `Keys`, whose role allows the method. An address that keeps presenting wrong tokens
/// backs off (429) before its token is looked at.
pub async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Result<Response, ApiError> {
    let path = request.uri().path();
    if !(path == "/api" || path.starts_with("/api/")) {
        return Ok(next.run(request).await);
    }
    let client = request.extensions().get::<crate::listen::Connection>().map(|c| c.peer.ip());
    let now = std::time::Instant::now();
    if let Some(wait) = client.and_then(|c| state.backoff.waiting(c, now)) {
        return Err(ApiError::Backoff(wait));
    }
    let presented = request.headers().get(AUTHORIZATION).and_then(|v| bearer(v.as_bytes()));
    let Some((name, role)) = presented.and_then(|p| state.keys.check(p)) else {
        state.metrics.auth_failures.inc();
        if let Some(client) = client
            && let Some(wait) = state.backoff.failed(client, now)
        {
            tracing::warn!(%client, seconds = wait.as_secs(), "admin API: repeated wrong tokens; the address backs off");
            let details = EventKind::ApiBackoff { client: client.to_string(), seconds: wait.as_secs() };
            state.events.append(Source::Api, Subject::default(), details);
        }
        return Err(ApiError::Unauthorized);
    };
    if let Some(client) = client {
        state.backoff.succeeded(client);
    }
    let reads = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let mut response = if role == Role::ReadOnly && !reads {
        ApiError::Forbidden(format!("token {name} is read-only: {} is a write", request.method())).into_response()
    } else {
        next.run(request).await
    };
    response.extensions_mut().insert(Caller(name));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_exactly() {
        let t = Token::new("0123456789abcdef0123\n").expect("valid");
        assert!(t.matches(b"0123456789abcdef0123"));
        assert!(!t.matches(b"0123456789abcdef012"));
        assert!(!t.matches(b"0123456789abcdef0124"));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bear"), None);
    }

    #[test]
    fn short_or_spaced_tokens_are_refused() {
        assert!(Token::new("short").is_err());
        assert!(Token::new("0123456789 abcdef0123").is_err());
    }

    #[test]
    fn a_default_token_is_generated_once_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, path) = load(&TokenSource::Default, dir.path(), None).expect("generated");
        assert_eq!(fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        let (_, _) = load(&TokenSource::Default, dir.path(), None).expect("reread");
        let text = fs::read_to_string(&path).expect("token");
        assert!(first.matches(text.trim().as_bytes()), "the same token, read again");
    }

    #[test]
    fn a_token_beside_the_config_file_is_preferred_to_generating_one() {
        let state = tempfile::tempdir().expect("tempdir");
        let etc = tempfile::tempdir().expect("tempdir");
        fs::write(etc.path().join(GENERATED_TOKEN_FILE), "operator-token-0123456789\n").expect("write");
        let (token, path) = load(&TokenSource::Default, state.path(), Some(etc.path())).expect("found");
        assert_eq!(path, etc.path().join(GENERATED_TOKEN_FILE));
        assert!(token.matches(b"operator-token-0123456789"));
        assert!(!state.path().join(GENERATED_TOKEN_FILE).exists());
    }

    #[test]
    fn a_missing_token_file_names_the_file() {
        let err = load(&TokenSource::File("/nonexistent/token".into()), Path::new("/tmp"), None).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/token"), "{err}");
    }
}
