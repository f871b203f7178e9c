//! Test certificates made with openssl: CAs and the certificates they sign, with the key types
//! the real components use.

use std::path::{Path, PathBuf};

/// Runs openssl; a failure ends the test with its message.
pub fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).output().expect("openssl (scripts/test installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `genpkey` arguments for a P-256 key.
pub const EC_KEY: [&str; 5] = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
/// `genrsa` arguments for an RSA key in PKCS#1 (`BEGIN RSA PRIVATE KEY`).
pub const RSA_PKCS1_KEY: [&str; 2] = ["genrsa", "-traditional"];

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A CA (P-256) with this subject, as `<stem>.pem` and `<stem>.key` in `dir`.
pub fn ca(dir: &Path, stem: &str, subject: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        subject,
        "-keyout",
        &s(&key),
        "-out",
        &s(&cert),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    (cert, key)
}

/// A certificate for `subject` with the extensions `ext` (openssl extfile lines), on a new key
/// made with `genkey` ([`EC_KEY`], [`RSA_PKCS1_KEY`]), signed by `ca`; `<stem>.pem` and
/// `<stem>.key` in `dir`.
pub fn issue(
    dir: &Path,
    stem: &str,
    subject: &str,
    ext: &str,
    genkey: &[&str],
    ca: &(PathBuf, PathBuf),
) -> (PathBuf, PathBuf) {
    let p = |suffix: &str| dir.join(format!("{stem}.{suffix}"));
    let (cert, key, csr, extfile) = (p("pem"), p("key"), p("csr"), p("ext"));
    std::fs::write(&extfile, ext).expect("extfile");
    // (genrsa takes the key size last.)
    let size: &[&str] = if genkey[0] == "genrsa" { &["2048"] } else { &[] };
    openssl(&[genkey, &["-out", &s(&key)], size].concat());
    openssl(&["req", "-new", "-key", &s(&key), "-subj", subject, "-out", &s(&csr)]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&ca.0),
        "-CAkey",
        &s(&ca.1),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &s(&extfile),
        "-out",
        &s(&cert),
    ]);
    (cert, key)
}
