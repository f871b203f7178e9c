//! slipway's SSH client (russh) against Debian's OpenSSH server: a command's standard input
//! (a k3s add-on file written to a node) arrives whole, however large, and the command's
//! output and status come back. Needs root (namespaces; sshd's own /etc: `tests/sshd.rs`).

use std::sync::Arc;
use std::time::Duration;

use sha2::Digest;

use crate::boot::{Lab, SERVER};
use crate::sshd::{Setup, Sshd};

#[test]
fn a_large_standard_input_reaches_the_command_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::bridge_only("ssi");
    let state = slipway::store::files::Files::Local(dir.path().join("state"));
    let host = slipway::ssh::keys::host(&state, "edge", "server-0").expect("host key");
    slipway::ssh::keys::delivered(&state, "edge", "server-0").expect("delivered");
    let host_file = dir.path().join("host");
    std::fs::write(&host_file, host.private.as_str()).expect("host key file");
    std::fs::set_permissions(&host_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let authorized = dir.path().join("authorized_keys");
    let public = slipway::ssh::keys::client_public(&state, "edge").expect("client key");
    std::fs::write(&authorized, format!("{public}\n")).expect("authorized_keys");
    let setup = Setup { ip: SERVER, host_key: &host_file, authorized: &authorized, user: "slipway", files: &[] };
    let sshd = Sshd::start(&lab, dir.path(), &setup);

    // Three MiB: many times the channel's window, so it is sent as the server takes it.
    let input: Vec<u8> = (0..3u32 << 20).map(|i| (i.wrapping_mul(7) % 251) as u8).collect();
    let want: String = sha2::Sha256::digest(&input).iter().map(|b| format!("{b:02x}")).collect();
    let client = slipway::ssh::keys::existing_client(&state, "edge").expect("read").expect("made");
    let pinned = slipway::ssh::keys::pinned(&state, "edge", "server-0").expect("read").expect("pinned");
    let target = slipway::ssh::Target {
        node: "server-0".into(),
        addr: format!("{SERVER}:22").parse().expect("addr"),
        user: "slipway".into(),
        host_key: pinned,
    };
    let command = "sudo -n sh -c 'umask 077 && mkdir -p /var/lib/slipway-test && cat > /var/lib/slipway-test/in && sha256sum /var/lib/slipway-test/in'";
    let ran = crate::netns::in_netns(&lab.ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(slipway::ssh::run_with_input(
            &target,
            Arc::new(client),
            command,
            &input,
            Duration::from_secs(60),
            4096,
        ))
    })
    .expect("ran");
    assert_eq!(ran.status, Some(0), "{ran:?}");
    assert!(ran.stdout.starts_with(&want), "{ran:?}");
    let files = sshd.files("/var/lib/slipway-test");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].1.len(), 3 << 20);
    sshd.stop();
}
