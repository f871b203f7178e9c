//! The ecosystems' own validators for what slipway serves its nodes: `ignition-validate`
//! (Debian's `ignition`) for every Ignition config and `cloud-init schema` for every cloud-init
//! user-data a test fetches. Every test that fetches one hands it here.

use std::process::Command;

/// `body` passes `ignition-validate`.
pub fn ignition(what: &str, body: &[u8]) {
    check(what, body, ".ign", "ignition-validate", &[]);
}

/// `body` passes `cloud-init schema`.
pub fn user_data(what: &str, body: &[u8]) {
    check(what, body, ".user-data", "cloud-init", &["schema", "-c"]);
}

fn check(what: &str, body: &[u8], suffix: &str, program: &str, args: &[&str]) {
    let file = tempfile::Builder::new().suffix(suffix).tempfile().expect("temp file");
    std::fs::write(file.path(), body).expect("write");
    let out = Command::new(program)
        .args(args)
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/test installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} refuses {what}: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(body)
    );
}
