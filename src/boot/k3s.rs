//! A k3s node's `/etc/rancher/k3s/config.yaml`, served at `/k3s/config` to that node only, when
//! it is the node's turn to start k3s (the cluster lifecycle says when: `Admission`). The first
//! server initialises the cluster with its password; every other node joins through the fixed
//! registration address with the secure token. Rendering is pure; the document is JSON, which
//! k3s's YAML reader takes as it is.

use serde_json::json;
use zeroize::Zeroizing;

use super::cloudinit::WriteFile;
use crate::inventory::Node;

/// The answer to a node asking for its k3s config.
#[derive(Clone, PartialEq, Eq)]
pub enum Answer {
    /// The config (holds the token: never logged).
    Config(Zeroizing<String>),
    /// Not its turn yet, and why.
    Wait(String),
    /// It joined already: nothing is handed out again (reinstall it to join anew).
    Joined,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Config(_) => f.write_str("Config(…)"),
            Answer::Wait(why) => f.debug_tuple("Wait").field(why).finish(),
            Answer::Joined => f.write_str("Joined"),
        }
    }
}

/// Who says whether it is a node's turn (the cluster lifecycle, which implements it).
#[async_trait::async_trait]
pub trait Admission: Send + Sync + std::fmt::Debug {
    /// `node`'s k3s config now, or why it waits; `None` for a node of no k3s cluster.
    async fn config(&self, node: &Node) -> Result<Option<Answer>, String>;

    /// The files `node`'s cloud-init writes as it installs: for the first server, its cluster's
    /// `at_install` add-on sets in k3s's auto-deploy directory; none for any other node.
    async fn install_files(&self, node: &Node) -> Result<Vec<WriteFile>, String>;
}

/// How a node starts k3s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start<'a> {
    /// The first server: `cluster-init` with the cluster's password.
    Init { password: &'a str },
    /// A server joining at `server` (`https://<fixed address>:6443`) with the secure token.
    Server { server: &'a str, token: &'a str },
    /// An agent joining at `server`.
    Agent { server: &'a str, token: &'a str },
}

/// What goes into a node's config besides how it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSettings {
    pub node_name: String,
    pub node_ip: String,
    /// The names and addresses the API is reached at (servers' certificates carry them).
    pub tls_san: Vec<String>,
    /// `key=value`.
    pub labels: Vec<String>,
    /// `key=value:Effect`.
    pub taints: Vec<String>,
}

/// The config document.
pub fn render(start: &Start<'_>, node: &NodeSettings) -> Zeroizing<String> {
    let mut config = serde_json::Map::new();
    config.insert("node-name".into(), json!(node.node_name));
    config.insert("node-ip".into(), json!(node.node_ip));
    match start {
        Start::Init { password } => {
            config.insert("cluster-init".into(), json!(true));
            config.insert("token".into(), json!(password));
        }
        Start::Server { server, token } | Start::Agent { server, token } => {
            config.insert("server".into(), json!(server));
            config.insert("token".into(), json!(token));
        }
    }
    if !matches!(start, Start::Agent { .. }) {
        config.insert("tls-san".into(), json!(node.tls_san));
        // The kubeconfig slipway reads over SSH (with sudo) stays root's alone.
        config.insert("write-kubeconfig-mode".into(), json!("0600"));
    }
    if !node.labels.is_empty() {
        config.insert("node-label".into(), json!(node.labels));
    }
    if !node.taints.is_empty() {
        config.insert("node-taint".into(), json!(node.taints));
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(config)).unwrap_or_default();
    Zeroizing::new(format!("{text}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> NodeSettings {
        NodeSettings {
            node_name: "s1".into(),
            node_ip: "10.1.107.21".into(),
            tls_san: vec!["api.edge.lab.example".into(), "10.1.107.1".into()],
            labels: vec!["tier=edge".into()],
            taints: vec!["dedicated=edge:NoSchedule".into()],
        }
    }

    #[test]
    fn each_start_says_what_k3s_needs_and_nothing_else() {
        let read = |text: &str| -> serde_norway::Value { serde_norway::from_str(text).expect("YAML") };
        let init = read(&render(&Start::Init { password: "pw" }, &settings()));
        assert_eq!(init["cluster-init"], serde_norway::Value::Bool(true));
        assert_eq!(init["token"].as_str(), Some("pw"));
        assert!(init.get("server").is_none());
        assert_eq!(init["tls-san"][0].as_str(), Some("api.edge.lab.example"));
        assert_eq!(init["node-name"].as_str(), Some("s1"));
        assert_eq!(init["node-taint"][0].as_str(), Some("dedicated=edge:NoSchedule"));
        let server =
            read(&render(&Start::Server { server: "https://10.1.107.1:6443", token: "K10ab::server:pw" }, &settings()));
        assert!(server.get("cluster-init").is_none());
        assert_eq!(server["server"].as_str(), Some("https://10.1.107.1:6443"));
        assert_eq!(server["token"].as_str(), Some("K10ab::server:pw"));
        let agent =
            read(&render(&Start::Agent { server: "https://10.1.107.1:6443", token: "K10ab::server:pw" }, &settings()));
        assert!(agent.get("tls-san").is_none() && agent.get("write-kubeconfig-mode").is_none(), "server-only flags");
        assert_eq!(agent["node-label"][0].as_str(), Some("tier=edge"));
        assert_eq!(format!("{:?}", Answer::Config(Zeroizing::new("token: pw".into()))), "Config(…)");
    }
}
