//! cloud-init NoCloud documents for one node (`/nocloud/{node}/meta-data`, `user-data`,
//! `vendor-data`, `network-config`). The user-data is an operator template (`[boot] templates`,
//! `cloud-init/<role>.user-data` or `cloud-init/user-data`, rendered with the node's variables)
//! or nothing, followed by slipway's additions — the hostname, the operator's SSH keys and a
//! `phone_home` to slipway — each only where the template does not set that key itself (what
//! it replaces is reported). The template's text is served as written: it is parsed to learn its
//! keys, never re-serialised, so YAML 1.1 meanings (`yes`, `0644`) reach cloud-init unchanged.
//! Any other kind of template (a script, `#include`, MIME, jinja) is served as it is, without
//! additions. A node may also be handed files to write (`WriteFile`: a k3s first server's
//! add-on manifests): they join the template's own `write_files` list, or make one. Every
//! user-data is checked before it may be served. Pure: the caller reads template files.

use std::collections::BTreeMap;

use serde_norway::{Mapping, Value};

use super::ignition::HostKeyFiles;
use crate::template::{self, TemplateError};

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

/// A document that may be served, the additions the template's own keys took the place of,
/// and whether it carries slipway's SSH access (`Access`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub body: String,
    pub left_out: Vec<String>,
    pub access: bool,
}

/// What `phone_home.post` may name (cloud-init's schema).
const PHONE_HOME_POST: &[&str] =
    &["pub_key_dsa", "pub_key_rsa", "pub_key_ecdsa", "pub_key_ed25519", "instance_id", "hostname", "fqdn"];

/// slipway's own SSH access to a node of a cluster: user `slipway` (passwordless sudo, login by
/// the cluster's key only) and the host key slipway made for the node.
#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    /// The cluster's public key.
    pub key: &'a str,
    pub host_key: HostKeyFiles<'a>,
}

/// The user-data a node of a k3s cluster starts from when the operator has no template for it
/// (`cloud-init/k3s.user-data`): it waits for its turn, installs k3s from slipway's images and
/// starts it.
pub const K3S_USER_DATA: &str = include_str!("../../cloud-init/k3s.user-data");

/// A file a node's cloud-init writes (`write_files`), root's alone (mode 0600).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteFile {
    pub path: String,
    pub content: String,
}

impl WriteFile {
    /// The `write_files` entry, as JSON (which YAML 1.1 and 1.2 read alike).
    fn entry(&self) -> serde_json::Value {
        serde_json::json!({ "path": self.path, "owner": "root:root", "permissions": "0600", "content": self.content })
    }
}

/// The user slipway logs in as on a cloud-init node (`Access`).
pub const USER: &str = "slipway";

/// Renders `doc` for the node whose variables are `vars`. `template` is the operator's
/// user-data template, when one exists for this node; `files` are written by the user-data.
pub fn render(
    doc: Document,
    vars: &BTreeMap<&str, String>,
    ssh_keys: &[String],
    access: Option<Access<'_>>,
    files: &[WriteFile],
    template: Option<&str>,
) -> Result<Rendered, CloudInitError> {
    let var = |k: &str| vars.get(k).map_or("", String::as_str);
    let body = match doc {
        Document::MetaData => format!("instance-id: slipway-{}\nlocal-hostname: {}\n", var("node"), var("hostname")),
        Document::UserData => return user_data(vars, ssh_keys, access, files, template),
        Document::VendorData => "#cloud-config\n{}\n".to_string(),
        Document::NetworkConfig => format!(
            "version: 2\nethernets:\n  provisioning:\n    match:\n      macaddress: \"{}\"\n    dhcp4: true\n",
            var("mac")
        ),
    };
    Ok(Rendered { body, left_out: Vec::new(), access: false })
}

