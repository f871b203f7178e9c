//! A small Kubernetes API client of slipway's own: JSON GETs, PUTs and server-side applies over mutual TLS, with
//! the CAs and client certificate of an uploaded kubeconfig ([`config`]). Polling only, no
//! watches; a Kubernetes `Status` answer becomes an error with its code and reason (`404
//! NotFound`, `409 Conflict`). The typed shapes it reads are in [`objects`]. It logs nothing:
//! callers decide what is worth saying, and nothing here holds a secret in a message.

pub mod config;
pub mod objects;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

pub use config::{ConfigError, Kubeconfig};

/// How long one request may take (the installer asks `/version?timeout=32s`; slipway polls).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read.
const MAX_ANSWER: usize = 64 << 20;

/// One Kubernetes API server, as one identity.
#[derive(Clone, Debug)]
pub struct Kube {
    http: reqwest::Client,
    /// `https://api-int.prod.lab.example:6443`, without a trailing slash.
    base: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    /// The API server answered with an error (a Kubernetes `Status`, or only an HTTP status).
    #[error("{code} {reason}: {message}")]
    Status { code: u16, reason: String, message: String },
    /// No answer: refused, timed out, or the TLS handshake failed (`tls`).
    #[error("{url}: {message}")]
    Unreachable { url: String, tls: bool, message: String },
    /// An answer that is not the object expected.
    #[error("{path}: unexpected answer: {message}")]
    Decode { path: String, message: String },
    /// The kubeconfig's certificates or key cannot be used.
    #[error("client settings: {0}")]
    Settings(String),
}

impl KubeError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, KubeError::Status { code: 404, .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, KubeError::Status { code: 409, .. })
    }
}

/// The `Status` object an API server sends with an error.
#[derive(serde::Deserialize)]
struct Status {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

impl Kube {
    /// A client for `base` (a URL whose host the server's certificate names), trusting the
    /// kubeconfig's CAs and presenting its client certificate. `connect`, if set, is where that
    /// host is reached (slipway's own `api-int` frontend); the name is still what is verified.
    pub fn new(config: &Kubeconfig, base: &str, connect: Option<SocketAddr>) -> Result<Kube, KubeError> {
        let tls = tls_config(config)?;
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(addr) = connect {
            let host = reqwest::Url::parse(base)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .ok_or_else(|| KubeError::Settings(format!("'{base}' is not a URL with a host")))?;
            builder = builder.resolve(&host, addr);
        }
        let http = builder.build().map_err(|e| KubeError::Settings(e.to_string()))?;
        Ok(Kube { http, base: base.trim_end_matches('/').to_owned() })
    }

    /// GET `path` (`/version`, `/api/v1/nodes`, ...) as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, KubeError> {
        let request = self.http.get(format!("{}{path}", self.base)).header("accept", "application/json");
        self.send(path, request).await
    }

    /// GET `path`; `None` when it does not exist (404).
    pub async fn get_opt<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, KubeError> {
        match self.get(path).await {
            Ok(found) => Ok(Some(found)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// PUT `body` to `path` (a whole object as read, with its `resourceVersion`: a stale one is
    /// `409 Conflict`).
    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> Result<T, KubeError> {
        let request = self.http.put(format!("{}{path}", self.base)).header("accept", "application/json").json(body);
        self.send(path, request).await
    }

    /// Server-side apply of `object` at its own `path`, as field manager `slipway`, taking over
    /// fields other managers hold (`force`): the object is created or updated to say what
    /// `object` says. Answers the object as stored.
    pub async fn apply(&self, path: &str, object: &serde_json::Value) -> Result<serde_json::Value, KubeError> {
        let url = format!("{}{path}?fieldManager=slipway&force=true", self.base);
        // JSON is YAML: the body goes as the apply patch it is.
        let request = self
            .http
            .patch(url)
            .header("accept", "application/json")
            .header("content-type", "application/apply-patch+yaml")
            .body(object.to_string());
        self.send(path, request).await
    }

    /// GET `path` as bytes, as served (k3s's `/cacerts`).
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, KubeError> {
        self.send_raw(path, self.http.get(format!("{}{path}", self.base))).await
    }

    /// DELETE `path`; one already gone (404) is fine.
    pub async fn delete(&self, path: &str) -> Result<(), KubeError> {
        let request = self.http.delete(format!("{}{path}", self.base)).header("accept", "application/json");
        match self.send_raw(path, request).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn send<T: DeserializeOwned>(&self, path: &str, request: reqwest::RequestBuilder) -> Result<T, KubeError> {
        let bytes = self.send_raw(path, request).await?;
        serde_json::from_slice(&bytes).map_err(|e| KubeError::Decode { path: path.to_owned(), message: e.to_string() })
    }

    /// The answer's body when it succeeded; its Kubernetes `Status` (or status line) otherwise.
    async fn send_raw(&self, path: &str, request: reqwest::RequestBuilder) -> Result<Vec<u8>, KubeError> {
        let url = format!("{}{path}", self.base);
        let mut response = request.send().await.map_err(|e| unreachable(&url, &e))?;
        let code = response.status();
        // Read at most MAX_ANSWER: a list of CSRs or nodes is far smaller.
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(&url, &e))? {
            if bytes.len() + chunk.len() > MAX_ANSWER {
                let message = format!("the answer is larger than {} MiB", MAX_ANSWER >> 20);
                return Err(KubeError::Decode { path: path.to_owned(), message });
            }
            bytes.extend_from_slice(&chunk);
        }
        if code.is_success() {
            return Ok(bytes);
        }
        let status: Option<Status> = serde_json::from_slice(&bytes).ok();
        let (reason, message) = match status {
            Some(s) if !s.reason.is_empty() || !s.message.is_empty() => (s.reason, s.message),
            _ => (
                code.canonical_reason().unwrap_or("").replace(' ', ""),
                String::from_utf8_lossy(&bytes).chars().take(200).collect::<String>().trim().to_owned(),
            ),
        };
        Err(KubeError::Status { code: code.as_u16(), reason, message })
    }
}

/// The error of a request that got no answer, with the innermost cause (a TLS alert, a refused
/// connection).
fn unreachable(url: &str, e: &reqwest::Error) -> KubeError {
    let mut message = e.to_string();
    let mut tls = false;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        // (rustls errors reach here inside an io::Error, whose source skips them.)
        let text = s.to_string();
        tls |= s.downcast_ref::<rustls::Error>().is_some() || ["certificate", "alert"].iter().any(|w| text.contains(w));
        message = text;
        source = s.source();
    }
    if e.is_timeout() {
        message = format!("no answer in {}s", REQUEST_TIMEOUT.as_secs());
    }
    KubeError::Unreachable { url: url.to_owned(), tls, message }
}

/// TLS that trusts the kubeconfig's CAs (host name checked) and presents its client
/// certificate.
fn tls_config(config: &Kubeconfig) -> Result<rustls::ClientConfig, KubeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| KubeError::Settings(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&config.ca) {
        let cert = cert.map_err(|e| bad("certificate-authority-data", &e))?;
        roots.add(cert).map_err(|e| bad("certificate-authority-data", &e))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&config.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| bad("client-certificate-data", &e))?;
    // (The key's parse error says nothing of its contents.)
    let key = PrivateKeyDer::from_pem_slice(&config.key).map_err(|e| bad("client-key-data", &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad("client certificate and key", &e))
}
