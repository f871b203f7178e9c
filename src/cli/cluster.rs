//! `slipway cluster plan|apply|status|wait|retry|kubeconfig|csr|bootstrap remove|gather`: defined clusters from
//! the command line.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;

use super::client::{Client, ClientError};
use super::table::{opt, render};
use super::{Output, print_json};
use crate::cluster::Definition;
use crate::cluster::control::Status;
use crate::cluster::okd::manual::CsrView;
use crate::cluster::plan::Plan;
use crate::cluster::stages::ClusterStage;
use crate::inventory::Timestamp;

/// How often `status --watch` asks.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// `plan NAME` or `plan -f FILE`: what applying the stored definition, or the file's, would
/// do now; nothing changes.
pub async fn plan(client: &Client, name: Option<&str>, file: Option<&Path>, output: Output) -> Result<(), ClientError> {
    if let Some(file) = file {
        return plan_or_apply(client, file, false, output).await;
    }
    let name = name.ok_or_else(|| ClientError::Setup("give a cluster NAME or -f FILE".into()))?;
    let path = format!("/api/v1/clusters/{}/definition", super::encode(name));
    let definition: Definition = client.json(Method::GET, &path, None::<&()>).await?;
    let path = format!("/api/v1/clusters/{}/plan", super::encode(name));
    let plan: Plan = client.json(Method::POST, &path, Some(&definition)).await?;
    show_plan(&plan, false, output);
    Ok(())
}

/// `plan -f FILE` (nothing changes) or `apply -f FILE`: every node with its MAC, address, VM
/// and what happens to it.
pub async fn plan_or_apply(client: &Client, file: &Path, apply: bool, output: Output) -> Result<(), ClientError> {
    let definition: Definition = super::read_document(file)?;
    let (method, path) = if apply {
        (Method::PUT, format!("/api/v1/clusters/{}/definition", definition.name))
    } else {
        (Method::POST, format!("/api/v1/clusters/{}/plan", definition.name))
    };
    let plan: Plan = client.json(method, &path, Some(&definition)).await?;
    show_plan(&plan, apply, output);
    Ok(())
}

fn show_plan(plan: &Plan, applied: bool, output: Output) {
    if output == Output::Json {
        print_json(plan);
        return;
    }
    let rows: Vec<Vec<String>> = plan
        .nodes
        .iter()
        .zip(&plan.changes)
        .map(|(p, change)| {
            let vm = p.vm.as_ref().map(|vm| {
                let disk: u32 = vm.disks.iter().map(|d| d.size_gib).sum();
                format!("{} cpu, {} MiB, {disk} GiB", vm.cores, vm.memory_mib)
            });
            let role = p.node.role.map(|r| r.as_str());
            let action = if change.fields.is_empty() {
                super::kebab(&change.action)
            } else {
                format!("{} ({})", super::kebab(&change.action), change.fields.join(", "))
            };
            let place = p.place.as_ref().map(|at| match &at.id {
                Some(id) => format!("{} (VMID {id})", at.host),
                None => at.host.clone(),
            });
            let row = [p.node.name.to_string(), opt(role), p.node.mac.to_string(), p.node.ipv4.to_string()];
            row.into_iter().chain([opt(vm), opt(place), action]).collect()
        })
        .collect();
    let leaving = plan.changes.iter().filter(|c| c.action == crate::cluster::plan::Action::Delete);
    let mut rows = rows;
    rows.extend(leaving.map(|c| [c.node.as_str(), "-", "-", "-", "-", "-", "delete"].map(str::to_owned).to_vec()));
    crate::out!("{}", render(&["NODE", "ROLE", "MAC", "IPV4", "VM", "HOST", "ACTION"], &rows));
    for warning in &plan.warnings {
        crate::outln!("warning: {warning}");
    }
    if !applied {
        crate::outln!("(a plan: nothing was changed)");
    }
}

/// `scale NAME --group G --count N`: one group's count changed, applied by the daemon.
pub async fn scale(client: &Client, name: &str, group: &str, count: u32, output: Output) -> Result<(), ClientError> {
    let path = format!("/api/v1/clusters/{}/scale", super::encode(name));
    let body = crate::api::clusters::Scale { group: group.to_owned(), count };
    let plan: Plan = client.json(Method::POST, &path, Some(&body)).await?;
    show_plan(&plan, true, output);
    Ok(())
}

