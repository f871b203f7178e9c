//! Ignition (spec 3.x) for CoreOS nodes: slipway's additions — the fragments in the top-level
//! `ignition/` folder (`fragments`): the hostname, SSH keys for user `core` (the operator's and
//! the cluster's own), the node's host key, and a unit that phones home once the system is up —
//! merged into a base config (an uploaded `openshift-install` config, an operator template
//! rendered with the node's variables, or nothing) by the keys Ignition itself merges on: users
//! by name (SSH keys join the user's own), files by path, units by name. A fragment goes in
//! whole or not at all: where the base already defines one of its paths or units, the base's
//! entries stay and the fragment is left out and reported (a host key without its `.pub`, or
//! the reverse, would be worse than none). Every document is checked (`check`) before it may
//! be served. Pure.

pub mod certs;
mod check;
pub mod fragments;
#[cfg(any(test, fuzzing))]
pub mod fuzz;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::template::{self, TemplateError};

/// The spec version written when the base config names none: 3.3.0 is read by every Ignition
/// since 2.14 (Debian 12, FCOS, OKD 4.x); slipway's additions use only fields from spec 3.0.
pub const SPEC_VERSION: &str = "3.3.0";
/// The unit slipway adds (`ignition/phone-home.ign`); it reports once per boot.
pub const PHONE_HOME_UNIT: &str = "slipway-phone-home.service";

#[derive(Debug, thiserror::Error)]
pub enum IgnitionError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("not an Ignition config: {0}")]
    Json(String),
    /// The document would not pass Ignition's own validation; each problem names where.
    #[error("the config would be invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// What slipway's additions are merged into.
#[derive(Clone, Copy, Debug)]
pub enum Base<'a> {
    /// Nothing: slipway's additions alone.
    Empty,
    /// An operator template, rendered with the node's variables first.
    Template(&'a str),
    /// A config used as it is (uploaded from `openshift-install`).
    Verbatim(&'a str),
}

/// A document that may be served, the additions the base's own entries took the place of
/// (for example `hostname.ign: file /etc/hostname (the base defines /etc/hostname)`), and the
/// fragments that are in it (none when the base replaces itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub body: String,
    pub left_out: Vec<String>,
    pub merged: Vec<fragments::Fragment>,
}

/// What slipway adds for one node beside its template variables.
#[derive(Clone, Copy, Debug, Default)]
pub struct Additions<'a> {
    /// The operator's keys for user `core` (`[boot] ssh_authorized_keys`; a template's
    /// `{{ssh_authorized_keys}}`).
    pub ssh_keys: &'a [String],
    /// The node's cluster's own key, for user `core` too (not in the templates' variable: a
    /// template may give the operator's keys to other users).
    pub cluster_key: Option<&'a str>,
    /// The node's own host key, when slipway made one (a node of a cluster).
    pub host_key: Option<HostKeyFiles<'a>>,
}

/// A host key as the node's files hold it.
#[derive(Clone, Copy)]
pub struct HostKeyFiles<'a> {
    /// The OpenSSH private key file.
    pub private: &'a str,
    /// Its public line.
    pub public: &'a str,
}

impl std::fmt::Debug for HostKeyFiles<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKeyFiles").field("public", &self.public).finish_non_exhaustive()
    }
}

/// The node's Ignition document: `base` with slipway's additions merged in, checked.
pub fn render(
    base: Base<'_>,
    vars: &BTreeMap<&str, String>,
    additions: &Additions<'_>,
) -> Result<Rendered, IgnitionError> {
    let parse = |text: &str| serde_json::from_str::<Value>(text).map_err(|e| IgnitionError::Json(without_values(&e)));
    let mut config: Value = match base {
        Base::Empty => json!({}),
        Base::Template(text) => parse(&template::render(text, &template::with_keys(vars, additions.ssh_keys))?)?,
        Base::Verbatim(text) => parse(text)?,
    };
    if !config.is_object() {
        return Err(IgnitionError::Json("the top level must be an object".into()));
    }
    if !config["ignition"].is_object() && !config["ignition"].is_null() {
        return Err(IgnitionError::Json("`ignition` must be an object".into()));
    }
    if !config["ignition"]["version"].as_str().is_some_and(|v| v.starts_with("3.")) {
        config["ignition"]["version"] = json!(SPEC_VERSION);
    }
    let (mut left_out, mut merged) = (Vec::new(), Vec::new());
    let fragment_vars = fragments::variables(vars, additions);
    for fragment in fragments::wanted(additions) {
        match merge(&mut config, &fragments::render(fragment, &fragment_vars)?) {
            Ok(()) => merged.push(fragment),
            Err(kept) => left_out.extend(kept.into_iter().map(|k| format!("{}: {k}", fragment.file))),
        }
    }
    if config["ignition"]["config"]["replace"]["source"].is_string() {
        left_out.push(
            "every addition (the config names ignition.config.replace: Ignition boots the replacement alone)".into(),
        );
        merged.clear();
    }
    let body = serde_json::to_string(&config).map_err(|e| IgnitionError::Json(e.to_string()))?;
    validate(body.as_bytes(), &config)?;
    Ok(Rendered { body, left_out, merged })
}

