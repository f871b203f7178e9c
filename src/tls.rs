//! How slipway trusts a server it connects to over TLS (the Proxmox API, a load-balancer health
//! check): a CA file (host name checked), a pinned SHA-256 certificate fingerprint, or — for
//! health checks only — any certificate. In every case the handshake signatures are checked, so
//! the peer holds the key of the certificate it shows. Neutral: one verifier for every client.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerTrust {
    /// Certificates signed by these CAs, for the name connected to.
    CaFile(PathBuf),
    /// Exactly a certificate with one of these SHA-256 fingerprints.
    Pinned(Vec<[u8; 32]>),
    /// Any certificate: only where the answer is not trusted either (a health check's status).
    AnyCertificate,
}

/// `AB:CD:…`, as Proxmox shows a fingerprint.
pub fn format_fingerprint(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Why TLS client settings cannot be made; `what` names the CA file's role.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("TLS settings: {0}")]
    Settings(#[from] rustls::Error),
    #[error("{what} {}: {source}", path.display())]
    Read { what: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("{what} {}: {source}", path.display())]
    Pem { what: &'static str, path: std::path::PathBuf, source: rustls_pki_types::pem::Error },
    #[error("{what} {}: {source}", path.display())]
    Certificate { what: &'static str, path: std::path::PathBuf, source: rustls::Error },
    #[error("{what} {}: no certificate in it", path.display())]
    Empty { what: &'static str, path: std::path::PathBuf },
}

/// The client settings for `trust`; `what` names a CA file in errors ("CA file", "check CA").
pub fn client_config(trust: &ServerTrust, what: &'static str) -> Result<ClientConfig, TrustError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let accept = match trust {
        ServerTrust::CaFile(path) => {
            let path = path.clone();
            let pem = match std::fs::read(&path) {
                Ok(pem) => pem,
                Err(source) => return Err(TrustError::Read { what, path, source }),
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: CertificateDer<'static> = match cert {
                    Ok(cert) => cert,
                    Err(source) => return Err(TrustError::Pem { what, path, source }),
                };
                if let Err(source) = roots.add(cert) {
                    return Err(TrustError::Certificate { what, path, source });
                }
            }
            if roots.is_empty() {
                return Err(TrustError::Empty { what, path });
            }
            return Ok(builder.with_root_certificates(roots).with_no_client_auth());
        }
        ServerTrust::Pinned(pins) => Accept::Pinned(pins.clone()),
        ServerTrust::AnyCertificate => Accept::Any,
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { accept, provider }))
        .with_no_client_auth())
}

#[derive(Debug)]
enum Accept {
    Pinned(Vec<[u8; 32]>),
    Any,
}

/// Accepts the certificate `accept` allows; checks the handshake signatures against it.
#[derive(Debug)]
struct Verifier {
    accept: Accept,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.accept {
            Accept::Any => Ok(ServerCertVerified::assertion()),
            Accept::Pinned(pins) => {
                let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
                if pins.contains(&got) {
                    Ok(ServerCertVerified::assertion())
                } else {
                    let pinned: Vec<String> = pins.iter().map(|p| format_fingerprint(p)).collect();
                    Err(rustls::Error::General(format!(
                        "certificate fingerprint mismatch: the server presented {}, the pinned one is {}",
                        format_fingerprint(&got),
                        pinned.join(" or ")
                    )))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
