//! slipway's additions as Ignition fragments: the configs in the top-level `ignition/` folder,
//! built in. Each is rendered with the node's variables (and the additions' own: the SSH keys as
//! a JSON array, the host key files base64-encoded for `data:` URLs) into a config of its own,
//! which `super::render` merges into the node's base. Pure.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value;

use super::{Additions, IgnitionError};
use crate::template;

/// One fragment: its file name in `ignition/` and its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    pub file: &'static str,
    text: &'static str,
}

pub const HOSTNAME: Fragment = Fragment { file: "hostname.ign", text: include_str!("../../../ignition/hostname.ign") };
pub const PHONE_HOME: Fragment =
    Fragment { file: "phone-home.ign", text: include_str!("../../../ignition/phone-home.ign") };
pub const SSH_KEYS: Fragment =
    Fragment { file: "ssh-authorized-keys.ign", text: include_str!("../../../ignition/ssh-authorized-keys.ign") };
pub const HOST_KEY: Fragment =
    Fragment { file: "ssh-host-key.ign", text: include_str!("../../../ignition/ssh-host-key.ign") };

/// Every fragment, in the order they are merged.
pub const ALL: [Fragment; 4] = [HOSTNAME, SSH_KEYS, HOST_KEY, PHONE_HOME];

/// The fragments a node gets: the hostname and the phone-home always, the SSH keys when there
/// are any, the host key when slipway made one for the node.
pub fn wanted(additions: &Additions<'_>) -> Vec<Fragment> {
    ALL.into_iter()
        .filter(|f| match *f {
            SSH_KEYS => !additions.ssh_keys.is_empty() || additions.cluster_key.is_some(),
            HOST_KEY => additions.host_key.is_some(),
            _ => true,
        })
        .collect()
}

/// `vars` with the additions' variables (the SSH keys: the operator's, then the cluster's).
pub fn variables<'a>(vars: &BTreeMap<&'a str, String>, additions: &Additions<'_>) -> BTreeMap<&'a str, String> {
    let mut keys = additions.ssh_keys.to_vec();
    keys.extend(additions.cluster_key.map(str::to_owned));
    let mut all = template::with_keys(vars, &keys);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    if let Some(host) = &additions.host_key {
        all.insert("ssh_host_key", b64(host.private));
        all.insert("ssh_host_key_pub", b64(host.public));
    }
    all
}

/// The fragment rendered with `vars` (from `variables`).
pub fn render(fragment: Fragment, vars: &BTreeMap<&str, String>) -> Result<Value, IgnitionError> {
    let text = template::render(fragment.text, vars)?;
    serde_json::from_str(&text).map_err(|e| IgnitionError::Json(format!("fragment {}: {}", fragment.file, e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::ignition::HostKeyFiles;

    fn vars() -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("hostname", "m0".to_string()),
            ("phone_home_url", "http://10.1.107.1:8080/phone-home".to_string()),
        ])
    }

    #[test]
    fn every_fragment_renders_to_a_config_with_only_what_the_merge_knows() {
        let keys = ["ssh-ed25519 AAAA ops@lab".to_string()];
        let host = HostKeyFiles { private: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n", public: "ssh-ed25519 BBBB m0" };
        let cluster_key = Some("ssh-ed25519 CCCC slipway@prod");
        let additions = Additions { ssh_keys: &keys, cluster_key, host_key: Some(host) };
        assert_eq!(wanted(&additions), ALL.to_vec());
        let vars = variables(&vars(), &additions);
        for fragment in ALL {
            let config = render(fragment, &vars).expect(fragment.file);
            assert_eq!(config["ignition"]["version"], super::super::SPEC_VERSION, "{}", fragment.file);
            // Only what `merge` carries over: anything else would be dropped silently.
            let known = [
                ("ignition", &["version"][..]),
                ("passwd", &["users"][..]),
                ("storage", &["files"][..]),
                ("systemd", &["units"][..]),
            ];
            for (section, value) in config.as_object().expect("object") {
                let lists = known.iter().find(|(s, _)| s == section).map(|(_, l)| *l);
                let lists = lists.unwrap_or_else(|| panic!("{}: section {section}", fragment.file));
                for key in value.as_object().expect("section object").keys() {
                    assert!(lists.contains(&key.as_str()), "{}: {section}.{key} is not merged", fragment.file);
                }
            }
        }
        let host_files = render(HOST_KEY, &vars).expect("host key");
        let source = host_files["storage"]["files"][0]["contents"]["source"].as_str().expect("source");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(source.strip_prefix("data:;base64,").expect("a base64 data URL"))
            .expect("base64");
        assert_eq!(decoded, host.private.as_bytes());
        assert_eq!(host_files["storage"]["files"][0]["mode"], 0o600);
        let keys_fragment = render(SSH_KEYS, &vars).expect("keys");
        let core = &keys_fragment["passwd"]["users"][0]["sshAuthorizedKeys"];
        assert_eq!(*core, serde_json::json!(["ssh-ed25519 AAAA ops@lab", "ssh-ed25519 CCCC slipway@prod"]));
    }

    #[test]
    fn a_node_without_keys_gets_the_hostname_and_the_phone_home() {
        assert_eq!(wanted(&Additions::default()), vec![HOSTNAME, PHONE_HOME]);
        let cluster_only = Additions { cluster_key: Some("ssh-ed25519 CCCC slipway@prod"), ..Additions::default() };
        assert_eq!(wanted(&cluster_only), vec![HOSTNAME, SSH_KEYS, PHONE_HOME]);
    }
}