/// Merges a fragment's users, files and units into `config`, or nothing of it when the base
/// has one of its paths or units (then: which, as `Err`).
fn merge(config: &mut Value, fragment: &Value) -> Result<(), Vec<String>> {
    let entries = |section: &str, list: &str| fragment[section][list].as_array().cloned().unwrap_or_default();
    let (files, units) = (entries("storage", "files"), entries("systemd", "units"));
    let mut kept = Vec::new();
    for file in &files {
        let path = file["path"].as_str().unwrap_or_default();
        if has_node(config, path) {
            kept.push(format!("file {path} (the base defines {path})"));
        }
    }
    for unit in &units {
        let name = unit["name"].as_str().unwrap_or_default();
        let path = format!("/etc/systemd/system/{name}");
        if config["systemd"]["units"].as_array().is_some_and(|units| units.iter().any(|u| u["name"] == name)) {
            kept.push(format!("unit {name} (the base defines a unit of that name)"));
        } else if has_node(config, &path) {
            kept.push(format!("unit {name} (the base writes {path})"));
        }
    }
    if !kept.is_empty() {
        return Err(kept);
    }
    for user in entries("passwd", "users") {
        add_user(config, &user);
    }
    for (path, entries) in [(["storage", "files"], files), (["systemd", "units"], units)] {
        // Something other than a list in the way: the check reports the base's shape.
        if let Some(list) = list(config, &path) {
            list.extend(entries);
        }
    }
    Ok(())
}

/// Checks an uploaded config (`openshift-install`'s bootstrap/master/worker.ign) the way
/// Ignition will: against the spec its `ignition.version` names, then Ignition's own rules.
/// Returns that version. The error says what and where, without quoting the config's values
/// (they may be secrets).
pub fn check_upload(body: &[u8]) -> Result<String, UploadError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| UploadError(without_values(&e)))?;
    validate(body, &value).map_err(|e| match e {
        IgnitionError::Invalid(problems) => UploadError(problems.join("; ")),
        e => UploadError(e.to_string()),
    })?;
    Ok(value["ignition"]["version"].as_str().unwrap_or_default().to_string())
}

/// An upload Ignition would refuse: what and where, never the config's values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a valid Ignition config: {0}")]
pub struct UploadError(String);

/// The spec's shape for the version `text` names (typed parse), then Ignition's other rules.
fn validate(text: &[u8], value: &Value) -> Result<(), IgnitionError> {
    let shape = match ignition_config::Config::parse_slice(text) {
        Ok(_) => None,
        Err(ignition_config::Error::Serialization(e)) => Some(without_values(&e)),
        Err(e) => Some(e.to_string()),
    };
    let mut problems: Vec<String> = shape.into_iter().collect();
    if problems.is_empty() {
        problems = check::problems(value);
    }
    if problems.is_empty() { Ok(()) } else { Err(IgnitionError::Invalid(problems)) }
}

/// Adds a user, or joins its SSH keys to the base's user of that name (each key once, the
/// base's first).
fn add_user(config: &mut Value, user: &Value) {
    let Some(users) = list(config, &["passwd", "users"]) else { return };
    let Some(have) = users.iter_mut().find(|u| u["name"] == user["name"]) else {
        users.push(user.clone());
        return;
    };
    if have["sshAuthorizedKeys"].is_null() {
        have["sshAuthorizedKeys"] = json!([]);
    }
    if let Some(have) = have["sshAuthorizedKeys"].as_array_mut() {
        for key in user["sshAuthorizedKeys"].as_array().into_iter().flatten() {
            if !have.contains(key) {
                have.push(key.clone());
            }
        }
    }
}

/// Whether the config has a file, directory or link at `path`.
fn has_node(config: &Value, path: &str) -> bool {
    ["files", "directories", "links"]
        .iter()
        .any(|l| config["storage"][*l].as_array().is_some_and(|nodes| nodes.iter().any(|n| n["path"] == path)))
}

/// A JSON error with its quoted values replaced (`invalid type: string "…", expected ...`),
/// and where it is.
fn without_values(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message);
    let mut out = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in message.chars() {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => quoted = false,
            (true, false, _) => {}
            (false, _, '"') => {
                out.push_str("\"…\"");
                quoted = true;
            }
            (false, _, c) => out.push(c),
        }
    }
    format!("{out} at line {} column {}", e.line(), e.column())
}

/// The array at `path`, made (with the objects above it) where absent. `None` when something
/// else is in the way; the check then reports the base's shape.
fn list<'a>(config: &'a mut Value, path: &[&str]) -> Option<&'a mut Vec<Value>> {
    let mut at = config;
    for (i, key) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        if at.get(*key).is_none_or(Value::is_null) {
            at[*key] = if last { json!([]) } else { json!({}) };
        }
        at = at.get_mut(*key)?;
        if !last && !at.is_object() {
            return None;
        }
    }
    at.as_array_mut()
}

#[cfg(test)]
mod tests;
