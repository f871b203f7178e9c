//! k3s `at_install` sets: k3s applies every file of its auto-deploy directory itself
//! (`/var/lib/rancher/k3s/server/manifests`, on each server, at start and whenever a file
//! changes), so such a set goes there as one file, `slipway-<set>.yaml` — the set's objects as
//! read, one JSON document each — written by the first server's own cloud-init as it installs.
//! k3s keeps an `Addon` (`k3s.cattle.io/v1`, `kube-system`, named after the file up to its first
//! dot) whose `spec.checksum` is the SHA-256 of the file it last applied, written only once
//! every object of it applied: that is how slipway knows the set's content is in. A set changed
//! after the install is written to the first server's copy over SSH (`Copier`), and k3s
//! applies it from there; nothing here deletes what k3s applied.

use serde_json::Value;
use sha2::Digest;

use super::manifest::Loaded;
use crate::boot::cloudinit::WriteFile;
use crate::cluster::definition::AddonSet;
use crate::kube::Kube;

/// k3s's auto-deploy directory on a server.
pub const DIRECTORY: &str = "/var/lib/rancher/k3s/server/manifests";

/// The name of the set's file (and of the `Addon` k3s tracks it with) without `.yaml`.
pub fn addon_name(set: &str) -> String {
    format!("slipway-{set}")
}

/// The file the set is in k3s's directory.
pub fn file(set: &AddonSet, loaded: &Loaded) -> WriteFile {
    let documents: Vec<String> =
        loaded.objects.iter().map(|o| serde_json::to_string_pretty(&o.value).unwrap_or_default()).collect();
    WriteFile {
        path: format!("{DIRECTORY}/{}.yaml", addon_name(set.name.as_str())),
        content: format!("{}\n", documents.join("\n---\n")),
    }
}

/// SHA-256 (hex) of a file's bytes, as k3s's `Addon` keeps it.
pub fn checksum(content: &str) -> String {
    sha2::Sha256::digest(content.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// What the first server's copy of a file was found to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copied {
    /// It held the content already.
    Already,
    /// It was written now.
    Written,
}

/// The first server's auto-deploy directory, reached over SSH (k3s's lifecycle implements it).
#[async_trait::async_trait]
pub trait Copier: Send + Sync {
    /// Makes the first server's copy of `file` hold its content; the server's name for messages.
    async fn ensure(&self, file: &WriteFile) -> Result<Copied, String>;

    /// The first server's name.
    fn server(&self) -> &str;
}

/// `Ok(objects)` once k3s applied the set's current file; else what was seen (after asking
/// `copier`, when given, to bring the first server's copy up to date).
pub async fn applied(
    kube: &Kube,
    set: &AddonSet,
    loaded: &Loaded,
    copier: Option<&dyn Copier>,
) -> Result<usize, String> {
    let file = file(set, loaded);
    let want = checksum(&file.content);
    let name = addon_name(set.name.as_str());
    let path = format!("/apis/k3s.cattle.io/v1/namespaces/kube-system/addons/{name}");
    let seen = match kube.get_opt::<Value>(&path).await {
        Err(e) => return Err(format!("Addon kube-system/{name}: {e}")),
        Ok(Some(addon)) if addon["spec"]["checksum"] == want.as_str() => return Ok(loaded.objects.len()),
        Ok(Some(addon)) => match addon["spec"]["checksum"].as_str().filter(|c| !c.is_empty()) {
            Some(other) => format!(
                "k3s last applied other content of {name}.yaml (checksum {}…, not {}…)",
                short(other),
                short(&want)
            ),
            None => format!(
                "k3s has not applied {name}.yaml yet (its Addon has no checksum: an object of it failed? see `kubectl describe addon -n kube-system {name}`)"
            ),
        },
        Ok(None) => format!("k3s has not applied {name}.yaml yet (no Addon kube-system/{name})"),
    };
    let Some(copier) = copier else { return Err(seen) };
    Err(match copier.ensure(&file).await {
        Ok(Copied::Already) => format!("{seen}; {} holds the file", copier.server()),
        Ok(Copied::Written) => format!("{seen}; written to {} now", copier.server()),
        Err(e) => format!("{seen}; {}'s copy cannot be checked: {e}", copier.server()),
    })
}

fn short(sum: &str) -> &str {
    sum.get(..12).unwrap_or(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::addons::manifest::Object;

    #[test]
    fn a_set_becomes_one_file_of_json_documents_named_for_its_addon() {
        let set: AddonSet =
            serde_norway::from_str("{ name: ingress, path: /srv/ingress, at_install: true }").expect("set");
        let objects = vec![
            Object {
                value: serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "on"}}),
                origin: "a.yaml document 1".into(),
            },
            Object {
                value: serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "on"}, "data": {"k": "yes"}}),
                origin: "a.yaml document 2".into(),
            },
        ];
        let f = file(&set, &Loaded { objects, hash: String::new() });
        assert_eq!(f.path, "/var/lib/rancher/k3s/server/manifests/slipway-ingress.yaml");
        // k3s names the Addon after the file up to its first dot: the set's name.
        let base = f.path.rsplit('/').next().and_then(|n| n.split('.').next());
        assert_eq!(base, Some("slipway-ingress"));
        // Go's YAML reader splits documents at `---` lines; each is the object as read
        // (JSON, so `on` and `yes` stay strings for a YAML 1.1 reader too).
        let docs: Vec<serde_json::Value> =
            f.content.split("\n---\n").map(|d| serde_json::from_str(d).expect("JSON")).collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["data"]["k"], "yes");
        assert_eq!(checksum(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
