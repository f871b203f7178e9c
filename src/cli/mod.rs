//! The command-line client: `get`, `apply`, `delete` against a running daemon's admin API.
//! Tables for people, `-o json` for scripts.

pub mod boot;
pub mod client;
pub mod cluster;
mod dns;
pub mod images;
pub mod out;
pub mod reload;
pub mod status;
pub mod table;
mod vms;

use std::path::Path;

use reqwest::Method;
use serde_json::Value;

use crate::api::leases::LeaseView;
use crate::api::objects::Manifest;
use crate::inventory::{Cluster, Network, Node, Outcome, Profile};
use crate::lb::server::Status as LbStatus;
use crate::store::events::Event;
use client::{Client, ClientError};
use table::{opt, render};

/// What `get` can list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Resource {
    Nodes,
    Clusters,
    Profiles,
    Networks,
    Leases,
    Events,
    /// The records slipway's DNS server answers from (`get dns [ZONE]`).
    Dns,
    /// Load-balancer frontends and backends with health and traffic.
    Lb,
    /// A node's boot steps and where its latest boot stopped (`get timeline NODE`).
    Timeline,
    /// VMs slipway owns on the configured hypervisors, with their state.
    Vms,
}

/// What `delete` can remove (`lease` releases one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Deletable {
    Node,
    Cluster,
    Profile,
    Lease,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

/// `get`'s output formats: those of every command, and DNS zone files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GetOutput {
    #[default]
    Table,
    Json,
    /// RFC 1035 zone-file text (`get dns`).
    Zone,
}

impl GetOutput {
    /// The format for anything but DNS zones.
    fn plain(self, what: Resource) -> Result<Output, ClientError> {
        match self {
            GetOutput::Table => Ok(Output::Table),
            GetOutput::Json => Ok(Output::Json),
            GetOutput::Zone => Err(ClientError::Setup(format!(
                "-o zone: only `get dns` prints zone files, not `get {}`",
                clap::ValueEnum::to_possible_value(&what).map_or_else(String::new, |v| v.get_name().to_owned())
            ))),
        }
    }
}

/// Filters for `get events`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct EventArgs {
    /// Keep streaming new events until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only events about this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Only events about this MAC address.
    #[arg(long)]
    pub mac: Option<String>,
    /// Which log: events (boot, services, lifecycle; the default) or audit (every API write:
    /// method, object, outcome, caller's address, token name).
    #[arg(long, value_parser = ["events", "audit"])]
    pub kind: Option<String>,
    /// Only events of these types (comma-separated, e.g. lease_acked,phone_home).
    #[arg(long = "type")]
    pub types: Option<String>,
    /// Only events since an RFC 3339 time or a duration ago (10m).
    #[arg(long)]
    pub since: Option<String>,
    /// How many past events to show.
    #[arg(long)]
    pub limit: Option<u32>,
}

