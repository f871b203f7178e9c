//! One pass of one set against a cluster's API: discovery for the API versions the set uses,
//! its namespace made when asked, every object server-side applied in order (CRDs and
//! Namespaces first) — or, for a k3s `at_install` set, k3s's own record that it applied the
//! set's file (`autodeploy`) — then its `wait_for` read. A pass never waits itself: it says what it saw,
//! and the lifecycle passes again until the set is done or its deadline has passed. Applying is
//! idempotent (server-side apply), so a pass after a restart repeats nothing harmful.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::autodeploy::{self, Copier};
use super::manifest::{Loaded, Object};
use super::rest::{ApiResourceList, Discovery, Unplaced, discovery_path, ordered};
use super::rollout::{Rollout, rollout};
use crate::cluster::definition::{AddonSet, WaitFor};
use crate::kube::{Kube, KubeError};

/// What one pass found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Every object applied, and what the set waits for holds.
    Done { applied: usize },
    /// Not yet (a kind the API does not serve yet, the API not answering, the wait condition
    /// not met): what was seen. Pass again until the deadline.
    Waiting { applied: usize, seen: String },
    /// The API refused an object (invalid, forbidden): which, and the API's own message.
    Refused { object: String, message: String },
}

/// Applies `loaded` (the set `set` as read) and reads its wait condition. An `at_install` set
/// is k3s's to apply; `copier`, when given, brings the first server's copy of it up to date.
pub async fn pass(kube: &Kube, set: &AddonSet, loaded: &Loaded, copier: Option<&dyn Copier>) -> Pass {
    let discovery = match discover(kube, loaded, set.wait_for.as_ref()).await {
        Ok(d) => d,
        Err(e) => return Pass::Waiting { applied: 0, seen: format!("discovery: {e}") },
    };
    let namespace = set.namespace.as_deref();
    let applied = match set.at_install {
        true => match autodeploy::applied(kube, set, loaded, copier).await {
            Ok(n) => n,
            Err(seen) => return Pass::Waiting { applied: 0, seen },
        },
        false => match apply_objects(kube, &discovery, set, loaded).await {
            Ok(n) => n,
            Err(pass) => return pass,
        },
    };
    let Some(wait) = &set.wait_for else { return Pass::Done { applied } };
    match waited(kube, &discovery, wait, loaded, namespace).await {
        Ok(Rollout::Done) => Pass::Done { applied },
        Ok(Rollout::Waiting(seen)) | Err(seen) => Pass::Waiting { applied, seen },
        Ok(Rollout::Failed(message)) => {
            Pass::Refused { object: format!("wait_for {} {}", wait.kind, wait.name), message }
        }
    }
}

/// The set's namespace (when it makes one) and objects applied: how many, or the pass's end.
async fn apply_objects(kube: &Kube, discovery: &Discovery, set: &AddonSet, loaded: &Loaded) -> Result<usize, Pass> {
    let mut applied = 0;
    let namespace = set.namespace.as_deref();
    if set.create_namespace
        && let Some(ns) = namespace
    {
        let object = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } });
        match kube.apply(&format!("/api/v1/namespaces/{ns}"), &object).await {
            Ok(_) => applied += 1,
            Err(e) => return Err(failed(format!("Namespace {ns}"), e, applied)),
        }
    }
    for object in ordered(&loaded.objects) {
        let target = match discovery.place(object, namespace) {
            Ok(t) => t,
            Err(e @ Unplaced::UnknownKind { .. }) => {
                return Err(Pass::Waiting { applied, seen: format!("{} ({}): {e}", object.label(), object.origin) });
            }
            Err(e @ Unplaced::NoNamespace { .. }) => {
                return Err(Pass::Refused {
                    object: format!("{} ({})", object.label(), object.origin),
                    message: e.to_string(),
                });
            }
        };
        let body = with_namespace(object, target.namespace.as_deref());
        match kube.apply(&target.path, &body).await {
            Ok(_) => applied += 1,
            Err(e) => {
                let label = object.label_in(target.namespace.as_deref());
                let e = if object.kind() == "Secret" { quiet(e) } else { e };
                return Err(failed(format!("{label} ({})", object.origin), e, applied));
            }
        }
    }
    Ok(applied)
}

/// An API error: a refusal that another pass would meet again (invalid, forbidden, bad
/// request) fails the set; anything else (not found yet, conflicts, the API away, a namespace
/// still being deleted: 403 until it is gone and made again) waits.
fn failed(object: String, e: KubeError, applied: usize) -> Pass {
    match &e {
        KubeError::Status { code: 403, message, .. } if message.contains("because it is being terminated") => {
            Pass::Waiting { applied, seen: format!("{object}: {e}") }
        }
        KubeError::Status { code: 400 | 403 | 413 | 415 | 422, message, .. } => {
            Pass::Refused { object, message: message.clone() }
        }
        _ => Pass::Waiting { applied, seen: format!("{object}: {e}") },
    }
}

/// An error about a Secret, without the API's message (it may quote the Secret's data).
fn quiet(e: KubeError) -> KubeError {
    match e {
        KubeError::Status { code, reason, .. } => KubeError::Status {
            code,
            reason,
            message: "the API's message about a Secret is not shown (it may quote its data)".into(),
        },
        other => other,
    }
}

