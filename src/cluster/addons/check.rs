//! What a definition's `addons` must be before it is accepted (pure): unique names, one source
//! each (an absolute `path`, or an `image` inside the images directory), namespaces that are
//! DNS labels, `create_namespace` with a namespace to create, `at_install` for k3s only (and
//! without a namespace of the set's: k3s applies the objects as written), a
//! `wait_for` that names its object, and a timeout between 1 s and 7 days. Reading the files
//! is the caller's (see [`super::manifest`]).

use std::collections::HashSet;
use std::time::Duration;

use crate::cluster::definition::{AddonSet, Definition, MAX_PHASE, Problem};
use crate::inventory::ClusterKind;

/// How long a set may take unless its `timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Every problem of `def.addons`.
pub fn check(def: &Definition) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut add = |field: String, value: &str, message: &str| {
        problems.push(Problem { field, value: value.to_owned(), message: message.to_owned() });
    };
    let mut names = HashSet::new();
    for (i, set) in def.addons.iter().enumerate() {
        let at = |f: &str| format!("addons[{i}].{f}");
        if !names.insert(set.name.as_str()) {
            add(at("name"), set.name.as_str(), "another add-on has this name");
        }
        match (&set.path, &set.image) {
            (Some(_), Some(_)) | (None, None) => {
                add(format!("addons[{i}]"), set.name.as_str(), "needs one of path or image")
            }
            (Some(path), None) if !path.is_absolute() => {
                add(at("path"), &path.display().to_string(), "must be absolute (a path on the slipway host)")
            }
            (None, Some(image)) => {
                if let Err(refusal) = crate::confine::relative(image) {
                    add(at("image"), image, &format!("not a path inside the images directory: {refusal}"));
                }
            }
            _ => {}
        }
        if let Some(ns) = &set.namespace
            && !is_label(ns)
        {
            add(at("namespace"), ns, "not a namespace name (lower-case letters, digits and '-', at most 63)");
        }
        if set.create_namespace && set.namespace.is_none() {
            add(at("create_namespace"), "true", "needs a namespace to create");
        }
        if set.at_install && def.kind != ClusterKind::K3s {
            add(at("at_install"), "true", "only k3s applies manifests of its own at install");
        } else if set.at_install {
            // k3s applies the file as written: a namespace is the objects' own to name.
            if let Some(ns) = &set.namespace {
                add(at("namespace"), ns, "k3s applies an at_install set as written: name the namespace in its objects");
            }
            if set.create_namespace {
                add(
                    at("create_namespace"),
                    "true",
                    "k3s applies an at_install set as written: put the Namespace in the set",
                );
            }
        }
        check_wait(i, set, &mut add);
        if let Some(d) = set.timeout
            && (d < Duration::from_secs(1) || d > MAX_PHASE)
        {
            add(at("timeout"), &crate::inventory::types::format_duration(d), "must be between 1s and 7days");
        }
    }
    problems
}

fn check_wait(i: usize, set: &AddonSet, add: &mut impl FnMut(String, &str, &str)) {
    let Some(wait) = &set.wait_for else { return };
    let at = |f: &str| format!("addons[{i}].wait_for.{f}");
    if wait.kind.is_empty() {
        add(at("kind"), "", "must name a kind (Deployment, CustomResourceDefinition, ...)");
    }
    if wait.name.is_empty() {
        add(at("name"), "", "must name the object");
    }
    if let Some(ns) = &wait.namespace
        && !is_label(ns)
    {
        add(at("namespace"), ns, "not a namespace name (lower-case letters, digits and '-', at most 63)");
    }
    if let Some(v) = &wait.api_version
        && !super::manifest::api_version_ok(v)
    {
        add(at("api_version"), v, "not [group/]version (apps/v1, argoproj.io/v1alpha1)");
    }
    if wait.condition.as_deref().is_some_and(str::is_empty) {
        add(at("condition"), "", "must name a condition type (Available, Ready, ...)");
    }
}

/// An RFC 1123 label, as Kubernetes wants a namespace.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(kind: &str, addons: &str) -> Definition {
        let yaml = format!(
            "name: edge\nkind: {kind}\nbase_domain: lab.example\nnetwork: cluster\napi_address: 192.0.2.10\n\
             api_int_address: 10.1.107.1\ningress_address: 192.0.2.10\naddons:\n{addons}"
        );
        serde_norway::from_str(&yaml).expect("definition")
    }

    fn fields(problems: &[Problem]) -> Vec<String> {
        problems.iter().map(|p| format!("{} = {}", p.field, p.value)).collect()
    }

    #[test]
    fn sound_addons_pass() {
        let def = definition(
            "k3s",
            "  - { name: argocd, image: argocd/install.yaml, namespace: argocd, create_namespace: true, \
             wait_for: { kind: Deployment, name: argocd-server, namespace: argocd }, timeout: 15m }\n  \
             - { name: apps, path: /etc/slipway/addons/apps }\n",
        );
        assert_eq!(fields(&check(&def)), Vec::<String>::new());
    }

    #[test]
    fn each_bad_addon_field_is_named_with_its_value() {
        let def = definition(
            "okd",
            "  - { name: a, path: relative/dir }\n  - { name: a, image: ../etc/passwd, namespace: Argo_CD }\n  \
             - { name: b }\n  - { name: c, path: /x, image: y }\n  - { name: d, path: /x, create_namespace: true, at_install: true, timeout: 0s }\n  \
             - { name: e, path: /x, wait_for: { kind: '', name: '', condition: '' } }\n",
        );
        assert_eq!(
            fields(&check(&def)),
            [
                "addons[0].path = relative/dir",
                "addons[1].name = a",
                "addons[1].image = ../etc/passwd",
                "addons[1].namespace = Argo_CD",
                "addons[2] = b",
                "addons[3] = c",
                "addons[4].create_namespace = true",
                "addons[4].at_install = true",
                "addons[4].timeout = 0s",
                "addons[5].wait_for.kind = ",
                "addons[5].wait_for.name = ",
                "addons[5].wait_for.condition = ",
            ]
        );
    }

    #[test]
    fn a_k3s_at_install_set_names_its_namespaces_itself() {
        let def = definition(
            "k3s",
            "  - { name: ingress, path: /srv/ingress, at_install: true, wait_for: { kind: Deployment, name: web, namespace: web } }\n  \
             - { name: web, path: /srv/web, at_install: true, namespace: web, create_namespace: true }\n",
        );
        assert_eq!(fields(&check(&def)), ["addons[1].namespace = web", "addons[1].create_namespace = true"]);
    }
}
