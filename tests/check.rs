//! `slipway check`: golden output for a config with many problems, and success output.

use std::process::Command;

use crate::support::BIN;

fn check(dir: &str, file: &str) -> (bool, String, String) {
    let out = Command::new(BIN).current_dir(dir).args(["check", "--config", file]).output().expect("run slipway check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Set `UPDATE_GOLDEN=1` to rewrite the expected output after an intended change.
#[test]
fn check_lists_every_problem_with_file_line_field_and_value() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/check");
    let (ok, stdout, stderr) = check(dir, "bad.toml");
    assert!(!ok, "bad.toml must fail the check");
    assert_eq!(stdout, "");
    let golden = format!("{dir}/bad.out");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &stderr).expect("write golden");
    }
    let expected = std::fs::read_to_string(&golden).expect("golden file");
    assert_eq!(stderr, expected, "slipway check output changed; rerun with UPDATE_GOLDEN=1 if intended");
}

#[test]
fn check_accepts_the_example_config() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let (ok, stdout, stderr) = check(dir, "slipway.toml");
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "slipway.toml: ok (1 networks, 1 clusters, 2 nodes, 1 profiles, 1 pools, 1 frontends)\n");
}

#[test]
fn check_reports_a_missing_file() {
    let (ok, _, stderr) = check("/", "/nonexistent/slipway.toml");
    assert!(!ok);
    assert!(stderr.starts_with("/nonexistent/slipway.toml: cannot read the config file: "), "{stderr}");
}