fn user_data(
    vars: &BTreeMap<&str, String>,
    ssh_keys: &[String],
    access: Option<Access<'_>>,
    files: &[WriteFile],
    template: Option<&str>,
) -> Result<Rendered, CloudInitError> {
    let var = |k: &str| vars.get(k).map_or("", String::as_str);
    // Files to write cannot be slipped into a document slipway does not read.
    let unwritable = || {
        CloudInitError::Invalid(format!(
            "the template is not a #cloud-config slipway adds to, so {} cannot be written by it",
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", ")
        ))
    };
    let text = match template {
        Some(t) if t.starts_with("## template: jinja") && !files.is_empty() => {
            return Err(unwritable());
        }
        Some(t) if t.starts_with("## template: jinja") => {
            return Ok(Rendered {
                body: t.to_string(),
                left_out: vec![
                    "hostname, ssh_authorized_keys and phone_home (a jinja template is served as written)".into(),
                ],
                access: false,
            });
        }
        Some(t) => template::render(t, &template::with_keys(vars, ssh_keys))?,
        None => "#cloud-config\n".to_string(),
    };
    if !text.starts_with("#cloud-config") {
        if !files.is_empty() {
            return Err(unwritable());
        }
        return Ok(Rendered {
            body: text,
            left_out: vec!["hostname, ssh_authorized_keys and phone_home (the template is not #cloud-config)".into()],
            access: false,
        });
    }
    let doc: Value = serde_norway::from_str(&text).map_err(|e| CloudInitError::Invalid(yaml_problem(&e)))?;
    let empty = Mapping::new();
    let theirs = match &doc {
        Value::Null => &empty,
        Value::Mapping(map) => map,
        _ => return Err(CloudInitError::Invalid("the top level must be a mapping".into())),
    };
    // slipway's additions, each a top-level key the template does not set. Values are JSON, which
    // YAML 1.1 (cloud-init's PyYAML) and 1.2 read alike: a hostname `on` stays a string.
    let mut additions: Vec<(&str, serde_json::Value)> = Vec::new();
    let mut left_out = Vec::new();
    let mut name = vec![("hostname", serde_json::json!(var("hostname")))];
    if !var("fqdn").is_empty() {
        name.push(("fqdn", serde_json::json!(var("fqdn"))));
    }
    name.push(("prefer_fqdn_over_hostname", serde_json::json!(false)));
    if theirs.contains_key("hostname") || theirs.contains_key("fqdn") {
        let differs = ["hostname", "fqdn"].iter().any(|k| theirs.get(*k).is_some_and(|t| t.as_str() != Some(var(k))));
        if differs {
            left_out.push("hostname (the template sets hostname or fqdn)".to_string());
        }
    } else {
        additions.extend(name);
    }
    let mut keys: Vec<&String> = Vec::new();
    for key in ssh_keys {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    match theirs.get("ssh_authorized_keys") {
        _ if keys.is_empty() => {}
        None => additions.push(("ssh_authorized_keys", serde_json::json!(keys))),
        Some(list) => {
            let have: Vec<&str> = list.as_sequence().into_iter().flatten().filter_map(Value::as_str).collect();
            if keys.iter().any(|k| !have.contains(&k.as_str())) {
                left_out.push(
                    "ssh_authorized_keys (the template sets its own list; put {{ssh_authorized_keys}} in it for the operator's keys)"
                        .to_string(),
                );
            }
        }
    }
    let phone_home = serde_json::json!({
        "url": var("phone_home_url"),
        "post": ["instance_id", "hostname", "fqdn"],
        "tries": 10,
    });
    match theirs.get("phone_home") {
        None => additions.push(("phone_home", phone_home)),
        Some(t) if serde_norway::to_value(&phone_home).ok().as_ref() != Some(t) => {
            left_out.push("phone_home (the template sets its own)".into());
        }
        Some(_) => {}
    }
    // slipway's own access: its user and the node's host key, both or neither (a host key it
    // cannot log in to, or a login to a host it cannot identify, is of no use).
    let mut with_access = false;
    if let Some(access) = access {
        let theirs_too: Vec<&str> = ["users", "ssh_keys"].into_iter().filter(|k| theirs.contains_key(*k)).collect();
        if theirs_too.is_empty() {
            let user = serde_json::json!({
                "name": USER,
                "gecos": "slipway (diagnostics, kubeconfig)",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": true,
                "shell": "/bin/sh",
                "ssh_authorized_keys": [access.key],
            });
            additions.push(("users", serde_json::json!(["default", user])));
            let host = serde_json::json!({
                "ed25519_private": access.host_key.private,
                "ed25519_public": access.host_key.public,
            });
            additions.push(("ssh_keys", host));
            with_access = true;
        } else {
            left_out.push(format!(
                "slipway's SSH access, user {USER} and the node's host key (the template sets {}): slipway cannot log in to this node",
                theirs_too.join(" and ")
            ));
        }
    }
    // The files join the template's own list (its items kept as written), or make the list.
    let entries: Vec<serde_json::Value> = files.iter().map(WriteFile::entry).collect();
    let mut body = match theirs.get("write_files") {
        _ if entries.is_empty() => text,
        None => {
            additions.push(("write_files", serde_json::Value::Array(entries)));
            text
        }
        Some(list) => into_block_list(&text, "write_files", &entries, list)?,
    };
    // The template stays as written; the additions follow it as top-level keys.
    if !additions.is_empty() {
        if !body.ends_with('\n') {
            body.push('\n');
        }
        body.push_str("# added by slipway\n");
        for (key, value) in &additions {
            body.push_str(&format!("{key}: {value}\n"));
        }
    }
    check_user_data(&body)?;
    // Appended after a template that ends oddly (an open block, a second document), the keys
    // could mean something else: they must read back as written.
    let served: Value = serde_norway::from_str(&body).map_err(|e| CloudInitError::Invalid(yaml_problem(&e)))?;
    for (key, value) in &additions {
        let back = served.get(*key).and_then(|v| serde_json::to_value(v).ok());
        if back.as_ref() != Some(value) {
            return Err(CloudInitError::Invalid(format!(
                "{key} did not read back as slipway wrote it after the template"
            )));
        }
    }
    Ok(Rendered { body, left_out, access: with_access })
}

