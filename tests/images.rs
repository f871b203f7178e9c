//! `slipway images fetch` against a local HTTP server (slipway's own image service, which
//! answers Range requests): a CoreOS stream's files land checked; an interrupted download
//! resumes; a wrong sum leaves nothing behind; a present file is not fetched again.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::support::{self, BIN};

fn hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn stream(dir: &Path, host: &str, files: &[(&str, &[u8])], corrupt: Option<&str>) -> std::path::PathBuf {
    let mut formats = serde_json::Map::new();
    for (kind, data) in files {
        let sha = if corrupt == Some(*kind) { "00".repeat(32) } else { hex(data) };
        formats.insert(
            kind.to_string(),
            serde_json::json!({"location": format!("http://{host}:8080/images/fcos/fcos-live-{kind}"), "sha256": sha}),
        );
    }
    let json =
        serde_json::json!({"architectures": {"x86_64": {"artifacts": {"metal": {"formats": {"pxe": formats}}}}}});
    let path = dir.join(format!("stream-{}.json", corrupt.unwrap_or("ok")));
    std::fs::write(&path, json.to_string()).expect("stream");
    path
}

fn fetch(out: &Path, stream: &Path) -> (bool, String) {
    let o = Command::new(BIN)
        .args(["images", "fetch", "fedora-coreos", "--dir"])
        .arg(out)
        .arg("--stream")
        .arg(stream)
        .output()
        .expect("slipway images fetch");
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn fetch_checks_sums_resumes_and_skips_present_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = "127.88.0.1";
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("fcos")).expect("src");
    let kernel: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let rootfs: Vec<u8> = (0..2_000_000u32).map(|i| (i * 13 % 253) as u8).collect();
    std::fs::write(src.join("fcos/fcos-live-kernel"), &kernel).expect("kernel");
    std::fs::write(src.join("fcos/fcos-live-rootfs"), &rootfs).expect("rootfs");
    let extra = format!("[http]\nlisten = \"{host}:8080\"\nimages = \"{}\"\n", src.display());
    let _daemon = support::start(&support::config(dir.path(), &extra), &[]);
    let files: [(&str, &[u8]); 2] = [("kernel", &kernel), ("rootfs", &rootfs)];
    let out = dir.path().join("images");

    // A wrong sum: the download is removed, the error names the file and both sums.
    let (ok, text) = fetch(&out, &stream(dir.path(), host, &files, Some("rootfs")));
    assert!(!ok, "{text}");
    assert!(text.contains("fcos/rootfs") && text.contains("the manifest says 0000"), "{text}");
    let parts = |out: &Path| -> Vec<String> {
        std::fs::read_dir(out.join("fcos"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".part"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        !out.join("fcos/rootfs").exists() && parts(&out).iter().all(|p| !p.starts_with("rootfs.")),
        "{:?}",
        parts(&out)
    );

    // An interrupted download (a part holding the first 700,000 bytes) resumes.
    let good = stream(dir.path(), host, &files, None);
    // A part is named by the sum it is for: one of another release is removed, not resumed.
    std::fs::write(out.join(format!("fcos/rootfs.{}.part", &hex(&rootfs)[..16])), &rootfs[..700_000]).expect("part");
    std::fs::write(out.join("fcos/rootfs.0123456789abcdef.part"), b"an older release").expect("stale part");
    let (ok, text) = fetch(&out, &good);
    assert!(ok, "{text}");
    assert!(text.contains("fcos/rootfs: resumed at byte 700000, downloaded 1300000 more, sha256 ok"), "{text}");
    assert!(std::fs::read(out.join("fcos/rootfs")).expect("rootfs") == rootfs);
    assert!(std::fs::read(out.join("fcos/kernel")).expect("kernel") == kernel);
    assert!(parts(&out).is_empty(), "{:?}", parts(&out));

    let (ok, text) = fetch(&out, &good);
    assert!(ok, "{text}");
    assert!(text.contains("fcos/kernel: present, sha256 ok") && text.contains("fcos/rootfs: present"), "{text}");

    let listing = Command::new(BIN).args(["images", "list"]).output().expect("list");
    let listing = String::from_utf8_lossy(&listing.stdout);
    for name in ["fedora-coreos", "centos-stream-coreos", "ubuntu", "k3s", "argocd"] {
        assert!(listing.contains(name), "{listing}");
    }
}

/// The `[[profiles]]` of the README's Network boot example, as the README has them.
fn readme_profiles() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let block = readme
        .split("```toml")
        .map(|b| b.split("```").next().unwrap_or_default())
        .find(|b| b.contains("name = \"fcos-worker\"") && b.contains("name = \"ubuntu-live\""))
        .expect("the README's profile example");
    block[block.find("[[profiles]]").expect("profiles")..].to_string()
}

