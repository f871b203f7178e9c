//! `slipway get vms`.

use reqwest::Method;

use super::client::{Client, ClientError};
use super::table::render;
use super::{Output, print_json};

/// `slipway get vms [NAME]`: a table (or JSON) of slipway-owned VMs; fails naming the hypervisors
/// that could not be listed.
pub(super) async fn list(client: &Client, name: Option<&str>, output: Output) -> Result<(), ClientError> {
    let mut list: crate::api::vms::VmList = client.json(Method::GET, "/api/v1/vms", None::<&()>).await?;
    if let Some(n) = name {
        list.vms.retain(|v| v.name == n);
        if list.vms.is_empty() && list.errors.is_empty() {
            return Err(ClientError::Setup(format!("no VM of slipway's named {n}")));
        }
    }
    if output == Output::Json {
        print_json(&list);
    } else {
        let rows: Vec<Vec<String>> = list
            .vms
            .iter()
            .map(|v| {
                let cluster = v.cluster.clone().unwrap_or_else(|| "-".into());
                vec![v.name.clone(), cluster, v.hypervisor.clone(), v.id.clone(), v.host.clone(), v.state.to_string()]
            })
            .collect();
        crate::out!("{}", render(&["NAME", "CLUSTER", "HYPERVISOR", "ID", "HOST", "STATE"], &rows));
    }
    if list.errors.is_empty() {
        Ok(())
    } else {
        Err(ClientError::Setup(format!("some hypervisors could not be listed:\n{}", list.errors.join("\n"))))
    }
}
