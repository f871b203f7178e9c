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

/// What slipway's fragment is merged into.
#[derive(Clone, Copy, Debug)]
pub enum Base<'a> {
    /// Nothing: slipway's fragment alone.
    Empty,
    /// An operator template, rendered with the node's variables first.
    Template(&'a str),
    /// A config used as it is (uploaded from `openshift-install`).
    Verbatim(&'a str),
}

/// The node's Ignition document: `base` with slipway's fragment merged in.
pub fn render(base: Base<'_>, vars: &BTreeMap<&str, String>, ssh_keys: &[String]) -> Result<String, IgnitionError> {
    let parse = |text: &str| serde_json::from_str::<Value>(text).map_err(|e| IgnitionError::Json(e.to_string()));
    let mut config: Value = match base {
        Base::Empty => json!({}),
        Base::Template(text) => parse(&template::render(text, vars)?)?,
        Base::Verbatim(text) => parse(text)?,
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

/// Checks an uploaded config (`openshift-install`'s bootstrap/master/worker.ign) against the
/// Ignition spec its `ignition.version` names. The error says what and where, without quoting
/// the config's values (they may be secrets).
pub fn check_upload(body: &[u8]) -> Result<String, String> {
    match ignition_config::Config::parse_slice(body) {
        Ok((config, _warnings)) => {
            let version = serde_json::to_value(&config)
                .ok()
                .and_then(|v| v["ignition"]["version"].as_str().map(String::from))
                .unwrap_or_default();
            Ok(version)
        }
        Err(ignition_config::Error::Serialization(e)) => Err(format!(
            "not a valid Ignition config: {} at line {} column {}",
            without_values(&e.to_string()),
            e.line(),
            e.column()
        )),
        Err(e) => Err(format!("not a valid Ignition config: {e}")),
    }
}

/// A serde message with quoted values replaced (`invalid type: string "…", expected ...`) and
/// its own position suffix dropped.
fn without_values(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    let mut out = String::new();
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…\"");
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
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
        let text = render(Base::Empty, &vars(), &["ssh-ed25519 AAAA k".into()]).expect("test input");
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
            serde_json::from_str(&render(Base::Template(base), &vars(), &[]).expect("test input")).expect("test input");
        assert_eq!(v["systemd"]["units"].as_array().expect("test input").len(), 2);
        assert_eq!(v["storage"]["files"][0]["contents"]["source"], "data:,m0");
        assert!(v.get("passwd").is_none());
        assert_eq!(v["ignition"]["version"], "3.2.0", "the base's version is kept");
    }

    #[test]
    fn a_template_that_is_not_json_is_an_error() {
        assert!(matches!(render(Base::Template("not json"), &vars(), &[]), Err(IgnitionError::Json(_))));
        assert!(matches!(render(Base::Verbatim("[1]"), &vars(), &[]), Err(IgnitionError::Json(_))));
    }

    #[test]
    fn a_verbatim_base_is_not_template_rendered() {
        let base = r#"{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"/etc/x","contents":{"source":"data:,{{not-a-var}}"}}]}}"#;
        let v: Value =
            serde_json::from_str(&render(Base::Verbatim(base), &vars(), &[]).expect("render")).expect("json");
        assert_eq!(v["storage"]["files"][0]["contents"]["source"], "data:,{{not-a-var}}");
    }

    #[test]
    fn uploads_are_checked_against_their_spec_without_quoting_values() {
        assert_eq!(check_upload(br#"{"ignition":{"version":"3.2.0"}}"#), Ok("3.2.0".into()));
        let err = check_upload(br#"{"ignition":{"version":"3.2.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":"SECRET-KEY"}]}}"#)
            .expect_err("a string where a list belongs");
        assert!(err.contains("line 1") && !err.contains("SECRET"), "{err}");
        let err = check_upload(br#"{"ignition":{"version":"9.0.0"}}"#).expect_err("unknown version");
        assert!(err.contains("9.0.0"), "{err}");
        assert!(check_upload(b"not json").is_err());
    }
}
