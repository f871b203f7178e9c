//! HTTP client for the admin API: finds the address and token, sends JSON, reads errors.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{self, Config};

/// Where the CLI connects and how it authenticates.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// `--api` / `$SLIPWAY_API`.
    pub api: Option<String>,
    /// `$SLIPWAY_TOKEN` (the token itself).
    pub token: Option<String>,
    /// `--token-file` / `$SLIPWAY_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// `--ca-file` / `$SLIPWAY_CA_FILE`: trust this CA for an https API.
    pub ca_file: Option<PathBuf>,
    /// `--config`: read the admin address and token source from a daemon config.
    pub config: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot reach the slipway API at {url}: {}", crate::causes::chain(.source))]
    Connect { url: String, source: reqwest::Error },
    #[error("{status}: {message}")]
    Api { status: StatusCode, message: String },
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
}

/// A connected client.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(target: &Target) -> Result<Client, ClientError> {
        let config_path = target.config.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
        // The daemon's config, when needed and readable, supplies the address and token source.
        let needed = target.api.is_none() || (target.token.is_none() && target.token_file.is_none());
        let config: Option<Config> = match needed.then(|| config::load(&config_path)) {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) if target.config.is_some() => return Err(ClientError::Setup(e.to_string())),
            Some(Err(_)) | None => None,
        };
        let base = match (&target.api, &config) {
            (Some(api), _) => api.trim_end_matches('/').to_owned(),
            (None, Some(c)) => format!("{}://{}", if c.admin.tls.is_some() { "https" } else { "http" }, c.admin.listen),
            (None, None) => format!("http://{}", config::DEFAULT_ADMIN_LISTEN),
        };
        let token = match (&target.token, &target.token_file) {
            (Some(t), _) => t.trim().to_owned(),
            (None, Some(file)) => read_token(file)?,
            (None, None) => {
                let (source, state_dir) = match &config {
                    Some(c) => (c.admin.token.clone(), c.state_dir.clone()),
                    None => (config::TokenSource::Default, PathBuf::from(config::DEFAULT_STATE_DIR)),
                };
                let path = crate::api::auth::token_path(&source, &state_dir, config_path.parent())
                    .map_err(|e| ClientError::Setup(e.to_string()))?;
                read_token(&path)?
            }
        };
        let mut builder = reqwest::Client::builder().user_agent(concat!("slipway-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &target.ca_file {
            let pem = std::fs::read(ca).map_err(|e| ClientError::Setup(format!("CA file {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ClientError::Setup(format!("CA file {}: {e}", ca.display())))?;
            builder = builder.tls_certs_only(certs);
        } else if let Some(tls) = config.as_ref().and_then(|c| c.admin.tls.as_ref()) {
            // The daemon's own certificate (a self-signed one on most appliances) is trusted
            // beside the system's roots when its config is what named the API (and it reads).
            let pem = std::fs::read(&tls.cert).unwrap_or_default();
            for cert in reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default() {
                builder = builder.add_root_certificate(cert);
            }
        } else if base.starts_with("http://") {
            // Plain HTTP needs no trust store: without this, building the client loads the
            // system's root certificates and fails on a host that has none (no ca-certificates).
            builder = builder.tls_certs_only(Vec::<reqwest::Certificate>::new());
        }
        let http = builder.build().map_err(|e| {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            ClientError::Setup(format!("HTTP client: {message}"))
        })?;
        Ok(Client { http, base, token })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response =
            request.send().await.map_err(|source| ClientError::Connect { url: self.base.clone(), source })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => error_message(&v).unwrap_or(text),
            Err(_) => text,
        };
        Err(ClientError::Api { status, message })
    }

    /// Sends a request and decodes a JSON answer.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path, body).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Decode { url: format!("{}{path}", self.base), message: e.to_string() })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Decode { url: format!("{}{path}", self.base), message: e.to_string() })
    }

    /// Sends a request whose answer has no body (204).
    pub async fn call(&self, method: Method, path: &str) -> Result<(), ClientError> {
        self.send(method, path, None::<&()>).await.map(drop)
    }

    /// Follows a Server-Sent Events stream, calling `each` with every `data:` payload.
    pub async fn follow(&self, path: &str, mut each: impl FnMut(&str)) -> Result<(), ClientError> {
        let response = self.send(Method::GET, path, None::<&()>).await?;
        let mut stream = response.bytes_stream();
        let mut pending = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ClientError::Decode { url: self.base.clone(), message: e.to_string() })?;
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                if let Some(data) = line.trim_end().strip_prefix("data:") {
                    each(data.trim_start());
                }
            }
        }
        Ok(())
    }
}

fn read_token(path: &Path) -> Result<String, ClientError> {
    std::fs::read_to_string(path).map(|t| t.trim().to_owned()).map_err(|e| {
        ClientError::Setup(format!(
            "cannot read the admin token {}: {e} (set SLIPWAY_TOKEN or --token-file)",
            path.display()
        ))
    })
}

/// The readable part of an API error body, including every validation problem.
fn error_message(v: &serde_json::Value) -> Option<String> {
    let body: ErrorBodyIn = serde_json::from_value(v.clone()).ok()?;
    if !body.reasons.is_empty() {
        let lines: Vec<String> = body.reasons.iter().map(|r| format!("  {r}")).collect();
        return Some(format!("the config file was not applied; the running config stays:\n{}", lines.join("\n")));
    }
    if body.problems.is_empty() {
        return Some(body.message);
    }
    let lines: Vec<String> = body
        .problems
        .iter()
        .map(|p| format!("  {} {}: {} = {}: {}", p.kind, p.name, p.field, p.value, p.message))
        .collect();
    Some(format!("invalid:\n{}", lines.join("\n")))
}

#[derive(serde::Deserialize)]
struct ErrorBodyIn {
    message: String,
    #[serde(default)]
    problems: Vec<ProblemIn>,
    #[serde(default)]
    reasons: Vec<String>,
}

#[derive(serde::Deserialize)]
struct ProblemIn {
    kind: String,
    name: String,
    field: String,
    value: String,
    message: String,
}
