//! slipway's own HTTP client for the Proxmox VE API, plugged into the `proxmox-api` crate's
//! typed endpoints: API-token auth (`PVEAPIToken=USER@REALM!TOKENID=SECRET`), TLS from
//! [`super::tls`], form-urlencoded bodies, the `{"data": …}` envelope, and errors that keep
//! Proxmox's message. The token is never logged or shown by `Debug`.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::tls::{Trust, client_config};

/// How long an idle connection to Proxmox is kept for reuse (pveproxy keeps it 5 s).
const IDLE: Duration = Duration::from_secs(3);
/// Pauses before the retries of a read that failed in passing.
const RETRIES: [Duration; 3] = [Duration::from_millis(250), Duration::from_secs(1), Duration::from_secs(3)];

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// `https://host:8006` of each node slipway may ask, no trailing slash.
    bases: Arc<[Arc<str>]>,
    /// The one that answered last; asked first.
    current: Arc<std::sync::atomic::AtomicUsize>,
    auth: Arc<str>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("bases", &self.bases).finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub enum ApiError {
    /// Proxmox answered with an error status; `message` is its text (and per-field errors).
    Status { status: u16, message: String },
    /// No answer: connection refused, DNS, timeout, or TLS (`tls` is set). `sent`: the request
    /// may have reached the server (it is not repeated on another node unless it is a read).
    Transport { tls: bool, sent: bool, message: String },
    /// An answer slipway cannot read.
    Decode(String),
}

impl ApiError {
    /// A failure that says nothing about the request itself: no connection (not a TLS refusal),
    /// a request between nodes that failed (`595`/`596`), pveproxy restarting (`502`-`504`).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Transport { tls, .. } => !tls,
            ApiError::Status { status, .. } => matches!(status, 502..=504 | 595 | 596),
            ApiError::Decode(_) => false,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Status { status, message } => write!(f, "HTTP {status}: {message}"),
            ApiError::Transport { message, .. } => f.write_str(message),
            ApiError::Decode(message) => write!(f, "unreadable answer: {message}"),
        }
    }
}

#[derive(serde::Deserialize)]
struct Envelope<R> {
    data: R,
}

/// Why the API client cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Trust(#[from] crate::tls::TrustError),
    #[error("HTTP client: {0}")]
    Http(reqwest::Error),
}

impl Api {
    /// `urls`: one node's API, or several nodes' of one cluster (asked in turn when one does
    /// not answer).
    pub fn new(urls: &[String], token_id: &str, secret: &str, trust: &Trust) -> Result<Api, ClientError> {
        let tls = client_config(trust)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            // pveproxy closes a keep-alive connection idle for 5 s: never reuse one idle longer,
            // or a request races the close and fails.
            .pool_idle_timeout(IDLE)
            .build()
            .map_err(ClientError::Http)?;
        Ok(Api {
            http,
            bases: urls.iter().map(|u| Arc::from(u.trim_end_matches('/'))).collect(),
            current: Arc::default(),
            auth: format!("PVEAPIToken={token_id}={secret}").into(),
        })
    }

    /// The node's URL asked first now (the last that answered).
    pub fn url(&self) -> &str {
        let at = self.current.load(std::sync::atomic::Ordering::Relaxed);
        self.bases.get(at).or(self.bases.first()).map_or("", |b| b)
    }

    /// Sends to the node that answered last; one that cannot be reached (not connecting, or a
    /// certificate it should not have) hands the request to the next. A request that may have
    /// been sent is handed on only if it is a read.
    async fn send_any<R: DeserializeOwned>(
        &self,
        method: &reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<R, ApiError> {
        use std::sync::atomic::Ordering;
        let first = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.bases.len() {
            let at = (first + i) % self.bases.len();
            let url = format!("{}/api2/json{path}", self.bases[at]);
            match self.send(method, &url, body).await {
                Err(e @ ApiError::Transport { sent, .. })
                    if i + 1 < self.bases.len() && (!sent || *method == reqwest::Method::GET) =>
                {
                    tracing::warn!(url = %self.bases[at], error = %e, "Proxmox node not answering; asking the next");
                    last = Some(e);
                }
                result => {
                    if at != first {
                        self.current.store(at, Ordering::Relaxed);
                    }
                    return result;
                }
            }
        }
        Err(last.unwrap_or_else(|| ApiError::Transport { tls: false, sent: false, message: "no URL".into() }))
    }
}

fn transport(e: &reqwest::Error) -> ApiError {
    // The TLS failure (e.g. our fingerprint mismatch) is deep in the source chain.
    let mut tls = false;
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() || s.to_string().contains("certificate") {
            tls = true;
        }
        message = format!("{message}: {s}");
        source = s.source();
    }
    let sent = !(tls || e.is_connect());
    ApiError::Transport { tls, sent, message }
}

