//! The IPv6 router advertisement that lets iPXE skip its wait: seen on the wire by tcpdump in a
//! client namespace at start and in answer to a router solicitation, and it gives the client no
//! route or address. Needs root.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::netns::Pair;
use crate::support::{self, TOKEN};

#[test]
fn an_empty_router_advertisement_is_sent_at_start_and_on_solicitation() {
    let pair = Pair::new("r");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).expect("token");
    let config = dir.path().join("slipway.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\
             [dhcp]\ninterfaces = [\"srv0\"]\nrouter_advertisements = true\n\
             [[networks]]\nname = \"lab\"\ninterface = \"srv0\"\ncidr = \"10.1.107.0/24\"\n",
            dir.path().join("state").display(),
            dir.path().join("token").display()
        ),
    )
    .expect("config");
    // Wait until the link-local addresses are usable (duplicate address detection).
    std::thread::sleep(Duration::from_secs(2));
    let capture = pair
        .cli_command("timeout")
        .args(["20", "tcpdump", "-l", "-n", "-v", "-i", "cli0", "-c", "2", "icmp6 and ip6[40] == 134"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    std::thread::sleep(Duration::from_millis(800));
    let _daemon = support::start_in(Some(&pair.srv), &config, &[]);
    std::thread::sleep(Duration::from_secs(1));
    // Bringing the link up makes the client's kernel solicit a router.
    for state in ["down", "up"] {
        let out = Command::new("ip").args(["-n", &pair.cli, "link", "set", "cli0", state]).output().expect("ip");
        assert!(out.status.success());
    }
    let out = capture.wait_with_output().expect("tcpdump");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("router advertisement").count(),
        2,
        "one at start, one answering the solicitation:\n{text}"
    );
    assert!(
        text.contains("hlim 255") && text.contains("router lifetime 0s") && text.contains("Flags [none]"),
        "{text}"
    );
    assert!(!text.contains("prefix info"), "no prefix: {text}");
    let routes = Command::new("ip").args(["-n", &pair.cli, "-6", "route", "show", "default"]).output().expect("ip");
    assert!(String::from_utf8_lossy(&routes.stdout).trim().is_empty(), "the client got no default route");
}