/// `text` with `items` put first in the block list under its top-level `key` (whose value is
/// `theirs`), each as one flow item indented like the list's own; read back to be sure the
/// list is exactly `items` followed by `theirs`.
fn into_block_list(
    text: &str,
    key: &str,
    items: &[serde_json::Value],
    theirs: &Value,
) -> Result<String, CloudInitError> {
    let refused = || {
        CloudInitError::Invalid(format!(
            "{key}: slipway adds files to the template's list, which must be a block list (`{key}:` on a line of its own, then `- ` items)"
        ))
    };
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let is_key = |line: &str| {
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
    };
    let at = lines.iter().position(|l| is_key(l)).ok_or_else(refused)?;
    let first = (at + 1..lines.len())
        .find(|&i| !lines[i].trim().is_empty() && !lines[i].trim_start().starts_with('#'))
        .ok_or_else(refused)?;
    let indent = lines[first].len() - lines[first].trim_start_matches(' ').len();
    if !lines[first][indent..].starts_with("- ") && lines[first][indent..].trim_end() != "-" {
        return Err(refused());
    }
    let mut out = String::with_capacity(text.len() + items.iter().map(|i| i.to_string().len() + 8).sum::<usize>());
    for line in &lines[..first] {
        out.push_str(line);
    }
    for item in items {
        out.push_str(&format!("{:indent$}- {item}\n", ""));
    }
    for line in &lines[first..] {
        out.push_str(line);
    }
    let served: Value = serde_norway::from_str(&out).map_err(|e| CloudInitError::Invalid(yaml_problem(&e)))?;
    let want: Vec<serde_json::Value> = items
        .iter()
        .cloned()
        .chain(theirs.as_sequence().into_iter().flatten().filter_map(|v| serde_json::to_value(v).ok()))
        .collect();
    let got = served.get(key).and_then(|v| serde_json::to_value(v).ok());
    if got != Some(serde_json::Value::Array(want)) {
        return Err(refused());
    }
    Ok(out)
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
/// `ssh_authorized_keys` a list of strings; `users` a list; `ssh_keys` a mapping of strings;
/// `phone_home` a mapping with a string `url`, `post` `all` or a list of what it may post,
/// `tries` an integer.
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
    if map.get("users").is_some_and(|u| !u.is_sequence()) {
        return invalid("users must be a list");
    }
    if let Some(keys) = map.get("ssh_keys")
        && !keys.as_mapping().is_some_and(|m| m.iter().all(|(k, v)| k.is_string() && v.is_string()))
    {
        return invalid("ssh_keys must map key names to strings");
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
        let r = render(Document::UserData, &vars(), keys, None, &[], template).expect("renders");
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
    fn a_template_keeps_its_hostname_keys_and_phone_home_as_written() {
        let template = "#cloud-config\nhostname: {{hostname}}-x\nssh_authorized_keys:\n  - ssh-rsa AAAA theirs\nphone_home:\n  url: http://elsewhere/\n  post: all\n";
        let r = render(Document::UserData, &vars(), &[KEY.into()], None, &[], Some(template)).expect("renders");
        assert_eq!(
            r.body,
            "#cloud-config\nhostname: w0-x\nssh_authorized_keys:\n  - ssh-rsa AAAA theirs\nphone_home:\n  url: http://elsewhere/\n  post: all\n",
            "nothing added, nothing rewritten"
        );
        assert_eq!(r.left_out.len(), 3, "{:?}", r.left_out);
        assert!(r.left_out[1].contains("{{ssh_authorized_keys}}"), "{:?}", r.left_out);
        // Its keys already include the operator's: nothing is left out for them.
        let template = format!("#cloud-config\nssh_authorized_keys: [{KEY:?}]\n");
        let r = render(Document::UserData, &vars(), &[KEY.into()], None, &[], Some(&template)).expect("renders");
        assert!(r.left_out.is_empty(), "{:?}", r.left_out);
    }

    #[test]
    fn yaml_1_1_values_of_the_template_reach_cloud_init_unchanged_and_additions_are_quoted() {
        let template = "#cloud-config\npackage_upgrade: yes\nwrite_files:\n  - path: /etc/x\n    permissions: 0644\n    content: |\n      on\n";
        let mut v = vars();
        v.insert("hostname", "on".into());
        let r = render(Document::UserData, &v, &[], None, &[], Some(template)).expect("renders");
        assert!(r.body.starts_with(&template.replace("{{hostname}}", "")), "{}", r.body);
        assert!(r.body.contains("\nhostname: \"on\"\n"), "{}", r.body);
        assert!(r.body.contains("\nphone_home: {\"post\""), "{}", r.body);
    }

    #[test]
    fn a_template_that_ends_inside_a_block_still_gets_its_additions_as_keys() {
        let template = "#cloud-config\nruncmd:\n  - |\n    echo one\n    echo two";
        let (parsed, _) = user_data(&[KEY.into()], Some(template));
        assert_eq!(parsed["runcmd"][0], "echo one\necho two\n");
        assert_eq!(parsed["hostname"], "w0");
        assert_eq!(parsed["ssh_authorized_keys"], serde_json::json!([KEY]));
    }

    #[test]
    fn a_jinja_template_is_served_as_written() {
        let template = "## template: jinja\n#cloud-config\nhostname: {{ v1.local_hostname }}\n";
        let r = render(Document::UserData, &vars(), &[KEY.into()], None, &[], Some(template)).expect("renders");
        assert_eq!(r.body, template);
        assert_eq!(r.left_out.len(), 1);
    }

    #[test]
    fn templates_may_place_the_keys_themselves() {
        let template = "#cloud-config\nusers:\n  - name: ops\n    ssh_authorized_keys: {{ssh_authorized_keys}}\n";
        let (parsed, _) = user_data(&[KEY.into()], Some(template));
        assert_eq!(parsed["users"][0]["ssh_authorized_keys"], serde_json::json!([KEY]));
    }

    #[test]
    fn a_template_that_is_not_cloud_config_is_served_as_it_is() {
        let r = render(Document::UserData, &vars(), &[KEY.into()], None, &[], Some("#!/bin/sh\necho {{hostname}}\n"))
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
            let err = render(Document::UserData, &vars(), &[KEY.into()], None, &[], Some(template))
                .expect_err(template)
                .to_string();
            assert!(err.contains(what) && !err.contains("SECRET"), "{template}: {err}");
        }
    }

    #[test]
    fn meta_data_and_network_config_name_the_node() {
        assert_eq!(
            render(Document::MetaData, &vars(), &[], None, &[], None).expect("test input").body,
            "instance-id: slipway-w0\nlocal-hostname: w0\n"
        );
        let net = render(Document::NetworkConfig, &vars(), &[], None, &[], None).expect("test input").body;
        assert!(net.contains("macaddress: \"52:54:00:00:00:20\"") && net.contains("dhcp4: true"), "{net}");
        assert_eq!(Document::parse("user-data"), Some(Document::UserData));
        assert_eq!(Document::parse("../x"), None);
    }

    #[test]
    fn a_node_of_a_cluster_gets_slipways_user_and_its_host_key_both_or_neither() {
        let host = HostKeyFiles {
            private: "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
            public: "ssh-ed25519 BBBB w0",
        };
        let access = Access { key: "ssh-ed25519 CCCC slipway@prod", host_key: host };
        let r = render(Document::UserData, &vars(), &[KEY.into()], Some(access), &[], None).expect("renders");
        assert!(r.access && r.left_out.is_empty(), "{:?}", r.left_out);
        let parsed: serde_json::Value = serde_norway::from_str(&r.body).expect("YAML");
        assert_eq!(parsed["users"][0], "default", "the image's own user stays");
        assert_eq!(parsed["users"][1]["name"], USER);
        assert_eq!(parsed["users"][1]["ssh_authorized_keys"], serde_json::json!(["ssh-ed25519 CCCC slipway@prod"]));
        assert_eq!(parsed["users"][1]["lock_passwd"], true);
        assert_eq!(parsed["ssh_keys"]["ed25519_private"], host.private, "multi-line, read back exactly");
        assert_eq!(parsed["ssh_keys"]["ed25519_public"], host.public);
        assert_eq!(
            parsed["ssh_authorized_keys"],
            serde_json::json!([KEY]),
            "the operator's keys, for the default user"
        );
        // A template with its own users (or host keys) gets neither, and is told.
        for theirs in ["users: [default]", "ssh_keys: {rsa_private: x, rsa_public: y}"] {
            let template = format!("#cloud-config\n{theirs}\n");
            let r = render(Document::UserData, &vars(), &[], Some(access), &[], Some(&template)).expect("renders");
            assert!(!r.access);
            let parsed: serde_json::Value = serde_norway::from_str(&r.body).expect("YAML");
            assert!(parsed.get("users").is_none() || parsed["users"] == serde_json::json!(["default"]), "{}", r.body);
            assert!(parsed.get("ssh_keys").is_none() || parsed["ssh_keys"]["rsa_private"] == "x", "{}", r.body);
            assert!(r.left_out.iter().any(|l| l.contains("slipway cannot log in")), "{:?}", r.left_out);
        }
    }

    #[test]
    fn files_join_the_templates_own_write_files_or_make_the_list() {
        let files = [WriteFile {
            path: "/var/lib/rancher/k3s/server/manifests/slipway-web.yaml".into(),
            content:
                "{\n  \"kind\": \"Namespace\",\n  \"metadata\": {\"name\": \"on\"}\n}\n---\n{\"kind\": \"ConfigMap\"}\n"
                    .into(),
        }];
        let paths = |body: &str| -> Vec<String> {
            let doc: serde_json::Value = serde_norway::from_str(body).expect("YAML");
            doc["write_files"]
                .as_array()
                .expect("list")
                .iter()
                .map(|f| f["path"].as_str().unwrap_or("").to_owned())
                .collect()
        };
        // slipway's k3s user-data: the files come first, its own entries stay as written.
        let mut k3s = vars();
        k3s.insert("role", "control-plane".into());
        k3s.insert("server", "http://10.1.107.1:8080".into());
        let r = render(Document::UserData, &k3s, &[], None, &files, Some(K3S_USER_DATA)).expect("renders");
        let listed = paths(&r.body);
        assert_eq!(listed[0], files[0].path);
        assert_eq!(&listed[1..], paths(K3S_USER_DATA).as_slice());
        assert!(r.body.contains("    content: |\n      #!/bin/sh\n"), "the template's block scalars untouched");
        let doc: serde_json::Value = serde_norway::from_str(&r.body).expect("YAML");
        assert_eq!(doc["write_files"][0]["content"], files[0].content.as_str(), "read back byte for byte");
        assert_eq!(doc["write_files"][0]["permissions"], "0600");
        // Items at the key's own indentation, a comment on the key: the same.
        let flush = "#cloud-config\nwrite_files: # ours\n- path: /etc/motd\n  content: hi\nruncmd: [true]\n";
        let r = render(Document::UserData, &vars(), &[], None, &files, Some(flush)).expect("renders");
        assert_eq!(paths(&r.body), [files[0].path.as_str(), "/etc/motd"]);
        // No list of its own: slipway's addition makes one.
        let r = render(Document::UserData, &vars(), &[], None, &files, Some("#cloud-config\nruncmd: [true]\n"))
            .expect("renders");
        assert_eq!(paths(&r.body), [files[0].path.as_str()]);
        // A list slipway cannot add to, or a template it does not add to: refused, named.
        for template in [
            "#cloud-config\nwrite_files: [{path: /etc/motd, content: hi}]\n",
            "#cloud-config\nwrite_files: []\n",
            "#!/bin/sh\necho hi\n",
            "## template: jinja\n#cloud-config\n{}\n",
        ] {
            let e = render(Document::UserData, &vars(), &[], None, &files, Some(template)).expect_err(template);
            let e = e.to_string();
            assert!(e.contains("write_files") || e.contains("slipway-web.yaml cannot be written"), "{template}: {e}");
        }
    }
}
