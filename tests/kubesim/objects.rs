//! Objects applied with server-side apply (`PATCH` with `application/apply-patch+yaml` and a
//! `fieldManager`), as kube-apiserver 1.32 takes them: the resources it serves for what
//! add-ons carry (with their real plurals and scopes), plus those of each
//! CustomResourceDefinition once it is established — from the request after the one that
//! applied it, as a real API server needs a moment to serve a new CRD. Its refusals have the API's shapes
//! and messages: an unknown resource (404, "the server could not find the requested
//! resource"), a namespace that does not exist (404 `namespaces "x" not found`), a name or
//! namespace that disagrees with the URL (400), a Secret's `stringData` kept as base64 `data`
//! (never returned as written), a Deployment without a selector (422
//! `spec.selector: Required value`), no field manager (400), another content type (415), an
//! object another field manager applied, unforced (409 conflict).
//! An object with a `spec` has a `metadata.generation`, 1 when made and one more each time its
//! spec changes. Workloads roll out as their controllers write it: applied, a Deployment,
//! StatefulSet or DaemonSet keeps the status it had (none when new: the controller has not seen
//! the spec); the first read shows that, and from the second on the controller has seen the
//! current generation and every replica is updated and available — or, while rollouts are
//! held, updated and unavailable.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// One served resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub group_version: String,
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
}

fn builtin() -> Vec<Resource> {
    let r = |gv: &str, plural: &str, kind: &str, namespaced: bool| Resource {
        group_version: gv.into(),
        plural: plural.into(),
        kind: kind.into(),
        namespaced,
    };
    vec![
        r("v1", "namespaces", "Namespace", false),
        r("v1", "nodes", "Node", false),
        r("v1", "configmaps", "ConfigMap", true),
        r("v1", "secrets", "Secret", true),
        r("v1", "services", "Service", true),
        r("v1", "serviceaccounts", "ServiceAccount", true),
        r("apps/v1", "deployments", "Deployment", true),
        r("apps/v1", "statefulsets", "StatefulSet", true),
        r("apps/v1", "daemonsets", "DaemonSet", true),
        r("rbac.authorization.k8s.io/v1", "roles", "Role", true),
        r("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", true),
        r("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", false),
        r("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", false),
        r("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", true),
        r("networking.k8s.io/v1", "ingresses", "Ingress", true),
        r("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", false),
    ]
}

/// Applied objects and the resources served.
#[derive(Debug)]
pub struct Objects {
    /// By path (`/apis/apps/v1/namespaces/argocd/deployments/argocd-server`).
    pub stored: BTreeMap<String, Value>,
    resources: Vec<Resource>,
    /// CRDs applied and not yet served: their resources, served from the next request on.
    pending: Vec<Resource>,
    /// Every apply that took, by path, in order.
    pub applied: Vec<String>,
    /// Deployments stay unavailable.
    pub rollouts_held: bool,
    uid: u64,
}

impl Default for Objects {
    fn default() -> Self {
        let mut stored = BTreeMap::new();
        for ns in ["default", "kube-system", "kube-public"] {
            stored.insert(
                format!("/api/v1/namespaces/{ns}"),
                json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }),
            );
        }
        Objects { stored, resources: builtin(), pending: Vec::new(), applied: Vec::new(), rollouts_held: false, uid: 0 }
    }
}

