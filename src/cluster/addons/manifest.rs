//! A manifest set's objects, read from disk: one YAML or JSON file, or every `.yaml`, `.yml`
//! and `.json` file of a directory (not its subdirectories) in name order, as `kubectl apply -f`
//! reads them. A file may hold several documents; empty ones are skipped and a `v1` `List` is
//! opened into its items. Every object must name its `apiVersion`, `kind` and
//! `metadata.name`; an error names the file, the document and the field. The set's content
//! hash (over the files' names and bytes) says whether it changed since it was applied.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use sha2::Digest;

/// Largest manifest file read (Argo CD's whole install manifest is under 2 MiB).
pub const MAX_FILE: u64 = 32 << 20;

/// One object of a set, with where it came from (`install.yaml document 3`).
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub value: Value,
    pub origin: String,
}

impl Object {
    pub fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"].as_str()
    }

    /// `Kind namespace/name` (or `Kind name`), for messages.
    pub fn label(&self) -> String {
        self.label_in(None)
    }

    /// The label with the namespace it goes into when it names none.
    pub fn label_in(&self, namespace: Option<&str>) -> String {
        match self.namespace().or(namespace) {
            Some(ns) => format!("{} {ns}/{}", self.kind(), self.name()),
            None => format!("{} {}", self.kind(), self.name()),
        }
    }
}

/// A set as read: its objects in file and document order, and its content hash.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    pub objects: Vec<Object>,
    /// SHA-256 (hex) over each file's name and bytes.
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {size} bytes, more than a manifest's {MAX_FILE}")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path}: no .yaml, .yml or .json file in the directory")]
    Empty { path: PathBuf },
    #[error("{origin}: {message}")]
    Document { origin: String, message: String },
}

/// Reads the set at `path` (a file or a directory).
pub fn load(path: &Path) -> Result<Loaded, ManifestError> {
    let io = |source| ManifestError::Io { path: path.to_owned(), source };
    let files = if std::fs::metadata(path).map_err(io)?.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ManifestError::Empty { path: path.to_owned() });
        }
        files
    } else {
        vec![path.to_owned()]
    };
    let mut hash = sha2::Sha256::new();
    let mut objects = Vec::new();
    for file in files {
        let io = |source| ManifestError::Io { path: file.clone(), source };
        let size = std::fs::metadata(&file).map_err(io)?.len();
        if size > MAX_FILE {
            return Err(ManifestError::TooLarge { path: file, size });
        }
        let bytes = std::fs::read(&file).map_err(io)?;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        hash.update((name.len() as u64).to_be_bytes());
        hash.update(name.as_bytes());
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(&bytes);
        objects.extend(parse(&name, &bytes)?);
    }
    Ok(Loaded { objects, hash: hex(&hash.finalize()) })
}

/// The objects of one file's text: every document, `List`s opened.
pub fn parse(name: &str, bytes: &[u8]) -> Result<Vec<Object>, ManifestError> {
    let mut out = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_slice(bytes).enumerate() {
        let origin = format!("{name} document {}", index + 1);
        let value = Value::deserialize(document)
            .map_err(|e| ManifestError::Document { origin: origin.clone(), message: format!("not YAML: {e}") })?;
        match value {
            Value::Null => continue,
            Value::Object(_) if value["kind"] == "List" && value["apiVersion"] == "v1" => {
                let items = value["items"].as_array().cloned().unwrap_or_default();
                for (i, item) in items.into_iter().enumerate() {
                    out.push(checked(item, format!("{origin} item {}", i + 1))?);
                }
            }
            Value::Object(_) => out.push(checked(value, origin)?),
            _ => {
                return Err(ManifestError::Document { origin, message: "not a Kubernetes object (a mapping)".into() });
            }
        }
    }
    Ok(out)
}

fn checked(value: Value, origin: String) -> Result<Object, ManifestError> {
    let missing =
        |field: &str| ManifestError::Document { origin: origin.clone(), message: format!("{field}: missing") };
    for (field, present) in [
        ("apiVersion", value["apiVersion"].as_str().is_some_and(|s| !s.is_empty())),
        ("kind", value["kind"].as_str().is_some_and(|s| !s.is_empty())),
        ("metadata.name", value["metadata"]["name"].as_str().is_some_and(|s| !s.is_empty())),
    ] {
        if !present {
            return Err(missing(field));
        }
    }
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    if !api_version_ok(api_version) {
        return Err(ManifestError::Document {
            origin,
            message: format!("apiVersion: '{}' is not [group/]version", crate::inventory::types::shown(api_version)),
        });
    }
    if value["metadata"]["namespace"].as_str().is_some_and(str::is_empty) {
        let mut value = value;
        if let Some(meta) = value["metadata"].as_object_mut() {
            meta.remove("namespace");
        }
        return checked(value, origin);
    }
    if value["metadata"].get("generateName").is_some() {
        return Err(ManifestError::Document {
            origin,
            message: "metadata.generateName: server-side apply needs a fixed name".into(),
        });
    }
    Ok(Object { value, origin })
}

