//! The parts of Kubernetes and OpenShift objects slipway reads, as the API serves them
//! (camelCase JSON). Unknown fields are ignored; whatever is written back (a CSR's approval) is
//! the object as read, not these shapes.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `metadata`
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub resource_version: Option<String>,
    /// RFC 3339, e.g. `2026-12-05T03:00:00Z`.
    #[serde(default)]
    pub creation_timestamp: Option<String>,
}

/// A `status.conditions[]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub last_transition_time: Option<String>,
}

/// `{"items": [...]}`
#[derive(Clone, Debug, Deserialize)]
pub struct List<T> {
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
}

/// `GET /version`
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    #[serde(default)]
    pub git_version: String,
}

/// A ConfigMap (`kube-system/bootstrap`: `data.status == "complete"`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ConfigMap {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// Any object whose state is its conditions (`etcds/cluster`, `clusterversions/version`,
/// `clusteroperators`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct WithConditions {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub status: ConditionsStatus,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ConditionsStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl WithConditions {
    /// The condition of this type, if set.
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.status.conditions.iter().find(|c| c.kind == kind)
    }

    /// Whether the condition of this type is `True`.
    pub fn is(&self, kind: &str) -> bool {
        self.condition(kind).is_some_and(|c| c.status == "True")
    }
}

/// A Node: its name and whether it is Ready.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Node {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub status: ConditionsStatus,
}

impl Node {
    pub fn ready(&self) -> bool {
        self.status.conditions.iter().any(|c| c.kind == "Ready" && c.status == "True")
    }
}

/// A CertificateSigningRequest (`certificates.k8s.io/v1`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Csr {
    #[serde(default)]
    pub metadata: Meta,
    pub spec: CsrSpec,
    #[serde(default)]
    pub status: CsrStatus,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsrSpec {
    /// Base64 of the PEM PKCS#10 request.
    pub request: String,
    pub signer_name: String,
    /// Who filed it, as the API server authenticated them.
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub usages: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CsrStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl Csr {
    /// Neither approved nor denied (nor failed) yet.
    pub fn pending(&self) -> bool {
        !self.status.conditions.iter().any(|c| matches!(c.kind.as_str(), "Approved" | "Denied" | "Failed"))
    }
}

/// The path of a CSR's approval subresource.
pub fn approval_path(name: &str) -> String {
    format!("/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/approval")
}

/// `csr` as read (its `resourceVersion` kept, so a stale copy is refused with 409) with an
/// `Approved` condition (`reason`, `message`) added: the body of a PUT to its approval subresource, as `kubectl
/// certificate approve` sends it.
pub fn approved(csr: &serde_json::Value, reason: &str, message: &str, now: &str) -> serde_json::Value {
    let mut body = csr.clone();
    let condition = serde_json::json!({
        "type": "Approved", "status": "True", "reason": reason, "message": message,
        "lastUpdateTime": now, "lastTransitionTime": now,
    });
    // (Whatever the API sent: no indexing that could panic on an odd shape.)
    let Some(object) = body.as_object_mut() else { return body };
    // Items of a list come without these; the PUT carries them as kubectl's does.
    object.insert("apiVersion".into(), "certificates.k8s.io/v1".into());
    object.insert("kind".into(), "CertificateSigningRequest".into());
    let status = object.entry("status").or_insert_with(|| serde_json::json!({}));
    if !status.is_object() {
        *status = serde_json::json!({});
    }
    if let Some(status) = status.as_object_mut() {
        let conditions = status.entry("conditions").or_insert_with(|| serde_json::json!([]));
        match conditions.as_array_mut() {
            Some(list) => list.push(condition),
            None => *conditions = serde_json::json!([condition]),
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_approval_keeps_the_object_and_adds_one_condition() {
        let csr = serde_json::json!({ "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": { "name": "csr-abc", "resourceVersion": "42" }, "spec": { "request": "", "signerName": "x" } });
        let body = approved(&csr, "SlipwayApprove", "node worker-0", "2026-12-05T03:00:00Z");
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        assert_eq!(body["status"]["conditions"][0]["type"], "Approved");
        let twice = approved(&body, "SlipwayApprove", "again", "2026-12-05T03:00:01Z");
        assert_eq!(twice["status"]["conditions"].as_array().map(Vec::len), Some(2));
        let parsed: Csr = serde_json::from_value(body).expect("csr");
        assert!(!parsed.pending());
        let odd = approved(&serde_json::json!({ "metadata": {}, "status": "weird" }), "R", "m", "t");
        assert_eq!(odd["status"]["conditions"][0]["type"], "Approved", "an odd status is replaced, not a panic");
        assert_eq!(approved(&serde_json::json!("not an object"), "R", "m", "t"), serde_json::json!("not an object"));
    }
}