/// A refusal: status code, reason, message.
pub type Refusal = (u16, &'static str, String);

impl Objects {
    /// The group versions served, for `/apis` (core `v1` aside).
    pub fn group_versions(&self) -> BTreeSet<String> {
        self.resources.iter().map(|r| r.group_version.clone()).filter(|gv| gv.contains('/')).collect()
    }

    /// The resources of `group_version`, or `None` when it serves none.
    pub fn discovery(&self, group_version: &str) -> Option<Vec<(String, String, bool)>> {
        let served: Vec<(String, String, bool)> = self
            .resources
            .iter()
            .filter(|r| r.group_version == group_version)
            .map(|r| (r.plural.clone(), r.kind.clone(), r.namespaced))
            .collect();
        (!served.is_empty()).then_some(served)
    }

    /// k3s's own kinds, served from its CRDs from the start: `Addon` (what its auto-deploy
    /// directory applied) and `HelmChart`.
    pub fn serve_k3s(&mut self) {
        for (gv, plural, kind) in
            [("k3s.cattle.io/v1", "addons", "Addon"), ("helm.cattle.io/v1", "helmcharts", "HelmChart")]
        {
            self.resources.push(Resource {
                group_version: gv.into(),
                plural: plural.into(),
                kind: kind.into(),
                namespaced: true,
            });
        }
    }

    /// Where `object` lives (`default` for a namespaced one that names no namespace, as
    /// kubectl and k3s's deploy controller place it), or `None` for a kind not served.
    pub fn path_of(&self, object: &Value) -> Option<String> {
        let (gv, kind) = (object["apiVersion"].as_str()?, object["kind"].as_str()?);
        let r = self.resources.iter().find(|r| r.group_version == gv && r.kind == kind)?;
        let base = if gv.contains('/') { format!("/apis/{gv}") } else { format!("/api/{gv}") };
        let name = object["metadata"]["name"].as_str()?;
        Some(match r.namespaced {
            true => format!(
                "{base}/namespaces/{}/{}/{name}",
                object["metadata"]["namespace"].as_str().unwrap_or("default"),
                r.plural
            ),
            false => format!("{base}/{}/{name}", r.plural),
        })
    }

    /// CRDs applied before this request are established now: their kinds are served.
    pub fn settle(&mut self) {
        for r in std::mem::take(&mut self.pending) {
            self.establish(&r);
            self.resources.push(r);
        }
    }

    fn establish(&mut self, r: &Resource) {
        let (group, _) = r.group_version.split_once('/').unwrap_or(("", ""));
        let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{}.{group}", r.plural);
        if let Some(crd) = self.stored.get_mut(&path) {
            crd["status"]["conditions"] = json!([
                { "type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found" },
                { "type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted" },
            ]);
        }
    }

    /// The object at `path`, as a GET reads it.
    pub fn get(&mut self, path: &str) -> Option<Value> {
        let held = self.rollouts_held;
        let object = self.stored.get_mut(path)?;
        let answer = object.clone();
        if let Some(status) = workload_status(object, !held) {
            object["status"] = status;
        }
        Some(answer)
    }

    /// Server-side apply of `body` at `path`: (created, the object as stored).
    pub fn apply(
        &mut self,
        path: &str,
        content_type: &str,
        query: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<(bool, Value), Refusal> {
        if !content_type.starts_with("application/apply-patch+yaml") {
            return Err((
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (not {content_type})"
                ),
            ));
        }
        if query.get("fieldManager").is_none_or(|m| m.is_empty()) {
            return Err((
                400,
                "BadRequest",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
                    .into(),
            ));
        }
        let (resource, namespace, name) = self.locate(path)?;
        let mut object: Value =
            serde_norway::from_slice(body).map_err(|e| (400, "BadRequest", format!("error decoding YAML: {e}")))?;
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        if object["apiVersion"] != resource.group_version.as_str() || kind != resource.kind {
            return Err((
                400,
                "BadRequest",
                format!(
                    "the API version in the data ({}) does not match the expected API version ({})",
                    object["apiVersion"].as_str().unwrap_or_default(),
                    resource.group_version
                ),
            ));
        }
        if object["metadata"]["name"] != name.as_str() {
            return Err((
                400,
                "BadRequest",
                format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    object["metadata"]["name"].as_str().unwrap_or_default()
                ),
            ));
        }
        if let Some(ns) = &namespace {
            if object["metadata"]["namespace"].as_str().is_some_and(|n| n != ns) {
                return Err((
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            if !self.stored.contains_key(&format!("/api/v1/namespaces/{ns}")) {
                return Err((404, "NotFound", format!("namespaces \"{ns}\" not found")));
            }
        }
        if kind == "Deployment" && object["spec"]["selector"].is_null() {
            return Err((
                422,
                "Invalid",
                format!("Deployment.apps \"{name}\" is invalid: spec.selector: Required value"),
            ));
        }
        let previous = self.stored.get(path).cloned();
        // Another manager's object is taken over only with force (slipway always forces).
        let owner =
            previous.as_ref().and_then(|p| p["metadata"]["managedFields"][0]["manager"].as_str().map(str::to_owned));
        if let Some(owner) = owner.filter(|o| Some(o) != query.get("fieldManager"))
            && query.get("force").map(String::as_str) != Some("true")
        {
            return Err((
                409,
                "Conflict",
                format!(
                    "Apply failed with 1 conflict: conflict with \"{owner}\" using {}: .spec",
                    resource.group_version
                ),
            ));
        }
        self.uid += 1;
        let meta =
            object["metadata"].as_object_mut().ok_or((400, "BadRequest", "metadata: must be an object".to_owned()))?;
        let uid = previous
            .as_ref()
            .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("0a1b2c3d-0000-4000-8000-{:012}", self.uid));
        meta.insert("uid".into(), json!(uid));
        meta.insert("resourceVersion".into(), json!((1000 + self.uid).to_string()));
        meta.insert("managedFields".into(), json!([{ "manager": query["fieldManager"], "operation": "Apply", "apiVersion": resource.group_version, "fieldsType": "FieldsV1" }]));
        if let Some(ns) = &namespace {
            meta.insert("namespace".into(), json!(ns));
        }
        if object.get("spec").is_some() {
            let before = previous.as_ref().map(|p| (&p["spec"], p["metadata"]["generation"].as_u64().unwrap_or(1)));
            let generation = match before {
                None => 1,
                Some((spec, generation)) if *spec == object["spec"] => generation,
                Some((_, generation)) => generation + 1,
            };
            object["metadata"]["generation"] = json!(generation);
        }
        match kind.as_str() {
            // The API keeps a Secret's stringData as base64 data and never returns it.
            "Secret" => {
                if let Some(Value::Object(plain)) = object.as_object_mut().and_then(|o| o.remove("stringData")) {
                    use base64::Engine;
                    for (key, value) in plain {
                        let encoded =
                            base64::engine::general_purpose::STANDARD.encode(value.as_str().unwrap_or_default());
                        object["data"][key] = json!(encoded);
                    }
                }
            }
            "Deployment" | "StatefulSet" | "DaemonSet" => {
                object["status"] = previous.as_ref().map_or_else(|| json!({}), |p| p["status"].clone())
            }
            "CustomResourceDefinition" => {
                if previous.is_none() {
                    object["status"] = json!({ "conditions": [{ "type": "NamesAccepted", "status": "True", "reason": "NoConflicts" }, { "type": "Established", "status": "False", "reason": "Installing" }] });
                    self.pending.extend(crd_resources(&object));
                } else if let Some(p) = &previous {
                    object["status"] = p["status"].clone();
                }
            }
            _ => {}
        }
        self.stored.insert(path.to_owned(), object.clone());
        self.applied.push(path.to_owned());
        Ok((previous.is_none(), object))
    }

    /// The resource, namespace and name a path names.
    fn locate(&self, path: &str) -> Result<(Resource, Option<String>, String), Refusal> {
        let unknown = || (404, "NotFound", "the server could not find the requested resource".to_owned());
        let (group_version, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
            ("v1".to_owned(), rest)
        } else {
            let rest = path.strip_prefix("/apis/").ok_or_else(unknown)?;
            let mut parts = rest.splitn(3, '/');
            let (g, v, rest) = (
                parts.next().ok_or_else(unknown)?,
                parts.next().ok_or_else(unknown)?,
                parts.next().ok_or_else(unknown)?,
            );
            (format!("{g}/{v}"), rest)
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let (namespace, plural, name) = match segments[..] {
            ["namespaces", ns, plural, name] => (Some(ns.to_owned()), plural, name),
            [plural, name] => (None, plural, name),
            _ => return Err(unknown()),
        };
        let resource = self
            .resources
            .iter()
            .find(|r| r.group_version == group_version && r.plural == plural)
            .ok_or_else(unknown)?;
        if resource.namespaced != namespace.is_some() {
            return Err(unknown());
        }
        Ok((resource.clone(), namespace, name.to_owned()))
    }
}

/// The resources a CRD defines (every served version).
fn crd_resources(crd: &Value) -> Vec<Resource> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let namespaced = spec["scope"] == "Namespaced";
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"] != false)
        .map(|v| Resource {
            group_version: format!("{group}/{}", v["name"].as_str().unwrap_or_default()),
            plural: spec["names"]["plural"].as_str().unwrap_or_default().to_owned(),
            kind: spec["names"]["kind"].as_str().unwrap_or_default().to_owned(),
            namespaced,
        })
        .collect()
}

/// A workload's status once its controller saw its current generation: every replica updated,
/// and available (or not), in the fields each controller writes; `None` for other kinds.
fn workload_status(object: &Value, available: bool) -> Option<Value> {
    let generation = object["metadata"]["generation"].as_u64().unwrap_or(1);
    let replicas = object["spec"]["replicas"].as_u64().unwrap_or(1);
    let up = if available { replicas } else { 0 };
    Some(match object["kind"].as_str()? {
        "Deployment" => {
            let (status, reason, message) = if available {
                ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
            } else {
                ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
            };
            let progress = if available { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" };
            json!({ "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                "readyReplicas": up, "availableReplicas": up, "unavailableReplicas": replicas - up,
                "conditions": [
                    { "type": "Available", "status": status, "reason": reason, "message": message },
                    { "type": "Progressing", "status": "True", "reason": progress },
                ] })
        }
        "StatefulSet" => {
            let revision = format!("{}-{generation:x}", object["metadata"]["name"].as_str().unwrap_or("sts"));
            json!({ "observedGeneration": generation, "replicas": replicas, "readyReplicas": up,
                "availableReplicas": up, "currentReplicas": replicas, "updatedReplicas": replicas,
                "currentRevision": revision, "updateRevision": revision })
        }
        "DaemonSet" => {
            // One pod per node of a two-node cluster.
            json!({ "observedGeneration": generation, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                "updatedNumberScheduled": 2, "numberReady": if available { 2 } else { 0 },
                "numberAvailable": if available { 2 } else { 0 } })
        }
        _ => return None,
    })
}
