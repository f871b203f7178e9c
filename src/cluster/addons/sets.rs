//! A definition's add-on sets read from disk, with what each is applied as (its content hash
//! over its files and its settings): the plan checks them, the lifecycle applies them.

use std::path::Path;

use super::autodeploy;
use super::check::DEFAULT_TIMEOUT;
use super::manifest::{self, Loaded};
use super::progress::Wanted;
use crate::boot::cloudinit::WriteFile;
use crate::cluster::definition::{AddonSet, Definition, Problem};

/// Every set of `def` read from disk (`image`s under `images`), or the first that cannot be,
/// named by its field.
pub fn read_sets(def: &Definition, images: &Path) -> Result<Vec<(Wanted, Loaded)>, Problem> {
    def.addons.iter().enumerate().map(|(i, set)| read_set(i, set, images)).collect()
}

/// The files of `def`'s `at_install` sets, read from disk, for the first server's cloud-init
/// to write into k3s's auto-deploy directory.
pub fn install_files(def: &Definition, images: &Path) -> Result<Vec<WriteFile>, Problem> {
    let mut files = Vec::new();
    for (i, set) in def.addons.iter().enumerate().filter(|(_, set)| set.at_install) {
        let (_, loaded) = read_set(i, set, images)?;
        files.push(autodeploy::file(set, &loaded));
    }
    Ok(files)
}

/// The set `addons[i]` read from disk. A Secret is refused where it would be seen by more
/// than the cluster's API: in the images directory (served to the provisioning network) or in
/// an `at_install` set (written into the first server's cloud-init, which the node keeps).
pub fn read_set(i: usize, set: &AddonSet, images: &Path) -> Result<(Wanted, Loaded), Problem> {
    let (field, shown, path) = source(i, set, images);
    let loaded = manifest::load(&path).map_err(|e| Problem {
        field: field.clone(),
        value: shown.clone(),
        message: format!("cannot be read: {e}"),
    })?;
    let exposed = match (set.image.is_some(), set.at_install) {
        (true, _) => {
            Some("the images directory is served to every machine of the provisioning network; give Secrets by path")
        }
        (false, true) => Some(
            "an at_install set is written into the first server's cloud-init, which the node keeps (/var/lib/cloud); give Secrets in a set applied after the install",
        ),
        (false, false) => None,
    };
    if let Some(why) = exposed
        && let Some(secret) = loaded.objects.iter().find(|o| o.kind() == "Secret")
    {
        return Err(Problem { field, value: shown, message: format!("holds a Secret ({}): {why}", secret.origin) });
    }
    let wanted = Wanted {
        name: set.name.clone(),
        hash: content_hash(set, &loaded),
        timeout: set.timeout.unwrap_or(DEFAULT_TIMEOUT),
    };
    Ok((wanted, loaded))
}

/// What a set is applied as: its files and what the definition says of it (namespace,
/// create_namespace, wait_for, ...; its name and timeout aside), so a change to either applies
/// it again.
fn content_hash(set: &AddonSet, loaded: &Loaded) -> String {
    use sha2::Digest;
    let shape = AddonSet { timeout: None, ..set.clone() };
    let mut hash = sha2::Sha256::new();
    hash.update(loaded.hash.as_bytes());
    hash.update(serde_json::to_vec(&shape).unwrap_or_default());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The field a set is read through, its value, and the path read.
fn source(i: usize, set: &AddonSet, images: &Path) -> (String, String, std::path::PathBuf) {
    match (&set.path, &set.image) {
        (Some(path), _) => (format!("addons[{i}].path"), path.display().to_string(), path.clone()),
        (None, Some(image)) => {
            let relative = crate::confine::relative(image).unwrap_or_default();
            (format!("addons[{i}].image"), image.clone(), images.join(relative))
        }
        (None, None) => (format!("addons[{i}]"), set.name.to_string(), std::path::PathBuf::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(dir: &Path, namespace: &str) -> Definition {
        let yaml = format!(
            "name: edge\nkind: k3s\nbase_domain: lab.example\nnetwork: cluster\napi_address: 192.0.2.10\n\
             api_int_address: 10.1.107.1\ningress_address: 192.0.2.10\naddons:\n\
             - {{ name: web, path: {}, namespace: {namespace} }}\n",
            dir.join("web.yaml").display()
        );
        serde_norway::from_str(&yaml).expect("definition")
    }

    #[test]
    fn a_set_applies_again_when_its_files_or_its_settings_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("web.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n")
            .expect("web");
        let hash = |ns: &str| read_sets(&definition(dir.path(), ns), dir.path()).expect("reads")[0].0.hash.clone();
        let first = hash("apps");
        assert_eq!(hash("apps"), first, "nothing changed");
        assert_ne!(hash("web"), first, "another namespace");
        std::fs::write(dir.path().join("web.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web2}\n")
            .expect("web");
        assert_ne!(hash("apps"), first, "other files");
    }

    #[test]
    fn a_secret_in_the_images_directory_is_refused() {
        let images = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(images.path().join("creds")).expect("dir");
        std::fs::write(
            images.path().join("creds/repo.yaml"),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: repo}\nstringData: {password: x}\n",
        )
        .expect("secret");
        let yaml = "name: edge\nkind: k3s\nbase_domain: lab.example\nnetwork: cluster\napi_address: 192.0.2.10\n\
                    api_int_address: 10.1.107.1\ningress_address: 192.0.2.10\naddons:\n- { name: repo, image: creds/repo.yaml }\n";
        let def: Definition = serde_norway::from_str(yaml).expect("definition");
        let problem = read_sets(&def, images.path()).expect_err("refused");
        assert_eq!((problem.field.as_str(), problem.value.as_str()), ("addons[0].image", "creds/repo.yaml"));
        assert!(problem.message.starts_with("holds a Secret (repo.yaml document 1)"), "{}", problem.message);
    }

    #[test]
    fn a_secret_in_an_at_install_set_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("repo.yaml");
        std::fs::write(&file, "apiVersion: v1\nkind: Secret\nmetadata: {name: repo}\nstringData: {password: x}\n")
            .expect("secret");
        let yaml = format!(
            "name: edge\nkind: k3s\nbase_domain: lab.example\nnetwork: cluster\napi_address: 192.0.2.10\n\
             api_int_address: 10.1.107.1\ningress_address: 192.0.2.10\naddons:\n- {{ name: repo, path: {} }}\n\
             - {{ name: early, path: {}, at_install: true }}\n",
            file.display(),
            file.display()
        );
        let def: Definition = serde_norway::from_str(&yaml).expect("definition");
        let problem = read_sets(&def, dir.path()).expect_err("refused");
        assert_eq!(problem.field, "addons[1].path", "the same file by path, applied after the install, is fine");
        assert!(problem.message.contains("first server's cloud-init"), "{}", problem.message);
    }
}