/// `v1`, `apps/v1`, `argoproj.io/v1alpha1`: a DNS subdomain group (optional) and a version of
/// lower-case letters and digits; nothing that could leave its place in a URL.
pub fn api_version_ok(text: &str) -> bool {
    let (group, version) = text.rsplit_once('/').unwrap_or(("", text));
    let group_ok = group.is_empty()
        || (group.len() <= 253
            && group.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            }));
    let version_ok = version.len() <= 63
        && version.starts_with('v')
        && version.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    group_ok && version_ok
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_read_in_order_with_empty_ones_skipped_and_lists_opened() {
        let text = b"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: argocd\n---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a, namespace: argocd}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b, namespace: argocd}\n";
        let objects = parse("install.yaml", text).expect("parses");
        let labels: Vec<String> = objects.iter().map(Object::label).collect();
        assert_eq!(labels, ["Namespace argocd", "ConfigMap argocd/a", "ConfigMap argocd/b"]);
        assert_eq!(objects[2].origin, "install.yaml document 3 item 2");
    }

    #[test]
    fn an_object_without_its_identity_is_named_by_file_document_and_field() {
        let err = parse(
            "x.yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\nkind: Secret\nmetadata: {name: s}\n",
        )
        .expect_err("no apiVersion");
        assert_eq!(err.to_string(), "x.yaml document 2: apiVersion: missing");
        let err = parse("x.yaml", b"- a\n- b\n").expect_err("a sequence");
        assert!(err.to_string().starts_with("x.yaml document 1: not a Kubernetes object"), "{err}");
        let err =
            parse("x.yaml", b"apiVersion: v1\nkind: Pod\nmetadata: {generateName: p-}\n").expect_err("generateName");
        assert!(err.to_string().contains("metadata.name: missing"), "{err}");
        let err =
            parse("x.yaml", b"apiVersion: v1\nkind: Pod\nmetadata: {name: p, generateName: p-}\n").expect_err("both");
        assert!(err.to_string().contains("metadata.generateName"), "{err}");
        let err = parse("x.yaml", b"apiVersion: ../../v1\nkind: Pod\nmetadata: {name: p}\n").expect_err("path");
        assert!(err.to_string().contains("apiVersion: '../../v1' is not [group/]version"), "{err}");
        let empty =
            parse("x.yaml", b"apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ''}\n").expect("empty ns");
        assert_eq!(empty[0].namespace(), None, "an empty namespace is none");
        assert!(api_version_ok("argoproj.io/v1alpha1") && api_version_ok("v1") && !api_version_ok("apps/v1?x=1"));
        let err = parse("x.yaml", b"apiVersion: v1\nkind: [\n").expect_err("syntax");
        assert!(err.to_string().starts_with("x.yaml document 1: not YAML"), "{err}");
    }

    /// Argo CD's own manifest, as its release ships it.
    #[test]
    fn argo_cds_released_manifest_reads_whole() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/addons/argocd-v3.5.1-namespace-install.yaml");
        let loaded = load(&path).expect("Argo CD's manifest reads");
        assert_eq!(loaded.objects.len(), 50);
        assert!(loaded.objects.iter().all(|o| o.namespace().is_none()), "kubectl -n supplies the namespace");
        let deployments: Vec<&str> =
            loaded.objects.iter().filter(|o| o.kind() == "Deployment").map(Object::name).collect();
        assert!(
            deployments.contains(&"argocd-server") && deployments.contains(&"argocd-repo-server"),
            "{deployments:?}"
        );
        assert_eq!(loaded.objects.iter().filter(|o| o.kind() == "StatefulSet").count(), 1);
    }

    #[test]
    fn a_directory_is_read_in_name_order_and_its_hash_follows_its_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("b.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n").expect("b");
        std::fs::write(dir.path().join("a.json"), r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#)
            .expect("a");
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").expect("txt");
        let first = load(dir.path()).expect("loads");
        assert_eq!(first.objects.iter().map(Object::name).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(load(dir.path()).expect("again").hash, first.hash, "the same content, the same hash");
        std::fs::write(dir.path().join("b.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b2}\n")
            .expect("b");
        assert_ne!(load(dir.path()).expect("changed").hash, first.hash);
        let empty = tempfile::tempdir().expect("tempdir");
        assert!(matches!(load(empty.path()), Err(ManifestError::Empty { .. })));
        assert!(matches!(load(&dir.path().join("missing")), Err(ManifestError::Io { .. })));
    }
}