/// A file of `len` bytes, distinct per `seed`.
fn blob(seed: u32, len: u32) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(seed) % 251) as u8).collect()
}

#[test]
fn the_built_in_manifests_fetch_through_a_mirror_into_the_names_the_readme_profiles_boot() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The mirror: upstream paths under each host's name, served by a slipway's images service.
    let mirror = dir.path().join("mirror");
    let ubuntu = mirror.join("releases.ubuntu.com/24.04");
    let netboot = dir.path().join("netboot");
    std::fs::create_dir_all(netboot.join("amd64")).expect("netboot");
    std::fs::create_dir_all(&ubuntu).expect("ubuntu");
    let (linux, initrd, iso) = (blob(3, 70_000), blob(5, 90_000), blob(7, 400_000));
    std::fs::write(netboot.join("amd64/linux"), &linux).expect("linux");
    std::fs::write(netboot.join("amd64/initrd"), &initrd).expect("initrd");
    std::fs::write(netboot.join("amd64/pxelinux.0"), b"pxelinux").expect("pxelinux");
    let tarball = ubuntu.join("ubuntu-24.04.3-netboot-amd64.tar.gz");
    let out = Command::new("tar").arg("-czf").arg(&tarball).arg("-C").arg(&netboot).arg(".").output().expect("tar");
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(ubuntu.join("ubuntu-24.04.3-live-server-amd64.iso"), &iso).expect("iso");
    let sums = format!(
        "{} *ubuntu-24.04.3-live-server-amd64.iso\n{} *ubuntu-24.04.3-netboot-amd64.tar.gz\n",
        hex(&iso),
        hex(&std::fs::read(&tarball).expect("tarball"))
    );
    std::fs::write(ubuntu.join("SHA256SUMS"), sums).expect("sums");
    let builds = "builds.coreos.fedoraproject.org/prod/streams/stable/builds/42.20250901.3.0/x86_64";
    std::fs::create_dir_all(mirror.join(builds)).expect("fcos");
    std::fs::create_dir_all(mirror.join("builds.coreos.fedoraproject.org/streams")).expect("streams");
    let mut formats = serde_json::Map::new();
    let mut fcos = Vec::new();
    for (i, (kind, file)) in [
        ("kernel", "fedora-coreos-42.20250901.3.0-live-kernel-x86_64"),
        ("initramfs", "fedora-coreos-42.20250901.3.0-live-initramfs.x86_64.img"),
        ("rootfs", "fedora-coreos-42.20250901.3.0-live-rootfs.x86_64.img"),
    ]
    .into_iter()
    .enumerate()
    {
        let data = blob(11 + i as u32, 50_000 + 10_000 * i as u32);
        std::fs::write(mirror.join(builds).join(file), &data).expect("artifact");
        let location = format!("https://{builds}/{file}");
        formats.insert(kind.into(), serde_json::json!({"location": location, "sha256": hex(&data)}));
        fcos.push((kind, data));
    }
    let stream =
        serde_json::json!({"architectures": {"x86_64": {"artifacts": {"metal": {"formats": {"pxe": formats}}}}}});
    std::fs::write(mirror.join("builds.coreos.fedoraproject.org/streams/stable.json"), stream.to_string())
        .expect("stream");
    // k3s: the release's binary and its sha256sum-amd64.txt (two spaces, other assets listed too).
    let release = mirror.join("github.com/k3s-io/k3s/releases/download/v1.33.3+k3s1");
    std::fs::create_dir_all(&release).expect("k3s release");
    let k3s = blob(17, 120_000);
    std::fs::write(release.join("k3s"), &k3s).expect("k3s");
    let airgap = blob(19, 1000);
    std::fs::write(
        release.join("sha256sum-amd64.txt"),
        format!("{}  k3s\n{}  k3s-airgap-images-amd64.tar.zst\n", hex(&k3s), hex(&airgap)),
    )
    .expect("k3s sums");
    let host = "127.88.0.2";
    let extra = format!("[http]\nlisten = \"{host}:8080\"\nimages = \"{}\"\n", mirror.display());
    let mirror_dir = dir.path().join("mirror-daemon");
    std::fs::create_dir_all(&mirror_dir).expect("dir");
    let _mirror = support::start(&support::config(&mirror_dir, &extra), &[]);

    let images = dir.path().join("images");
    for manifest in ["ubuntu", "fedora-coreos", "k3s"] {
        let o = Command::new(BIN)
            .args(["images", "fetch", manifest, "--mirror", &format!("http://{host}:8080/images/"), "--dir"])
            .arg(&images)
            .output()
            .expect("slipway images fetch");
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{manifest}: {text}");
        if manifest == "ubuntu" {
            assert!(
                text.contains("ubuntu/vmlinuz: extracted from ubuntu/netboot-amd64.tar.gz (70000 bytes)"),
                "{text}"
            );
        }
    }
    assert!(std::fs::read(images.join("ubuntu/vmlinuz")).expect("vmlinuz") == linux);
    assert!(std::fs::read(images.join("ubuntu/initrd")).expect("initrd") == initrd);
    assert!(std::fs::read(images.join("ubuntu/ubuntu.iso")).expect("iso") == iso);
    assert!(std::fs::read(images.join("k3s/k3s")).expect("k3s") == k3s, "where cloud-init/k3s.user-data fetches it");
    for (kind, data) in &fcos {
        assert!(std::fs::read(images.join("fcos").join(kind)).expect("fcos artifact") == *data, "fcos/{kind}");
    }

    // A daemon with the README's profiles boots those names: every URL its scripts name answers.
    let boot_dir = dir.path().join("boot-daemon");
    std::fs::create_dir_all(&boot_dir).expect("dir");
    std::fs::write(boot_dir.join("token"), format!("{}\n", support::TOKEN)).expect("token");
    let boot = format!(
        r#"state_dir = "{state}"
[admin]
listen = "127.0.0.1:0"
token_file = "{token}"
[http]
listen = "127.89.0.1:8080"
images = "{images}"
[[networks]]
name = "loop"
interface = "lo"
cidr = "127.89.0.0/24"
[[clusters]]
name = "prod"
kind = "okd"
base_domain = "lab.example"
network = "loop"
api_address = "127.89.0.1"
api_int_address = "127.89.0.1"
ingress_address = "127.89.0.1"
[[nodes]]
name = "worker-1"
cluster = "prod"
role = "worker"
mac = "52:54:00:6b:00:21"
ipv4 = "127.89.0.21"
[[nodes]]
name = "u0"
mac = "52:54:00:6b:00:30"
ipv4 = "127.89.0.30"
{profiles}"#,
        state = boot_dir.join("state").display(),
        token = boot_dir.join("token").display(),
        images = images.display(),
        profiles = readme_profiles()
    );
    std::fs::write(boot_dir.join("slipway.toml"), boot).expect("config");
    let _daemon = support::start(&boot_dir.join("slipway.toml"), &[]);
    let script = |from: &str| {
        let o = Command::new("curl")
            .args(["-s", "--max-time", "10", "--interface", from, "http://127.89.0.1:8080/boot.ipxe?arch=x86_64"])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let mut checked = 0;
    for (from, profile) in [("127.89.0.30", "ubuntu-live"), ("127.89.0.21", "fcos-worker")] {
        let text = script(from);
        assert!(text.contains(&format!("profile {profile}")), "{text}");
        for url in text.split_whitespace().filter_map(|w| w.split_once("http://").map(|(_, u)| format!("http://{u}"))) {
            let url = url.trim_end_matches("/").to_string();
            if url.contains("/boot.ipxe") || url.contains("/nocloud/") || url.ends_with("/ignition") {
                continue;
            }
            let o = Command::new("curl").args(["-s", "-I", "-o", "/dev/null", "-w", "%{http_code}", &url]).output();
            assert_eq!(String::from_utf8_lossy(&o.expect("curl").stdout), "200", "{url} in:\n{text}");
            checked += 1;
        }
    }
    assert_eq!(checked, 6, "kernel, initrd and ISO of ubuntu-live; kernel, initramfs and rootfs of fcos-worker");
}
