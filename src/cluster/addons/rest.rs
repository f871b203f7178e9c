//! Where an object lives in the Kubernetes API, from the API's own discovery documents
//! (`GET /api/v1`, `GET /apis/<group>/<version>`: `APIResourceList`s), as kubectl's REST mapper
//! finds it: the resource's plural name and whether it is namespaced. Pure.

use std::collections::HashMap;

use serde::Deserialize;

use super::manifest::Object;

/// One `APIResourceList` as the API server sends it (the fields read).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResourceList {
    pub group_version: String,
    #[serde(default)]
    pub resources: Vec<ApiResource>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ApiResource {
    /// The plural (`deployments`), or a subresource (`deployments/scale`).
    pub name: String,
    pub namespaced: bool,
    pub kind: String,
}

/// The discovery path of an `apiVersion`: `/api/v1` for the core group, `/apis/<g>/<v>` else.
pub fn discovery_path(api_version: &str) -> String {
    if api_version.contains('/') { format!("/apis/{api_version}") } else { format!("/api/{api_version}") }
}

/// What the API serves, by `(apiVersion, kind)`.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    resources: HashMap<(String, String), (String, bool)>,
}

/// Where an object is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The object's own path: `/apis/apps/v1/namespaces/argocd/deployments/argocd-server`.
    pub path: String,
    /// The namespace it goes into, when its kind is namespaced.
    pub namespace: Option<String>,
}

/// Why an object has no place (yet).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unplaced {
    /// The API does not serve this kind (yet: a CRD applied just before may not be established).
    #[error("the API serves no {kind} in {api_version}")]
    UnknownKind { api_version: String, kind: String },
    #[error("metadata.namespace: a {kind} is namespaced, and neither it nor its set names a namespace")]
    NoNamespace { kind: String },
}

impl Discovery {
    /// Adds what one discovery document lists (subresources left out).
    pub fn add(&mut self, list: &ApiResourceList) {
        for r in list.resources.iter().filter(|r| !r.name.contains('/')) {
            self.resources.insert((list.group_version.clone(), r.kind.clone()), (r.name.clone(), r.namespaced));
        }
    }

    /// Whether anything of `api_version` was discovered.
    pub fn knows(&self, api_version: &str) -> bool {
        self.resources.keys().any(|(v, _)| v == api_version)
    }

    /// The object's path; a namespaced one without a namespace goes into `namespace` (the
    /// set's), a cluster-scoped one ignores any namespace it names.
    pub fn place(&self, object: &Object, namespace: Option<&str>) -> Result<Target, Unplaced> {
        let (api_version, kind) = (object.api_version(), object.kind());
        let Some((plural, namespaced)) = self.resources.get(&(api_version.to_owned(), kind.to_owned())) else {
            return Err(Unplaced::UnknownKind { api_version: api_version.to_owned(), kind: kind.to_owned() });
        };
        let base = discovery_path(api_version);
        let name = segment(object.name());
        if !namespaced {
            return Ok(Target { path: format!("{base}/{plural}/{name}"), namespace: None });
        }
        let ns = object.namespace().or(namespace).ok_or_else(|| Unplaced::NoNamespace { kind: kind.to_owned() })?;
        Ok(Target {
            path: format!("{base}/namespaces/{}/{plural}/{name}", segment(ns)),
            namespace: Some(ns.to_owned()),
        })
    }
}

/// The order a set is applied in: CustomResourceDefinitions first (their kinds are needed by
/// what follows), then Namespaces, then everything else as written.
pub fn ordered(objects: &[Object]) -> Vec<&Object> {
    let rank = |o: &Object| match (o.api_version(), o.kind()) {
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => 0,
        ("v1", "Namespace") => 1,
        _ => 2,
    };
    let mut out: Vec<&Object> = objects.iter().collect();
    out.sort_by_key(|o| rank(o));
    out
}

/// A path segment: names are DNS labels or subdomains, RBAC's may hold `:`; anything else is
/// percent-encoded.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::addons::manifest::parse;

    /// Discovery documents shaped as kube-apiserver 1.32 sends them (trimmed to a few resources).
    fn discovery() -> Discovery {
        let core = r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[
            {"name":"configmaps","singularName":"configmap","namespaced":true,"kind":"ConfigMap","verbs":["create","delete","get","list","patch","update","watch"],"shortNames":["cm"]},
            {"name":"namespaces","singularName":"namespace","namespaced":false,"kind":"Namespace","verbs":["create","delete","get","list","patch","update","watch"],"shortNames":["ns"]},
            {"name":"namespaces/status","singularName":"","namespaced":false,"kind":"Namespace","verbs":["get","patch","update"]}]}"#;
        let apps = r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"apps/v1","resources":[
            {"name":"deployments","singularName":"deployment","namespaced":true,"kind":"Deployment","verbs":["create","delete","get","list","patch","update","watch"],"shortNames":["deploy"],"categories":["all"]},
            {"name":"deployments/scale","singularName":"","namespaced":true,"group":"autoscaling","version":"v1","kind":"Scale","verbs":["get","patch","update"]}]}"#;
        let rbac = r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"rbac.authorization.k8s.io/v1","resources":[
            {"name":"clusterroles","singularName":"clusterrole","namespaced":false,"kind":"ClusterRole","verbs":["create","delete","get","list","patch","update","watch"]}]}"#;
        let mut d = Discovery::default();
        for text in [core, apps, rbac] {
            d.add(&serde_json::from_str(text).expect("APIResourceList"));
        }
        d
    }

    fn object(yaml: &str) -> Object {
        parse("t.yaml", yaml.as_bytes()).expect("parses").remove(0)
    }

    #[test]
    fn objects_are_placed_by_the_apis_own_discovery() {
        let d = discovery();
        let deploy = object("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: argocd-server}\n");
        assert_eq!(
            d.place(&deploy, Some("argocd")),
            Ok(Target {
                path: "/apis/apps/v1/namespaces/argocd/deployments/argocd-server".into(),
                namespace: Some("argocd".into())
            })
        );
        let own = object("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: kube-system}\n");
        assert_eq!(d.place(&own, Some("argocd")).expect("placed").path, "/api/v1/namespaces/kube-system/configmaps/cm");
        let ns = object("apiVersion: v1\nkind: Namespace\nmetadata: {name: argocd, namespace: ignored}\n");
        assert_eq!(d.place(&ns, None), Ok(Target { path: "/api/v1/namespaces/argocd".into(), namespace: None }));
        let role = object(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: \"system:argocd\"}\n",
        );
        assert_eq!(
            d.place(&role, None).expect("placed").path,
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:argocd"
        );
        assert_eq!(d.place(&deploy, None), Err(Unplaced::NoNamespace { kind: "Deployment".into() }));
        let app = object("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: root}\n");
        assert!(matches!(d.place(&app, Some("argocd")), Err(Unplaced::UnknownKind { .. })));
        assert!(d.knows("apps/v1") && !d.knows("argoproj.io/v1alpha1"));
        assert_eq!(discovery_path("v1"), "/api/v1");
        assert_eq!(discovery_path("argoproj.io/v1alpha1"), "/apis/argoproj.io/v1alpha1");
    }

    #[test]
    fn definitions_and_namespaces_go_first_and_the_rest_keep_their_order() {
        let objects = parse(
            "t.yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: apps.argoproj.io}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
        )
        .expect("parses");
        let names: Vec<&str> = ordered(&objects).iter().map(|o| o.name()).collect();
        assert_eq!(names, ["apps.argoproj.io", "n", "a", "b"]);
    }
}
