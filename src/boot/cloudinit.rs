//! cloud-init NoCloud documents for one node (`/nocloud/{node}/meta-data`, `user-data`,
//! `vendor-data`, `network-config`). The built-in user-data sets the hostname, the operator's
//! SSH keys and a `phone_home` to slipway; an operator template (`[boot] templates`,
//! `cloud-init/user-data` or `cloud-init/<role>.user-data`) replaces it, rendered with the same
//! variables. Pure: the caller reads template files.

use std::collections::BTreeMap;

use serde::Serialize;

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

#[derive(Serialize)]
struct UserData<'a> {
    hostname: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    fqdn: &'a str,
    prefer_fqdn_over_hostname: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    ssh_authorized_keys: &'a [String],
    phone_home: PhoneHome<'a>,
}

#[derive(Serialize)]
struct PhoneHome<'a> {
    url: &'a str,
    post: [&'static str; 3],
    tries: u32,
}

/// Renders `doc` for the node whose variables are `vars`. `template` is the operator's
/// user-data template, when one exists for this node.
pub fn render(
    doc: Document,
    vars: &BTreeMap<&str, String>,
    ssh_keys: &[String],
    template: Option<&str>,
) -> Result<String, TemplateError> {
    let var = |k: &str| vars.get(k).map_or("", String::as_str);
    Ok(match doc {
        Document::MetaData => format!("instance-id: slipway-{}\nlocal-hostname: {}\n", var("node"), var("hostname")),
        Document::UserData => match template {
            Some(t) => template::render(t, vars)?,
            None => {
                let body = UserData {
                    hostname: var("hostname"),
                    fqdn: var("fqdn"),
                    prefer_fqdn_over_hostname: false,
                    ssh_authorized_keys: ssh_keys,
                    phone_home: PhoneHome {
                        url: var("phone_home_url"),
                        post: ["instance_id", "hostname", "fqdn"],
                        tries: 10,
                    },
                };
                format!("#cloud-config\n{}", serde_norway::to_string(&body).unwrap_or_default())
            }
        },
        Document::VendorData => "#cloud-config\n{}\n".to_string(),
        Document::NetworkConfig => format!(
            "version: 2\nethernets:\n  provisioning:\n    match:\n      macaddress: \"{}\"\n    dhcp4: true\n",
            var("mac")
        ),
    })
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

    #[test]
    fn built_in_user_data_has_hostname_keys_and_phone_home() {
        let keys = vec!["ssh-ed25519 AAAAC3Nza test@lab".to_string()];
        let text = render(Document::UserData, &vars(), &keys, None).expect("test input");
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        let parsed: serde_json::Value =
            serde_norway::from_str(text.trim_start_matches("#cloud-config\n")).expect("test input");
        assert_eq!(parsed["hostname"], "w0");
        assert_eq!(parsed["fqdn"], "w0.prod.lab.example");
        assert_eq!(parsed["ssh_authorized_keys"][0], keys[0]);
        assert_eq!(parsed["phone_home"]["url"], "http://10.1.107.1:8080/phone-home");
    }

    #[test]
    fn an_operator_template_replaces_the_built_in_user_data() {
        let text = render(Document::UserData, &vars(), &[], Some("#cloud-config\nhostname: {{hostname}}-x\n"))
            .expect("test input");
        assert_eq!(text, "#cloud-config\nhostname: w0-x\n");
    }

    #[test]
    fn meta_data_and_network_config_name_the_node() {
        assert_eq!(
            render(Document::MetaData, &vars(), &[], None).expect("test input"),
            "instance-id: slipway-w0\nlocal-hostname: w0\n"
        );
        let net = render(Document::NetworkConfig, &vars(), &[], None).expect("test input");
        assert!(net.contains("macaddress: \"52:54:00:00:00:20\"") && net.contains("dhcp4: true"), "{net}");
        assert_eq!(Document::parse("user-data"), Some(Document::UserData));
        assert_eq!(Document::parse("../x"), None);
    }
}
