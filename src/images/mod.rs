//! Image manifests (`images/*.toml`, built into the binary) and what they resolve to: a list of
//! files with URLs and sha256 sums, either written out or read from a CoreOS stream (the
//! metadata coreos-installer reads) or a SHA256SUMS file. Pure; `fetch` downloads.

pub mod fetch;

use serde::Deserialize;

/// The manifests that ship with slipway.
pub const BUILT_IN: [(&str, &str); 5] = [
    ("fedora-coreos", include_str!("../../images/fedora-coreos.toml")),
    ("centos-stream-coreos", include_str!("../../images/centos-stream-coreos.toml")),
    ("ubuntu", include_str!("../../images/ubuntu.toml")),
    ("k3s", include_str!("../../images/k3s.toml")),
    ("argocd", include_str!("../../images/argocd.toml")),
];

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub description: String,
    /// Subdirectory of the images directory the files go to.
    pub dir: String,
    /// A CoreOS stream: the files and sums come from its metadata.
    pub stream: Option<Stream>,
    /// A SHA256SUMS file for `files` without their own `sha256`.
    pub sha256sums: Option<String>,
    #[serde(default)]
    pub files: Vec<File>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    pub url: String,
    pub architecture: String,
    pub artifact: String,
    pub format: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The file's name upstream (and in SHA256SUMS); also its name in `dir` unless `save_as`.
    pub name: String,
    pub url: String,
    pub sha256: Option<String>,
    /// The name it is saved under in `dir` (a stable name profiles can use across releases).
    pub save_as: Option<String>,
    /// Members of the file (a tar archive, gzip-compressed or not) written beside it.
    #[serde(default)]
    pub extract: Vec<Extract>,
}

/// One member of an archive, written as `save_as` in the manifest's `dir`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extract {
    pub member: String,
    pub save_as: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {0}: {1}")]
    Parse(String, String),
    #[error("no manifest named {0} (built in: {1})")]
    Unknown(String, String),
    #[error("stream {url}: {message}")]
    Stream { url: String, message: String },
    #[error("{file}: no sha256 (neither in the manifest nor in {sums})")]
    NoSum { file: String, sums: String },
    #[error("manifest {0}: unsafe file name or directory {1:?}")]
    UnsafeName(String, String),
}

impl Manifest {
    pub fn parse(origin: &str, text: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest =
            toml::from_str(text).map_err(|e| ManifestError::Parse(origin.into(), e.message().to_string()))?;
        let names = m.files.iter().flat_map(|f| {
            std::iter::once(&f.name).chain(&f.save_as).chain(f.extract.iter().flat_map(|e| [&e.member, &e.save_as]))
        });
        for name in std::iter::once(&m.dir).chain(names) {
            if !safe_name(name) {
                return Err(ManifestError::UnsafeName(origin.into(), name.clone()));
            }
        }
        Ok(m)
    }

    /// A built-in manifest by name.
    pub fn built_in(name: &str) -> Result<Manifest, ManifestError> {
        let known: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
        let (_, text) = BUILT_IN
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ManifestError::Unknown(name.into(), known.join(", ")))?;
        Manifest::parse(name, text)
    }
}

/// One relative path segment or a few, no `..`, no absolute path.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && name.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
        && !name.chars().any(|c| c.is_control() || c == '\\')
}

/// A file to download, with the sum it must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// Path under the images directory.
    pub path: String,
    pub url: String,
    pub sha256: String,
    /// Archive members to write out: (member, path under the images directory).
    pub extract: Vec<(String, String)>,
}

/// `url` as served by a mirror that keeps upstream paths under the host's name:
/// `https://releases.ubuntu.com/24.04/x.iso` with mirror `http://m:8080/images/` is
/// `http://m:8080/images/releases.ubuntu.com/24.04/x.iso`. Other URLs (`file:`) are kept.
pub fn mirrored(url: &str, mirror: Option<&str>) -> String {
    let Some(mirror) = mirror else { return url.to_string() };
    match url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) {
        Some(rest) => format!("{}/{rest}", mirror.trim_end_matches('/')),
        None => url.to_string(),
    }
}

/// The files of a CoreOS stream's `architecture.artifact.format` (e.g. x86_64, metal, pxe):
/// kernel, initramfs, rootfs, each with `location` and `sha256`, saved under the artifact's
/// kind (`fcos/kernel`, `fcos/initramfs`, `fcos/rootfs`) so profiles keep their paths when the
/// stream moves to a new release.
pub fn from_stream(m: &Manifest, stream: &Stream, json: &str) -> Result<Vec<Wanted>, ManifestError> {
    let err = |message: String| ManifestError::Stream { url: stream.url.clone(), message };
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| err(format!("not JSON: {e}")))?;
    let formats = &v["architectures"][&stream.architecture]["artifacts"][&stream.artifact]["formats"][&stream.format];
    let files = formats
        .as_object()
        .ok_or_else(|| err(format!("no {}/{}/{} artifacts", stream.architecture, stream.artifact, stream.format)))?;
    let mut out = Vec::new();
    for (kind, entry) in files {
        let (Some(url), Some(sha256)) = (entry["location"].as_str(), entry["sha256"].as_str()) else {
            return Err(err(format!("{kind}: no location or sha256")));
        };
        if !safe_name(kind) || kind.contains('/') {
            return Err(ManifestError::UnsafeName(m.name.clone(), kind.clone()));
        }
        out.push(Wanted {
            path: format!("{}/{kind}", m.dir),
            url: url.to_string(),
            sha256: sha256.to_lowercase(),
            extract: Vec::new(),
        });
    }
    Ok(out)
}

