//! The properties the `ignition_upload` fuzz target checks, callable from the unit tests too:
//! any bytes as an uploaded Ignition config, checked as the upload is, dated by its
//! certificates, and (when accepted) merged with slipway's additions as a node gets it.

use std::collections::BTreeMap;

use super::{Additions, Base, HostKeyFiles, check_upload, render};

/// Panics if an upload breaks a promise: one the check accepts renders for a node into a
/// config the same check accepts again, and a refusal never quotes the upload's strings.
pub fn upload(data: &[u8]) {
    let checked = check_upload(data);
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = super::certs::short_lived(&value);
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    if checked.is_err() {
        return;
    }
    let vars = BTreeMap::from([
        ("hostname", "master-0".to_string()),
        ("phone_home_url", "http://10.1.107.1:8080/phone-home".to_string()),
    ]);
    let keys = ["ssh-ed25519 AAAA ops@lab".to_string()];
    let host = HostKeyFiles { private: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n", public: "ssh-ed25519 BBBB m0" };
    let additions =
        Additions { ssh_keys: &keys, cluster_key: Some("ssh-ed25519 CCCC slipway@prod"), host_key: Some(host) };
    match render(Base::Verbatim(text), &vars, &additions) {
        Ok(rendered) => {
            if let Err(e) = check_upload(rendered.body.as_bytes()) {
                panic!("an accepted upload rendered into a config Ignition refuses: {e}");
            }
        }
        Err(e) => panic!("an accepted upload does not render: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::upload;

    #[test]
    fn uploads_good_and_bad_go_through_without_a_panic() {
        let good = br#"{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"/etc/motd","contents":{"source":"data:,hi"}}]}}"#;
        assert!(super::check_upload(good).is_ok(), "the seed is accepted, so it is rendered too");
        for data in [&good[..], b"{}", b"{\"ignition\":{\"version\":\"3.9.9\"}}", b"\xff", b"[]"] {
            upload(data);
        }
    }
}