fn events_query(args: &EventArgs) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    let fields =
        [("kind", &args.kind), ("node", &args.node), ("mac", &args.mac), ("type", &args.types), ("since", &args.since)];
    for (key, value) in fields {
        if let Some(v) = value {
            pairs.push((key, v.clone()));
        }
    }
    if let Some(limit) = args.limit {
        pairs.push(("limit", limit.to_string()));
    }
    if args.follow {
        pairs.push(("follow", "true".into()));
    }
    let encoded: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    if encoded.is_empty() { String::new() } else { format!("?{}", encoded.join("&")) }
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_json(v: &impl serde::Serialize) {
    crate::outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `slipway get RESOURCE [NAME]`.
pub async fn get(
    client: &Client,
    what: Resource,
    name: Option<&str>,
    format: GetOutput,
    events: &EventArgs,
) -> Result<(), ClientError> {
    if what == Resource::Dns {
        return dns::get(client, name, format).await;
    }
    let output = format.plain(what)?;
    let path = |plural: &str| match name {
        Some(n) => format!("/api/v1/{plural}/{}", encode(n)),
        None => format!("/api/v1/{plural}"),
    };
    match what {
        Resource::Nodes => {
            show(
                client,
                &path("nodes"),
                output,
                name.is_some(),
                node_rows,
                &["NAME", "CLUSTER", "ROLE", "MAC", "IPV4", "HOSTNAME", "PROFILE", "ORIGIN"],
            )
            .await
        }
        Resource::Clusters => {
            show(
                client,
                &path("clusters"),
                output,
                name.is_some(),
                cluster_rows,
                &["NAME", "KIND", "ZONE", "NETWORK", "API", "API-INT", "INGRESS", "ORIGIN"],
            )
            .await
        }
        Resource::Profiles => {
            show(
                client,
                &path("profiles"),
                output,
                name.is_some(),
                profile_rows,
                &["NAME", "KERNEL", "INITRDS", "CONFIG", "ORIGIN"],
            )
            .await
        }
        Resource::Networks => {
            show(
                client,
                &path("networks"),
                output,
                name.is_some(),
                network_rows,
                &["NAME", "INTERFACE", "CIDR", "GATEWAY", "STATIC", "POOL", "LEASE"],
            )
            .await
        }
        Resource::Leases => {
            let mut leases: Vec<LeaseView> = client.json(Method::GET, "/api/v1/leases", None::<&()>).await?;
            if let Some(ip) = name {
                let ip: std::net::Ipv4Addr =
                    ip.parse().map_err(|_| ClientError::Setup(format!("get leases: '{ip}' is not an IPv4 address")))?;
                leases.retain(|l| l.lease.ip == ip);
                if leases.is_empty() {
                    return Err(ClientError::Setup(format!("no lease for {ip}")));
                }
            }
            print_list(
                &leases,
                output,
                name.is_some(),
                lease_rows,
                &["IP", "MAC", "NODE", "STATE", "ACTIVE", "EXPIRES", "HOSTNAME"],
            );
            Ok(())
        }
        Resource::Dns => unreachable!("answered above"),
        Resource::Timeline => boot::timeline(client, name, output).await,
        Resource::Vms => vms::list(client, name, output).await,
        Resource::Lb => {
            let mut status: LbStatus = client.json(Method::GET, "/api/v1/lb", None::<&()>).await?;
            if let Some(n) = name {
                // A frontend and the pool it uses, or a pool and the frontends that use it.
                let pools: Vec<String> = status
                    .frontends
                    .iter()
                    .filter(|f| f.name.as_str() == n)
                    .map(|f| f.pool.to_string())
                    .chain(status.pools.iter().filter(|p| p.name.as_str() == n).map(|p| p.name.to_string()))
                    .collect();
                if pools.is_empty() {
                    return Err(ClientError::Setup(format!("no load-balancer frontend or pool named {n}")));
                }
                status.frontends.retain(|f| f.name.as_str() == n || pools.contains(&f.pool.to_string()));
                status.pools.retain(|p| pools.contains(&p.name.to_string()));
            }
            if output == Output::Json {
                print_json(&status);
                return Ok(());
            }
            let frontends: Vec<Vec<String>> = status
                .frontends
                .iter()
                .map(|f| {
                    vec![
                        f.name.to_string(),
                        f.listen.to_string(),
                        f.pool.to_string(),
                        format!("{}/{}", f.active, f.max_connections),
                    ]
                })
                .collect();
            crate::out!("{}", render(&["FRONTEND", "LISTEN", "POOL", "ACTIVE"], &frontends));
            crate::outln!();
            let backends: Vec<Vec<String>> = status
                .pools
                .iter()
                .flat_map(|p| {
                    p.backends.iter().map(|b| {
                        vec![
                            p.name.to_string(),
                            b.address.to_string(),
                            b.state.clone(),
                            b.active.to_string(),
                            b.connections.to_string(),
                            b.bytes_in.to_string(),
                            b.bytes_out.to_string(),
                        ]
                    })
                })
                .collect();
            crate::out!(
                "{}",
                render(&["POOL", "BACKEND", "STATE", "ACTIVE", "TOTAL", "BYTES-IN", "BYTES-OUT"], &backends)
            );
            Ok(())
        }
        Resource::Events if events.follow => {
            let path = format!("/api/v1/events{}", events_query(&node_events(events, name)?));
            print_event_header(output);
            client
                .follow(&path, |data| match serde_json::from_str::<Event>(data) {
                    Ok(e) => print_event(&e, output),
                    Err(_) => eprintln!("note: {data}"),
                })
                .await
        }
        Resource::Events => {
            let query = events_query(&node_events(events, name)?);
            let list: Vec<Event> = client.json(Method::GET, &format!("/api/v1/events{query}"), None::<&()>).await?;
            if output == Output::Json {
                print_json(&list);
            } else {
                print_event_header(output);
                list.iter().for_each(|e| print_event(e, output));
            }
            Ok(())
        }
    }
}

/// `get events NODE` is `get events --node NODE`.
fn node_events(events: &EventArgs, name: Option<&str>) -> Result<EventArgs, ClientError> {
    let mut args = events.clone();
    match (name, &events.node) {
        (Some(n), Some(node)) if n != node => {
            return Err(ClientError::Setup(format!("get events {n} --node {node}: name one node")));
        }
        (Some(n), _) => args.node = Some(n.to_owned()),
        (None, _) => {}
    }
    Ok(args)
}

/// Prints one object or a list as JSON or a table.
fn print_list<T: serde::Serialize>(
    items: &[T],
    output: Output,
    one: bool,
    rows: fn(&T) -> Vec<String>,
    headers: &[&str],
) {
    match output {
        Output::Json if one && items.len() == 1 => print_json(&items[0]),
        Output::Json => print_json(&items),
        Output::Table => crate::out!("{}", render(headers, &items.iter().map(rows).collect::<Vec<_>>())),
    }
}

/// Fetches one object or a list, and prints it as JSON or a table.
async fn show<T: serde::de::DeserializeOwned + serde::Serialize>(
    client: &Client,
    path: &str,
    output: Output,
    one: bool,
    rows: fn(&T) -> Vec<String>,
    headers: &[&str],
) -> Result<(), ClientError> {
    let items: Vec<T> = if one {
        vec![client.json(Method::GET, path, None::<&()>).await?]
    } else {
        client.json(Method::GET, path, None::<&()>).await?
    };
    print_list(&items, output, one, rows, headers);
    Ok(())
}

fn kebab(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(Value::Null) | Err(_) => "-".into(),
        Ok(other) => other.to_string(),
    }
}

