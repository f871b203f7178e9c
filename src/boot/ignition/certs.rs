//! How long an `openshift-install` config can still be used: its short-lived certificates.
//! The installer signs the kubelets' bootstrap certificates with a signer valid for one day
//! (`kubelet-signer`, written into bootstrap.ign under /opt/openshift/tls/); a node that boots
//! from a config made more than 24 hours ago fails to join (x509: certificate has expired).
//! This reads every PEM certificate in the config's files (`data:` URLs, base64 or
//! percent-encoded, gzip-compressed or not) and keeps the short-lived ones. Pure.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::Value;

/// A certificate counts as short-lived when it is valid for at most this long.
const SHORT_LIVED: Duration = Duration::from_secs(2 * 24 * 60 * 60);
/// A compressed file larger than this is not read (a config's TLS files are a few KiB).
const MAX_FILE: u64 = 4 << 20;

/// When the config's short-lived certificates were made and when the first of them expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub made: SystemTime,
    pub expires: SystemTime,
}

/// The validity of the config's short-lived certificates, if it carries any.
pub fn short_lived(config: &Value) -> Option<Validity> {
    let files = config.pointer("/storage/files")?.as_array()?;
    let mut out: Option<Validity> = None;
    for file in files {
        let Some(source) = file.pointer("/contents/source").and_then(Value::as_str) else { continue };
        let gzip = file.pointer("/contents/compression").and_then(Value::as_str) == Some("gzip");
        let Some(bytes) = data_url(source).and_then(|b| if gzip { gunzip(&b) } else { Some(b) }) else { continue };
        for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&bytes) {
            let Ok(der): Result<rustls_pki_types::CertificateDer<'_>, _> = cert else { break };
            let Ok((_, parsed)) = x509_parser::parse_x509_certificate(der.as_ref()) else { continue };
            let at = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
            let (made, expires) =
                (at(parsed.validity().not_before.timestamp()), at(parsed.validity().not_after.timestamp()));
            let lifetime = expires.duration_since(made).unwrap_or_default();
            if lifetime <= SHORT_LIVED && out.is_none_or(|o| expires < o.expires) {
                out = Some(Validity { made, expires });
            }
        }
    }
    out
}

/// The bytes of a `data:` URL (RFC 2397).
fn data_url(url: &str) -> Option<Vec<u8>> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    if meta.ends_with(";base64") {
        base64::engine::general_purpose::STANDARD.decode(data.trim()).ok()
    } else {
        Some(percent_encoding::percent_decode_str(data).collect())
    }
}

fn gunzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).take(MAX_FILE).read_to_end(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Made with openssl for these tests: a one-day signer (as the installer's kubelet-signer)
    /// and a ten-year root CA.
    const SIGNER: &str = include_str!("../../../tests/fixtures/ignition/kubelet-signer.pem");
    const ROOT: &str = include_str!("../../../tests/fixtures/ignition/root-ca.pem");

    fn b64(text: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn file(path: &str, source: String, compression: Option<&str>) -> Value {
        let mut contents = json!({ "source": source });
        if let Some(c) = compression {
            contents["compression"] = json!(c);
        }
        json!({ "path": path, "contents": contents })
    }

    #[test]
    fn the_one_day_signer_dates_the_config_and_long_lived_cas_do_not() {
        let signer = x509_parser::pem::parse_x509_pem(SIGNER.as_bytes()).expect("pem").1;
        let signer = signer.parse_x509().expect("cert");
        let made =
            UNIX_EPOCH + Duration::from_secs(u64::try_from(signer.validity().not_before.timestamp()).expect("time"));
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(SIGNER.as_bytes()).expect("gzip");
            e.finish().expect("gzip")
        };
        let config = json!({ "ignition": { "version": "3.2.0" }, "storage": { "files": [
            file("/opt/openshift/tls/root-ca.crt", format!("data:text/plain;charset=utf-8;base64,{}", b64(ROOT.as_bytes())), None),
            file("/opt/openshift/tls/kubelet-signer.crt", format!("data:;base64,{}", b64(&gz)), Some("gzip")),
            file("/etc/motd", "data:,hello%20world".into(), None),
            file("/opt/openshift/garbage", "data:;base64,@@@".into(), None),
        ] } });
        let found = short_lived(&config).expect("the signer is found");
        assert_eq!(found.made, made);
        assert_eq!(found.expires.duration_since(found.made).expect("order"), Duration::from_secs(86400));
        let without =
            json!({ "storage": { "files": [file("/ca.crt", format!("data:,{}", ROOT.replace('\n', "%0A")), None)] } });
        assert_eq!(short_lived(&without), None, "a ten-year CA says nothing about the config's age");
    }
}