/// The manifest's explicit files, their sums from the manifest or from `sums` (a SHA256SUMS
/// file's text: `<hex> [*]<name>` per line).
pub fn from_files(m: &Manifest, sums: Option<&str>) -> Result<Vec<Wanted>, ManifestError> {
    m.files
        .iter()
        .map(|f| {
            let sha256 = f.sha256.clone().or_else(|| sums.and_then(|s| lookup(s, &f.name))).ok_or_else(|| {
                ManifestError::NoSum {
                    file: f.name.clone(),
                    sums: m.sha256sums.clone().unwrap_or_else(|| "no sha256sums".into()),
                }
            })?;
            Ok(Wanted {
                path: format!("{}/{}", m.dir, f.save_as.as_ref().unwrap_or(&f.name)),
                url: f.url.clone(),
                sha256: sha256.to_lowercase(),
                extract: f.extract.iter().map(|e| (e.member.clone(), format!("{}/{}", m.dir, e.save_as))).collect(),
            })
        })
        .collect()
}

fn lookup(sums: &str, name: &str) -> Option<String> {
    sums.lines().find_map(|line| {
        let (hex, file) = line.split_once(char::is_whitespace)?;
        let file = file.trim_start().trim_start_matches('*');
        (file == name || file.ends_with(&format!("/{name}"))).then(|| hex.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_manifests_parse() {
        for (name, _) in BUILT_IN {
            let m = Manifest::built_in(name).expect("built-in manifest");
            assert_eq!(m.name, name);
            assert!(m.stream.is_some() || !m.files.is_empty(), "{name} names files or a stream");
        }
        assert!(matches!(Manifest::built_in("nope"), Err(ManifestError::Unknown(..))));
    }

    #[test]
    fn a_coreos_stream_gives_kernel_initramfs_and_rootfs_with_sums() {
        let m = Manifest::built_in("fedora-coreos").expect("manifest");
        let json = r#"{"architectures":{"x86_64":{"artifacts":{"metal":{"formats":{"pxe":{
            "kernel":{"location":"https://b.example/x/fedora-coreos-42-live-kernel-x86_64","sha256":"AB12"},
            "initramfs":{"location":"https://b.example/x/fedora-coreos-42-live-initramfs.x86_64.img","sha256":"cd34"},
            "rootfs":{"location":"https://b.example/x/fedora-coreos-42-live-rootfs.x86_64.img","sha256":"ef56"}}}}}}}}"#;
        let files = from_stream(&m, m.stream.as_ref().expect("stream"), json).expect("files");
        assert_eq!(files.len(), 3);
        let kernel = files.iter().find(|f| f.url.ends_with("kernel-x86_64")).expect("kernel");
        assert_eq!(kernel.path, "fcos/kernel", "saved under its kind: profiles keep their paths across releases");
        assert_eq!(kernel.sha256, "ab12");
        assert!(from_stream(&m, m.stream.as_ref().expect("stream"), "{}").is_err());
    }

    #[test]
    fn sums_come_from_the_manifest_or_a_sha256sums_file() {
        let m = Manifest::built_in("ubuntu").expect("manifest");
        let sums = "aa11 *ubuntu-24.04.3-live-server-amd64.iso\nbb22  other.iso\n";
        assert!(matches!(from_files(&m, Some(sums)), Err(ManifestError::NoSum { .. })), "the netboot archive too");
        let sums = format!("{sums}cc33 *ubuntu-24.04.3-netboot-amd64.tar.gz\n");
        let files = from_files(&m, Some(&sums)).expect("files");
        assert_eq!(files[0].sha256, "aa11");
        assert_eq!(files[0].path, "ubuntu/ubuntu.iso");
        assert_eq!(files[1].sha256, "cc33");
        assert_eq!(
            files[1].extract,
            [("amd64/linux".into(), "ubuntu/vmlinuz".into()), ("amd64/initrd".into(), "ubuntu/initrd".into())]
        );
        assert!(matches!(from_files(&m, Some("bb22 other.iso")), Err(ManifestError::NoSum { .. })));
    }

    #[test]
    fn a_mirror_keeps_upstream_paths_under_the_host() {
        let url = "https://releases.ubuntu.com/24.04/x.iso";
        assert_eq!(mirrored(url, None), url);
        assert_eq!(
            mirrored(url, Some("http://m:8080/images/")),
            "http://m:8080/images/releases.ubuntu.com/24.04/x.iso"
        );
        assert_eq!(mirrored("file:okd-stream.json", Some("http://m/")), "file:okd-stream.json");
    }

    #[test]
    fn unsafe_names_are_refused() {
        let text = "name = \"x\"\ndescription = \"x\"\ndir = \"../etc\"\n";
        assert!(matches!(Manifest::parse("x", text), Err(ManifestError::UnsafeName(..))));
        assert!(!safe_name("a/../b") && !safe_name("/abs") && safe_name("fcos/kernel"));
    }
}
