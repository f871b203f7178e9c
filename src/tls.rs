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
    /// Exactly the certificate with this SHA-256 fingerprint.
    Pinned([u8; 32]),
    /// Any certificate: only where the answer is not trusted either (a health check's status).
    AnyCertificate,
}

/// `AB:CD:…`, as Proxmox shows a fingerprint.
pub fn format_fingerprint(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The client settings for `trust`; `what` names a CA file in errors ("CA file", "check CA").
pub fn client_config(trust: &ServerTrust, what: &str) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let accept = match trust {
        ServerTrust::CaFile(path) => {
            let err = |e: &dyn std::fmt::Display| format!("{what} {}: {e}", path.display());
            let pem = std::fs::read(path).map_err(|e| err(&e))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: CertificateDer<'static> = cert.map_err(|e| err(&e))?;
                roots.add(cert).map_err(|e| err(&e))?;
            }
            if roots.is_empty() {
                return Err(err(&"no certificate in it"));
            }
            return Ok(builder.with_root_certificates(roots).with_no_client_auth());
        }
        ServerTrust::Pinned(pin) => Accept::Pinned(*pin),
        ServerTrust::AnyCertificate => Accept::Any,
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { accept, provider }))
        .with_no_client_auth())
}

#[derive(Debug)]
enum Accept {
    Pinned([u8; 32]),
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
            Accept::Pinned(pin) => {
                let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
                if got == *pin {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(format!(
                        "certificate fingerprint mismatch: the server presented {}, the pinned one is {}",
                        format_fingerprint(&got),
                        format_fingerprint(pin)
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
