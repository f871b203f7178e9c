//! cloud-init NoCloud documents for one node (`/nocloud/{node}/meta-data`, `user-data`,
//! `vendor-data`, `network-config`). The user-data is slipway's additions — the hostname, the
//! operator's SSH keys and a `phone_home` to slipway — merged into an operator template
//! (`[boot] templates`, `cloud-init/<role>.user-data` or `cloud-init/user-data`, rendered with
//! the node's variables) or into nothing. A `#cloud-config` template keeps its own `hostname`
//! (or `fqdn`) and `phone_home` (each addition it replaces is reported), and its
//! `ssh_authorized_keys` get the operator's keys added; any other kind of template (a script,
//! `#include`, MIME, jinja) is served as it is, without additions. Every user-data is checked
//! before it may be served. Pure: the caller reads template files.

use std::collections::BTreeMap;

use serde_norway::{Mapping, Value};

use super::template::{self, TemplateError};

/// The NoCloud documents a seed directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Document {
    MetaData,
    UserData,
    VendorData,
    NetworkConfig,
}

impl Document {
    pub fn parse(name: &str) -> Option<Document> {
        Some(match name {
            "meta-data" => Document::MetaData,
            "user-data" => Document::UserData,
            "vendor-data" => Document::VendorData,
            "network-config" => Document::NetworkConfig,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CloudInitError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The user-data would not be accepted by cloud-init; says where, not the values.
    #[error("the user-data would be invalid: {0}")]
    Invalid(String),
}

/// A document that may be served, and the additions the template's own keys took the place of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub body: String,
    pub left_out: Vec<String>,
}

/// What `phone_home.post` may name (cloud-init's schema).
const PHONE_HOME_POST: &[&str] =
    &["pub_key_dsa", "pub_key_rsa", "pub_key_ecdsa", "pub_key_ed25519", "instance_id", "hostname", "fqdn"];

/// Renders `doc` for the node whose variables are `vars`. `template` is the operator's
/// user-data template, when one exists for this node.
pub fn render(
    doc: Document,
    vars: &BTreeMap<&str, String>,
    ssh_keys: &[String],
    template: Option<&str>,
) -> Result<Rendered, CloudInitError> {
    let var = |k: &str| vars.get(k).map_or("", String::as_str);
    let body = match doc {
        Document::MetaData => format!("instance-id: slipway-{}\nlocal-hostname: {}\n", var("node"), var("hostname")),
        Document::UserData => return user_data(vars, ssh_keys, template),
        Document::VendorData => "#cloud-config\n{}\n".to_string(),
        Document::NetworkConfig => format!(
            "version: 2\nethernets:\n  provisioning:\n    match:\n      macaddress: \"{}\"\n    dhcp4: true\n",
            var("mac")
        ),
    };
    Ok(Rendered { body, left_out: Vec::new() })
}

fn user_data(
    vars: &BTreeMap<&str, String>,
    ssh_keys: &[String],
    template: Option<&str>,
) -> Result<Rendered, CloudInitError> {
    let var = |k: &str| vars.get(k).map_or("", String::as_str);
    let text = match template {
        Some(t) => template::render(t, &template::with_keys(vars, ssh_keys))?,
        None => "#cloud-config\n".to_string(),
    };
    if !text.starts_with("#cloud-config") {
        return Ok(Rendered {
            body: text,
            left_out: vec!["hostname, ssh_authorized_keys and phone_home (the template is not #cloud-config)".into()],
        });
    }
    let mut doc: Value = serde_norway::from_str(&text).map_err(|e| CloudInitError::Invalid(yaml_problem(&e)))?;
    if doc.is_null() {
        doc = Value::Mapping(Mapping::new());
    }
    let Some(map) = doc.as_mapping_mut() else {
        return Err(CloudInitError::Invalid("the top level must be a mapping".into()));
    };
    let mut left_out = Vec::new();
    let mut additions = Mapping::new();
    additions.insert("hostname".into(), var("hostname").into());
    if !var("fqdn").is_empty() {
        additions.insert("fqdn".into(), var("fqdn").into());
    }
    additions.insert("prefer_fqdn_over_hostname".into(), false.into());
    if map.contains_key("hostname") || map.contains_key("fqdn") {
        if ["hostname", "fqdn"].iter().any(|k| map.get(*k).is_some_and(|v| Some(v) != additions.get(*k))) {
            left_out.push("hostname (the template sets hostname or fqdn)".to_string());
        }
    } else {
        map.extend(additions);
    }
    if !ssh_keys.is_empty() {
        let keys = map.entry("ssh_authorized_keys".into()).or_insert_with(|| Value::Sequence(Vec::new()));
        let Some(have) = keys.as_sequence_mut() else {
            return Err(CloudInitError::Invalid("ssh_authorized_keys must be a list".into()));
        };
        for key in ssh_keys {
            if !have.iter().any(|k| k.as_str() == Some(key)) {
                have.push(key.as_str().into());
            }
        }
    }
    let phone_home = serde_norway::to_value(serde_json::json!({
        "url": var("phone_home_url"),
        "post": ["instance_id", "hostname", "fqdn"],
        "tries": 10,
    }))
    .unwrap_or_default();
    match map.get("phone_home") {
        Some(theirs) if *theirs != phone_home => left_out.push("phone_home (the template sets its own)".into()),
        Some(_) => {}
        None => {
            map.insert("phone_home".into(), phone_home);
        }
    }
    let body = format!("#cloud-config\n{}", serde_norway::to_string(&doc).unwrap_or_default());
    check_user_data(&body)?;
    Ok(Rendered { body, left_out })
}

/// A YAML error by position and kind, without the text it quotes.
fn yaml_problem(e: &serde_norway::Error) -> String {
    let kind = e.to_string();
    let kind = kind.split(" at line ").next().unwrap_or(&kind).split(':').next().unwrap_or_default().to_string();
    match e.location() {
        Some(at) => format!("not YAML at line {} column {} ({kind})", at.line(), at.column()),
        None => format!("not YAML ({kind})"),
    }
}

/// The checks cloud-init's schema makes on the keys slipway writes, for a `#cloud-config`
/// document: a mapping; `hostname`/`fqdn` strings; `prefer_fqdn_over_hostname` a boolean;
/// `ssh_authorized_keys` a list of strings; `phone_home` a mapping with a string `url`, `post`
/// `all` or a list of what it may post, `tries` an integer.
pub fn check_user_data(text: &str) -> Result<(), CloudInitError> {
    let invalid = |what: &str| Err(CloudInitError::Invalid(what.to_string()));
    if !text.starts_with("#cloud-config") {
        return Ok(());
    }
    let doc: Value = serde_norway::from_str(text).map_err(|e| CloudInitError::Invalid(yaml_problem(&e)))?;
    let map = match &doc {
        Value::Null => return Ok(()),
        Value::Mapping(map) => map,
        _ => return invalid("the top level must be a mapping"),
    };
    for key in ["hostname", "fqdn"] {
        if map.get(key).is_some_and(|v| !v.is_string()) {
            return invalid(&format!("{key} must be a string"));
        }
    }
    if map.get("prefer_fqdn_over_hostname").is_some_and(|v| !v.is_bool()) {
        return invalid("prefer_fqdn_over_hostname must be true or false");
    }
    if let Some(keys) = map.get("ssh_authorized_keys")
        && !keys.as_sequence().is_some_and(|l| l.iter().all(Value::is_string))
    {
        return invalid("ssh_authorized_keys must be a list of strings");
    }
    if let Some(phone_home) = map.get("phone_home") {
        let Some(ph) = phone_home.as_mapping() else {
            return invalid("phone_home must be a mapping");
        };
        if !ph.get("url").is_some_and(Value::is_string) {
            return invalid("phone_home.url must be a string");
        }
        let post_ok = match ph.get("post") {
            None => true,
            Some(Value::String(s)) => s == "all",
            Some(Value::Sequence(l)) => l.iter().all(|v| v.as_str().is_some_and(|s| PHONE_HOME_POST.contains(&s))),
            Some(_) => false,
        };
        if !post_ok {
            return invalid(&format!("phone_home.post must be \"all\" or a list of {}", PHONE_HOME_POST.join(", ")));
        }
        if ph.get("tries").is_some_and(|t| !t.is_u64()) {
            return invalid("phone_home.tries must be an integer");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("node", "w0".to_string()),
            ("hostname", "w0".to_string()),
            ("fqdn", "w0.prod.lab.example".to_string()),
            ("mac", "52:54:00:00:00:20".to_string()),
            ("phone_home_url", "http://10.1.107.1:8080/phone-home".to_string()),
        ])
    }

    fn user_data(keys: &[String], template: Option<&str>) -> (serde_json::Value, Vec<String>) {
        let r = render(Document::UserData, &vars(), keys, template).expect("renders");
        assert!(r.body.starts_with("#cloud-config\n"), "{}", r.body);
        (serde_norway::from_str(&r.body).expect("YAML"), r.left_out)
    }

    const KEY: &str = "ssh-ed25519 AAAAC3Nza test@lab";

    #[test]
    fn built_in_user_data_has_hostname_keys_and_phone_home() {
        let (parsed, left_out) = user_data(&[KEY.into()], None);
        assert_eq!(parsed["hostname"], "w0");
        assert_eq!(parsed["fqdn"], "w0.prod.lab.example");
        assert_eq!(parsed["ssh_authorized_keys"], serde_json::json!([KEY]));
        assert_eq!(parsed["phone_home"]["url"], "http://10.1.107.1:8080/phone-home");
        assert!(left_out.is_empty());
    }

    #[test]
    fn a_template_gets_the_additions_it_does_not_set_itself() {
        let (parsed, left_out) = user_data(&[KEY.into()], Some("#cloud-config\npackages: [curl]\n"));
        assert_eq!(parsed["packages"], serde_json::json!(["curl"]));
        assert_eq!(parsed["hostname"], "w0");
        assert_eq!(parsed["ssh_authorized_keys"], serde_json::json!([KEY]));
        assert_eq!(parsed["phone_home"]["url"], "http://10.1.107.1:8080/phone-home");
        assert!(left_out.is_empty());
    }

    #[test]
    fn a_template_keeps_its_hostname_and_phone_home_and_joins_the_keys() {
        let template = "#cloud-config\nhostname: {{hostname}}-x\nssh_authorized_keys:\n  - ssh-rsa AAAA theirs\n  - ssh-ed25519 AAAAC3Nza test@lab\nphone_home:\n  url: http://elsewhere/\n  post: all\n";
        let (parsed, left_out) = user_data(&[KEY.into(), "ssh-ed25519 BBBB second".into()], Some(template));
        assert_eq!(parsed["hostname"], "w0-x");
        assert!(parsed.get("fqdn").is_none(), "slipway's fqdn would override the template's hostname");
        assert_eq!(
            parsed["ssh_authorized_keys"],
            serde_json::json!(["ssh-rsa AAAA theirs", KEY, "ssh-ed25519 BBBB second"]),
            "the template's keys first, each key once"
        );
        assert_eq!(parsed["phone_home"]["url"], "http://elsewhere/");
        assert_eq!(left_out.len(), 2, "{left_out:?}");
        assert!(left_out[0].starts_with("hostname") && left_out[1].starts_with("phone_home"), "{left_out:?}");
    }

    #[test]
    fn templates_may_place_the_keys_themselves() {
        let template = "#cloud-config\nusers:\n  - name: ops\n    ssh_authorized_keys: {{ssh_authorized_keys}}\n";
        let (parsed, _) = user_data(&[KEY.into()], Some(template));
        assert_eq!(parsed["users"][0]["ssh_authorized_keys"], serde_json::json!([KEY]));
    }

    #[test]
    fn a_template_that_is_not_cloud_config_is_served_as_it_is() {
        let r = render(Document::UserData, &vars(), &[KEY.into()], Some("#!/bin/sh\necho {{hostname}}\n"))
            .expect("renders");
        assert_eq!(r.body, "#!/bin/sh\necho w0\n");
        assert_eq!(r.left_out.len(), 1);
    }

    #[test]
    fn user_data_cloud_init_would_refuse_is_an_error_without_values() {
        for (template, what) in [
            ("#cloud-config\nhostname: [SECRET]\n", "hostname must be a string"),
            ("#cloud-config\nssh_authorized_keys: SECRET\n", "ssh_authorized_keys must be a list"),
            ("#cloud-config\nphone_home: {post: all}\n", "phone_home.url"),
            ("#cloud-config\nphone_home: {url: x, post: [SECRET]}\n", "phone_home.post"),
            ("#cloud-config\n- SECRET\n", "top level must be a mapping"),
            ("#cloud-config\na: SECRET\na: 2\n", "not YAML at line"),
            ("#cloud-config\na: \"SECRET\n", "not YAML at line"),
        ] {
            let err =
                render(Document::UserData, &vars(), &[KEY.into()], Some(template)).expect_err(template).to_string();
            assert!(err.contains(what) && !err.contains("SECRET"), "{template}: {err}");
        }
    }

    #[test]
    fn meta_data_and_network_config_name_the_node() {
        assert_eq!(
            render(Document::MetaData, &vars(), &[], None).expect("test input").body,
            "instance-id: slipway-w0\nlocal-hostname: w0\n"
        );
        let net = render(Document::NetworkConfig, &vars(), &[], None).expect("test input").body;
        assert!(net.contains("macaddress: \"52:54:00:00:00:20\"") && net.contains("dhcp4: true"), "{net}");
        assert_eq!(Document::parse("user-data"), Some(Document::UserData));
        assert_eq!(Document::parse("../x"), None);
    }
}
