//! A kubeconfig as `openshift-install` writes it (`auth/kubeconfig`): the API server's URL, the
//! CAs that sign its certificate, and a client certificate with its key (mutual TLS as
//! `system:admin`). Only self-contained kubeconfigs are taken: `*-data` fields, no file paths,
//! tokens, exec plugins or skipped verification. Parsing never echoes a secret.

use base64::Engine as _;
use serde::Deserialize;

/// The parts slipway uses, decoded; the key stays PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct Kubeconfig {
    /// `https://api.prod.lab.example:6443`
    pub server: String,
    /// PEM: the CAs the server's certificate must chain to.
    pub ca: Vec<u8>,
    /// PEM: the client certificate (and any intermediates).
    pub cert: Vec<u8>,
    /// PEM: its private key (RSA PKCS#1, EC SEC1 or PKCS#8).
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Kubeconfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubeconfig").field("server", &self.server).finish_non_exhaustive()
    }
}

impl Kubeconfig {
    /// The client certificate's subject CN (`system:admin`) and when it expires.
    pub fn identity(&self) -> Result<(String, std::time::SystemTime), ConfigError> {
        let field = "client-certificate-data";
        let (_, pem) = x509_parser::pem::parse_x509_pem(&self.cert).map_err(|_| error(field, "not PEM"))?;
        let cert = pem.parse_x509().map_err(|_| error(field, "not an X.509 certificate"))?;
        let cn = cert.subject().iter_common_name().next().and_then(|a| a.as_str().ok()).unwrap_or("").to_owned();
        let seconds = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
        Ok((cn, std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds)))
    }
}

/// What is wrong with an uploaded kubeconfig; names the field, never a secret's value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), message: message.into() }
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    clusters: Vec<Named<RawCluster>>,
    #[serde(default)]
    users: Vec<Named<RawUser>>,
    #[serde(default)]
    contexts: Vec<Named<RawContext>>,
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    item: Option<T>,
}

#[derive(Deserialize)]
struct RawCluster {
    server: Option<String>,
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority")]
    ca_file: Option<String>,
    #[serde(rename = "insecure-skip-tls-verify", default)]
    insecure: bool,
}

#[derive(Deserialize)]
struct RawUser {
    #[serde(rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(rename = "client-key-data")]
    key_data: Option<String>,
    #[serde(rename = "client-certificate")]
    cert_file: Option<String>,
    token: Option<String>,
    exec: Option<serde_json::Value>,
    #[serde(rename = "auth-provider")]
    auth_provider: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawContext {
    cluster: String,
    user: String,
}

/// Parses a kubeconfig (YAML or JSON) down to its current context's server, CA and client
/// certificate.
pub fn parse(text: &[u8]) -> Result<Kubeconfig, ConfigError> {
    let raw: Raw = serde_norway::from_slice(text).map_err(|e| {
        // serde's messages quote values: keep the position and the kind only.
        let at = e.location().map(|l| format!(" at line {}", l.line())).unwrap_or_default();
        error("kubeconfig", format!("not a kubeconfig (YAML or JSON){at}"))
    })?;
    let context = match &raw.current_context {
        Some(name) => raw
            .contexts
            .iter()
            .find(|c| &c.name == name)
            .ok_or_else(|| error("current-context", format!("no context named '{}'", shown(name))))?,
        None if raw.contexts.len() == 1 => &raw.contexts[0],
        None => return Err(error("current-context", "not set, and there is not exactly one context")),
    };
    let at = |what: &str| format!("contexts[{}].context.{what}", context.name);
    let context = context.item.as_ref().ok_or_else(|| error(at("context"), "missing"))?;
    let cluster = raw
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .ok_or_else(|| error(at("cluster"), format!("no cluster named '{}'", shown(&context.cluster))))?;
    let user = raw
        .users
        .iter()
        .find(|u| u.name == context.user)
        .ok_or_else(|| error(at("user"), format!("no user named '{}'", shown(&context.user))))?;
    let c = |f: &str| format!("clusters[{}].cluster.{f}", cluster.name);
    let u = |f: &str| format!("users[{}].user.{f}", user.name);
    let rc = cluster.item.as_ref().ok_or_else(|| error(format!("clusters[{}].cluster", cluster.name), "missing"))?;

    let server = rc.server.clone().ok_or_else(|| error(c("server"), "missing"))?;
    if !server.starts_with("https://") {
        return Err(error(c("server"), format!("'{}' is not an https:// URL", shown(&server))));
    }
    if rc.insecure {
        return Err(error(c("insecure-skip-tls-verify"), "slipway always verifies the API server's certificate"));
    }
    if rc.ca_file.is_some() && rc.ca_data.is_none() {
        return Err(error(
            c("certificate-authority"),
            "a file path; upload a kubeconfig with certificate-authority-data",
        ));
    }
    let ca = pem(&c("certificate-authority-data"), rc.ca_data.as_deref(), "CERTIFICATE")?;

    let ru = user.item.as_ref().ok_or_else(|| error(format!("users[{}].user", user.name), "missing"))?;
    let refused = |field: &str| {
        error(
            u(field),
            "slipway authenticates with a client certificate: upload the installer's auth/kubeconfig (client-certificate-data and client-key-data)",
        )
    };
    if ru.cert_data.is_none() {
        if ru.token.is_some() {
            return Err(refused("token"));
        }
        if ru.exec.is_some() {
            return Err(refused("exec"));
        }
        if ru.auth_provider.is_some() {
            return Err(refused("auth-provider"));
        }
        if ru.cert_file.is_some() {
            return Err(refused("client-certificate"));
        }
    }
    let cert = pem(&u("client-certificate-data"), ru.cert_data.as_deref(), "CERTIFICATE")?;
    let key = pem(&u("client-key-data"), ru.key_data.as_deref(), "PRIVATE KEY")?;
    let config = Kubeconfig { server, ca, cert, key };
    config.identity().map_err(|e| error(u(&e.field), e.message))?;
    Ok(config)
}

/// A `*-data` field: base64 of PEM text holding a block whose label ends in `label`.
fn pem(field: &str, data: Option<&str>, label: &str) -> Result<Vec<u8>, ConfigError> {
    let data = data.ok_or_else(|| error(field, "missing"))?;
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(|_| error(field, "not base64"))?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.lines().any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{label}-----"))) {
        return Err(error(field, format!("no PEM {label} in it")));
    }
    Ok(bytes)
}

