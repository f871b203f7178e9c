//! `{{name}}` substitution for kernel arguments and config templates (neutral: the boot
//! service renders with it, inventory validation checks profiles with it). Only names in `VARIABLES`
//! exist; anything else is an error naming it, so a typo never reaches a booting machine as a
//! literal `{{hostnme}}`.

use std::collections::BTreeMap;

/// Every variable a profile argument or template may use, and what it holds.
pub const VARIABLES: &[(&str, &str)] = &[
    ("server", "base URL of the HTTP boot service, e.g. http://10.1.107.1:8080"),
    ("node", "the node's name"),
    ("hostname", "the node's hostname"),
    ("fqdn", "the node's fully qualified name"),
    ("ip", "the node's reserved IPv4 address"),
    ("mac", "the node's MAC address"),
    ("cluster", "the node's cluster (empty when none)"),
    ("role", "the node's role (empty when none)"),
    ("config_url", "where the node fetches its Ignition or the NoCloud seed directory"),
    ("phone_home_url", "where the node reports that it is up"),
];

/// Variables config templates (Ignition, cloud-init) have beside `VARIABLES`; kernel arguments
/// do not have them.
pub const CONFIG_VARIABLES: &[(&str, &str)] =
    &[("ssh_authorized_keys", "the `[boot] ssh_authorized_keys` as a JSON array (valid JSON and YAML)")];

/// `vars` with the config-template variables added.
pub fn with_keys<'a>(vars: &BTreeMap<&'a str, String>, ssh_keys: &[String]) -> BTreeMap<&'a str, String> {
    let mut all = vars.clone();
    let mut unique: Vec<&String> = Vec::new();
    for key in ssh_keys {
        if !unique.contains(&key) {
            unique.push(key);
        }
    }
    all.insert("ssh_authorized_keys", serde_json::to_string(&unique).unwrap_or_else(|_| "[]".into()));
    all
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown variable {{{{{0}}}}} (known: {1})")]
    Unknown(String, String),
    #[error("unclosed {{{{ at byte {0}")]
    Unclosed(usize),
}

/// The variable names used in `text`, checked against `VARIABLES`.
pub fn check(text: &str) -> Result<(), TemplateError> {
    let known: BTreeMap<&str, String> = VARIABLES.iter().map(|(k, _)| (*k, String::new())).collect();
    render(text, &known).map(|_| ())
}

/// The variables only a known node has values for: a machine slipway does not know has just its
/// address, its MAC and the server.
pub const NODE_VARIABLES: &[&str] = &["node", "hostname", "fqdn", "cluster", "role", "config_url"];

/// The first variable of `names` that `text` uses, if any.
pub fn first_used<'a>(text: &str, names: &[&'a str]) -> Option<&'a str> {
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        if let Some(name) = names.iter().find(|n| **n == after[..end].trim()) {
            return Some(name);
        }
        rest = &after[end + 2..];
    }
    None
}

/// `text` with every `{{name}}` replaced by `vars[name]`; whitespace inside the braces is allowed.
pub fn render<V: AsRef<str>>(text: &str, vars: &BTreeMap<&str, V>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(TemplateError::Unclosed(text.len() - rest.len() + start));
        };
        let name = after[..end].trim();
        match vars.get(name) {
            Some(value) => out.push_str(value.as_ref()),
            None => {
                let known: Vec<&str> = vars.keys().copied().collect();
                // Only a name is quoted back: whatever else sits between braces may be data.
                let plain = name.len() <= 40 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
                let shown = if plain { name.to_string() } else { "…".to_string() };
                return Err(TemplateError::Unknown(shown, known.join(", ")));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_replaced_and_the_rest_is_kept() {
        let vars = BTreeMap::from([("hostname", "m0"), ("ip", "10.0.0.5")]);
        assert_eq!(render("a {{hostname}} b {{ ip }}c", &vars).expect("test input"), "a m0 b 10.0.0.5c");
        assert_eq!(render("no vars { } }}", &vars).expect("test input"), "no vars { } }}");
    }

    #[test]
    fn an_unknown_variable_is_named() {
        let err = check("x {{hostnme}}").expect_err("test input");
        assert!(err.to_string().contains("{{hostnme}}"), "{err}");
        assert!(err.to_string().contains("hostname"), "{err}");
    }

    #[test]
    fn the_variables_a_text_uses_are_found() {
        assert_eq!(first_used("ds=nocloud;s={{ config_url }}", NODE_VARIABLES), Some("config_url"));
        assert_eq!(first_used("ip=dhcp url={{server}}/x {{mac}}", NODE_VARIABLES), None);
        assert_eq!(first_used("{{server}} {{hostname}}", NODE_VARIABLES), Some("hostname"));
    }

    #[test]
    fn what_is_not_a_name_is_not_quoted_back() {
        let err = check("x {{ secret value with spaces }}").expect_err("not a variable");
        assert!(err.to_string().contains("{{…}}") && !err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn an_unclosed_brace_is_an_error() {
        assert_eq!(check("ab {{ip"), Err(TemplateError::Unclosed(3)));
        assert!(check("{{server}}/x {{config_url}}").is_ok());
    }
}