/// `delete NAME [--keep-vms]`.
pub async fn delete(client: &Client, name: &str, keep_vms: bool, output: Output) -> Result<(), ClientError> {
    let path = format!("/api/v1/clusters/{}/definition?keep_vms={keep_vms}", super::encode(name));
    let removing: crate::api::clusters::Removing = client.json(Method::DELETE, &path, None::<&()>).await?;
    match output {
        Output::Json => print_json(&removing),
        Output::Table if removing.nodes.is_empty() => crate::outln!("cluster {name} deleted"),
        Output::Table => crate::outln!(
            "removing: {} (follow with `slipway cluster status {name} --watch`)",
            removing.nodes.join(", ")
        ),
    }
    Ok(())
}

/// `status NAME [--watch]`: the cluster's phase and every node's; `--watch` prints it again on
/// every change until every node is installed or failed.
pub async fn status(client: &Client, name: &str, watch: bool, output: Output) -> Result<(), ClientError> {
    let path = format!("/api/v1/clusters/{}/status", super::encode(name));
    let mut last = String::new();
    loop {
        let status: Status = match client.json(Method::GET, &path, None::<&()>).await {
            Ok(status) => status,
            // Watching a cluster being deleted: its last node gone, the cluster is too.
            Err(ClientError::Api { status, .. })
                if watch && !last.is_empty() && status == reqwest::StatusCode::NOT_FOUND =>
            {
                crate::outln!("cluster {name}: deleted");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let shown = match output {
            Output::Json => serde_json::to_string_pretty(&status).unwrap_or_default() + "\n",
            Output::Table => table(&status, Timestamp::now()),
        };
        // An OKD cluster is settled at Ready or Failed; others when every node is.
        let settled = match &status.stage {
            // A deleted cluster's last node went: it goes next.
            _ if status.phase == "deleting" => false,
            Some(stage) => stage.stage.is_ready() || stage.stage.is_failed(),
            None => status.nodes.iter().all(|n| n.phase.is_settled()),
        };
        // Ages change every second: a watcher prints when something else did.
        let nodes: Vec<_> = status.nodes.iter().map(|n| (&n.name, n.phase, &n.error)).collect();
        let stage = status.stage.as_ref().map(|s| (s.stage, &s.observed, &s.error));
        let key = serde_json::to_string(&(nodes, &status.conditions, stage)).unwrap_or_default();
        if key != last {
            crate::out!("{shown}");
            last = key;
        }
        if !watch || settled {
            return Ok(());
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

fn table(status: &Status, now: Timestamp) -> String {
    let age = |t: Timestamp| {
        let secs = now.0.duration_since(t.0).unwrap_or_default().as_secs();
        crate::inventory::types::format_duration(Duration::from_secs(secs))
    };
    let rows: Vec<Vec<String>> = status
        .nodes
        .iter()
        .map(|n| {
            let vm = n.vm.as_ref().map(|v| format!("{} {} on {}", v.hypervisor, v.id, v.host));
            let left = n.deadline.map(|d| {
                let secs = d.0.duration_since(now.0).unwrap_or_default().as_secs();
                crate::inventory::types::format_duration(Duration::from_secs(secs))
            });
            let note = n.error.clone().or_else(|| n.observed.clone());
            vec![n.name.clone(), n.phase.as_str().to_owned(), age(n.since), opt(left), opt(vm), opt(note)]
        })
        .collect();
    let conditions: Vec<Vec<String>> =
        status.conditions.iter().map(|c| vec![c.kind.clone(), c.status.clone(), c.message.clone()]).collect();
    let deadline = match status.deadline {
        Some(d) if !status.nodes.iter().all(|n| n.phase == crate::cluster::phase::Phase::Installed) => {
            let secs = d.0.duration_since(now.0).unwrap_or_default().as_secs();
            format!(" (to be installed within {})", crate::inventory::types::format_duration(Duration::from_secs(secs)))
        }
        _ => String::new(),
    };
    let declared = if status.declared { " [defined in the config file]" } else { "" };
    // OKD: the stage, how long, its deadline and what it last saw.
    let stage = status.stage.as_ref().map_or_else(String::new, |s| {
        let left = s.deadline.map_or_else(String::new, |d| {
            let secs = d.0.duration_since(now.0).unwrap_or_default().as_secs();
            format!(", deadline in {}", crate::inventory::types::format_duration(Duration::from_secs(secs)))
        });
        let what = match (s.stage.is_failed(), &s.error, &s.observed) {
            (true, Some(e), _) => format!(" in {}: {e}", s.failed_in.map_or("?", ClusterStage::as_str)),
            (_, Some(e), _) => format!(": last error: {e}"),
            (_, None, Some(o)) => format!(": {o}"),
            _ => String::new(),
        };
        format!("stage {} for {}{left}{what}\n", s.stage.as_str(), age(s.since))
    });
    // OKD: how long the uploaded Ignition configs are good for.
    let ignition: Vec<String> = status
        .ignition
        .iter()
        .map(|i| {
            let left = i.expires.0.duration_since(now.0).map_or_else(
                |_| "certificates expired".to_owned(),
                |d| {
                    format!(
                        "certificates expire in {}",
                        crate::inventory::types::format_duration(Duration::from_secs(d.as_secs()))
                    )
                },
            );
            format!("{} made {} ago ({left})", i.role, age(i.made))
        })
        .collect();
    let stage = if ignition.is_empty() { stage } else { format!("{stage}ignition: {}\n", ignition.join("; ")) };
    format!(
        "cluster {}: {}{deadline}{declared}\n{stage}{}{}",
        status.cluster,
        status.phase,
        render(&["CONDITION", "STATUS", "MESSAGE"], &conditions),
        render(&["NODE", "PHASE", "FOR", "DEADLINE IN", "VM", "LAST"], &rows)
    )
}

/// `retry NAME`: failed nodes resume the phase they failed in.
pub async fn retry(client: &Client, name: &str, output: Output) -> Result<(), ClientError> {
    let path = format!("/api/v1/clusters/{}/retry", super::encode(name));
    let retried: crate::api::clusters::Retried = client.json(Method::POST, &path, None::<&()>).await?;
    match output {
        Output::Json => print_json(&retried),
        Output::Table if retried.resumed.is_empty() => crate::outln!("no failed node in cluster {name}"),
        Output::Table => crate::outln!("resumed: {}", retried.resumed.join(", ")),
    }
    Ok(())
}

/// `addons NAME`: every add-on set of the cluster, in order, with where it stands.
pub async fn addons(client: &Client, name: &str, output: Output) -> Result<(), ClientError> {
    let path = format!("/api/v1/clusters/{}/status", super::encode(name));
    let status: Status = client.json(Method::GET, &path, None::<&()>).await?;
    match output {
        Output::Json => print_json(&status.addons),
        Output::Table if status.addons.is_empty() => crate::outln!("cluster {name} has no add-ons"),
        Output::Table => {
            let rows: Vec<Vec<String>> = status
                .addons
                .iter()
                .map(|a| {
                    vec![
                        a.name.to_string(),
                        a.state.clone(),
                        a.objects.to_string(),
                        opt(a.since.as_ref()),
                        a.detail.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            crate::out!("{}", render(&["SET", "STATE", "OBJECTS", "SINCE", "DETAIL"], &rows));
        }
    }
    Ok(())
}

/// `kubeconfig NAME -f FILE`: uploads the installer's admin kubeconfig (sent as JSON; the file
/// may be YAML).
pub async fn kubeconfig(client: &Client, name: &str, file: &Path, output: Output) -> Result<(), ClientError> {
    let document: serde_json::Value = super::read_document(file)?;
    let path = format!("/api/v1/clusters/{}/kubeconfig", super::encode(name));
    let uploaded: crate::api::clusters::KubeconfigUpload = client.json(Method::PUT, &path, Some(&document)).await?;
    match output {
        Output::Json => print_json(&uploaded),
        Output::Table => crate::outln!(
            "kubeconfig of cluster {name} stored: {} as {}, certificate valid until {}",
            uploaded.server,
            uploaded.user,
            uploaded.expires
        ),
    }
    Ok(())
}

/// `kubeconfig NAME`: prints the cluster's admin kubeconfig.
pub async fn print_kubeconfig(client: &Client, name: &str, output: Output) -> Result<(), ClientError> {
    let path = format!("/api/v1/clusters/{}/kubeconfig", super::encode(name));
    let stored: crate::api::clusters::StoredKubeconfig = client.json(Method::GET, &path, None::<&()>).await?;
    match output {
        Output::Json => print_json(&stored),
        Output::Table => crate::out!("{}", stored.kubeconfig),
    }
    Ok(())
}

/// `csr list NAME`: every CSR, the pending kubelet ones with slipway's verdict.
pub async fn csrs(client: &Client, name: &str, output: Output) -> Result<(), ClientError> {
    let path = format!("/api/v1/clusters/{}/csrs", super::encode(name));
    let list: Vec<CsrView> = client.json(Method::GET, &path, None::<&()>).await?;
    match output {
        Output::Json => print_json(&list),
        Output::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    let signer = c.signer.trim_start_matches("kubernetes.io/").to_owned();
                    vec![c.name.clone(), signer, c.requester.clone(), c.state.clone(), opt(c.verdict.clone())]
                })
                .collect();
            crate::out!("{}", render(&["NAME", "SIGNER", "REQUESTER", "STATE", "SLIPWAY WOULD"], &rows));
        }
    }
    Ok(())
}

/// `csr approve NAME CSR`: the operator approves one CSR.
pub async fn approve_csr(client: &Client, name: &str, csr: &str, output: Output) -> Result<(), ClientError> {
    let path = format!("/api/v1/clusters/{}/csrs/{}/approve", super::encode(name), super::encode(csr));
    let done: CsrView = client.json(Method::POST, &path, None::<&()>).await?;
    match output {
        Output::Json => print_json(&done),
        Output::Table => crate::outln!("{} approved ({} from {})", done.name, done.signer, done.requester),
    }
    Ok(())
}

/// `bootstrap remove NAME [--force]`: the bootstrap node leaves now.
pub async fn remove_bootstrap(client: &Client, name: &str, force: bool, output: Output) -> Result<(), ClientError> {
    let path = format!("/api/v1/clusters/{}/bootstrap/remove?force={force}", super::encode(name));
    let removing: crate::api::clusters::Removing = client.json(Method::POST, &path, None::<&()>).await?;
    match output {
        Output::Json => print_json(&removing),
        Output::Table => crate::outln!("removing {} (drain, shut down, delete)", removing.nodes.join(", ")),
    }
    Ok(())
}

/// `bootstrap gather NAME`: the bootstrap node's journal and failed units, read now.
pub async fn gather_bootstrap(client: &Client, name: &str, output: Output) -> Result<(), ClientError> {
    let path = format!("/api/v1/clusters/{}/bootstrap/gather", super::encode(name));
    let found: crate::api::clusters::Diagnostics = client.json(Method::POST, &path, None::<&()>).await?;
    match output {
        Output::Json => print_json(&found),
        Output::Table => {
            for c in &found.commands {
                let status = c.status.map_or("no exit status".to_string(), |s| format!("exit {s}"));
                let cut = if c.truncated { ", beginning cut" } else { "" };
                crate::outln!("$ {}   ({status}{cut})", c.command);
                for text in [&c.stdout, &c.stderr] {
                    if !text.is_empty() {
                        crate::outln!("{}", text.trim_end());
                    }
                }
                crate::outln!("");
            }
        }
    }
    Ok(())
}

/// What `wait --for` names: a stage, or a condition that must be True.
fn reached(status: &Status, until: &str) -> Option<bool> {
    if ClusterStage::names().contains(&until) {
        // Not started yet: no stage is reached; a stage of the other kind is not a stage here.
        return match &status.stage {
            None => Some(false),
            Some(s) => s.stage.reached(until),
        };
    }
    status.conditions.iter().find(|c| c.kind == until).map(|c| c.status == "True")
}

/// `wait NAME --for STAGE|CONDITION [--timeout D]`: polls the status until it is reached; an
/// error when the cluster fails, the name is neither, or the time runs out.
pub async fn wait(client: &Client, name: &str, until: &str, timeout: &str, output: Output) -> Result<(), ClientError> {
    let limit = crate::inventory::types::parse_duration(timeout)
        .map_err(|e| ClientError::Setup(format!("--timeout {timeout}: {e}")))?;
    let deadline = tokio::time::Instant::now() + limit;
    let path = format!("/api/v1/clusters/{}/status", super::encode(name));
    loop {
        let status: Status = client.json(Method::GET, &path, None::<&()>).await?;
        let Some(done) = reached(&status, until) else {
            let conditions: Vec<&str> = status.conditions.iter().map(|c| c.kind.as_str()).collect();
            return Err(ClientError::Setup(format!(
                "--for {until}: not a stage (OKD: waiting-for-api ... ready; k3s: init-server ... ready) nor a condition of cluster {name} ({})",
                conditions.join(", ")
            )));
        };
        if done {
            match output {
                Output::Json => print_json(&status),
                Output::Table => crate::outln!("cluster {name}: {until}"),
            }
            return Ok(());
        }
        let failed = status.stage.as_ref().filter(|s| s.stage.is_failed()).map(|s| {
            let stage = s.failed_in.map_or("?", ClusterStage::as_str);
            format!("failed in {stage}: {}", s.error.clone().unwrap_or_default())
        });
        let failed = failed.or_else(|| {
            let node = status.nodes.iter().find(|n| n.phase == crate::cluster::phase::Phase::Failed)?;
            Some(format!("node {} failed: {}", node.name, node.error.clone().unwrap_or_default()))
        });
        if let Some(why) = failed {
            return Err(ClientError::Setup(format!("cluster {name} {why}")));
        }
        if tokio::time::Instant::now() >= deadline {
            let now =
                status.stage.as_ref().and_then(|s| s.observed.clone()).map(|o| format!(" ({o})")).unwrap_or_default();
            return Err(ClientError::Setup(format!(
                "cluster {name}: {until} not reached within {timeout}; now {}{now}",
                status.phase
            )));
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}