fn shown(text: &str) -> String {
    crate::inventory::types::shown(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    /// A self-signed `system:admin` certificate and its RSA PKCS#1 key, made with openssl for
    /// these tests only.
    const CERT: &str = include_str!("../../tests/fixtures/kube/admin.pem");
    const KEY: &str = include_str!("../../tests/fixtures/kube/admin.key");

    /// The shape `openshift-install create ignition-configs` writes to `auth/kubeconfig`.
    fn installer(user: &str) -> String {
        format!(
            "clusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://api.prod.lab.example:6443\n  name: prod\ncontexts:\n- context:\n    cluster: prod\n    user: admin\n  name: admin\ncurrent-context: admin\npreferences: {{}}\nusers:\n- name: admin\n  user:\n{user}",
            b64(CERT)
        )
    }

    #[test]
    fn the_installers_kubeconfig_gives_server_ca_and_client_certificate() {
        let user = format!("    client-certificate-data: {}\n    client-key-data: {}\n", b64(CERT), b64(KEY));
        let config = parse(installer(&user).as_bytes()).expect("parse");
        assert_eq!(config.server, "https://api.prod.lab.example:6443");
        assert_eq!(
            (config.ca.as_slice(), config.cert.as_slice(), config.key.as_slice()),
            (CERT.as_bytes(), CERT.as_bytes(), KEY.as_bytes())
        );
        assert!(!format!("{config:?}").contains("PRIVATE"), "the key is not in Debug");
        let (cn, expires) = config.identity().expect("identity");
        assert_eq!(cn, "system:admin");
        assert!(expires > std::time::SystemTime::now());
    }

    #[test]
    fn tokens_paths_and_skipped_verification_are_refused_by_field() {
        let token = parse(installer("    token: sha256~SECRET\n").as_bytes()).expect_err("token");
        assert_eq!(token.field, "users[admin].user.token");
        assert!(!token.to_string().contains("SECRET"), "{token}");
        let files =
            parse(installer("    client-certificate: /root/admin.crt\n    client-key: /root/admin.key\n").as_bytes());
        assert_eq!(files.expect_err("paths").field, "users[admin].user.client-certificate");
        let no_key = format!("    client-certificate-data: {}\n", b64(CERT));
        assert_eq!(parse(installer(&no_key).as_bytes()).expect_err("key").field, "users[admin].user.client-key-data");
        let swapped = format!("    client-certificate-data: {}\n    client-key-data: {}\n", b64(KEY), b64(CERT));
        let err = parse(installer(&swapped).as_bytes()).expect_err("not a certificate");
        assert_eq!(err.to_string(), "users[admin].user.client-certificate-data: no PEM CERTIFICATE in it");
        let insecure = installer("").replace("    server:", "    insecure-skip-tls-verify: true\n    server:");
        assert_eq!(
            parse(insecure.as_bytes()).expect_err("insecure").field,
            "clusters[prod].cluster.insecure-skip-tls-verify"
        );
        let err = parse(b"{ not yaml: [").expect_err("garbage");
        assert_eq!(err.field, "kubeconfig");
    }
}