/// The object as applied: in the namespace it goes into (a namespaced one that names none gets
/// the set's), with none when its kind is cluster-scoped.
fn with_namespace(object: &Object, namespace: Option<&str>) -> Value {
    let mut body = object.value.clone();
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        match namespace {
            Some(ns) => {
                meta.insert("namespace".into(), Value::String(ns.to_owned()));
            }
            None => {
                meta.remove("namespace");
            }
        }
    }
    body
}

/// Discovery for every API version the set and its wait condition use; a version the API does
/// not serve (yet) is left out, so its objects wait.
async fn discover(kube: &Kube, loaded: &Loaded, wait: Option<&WaitFor>) -> Result<Discovery, KubeError> {
    let mut versions: BTreeSet<&str> = loaded.objects.iter().map(Object::api_version).collect();
    versions.insert("v1");
    if let Some(v) = wait.and_then(|w| w.api_version.as_deref()) {
        versions.insert(v);
    }
    let mut discovery = Discovery::default();
    for version in versions {
        if let Some(list) = kube.get_opt::<ApiResourceList>(&discovery_path(version)).await? {
            discovery.add(&list);
        }
    }
    Ok(discovery)
}

/// Whether the wait condition holds (a workload waited for without a condition: whether it
/// rolled out, as `kubectl rollout status` says); else what was seen.
async fn waited(
    kube: &Kube,
    discovery: &Discovery,
    wait: &WaitFor,
    loaded: &Loaded,
    namespace: Option<&str>,
) -> Result<Rollout, String> {
    let in_set = loaded.objects.iter().find(|o| o.kind() == wait.kind && o.name() == wait.name);
    let api_version = wait
        .api_version
        .clone()
        .or_else(|| in_set.map(|o| o.api_version().to_owned()))
        .ok_or_else(|| format!("wait_for: no {} {} in the set, and no api_version given", wait.kind, wait.name))?;
    // Its namespace: as wait_for names it, else as the object in the set does, else the set's.
    let namespace = wait.namespace.as_deref().or_else(|| in_set.and_then(Object::namespace)).or(namespace);
    let probe = Object {
        value: json!({ "apiVersion": api_version, "kind": wait.kind, "metadata": { "name": wait.name } }),
        origin: "wait_for".into(),
    };
    let target = discovery.place(&probe, namespace).map_err(|e| e.to_string())?;
    let condition = wait.condition.clone().unwrap_or_else(|| default_condition(&wait.kind).to_owned());
    let label = format!("{} {}", wait.kind, wait.name);
    let seen = |s: String| Ok(Rollout::Waiting(s));
    match kube.get_opt::<Value>(&target.path).await {
        Err(e) => seen(format!("{label}: {e}")),
        Ok(None) => seen(format!("{label} does not exist yet")),
        Ok(Some(object)) => {
            if wait.condition.is_none()
                && let Some(rolled) = rollout(&wait.kind, &object)
            {
                return Ok(match rolled {
                    Rollout::Waiting(s) => Rollout::Waiting(format!("{label}: {s}")),
                    other => other,
                });
            }
            let found = object["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == condition.as_str())
                .map(|c| {
                    (c["status"].as_str().unwrap_or("Unknown").to_owned(), c["message"].as_str().map(str::to_owned))
                });
            Ok(match found {
                Some((status, _)) if status == "True" => Rollout::Done,
                Some((status, message)) => Rollout::Waiting(format!(
                    "{label}: {condition} is {status}{}",
                    message.map(|m| format!(" ({m})")).unwrap_or_default()
                )),
                None => Rollout::Waiting(format!("{label}: no {condition} condition yet")),
            })
        }
    }
}

/// The condition a kind is waited for by default (a workload's rollout aside: `rollout`).
pub fn default_condition(kind: &str) -> &'static str {
    match kind {
        "Deployment" => "Available",
        "CustomResourceDefinition" => "Established",
        _ => "Ready",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> KubeError {
        KubeError::Status { code, reason: reason.into(), message: message.into() }
    }

    /// The messages are kube-apiserver's own (NamespaceLifecycle admission, RBAC).
    #[test]
    fn a_namespace_being_deleted_waits_and_a_forbidden_object_fails() {
        let terminating = status(
            403,
            "Forbidden",
            "configmaps \"web\" is forbidden: unable to create new content in namespace apps because it is being terminated",
        );
        assert!(matches!(failed("ConfigMap apps/web".into(), terminating, 2), Pass::Waiting { applied: 2, .. }));
        let rbac = status(
            403,
            "Forbidden",
            "clusterroles.rbac.authorization.k8s.io \"x\" is forbidden: user \"system:serviceaccount:a:b\" (groups=[]) is attempting to grant RBAC permissions not currently held",
        );
        assert!(matches!(failed("ClusterRole x".into(), rbac, 0), Pass::Refused { .. }));
        assert!(matches!(failed("ConfigMap a/b".into(), status(409, "Conflict", "x"), 0), Pass::Waiting { .. }));
    }
}