fn node_rows(n: &Node) -> Vec<String> {
    vec![
        n.name.to_string(),
        opt(n.cluster.as_ref()),
        kebab(&n.role),
        n.mac.to_string(),
        n.ipv4.to_string(),
        n.hostname().to_string(),
        opt(n.profile.as_ref()),
        kebab(&n.origin),
    ]
}

fn cluster_rows(c: &Cluster) -> Vec<String> {
    vec![
        c.name.to_string(),
        kebab(&c.kind),
        c.zone(),
        c.network.to_string(),
        c.api_address.to_string(),
        c.api_int_address.to_string(),
        c.ingress_address.to_string(),
        kebab(&c.origin),
    ]
}

fn profile_rows(p: &Profile) -> Vec<String> {
    vec![
        p.name.to_string(),
        p.kernel.clone(),
        if p.initrds.is_empty() { "-".into() } else { p.initrds.join(",") },
        kebab(&p.config),
        kebab(&p.origin),
    ]
}

fn network_rows(n: &Network) -> Vec<String> {
    vec![
        n.name.to_string(),
        n.interface.clone(),
        n.cidr.to_string(),
        opt(n.gateway),
        opt(n.static_range),
        opt(n.pool),
        crate::inventory::types::format_duration(n.lease_time),
    ]
}

fn lease_rows(l: &LeaseView) -> Vec<String> {
    vec![
        l.lease.ip.to_string(),
        l.lease.mac.to_string(),
        opt(l.node.as_ref()),
        kebab(&l.lease.state),
        if l.active { "yes" } else { "no" }.into(),
        l.lease.expires.to_string(),
        opt(l.lease.hostname.as_ref()),
    ]
}

fn print_event_header(output: Output) {
    if output == Output::Table {
        crate::outln!(
            "{:<24}  {:>6}  {:<10}  {:<14}  {:<17}  {:<20}  DETAILS",
            "TIME",
            "SEQ",
            "SOURCE",
            "NODE",
            "MAC",
            "TYPE"
        );
    }
}

fn print_event(e: &Event, output: Output) {
    if output == Output::Json {
        crate::outln!("{}", serde_json::to_string(e).unwrap_or_default());
        return;
    }
    let mut details = serde_json::to_value(&e.details).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut details {
        map.remove("type");
    }
    let details = match &details {
        Value::Object(map) if map.is_empty() => String::new(),
        other => other.to_string(),
    };
    crate::outln!(
        "{:<24}  {:>6}  {:<10}  {:<14}  {:<17}  {:<20}  {details}",
        e.time.to_string(),
        e.seq,
        kebab(&e.source),
        opt(e.node.as_ref()),
        opt(e.mac),
        e.details.type_name()
    );
}

