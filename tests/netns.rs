//! Two network namespaces joined by a veth pair: `srv` (slipway, 10.1.107.1/24 on `srv0`) and
//! `cli` (clients, `cli0`). Removed, with every process left inside, on drop.

use std::process::{Command, Output};

/// Runs `f` on a thread that lives inside network namespace `ns` (sockets it opens belong there).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("network namespace file");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns (needs root)");
        f()
    })
    .join()
    .expect("namespace thread")
}

pub struct Pair {
    pub srv: String,
    pub cli: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip must be installed (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {} (network namespace tests need root)",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pair {
    /// `tag` keeps concurrent tests apart.
    pub fn new(tag: &str) -> Pair {
        let id = format!("{}{}", std::process::id() % 100_000, tag);
        let pair = Pair { srv: format!("sws{id}"), cli: format!("swc{id}") };
        for ns in [&pair.srv, &pair.cli] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let (a, b) = (format!("v{id}s"), format!("v{id}c"));
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &a, "netns", &pair.srv, "name", "srv0"]);
        ip(&["link", "set", &b, "netns", &pair.cli, "name", "cli0"]);
        ip(&["-n", &pair.srv, "addr", "add", "10.1.107.1/24", "dev", "srv0"]);
        ip(&["-n", &pair.srv, "link", "set", "srv0", "up"]);
        ip(&["-n", &pair.cli, "link", "set", "cli0", "up"]);
        pair
    }

    /// Runs a command in the client namespace.
    pub fn cli_run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.cli, program]).args(args).output().expect("run in namespace")
    }

    pub fn cli_command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.cli, program]);
        cmd
    }

    /// Gives the client interface a new MAC and no address (a fresh machine).
    pub fn client_as(&self, mac: &str) {
        ip(&["-n", &self.cli, "addr", "flush", "dev", "cli0"]);
        ip(&["-n", &self.cli, "link", "set", "cli0", "down"]);
        ip(&["-n", &self.cli, "link", "set", "cli0", "address", mac]);
        ip(&["-n", &self.cli, "link", "set", "cli0", "up"]);
    }

    /// Gives the client interface a fixed address (for a relay, which has one).
    pub fn client_address(&self, cidr: &str) {
        ip(&["-n", &self.cli, "addr", "add", cidr, "dev", "cli0"]);
    }

    /// The client's IPv4 addresses.
    pub fn client_addresses(&self) -> String {
        String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-n", &self.cli, "-4", "-o", "addr", "show", "dev", "cli0"])
                .output()
                .expect("ip")
                .stdout,
        )
        .into_owned()
    }

    /// Ends every process still running in the client namespace (daemons a client left).
    pub fn kill_clients(&self) {
        let pids = Command::new("ip").args(["netns", "pids", &self.cli]).output().expect("ip netns pids");
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).output();
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.cli, &self.srv] {
            let pids = Command::new("ip").args(["netns", "pids", ns]).output();
            if let Ok(pids) = pids {
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).output();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