/// Proxmox's error text: the body's `message` (libpve-http-server-perl 5.2, 2025, on), else the
/// HTTP reason phrase, where older PVE (8.0-8.3), a refused token (`401` without a body) and a
/// request forwarded between nodes (`595`/`596`) put it; plus `errors` (per parameter).
fn error_message(status: reqwest::StatusCode, reason: Option<&str>, body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let mut message = value["message"]
        .as_str()
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .or_else(|| reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("no reason given").to_owned());
    if let Some(errors) = value["errors"].as_object() {
        let detail: Vec<String> = errors
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.as_str().map_or(v.to_string(), |s| s.trim().to_owned())))
            .collect();
        message = format!("{message} ({})", detail.join("; "));
    }
    message
}

impl proxmox_api::client::Client for Api {
    type Error = ApiError;

    async fn request_with_body_and_query<B, Q, R>(
        &self,
        method: proxmox_api::client::Method,
        path: &str,
        body: Option<&B>,
        query: Option<&Q>,
    ) -> Result<R, ApiError>
    where
        B: Serialize,
        Q: Serialize,
        R: DeserializeOwned,
    {
        use proxmox_api::client::Method as M;
        let method = match method {
            M::Get => reqwest::Method::GET,
            M::Post => reqwest::Method::POST,
            M::Put => reqwest::Method::PUT,
            M::Delete => reqwest::Method::DELETE,
        };
        let mut path = path.to_owned();
        if let Some(query) = query {
            let encoded = serde_urlencoded::to_string(query).map_err(|e| ApiError::Decode(e.to_string()))?;
            if !encoded.is_empty() {
                path = format!("{path}?{encoded}");
            }
        }
        let body = match body {
            Some(body) => Some(serde_urlencoded::to_string(body).map_err(|e| ApiError::Decode(e.to_string()))?),
            None => None,
        };
        // Reads are tried again after a failure in passing; a POST or DELETE is not (it may
        // have been done).
        let mut pauses = RETRIES.iter();
        loop {
            match self.send_any(&method, &path, body.as_deref()).await {
                Err(e) if method == reqwest::Method::GET && e.is_transient() => match pauses.next() {
                    Some(pause) => {
                        tracing::debug!(path, error = %e, "proxmox read failed in passing; trying again");
                        tokio::time::sleep(*pause).await;
                    }
                    None => return Err(e),
                },
                result => return result,
            }
        }
    }
}

impl Api {
    async fn send<R: DeserializeOwned>(
        &self,
        method: &reqwest::Method,
        url: &str,
        body: Option<&str>,
    ) -> Result<R, ApiError> {
        tracing::debug!(%method, url, "proxmox request");
        let mut request = self.http.request(method.clone(), url).header("Authorization", &*self.auth);
        if let Some(body) = body {
            request = request.header("Content-Type", "application/x-www-form-urlencoded").body(body.to_owned());
        }
        let response = request.send().await.map_err(|e| transport(&e))?;
        let status = response.status();
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
        let bytes = response.bytes().await.map_err(|e| transport(&e))?;
        if !status.is_success() {
            let message = error_message(status, reason.as_deref(), &bytes);
            return Err(ApiError::Status { status: status.as_u16(), message });
        }
        serde_json::from_slice::<Envelope<R>>(&bytes).map(|e| e.data).map_err(|e| ApiError::Decode(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_errors_are_kept_with_their_fields() {
        let body = br#"{"data":null,"message":"Parameter verification failed.\n","errors":{"memory":"value must have a minimum value of 16\n"}}"#;
        let msg = error_message(reqwest::StatusCode::BAD_REQUEST, None, body);
        assert_eq!(msg, "Parameter verification failed. (memory: value must have a minimum value of 16)");
    }

    #[test]
    fn without_a_message_in_the_body_the_reason_phrase_is_the_error() {
        let race = "unable to create VM 105 - VM 105 already exists on node 'pve2'";
        let msg = error_message(reqwest::StatusCode::INTERNAL_SERVER_ERROR, Some(race), br#"{"data":null}"#);
        assert_eq!(msg, race, "PVE 8.0-8.3");
        let msg = error_message(reqwest::StatusCode::UNAUTHORIZED, Some("authentication failure"), b"");
        assert_eq!(msg, "authentication failure", "a refused token: no body");
        let msg = error_message(reqwest::StatusCode::UNAUTHORIZED, None, b"");
        assert_eq!(msg, "Unauthorized", "nothing given: the status's own name");
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        let trust = Trust::Fingerprints(vec![[0; 32]]);
        let api = Api::new(&["https://pve:8006/".into()], "slipway@pve!t", "s3cret-token", &trust).expect("api");
        let shown = format!("{api:?}");
        assert!(!shown.contains("s3cret-token") && shown.contains("https://pve:8006"), "{shown}");
    }
}
