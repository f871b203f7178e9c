//! `slipway get timeline NODE` and `slipway reinstall NODE`.

use reqwest::Method;

use super::client::{Client, ClientError};
use super::table::render;
use super::{Output, encode, print_json};
use crate::api::boot::Reinstall;
use crate::boot::timeline::Timeline;

/// Prints a node's boot steps and where its latest boot stopped.
pub async fn timeline(client: &Client, node: Option<&str>, output: Output) -> Result<(), ClientError> {
    let Some(node) = node else {
        return Err(ClientError::Setup("get timeline needs a node name: slipway get timeline NODE".into()));
    };
    let t: Timeline =
        client.json(Method::GET, &format!("/api/v1/nodes/{}/timeline", encode(node)), None::<&()>).await?;
    if output == Output::Json {
        print_json(&t);
        return Ok(());
    }
    let rows: Vec<Vec<String>> =
        t.entries.iter().map(|e| vec![e.time.to_string(), e.step.as_str().to_string(), e.detail.clone()]).collect();
    crate::out!("{}", render(&["TIME", "STEP", "DETAIL"], &rows));
    match (t.reached, t.complete) {
        (_, true) => crate::outln!("\n{}: the latest boot completed (phone-home received)", t.node),
        (Some(step), false) => crate::outln!("\n{}: the latest boot stopped after step {}", t.node, step.as_str()),
        (None, false) => crate::outln!("\n{}: no boot seen yet", t.node),
    }
    Ok(())
}

/// Asks the daemon to install `node` again on its next network boot.
pub async fn reinstall(client: &Client, node: &str, output: Output) -> Result<(), ClientError> {
    let r: Reinstall =
        client.json(Method::POST, &format!("/api/v1/nodes/{}/reinstall", encode(node)), None::<&()>).await?;
    if output == Output::Json {
        print_json(&r);
        return Ok(());
    }
    match r.was_installed {
        Some(at) => {
            crate::outln!(
                "node {} will be installed again on its next network boot (it reported installed at {at})",
                r.node
            )
        }
        None => {
            crate::outln!("node {} will be installed on its next network boot (it had not reported installed)", r.node)
        }
    }
    Ok(())
}
