//! A cluster's health checks: each target parsed and checked (pure), names in the cluster's
//! zone resolved as slipway's DNS answers them (pure), and the probe itself — a TCP connection
//! or an HTTP(S) GET — bounded in time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::definition::HealthCheck;
use crate::inventory::{Cluster, Inventory, Timestamp};

/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most checks one cluster may have.
pub const MAX_CHECKS: usize = 32;

/// What a check probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Tcp { host: String, port: u16 },
    Http { url: reqwest::Url },
}

impl Target {
    /// The check's target with `{zone}` replaced; why it is not one slipway can probe.
    pub fn parse(check: &HealthCheck, zone: &str) -> Result<Target, String> {
        let text = check.target.replace("{zone}", zone);
        if let Some(rest) = text.strip_prefix("tcp://") {
            let (host, port) = rest.rsplit_once(':').ok_or("a tcp target is tcp://HOST:PORT")?;
            let port: u16 = port.parse().map_err(|_| format!("'{port}' is not a port"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || port == 0 || host.contains('/') {
                return Err("a tcp target is tcp://HOST:PORT".into());
            }
            return Ok(Target::Tcp { host: host.to_owned(), port });
        }
        let url = reqwest::Url::parse(&text).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err("use tcp://HOST:PORT, http://... or https://...".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("no credentials in the URL: they would show in the cluster's status".into());
        }
        Ok(Target::Http { url })
    }

    pub fn host(&self) -> &str {
        match self {
            Target::Tcp { host, .. } => host,
            Target::Http { url } => url.host_str().unwrap_or_default(),
        }
    }

    fn port(&self) -> u16 {
        match self {
            Target::Tcp { port, .. } => *port,
            Target::Http { url } => url.port_or_known_default().unwrap_or(80),
        }
    }
}

/// A name looked up as slipway's DNS answers the cluster's zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not in the zone: the system resolves it.
    Outside,
    At(Ipv4Addr),
    /// In the zone, but slipway's DNS has no such name.
    Unknown,
}

/// What slipway's DNS answers for `name` in `cluster`'s zone: `api`, `api-int`, anything under
/// `apps`, a node's name.
pub fn in_zone(name: &str, cluster: &Cluster, inv: &Inventory) -> Lookup {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let zone = cluster.zone().to_ascii_lowercase();
    if name == zone {
        return Lookup::Unknown;
    }
    let Some(label) = name.strip_suffix(&zone).and_then(|l| l.strip_suffix('.')) else { return Lookup::Outside };
    let found = match label {
        "api" => Some(cluster.api_address),
        "api-int" => Some(cluster.api_int_address),
        _ if label.ends_with(".apps") => Some(cluster.ingress_address),
        _ => inv
            .nodes
            .values()
            .find(|n| inv.fqdn(n).is_some_and(|f| f.trim_end_matches('.').eq_ignore_ascii_case(&name)))
            .map(|n| n.ipv4),
    };
    found.map_or(Lookup::Unknown, Lookup::At)
}

/// A URL as messages show it: no query or fragment (a token in them stays out of the status,
/// the events and the log).
fn shown(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// One check's latest result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    /// What answered, or why it failed.
    pub message: String,
    /// When it last changed between passing and failing.
    pub since: Timestamp,
}

/// Probes `target`; `lookup` is what slipway's DNS answers for its host. Returns what
/// answered, or why it failed.
pub async fn probe(target: &Target, lookup: Lookup, check: &HealthCheck) -> Result<String, String> {
    let host = target.host().to_owned();
    let port = target.port();
    let address = match lookup {
        Lookup::At(ip) => Some(ip),
        Lookup::Unknown => return Err(format!("slipway's DNS has no name {host}")),
        Lookup::Outside => None,
    };
    let pinned = address.map(IpAddr::V4).or_else(|| host.parse().ok()).map(|ip| SocketAddr::new(ip, port));
    let at = pinned.map(|a| format!(" ({a})")).unwrap_or_default();
    let work = async {
        match target {
            Target::Tcp { .. } => {
                let stream = match pinned {
                    Some(addr) => tokio::net::TcpStream::connect(addr).await,
                    None => tokio::net::TcpStream::connect((host.as_str(), port)).await,
                };
                let stream = stream.map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
                let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                Ok(format!("connected to {peer}"))
            }
            Target::Http { url } => {
                let mut client = reqwest::Client::builder()
                    .timeout(PROBE_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .danger_accept_invalid_certs(check.insecure);
                if let Some(addr) = pinned {
                    client = client.resolve(&host, addr);
                }
                let client = client.build().map_err(|e| format!("cannot make an HTTP client: {e}"))?;
                let url_shown = shown(url);
                let response = client
                    .get(url.clone())
                    .send()
                    .await
                    .map_err(|e| format!("{url_shown}{at}: {}", crate::causes::chain(&e.without_url())))?;
                let want = check.status.unwrap_or(200);
                let got = response.status().as_u16();
                if got == want {
                    Ok(format!("{url_shown}{at}: {got}"))
                } else {
                    Err(format!("{url_shown}{at}: status {got}, expected {want}"))
                }
            }
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer from {host}:{port} within {}", humantime::format_duration(PROBE_TIMEOUT))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(target: &str) -> HealthCheck {
        HealthCheck { name: "c".parse().expect("name"), target: target.into(), status: None, insecure: false }
    }

    #[test]
    fn targets_parse_with_the_zone_filled_in() {
        let zone = "prod.lab.example";
        assert_eq!(
            Target::parse(&check("tcp://api.{zone}:6443"), zone),
            Ok(Target::Tcp { host: "api.prod.lab.example".into(), port: 6443 })
        );
        let Ok(Target::Http { url }) = Target::parse(&check("https://console.apps.{zone}/healthz"), zone) else {
            panic!("an https target");
        };
        assert_eq!(url.as_str(), "https://console.apps.prod.lab.example/healthz");
        for (bad, why) in [
            ("tcp://api.{zone}", "tcp://HOST:PORT"),
            ("tcp://:6443", "tcp://HOST:PORT"),
            ("tcp://api:http", "'http' is not a port"),
            ("ftp://api.{zone}/", "use tcp://"),
            ("api.{zone}:6443", "use tcp://"),
            ("https://admin:secret@api.{zone}/", "no credentials"),
        ] {
            let err = Target::parse(&check(bad), zone).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn names_in_the_zone_resolve_as_slipways_dns_answers_them() {
        let inv = crate::inventory::lab::lab();
        let cluster = inv.clusters.values().next().expect("a cluster");
        let zone = cluster.zone();
        assert_eq!(in_zone(&format!("api.{zone}"), cluster, &inv), Lookup::At(cluster.api_address));
        assert_eq!(in_zone(&format!("API-INT.{zone}."), cluster, &inv), Lookup::At(cluster.api_int_address));
        assert_eq!(in_zone(&format!("console.apps.{zone}"), cluster, &inv), Lookup::At(cluster.ingress_address));
        let node = inv.nodes.values().find(|n| n.cluster.as_ref() == Some(&cluster.name)).expect("a node");
        let fqdn = inv.fqdn(node).expect("fqdn");
        assert_eq!(in_zone(&fqdn, cluster, &inv), Lookup::At(node.ipv4));
        assert_eq!(in_zone("example.org", cluster, &inv), Lookup::Outside);
        assert_eq!(in_zone(&format!("nosuch.{zone}"), cluster, &inv), Lookup::Unknown);
        assert_eq!(in_zone(&zone, cluster, &inv), Lookup::Unknown);
    }

    #[tokio::test]
    async fn a_probe_reports_what_answered_and_why_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let target = Target::parse(&check(&format!("tcp://localhost.test:{port}")), "z").expect("target");
        let at = Lookup::At(Ipv4Addr::LOCALHOST);
        let answered = probe(&target, at, &check("")).await.expect("connects");
        assert_eq!(answered, format!("connected to 127.0.0.1:{port}"));
        drop(listener);
        let refused = probe(&target, at, &check("")).await.expect_err("closed");
        assert!(refused.starts_with(&format!("cannot connect to localhost.test:{port}")), "{refused}");
        let unknown = probe(&target, Lookup::Unknown, &check("")).await.expect_err("no such name");
        assert_eq!(unknown, "slipway's DNS has no name localhost.test");
        // A token in the query stays out of the message.
        let url =
            Target::parse(&check(&format!("http://localhost.test:{port}/healthz?token=s3cret")), "z").expect("url");
        let failed = probe(&url, at, &check("")).await.expect_err("closed");
        assert!(failed.starts_with(&format!("http://localhost.test:{port}/healthz (127.0.0.1:{port}): ")), "{failed}");
        assert!(!failed.contains("s3cret"), "{failed}");
    }
}