/// Reads a YAML or JSON document from `file` (`-` for stdin); errors name the file and field.
pub fn read_document<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T, ClientError> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(|e| ClientError::Setup(format!("stdin: {e}")))?
    } else {
        std::fs::read_to_string(file).map_err(|e| ClientError::Setup(format!("{}: {e}", file.display())))?
    };
    parse_document(&text).map_err(|e| ClientError::Setup(format!("{}: {e}", file.display())))
}

/// `slipway apply -f FILE`: a YAML or JSON manifest of clusters, profiles and nodes.
pub async fn apply(client: &Client, file: &Path, output: Output) -> Result<(), ClientError> {
    let manifest: Manifest = read_document(file)?;
    let outcomes: Vec<Outcome> = client.json(Method::POST, "/api/v1/apply", Some(&manifest)).await?;
    match output {
        Output::Json => print_json(&outcomes),
        Output::Table => {
            for o in outcomes {
                crate::outln!("{} {} {}", o.kind, o.name, kebab(&o.action));
            }
        }
    }
    Ok(())
}

/// A document (manifest, definition) that does not read; names the field.
#[derive(Debug, thiserror::Error)]
pub enum BadManifest {
    #[error("{path}: {source}")]
    Json { path: serde_path_to_error::Path, source: serde_json::Error },
    #[error("{path}: {source}")]
    Yaml { path: serde_path_to_error::Path, source: serde_norway::Error },
}

/// Reads a manifest as JSON if it looks like JSON, else as YAML; errors name the field.
pub fn parse_manifest(text: &str) -> Result<Manifest, BadManifest> {
    parse_document(text)
}

/// Reads a document as JSON if it looks like JSON, else as YAML; errors name the field.
pub fn parse_document<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, BadManifest> {
    if text.trim_start().starts_with('{') {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| BadManifest::Json { path: e.path().clone(), source: e.into_inner() })
    } else {
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| BadManifest::Yaml { path: e.path().clone(), source: e.into_inner() })
    }
}

/// `slipway delete KIND NAME`.
pub async fn delete(client: &Client, what: Deletable, name: &str, output: Output) -> Result<(), ClientError> {
    let released = match what {
        Deletable::Node => {
            client.call(Method::DELETE, &format!("/api/v1/nodes/{}", encode(name))).await.map(|()| None)?
        }
        Deletable::Cluster => {
            client.call(Method::DELETE, &format!("/api/v1/clusters/{}", encode(name))).await.map(|()| None)?
        }
        Deletable::Profile => {
            client.call(Method::DELETE, &format!("/api/v1/profiles/{}", encode(name))).await.map(|()| None)?
        }
        Deletable::Lease => Some(
            client.json::<LeaseView>(Method::DELETE, &format!("/api/v1/leases/{}", encode(name)), None::<&()>).await?,
        ),
    };
    let action = if what == Deletable::Lease { "released" } else { "deleted" };
    match (output, released) {
        (Output::Json, Some(lease)) => print_json(&lease),
        (Output::Json, None) => {
            print_json(&serde_json::json!({ "kind": what_name(what), "name": name, "action": action }))
        }
        (Output::Table, _) => crate::outln!("{} {name} {action}", what_name(what)),
    }
    Ok(())
}

fn what_name(what: Deletable) -> &'static str {
    match what {
        Deletable::Node => "node",
        Deletable::Cluster => "cluster",
        Deletable::Profile => "profile",
        Deletable::Lease => "lease",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_manifests_parse_the_same() {
        let yaml = "nodes:\n  - name: w0\n    mac: 52:54:00:00:00:09\n    ipv4: 10.1.107.20\n";
        let json = r#"{"nodes":[{"name":"w0","mac":"52:54:00:00:00:09","ipv4":"10.1.107.20"}]}"#;
        assert_eq!(parse_manifest(yaml).expect("yaml"), parse_manifest(json).expect("json"));
    }

    #[test]
    fn manifest_errors_name_the_field() {
        let err = parse_manifest("nodes:\n  - name: w0\n    mac: nope\n    ipv4: 10.1.107.20\n").expect_err("bad mac");
        assert!(err.to_string().starts_with("nodes[0].mac: "), "{err}");
        let err = parse_manifest("{\"nods\": []}").expect_err("unknown field");
        assert!(err.to_string().contains("nods"), "{err}");
    }

    #[test]
    fn event_filters_become_an_encoded_query() {
        let args = EventArgs {
            follow: true,
            node: Some("w0".into()),
            since: Some("2026-11-22T10:00:00Z".into()),
            ..EventArgs::default()
        };
        assert_eq!(events_query(&args), "?node=w0&since=2026-11-22T10:00:00Z&follow=true");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
