//! Ignition (spec 3.x) for CoreOS nodes: slipway's own fragment — the hostname, the operator's
//! SSH keys for user `core`, and a unit that phones home once the system is up — merged into a
//! base config (an operator template rendered with the node's variables, or nothing). Pure.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::template::{self, TemplateError};

/// The spec version written when the base config names none: 3.3.0 is read by every Ignition
/// since 2.14 (Debian 12, FCOS, OKD 4.x); slipway's fragment uses only fields from spec 3.0.
pub const SPEC_VERSION: &str = "3.3.0";
/// The unit slipway adds; it reports once per boot.
pub const PHONE_HOME_UNIT: &str = "slipway-phone-home.service";

#[derive(Debug, thiserror::Error)]
pub enum IgnitionError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("not an Ignition config: {0}")]
    Json(String),
}

/// The node's Ignition document: `base` (a template, already read) rendered with `vars`, with
/// slipway's fragment merged in.
pub fn render(base: Option<&str>, vars: &BTreeMap<&str, String>, ssh_keys: &[String]) -> Result<String, IgnitionError> {
    let mut config: Value = match base {
        Some(text) => {
            serde_json::from_str(&template::render(text, vars)?).map_err(|e| IgnitionError::Json(e.to_string()))?
        }
        None => json!({}),
    };
    if !config.is_object() {
        return Err(IgnitionError::Json("the top level must be an object".into()));
    }
    let var = |k: &str| vars.get(k).map_or("", String::as_str);
    if !config["ignition"]["version"].as_str().is_some_and(|v| v.starts_with("3.")) {
        config["ignition"]["version"] = json!(SPEC_VERSION);
    }
    push(
        &mut config,
        &["storage", "files"],
        json!({
            "path": "/etc/hostname",
            "mode": 420,
            "overwrite": true,
            "contents": { "source": format!("data:,{}", var("hostname")) },
        }),
    );
    if !ssh_keys.is_empty() {
        push(&mut config, &["passwd", "users"], json!({ "name": "core", "sshAuthorizedKeys": ssh_keys }));
    }
    let unit = format!(
        "[Unit]\nDescription=Tell slipway this node is up\nWants=network-online.target\nAfter=network-online.target\n\n\
         [Service]\nType=oneshot\nExecStart=/usr/bin/curl -fsS --retry 10 --retry-all-errors -X POST {}\n\n\
         [Install]\nWantedBy=multi-user.target\n",
        var("phone_home_url")
    );
    push(&mut config, &["systemd", "units"], json!({ "name": PHONE_HOME_UNIT, "enabled": true, "contents": unit }));
    Ok(serde_json::to_string(&config).unwrap_or_default())
}

/// Appends `item` to the array at `path`, creating objects and the array as needed.
fn push(config: &mut Value, path: &[&str], item: Value) {
    let mut at = config;
    for key in path {
        if !at.get(*key).is_some_and(|v| v.is_object() || v.is_array()) {
            at[*key] = if *key == path[path.len() - 1] { json!([]) } else { json!({}) };
        }
        at = &mut at[*key];
    }
    if let Some(list) = at.as_array_mut() {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("hostname", "m0".to_string()),
            ("phone_home_url", "http://10.1.107.1:8080/phone-home".to_string()),
        ])
    }

    #[test]
    fn the_fragment_sets_hostname_keys_and_the_phone_home_unit() {
        let text = render(None, &vars(), &["ssh-ed25519 AAAA k".into()]).expect("test input");
        let v: Value = serde_json::from_str(&text).expect("test input");
        assert_eq!(v["ignition"]["version"], SPEC_VERSION);
        assert_eq!(v["storage"]["files"][0]["contents"]["source"], "data:,m0");
        assert_eq!(v["passwd"]["users"][0]["sshAuthorizedKeys"][0], "ssh-ed25519 AAAA k");
        assert_eq!(v["systemd"]["units"][0]["name"], PHONE_HOME_UNIT);
        assert!(
            v["systemd"]["units"][0]["contents"]
                .as_str()
                .expect("test input")
                .contains("-X POST http://10.1.107.1:8080/phone-home")
        );
    }

    #[test]
    fn a_template_is_rendered_and_keeps_its_own_entries() {
        let base = r#"{"ignition":{"version":"3.2.0"},"systemd":{"units":[{"name":"k3s.service","enabled":true}]},"storage":{"files":[{"path":"/etc/motd","contents":{"source":"data:,{{hostname}}"}}]}}"#;
        let v: Value =
            serde_json::from_str(&render(Some(base), &vars(), &[]).expect("test input")).expect("test input");
        assert_eq!(v["systemd"]["units"].as_array().expect("test input").len(), 2);
        assert_eq!(v["storage"]["files"][0]["contents"]["source"], "data:,m0");
        assert!(v.get("passwd").is_none());
        assert_eq!(v["ignition"]["version"], "3.2.0", "the base's version is kept");
    }

    #[test]
    fn a_template_that_is_not_json_is_an_error() {
        assert!(matches!(render(Some("not json"), &vars(), &[]), Err(IgnitionError::Json(_))));
        assert!(matches!(render(Some("[1]"), &vars(), &[]), Err(IgnitionError::Json(_))));
    }
}
