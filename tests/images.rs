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
    assert!(text.contains("fcos-live-rootfs") && text.contains("the manifest says 0000"), "{text}");
    assert!(!out.join("fcos/fcos-live-rootfs").exists() && !out.join("fcos/fcos-live-rootfs.part").exists());

    // An interrupted download (a part holding the first 700,000 bytes) resumes.
    let good = stream(dir.path(), host, &files, None);
    std::fs::write(out.join("fcos/fcos-live-rootfs.part"), &rootfs[..700_000]).expect("part");
    let (ok, text) = fetch(&out, &good);
    assert!(ok, "{text}");
    assert!(
        text.contains("fcos/fcos-live-rootfs: resumed at byte 700000, downloaded 1300000 more, sha256 ok"),
        "{text}"
    );
    assert!(std::fs::read(out.join("fcos/fcos-live-rootfs")).expect("rootfs") == rootfs);
    assert!(std::fs::read(out.join("fcos/fcos-live-kernel")).expect("kernel") == kernel);

    let (ok, text) = fetch(&out, &good);
    assert!(ok, "{text}");
    assert!(
        text.contains("fcos/fcos-live-kernel: present, sha256 ok") && text.contains("fcos/fcos-live-rootfs: present"),
        "{text}"
    );

    let listing = Command::new(BIN).args(["images", "list"]).output().expect("list");
    let listing = String::from_utf8_lossy(&listing.stdout);
    for name in ["fedora-coreos", "centos-stream-coreos", "ubuntu"] {
        assert!(listing.contains(name), "{listing}");
    }
}
