//! `slipway status`: the instances sharing the daemon's state, who leads, etcd's health.

use reqwest::Method;

use super::client::{Client, ClientError};
use super::table::{opt, render};
use super::{Output, print_json};
use crate::api::members::ClusterMembers;

/// Prints `GET /api/v1/cluster-members`.
pub async fn status(client: &Client, output: Output) -> Result<(), ClientError> {
    let m: ClusterMembers = client.json(Method::GET, "/api/v1/cluster-members", None::<&()>).await?;
    if output == Output::Json {
        print_json(&m);
        return Ok(());
    }
    crate::outln!("{}", summary(&m));
    let rows: Vec<Vec<String>> = m
        .members
        .iter()
        .map(|i| {
            let leads = if m.leader.as_deref() == Some(i.name.as_str()) { "*" } else { "" };
            vec![i.name.clone(), leads.into(), i.admin.clone(), i.version.clone(), i.started.clone()]
        })
        .collect();
    crate::out!("{}", render(&["INSTANCE", "LEADER", "ADMIN", "VERSION", "STARTED"], &rows));
    if !m.etcd.is_empty() {
        let rows: Vec<Vec<String>> = m
            .etcd
            .iter()
            .map(|e| {
                let health = if e.healthy { "healthy" } else { "unhealthy" };
                vec![e.endpoint.clone(), health.into(), opt(e.version.as_ref()), opt(e.revision), opt(e.error.as_ref())]
            })
            .collect();
        crate::out!("{}", render(&["ETCD", "HEALTH", "VERSION", "REVISION", "ERROR"], &rows));
    }
    Ok(())
}

/// The first line: this instance, the store, the leader and the lag.
fn summary(m: &ClusterMembers) -> String {
    let role = if m.leading { "leads" } else { "stands by" };
    let mut line = format!("{} {role}; store: {}", m.instance, m.backend);
    if m.backend != "local" {
        match (&m.leader, m.term) {
            (Some(leader), Some(term)) => line.push_str(&format!("; leader {leader} (term {term})")),
            _ => line.push_str("; nobody leads"),
        }
        match (m.mirrored, m.lag) {
            (Some(at), Some(lag)) => line.push_str(&format!("; this copy at revision {at}, {lag} behind")),
            (Some(at), None) => line.push_str(&format!("; this copy at revision {at}; no etcd member answers")),
            _ => {}
        }
    }
    line
}
