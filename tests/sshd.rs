//! Debian's OpenSSH server for the tests, in a lab namespace on a node's address, port 22: its
//! own mount namespace gets a writable `/etc` (an overlay on a tmpfs, nothing of this machine
//! changes) holding a user, its sudo rule and any files at their real paths (k3s's
//! `/etc/rancher/k3s/k3s.yaml`), the host key and authorized keys a node's config carries;
//! `/var/lib` is overlaid the same way (k3s's auto-deploy directory lives there).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::boot::Lab;
use crate::support;

/// The node's user's id in sshd's namespace (an id no account here has).
pub const UID: u32 = 47_123;

pub struct Sshd {
    child: Child,
    log: PathBuf,
}

/// What sshd runs with.
pub struct Setup<'a> {
    pub ip: &'a str,
    pub host_key: &'a Path,
    pub authorized: &'a Path,
    /// The user to add (home: the test's directory), with passwordless sudo.
    pub user: &'a str,
    /// Files put at their path under `/etc` or `/var/lib` (path, contents, mode).
    pub files: &'a [(&'a str, &'a str, u32)],
}

impl Sshd {
    pub fn start(lab: &Lab, dir: &Path, setup: &Setup<'_>) -> Sshd {
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {}:22\nHostKey {}\nHostKeyAlgorithms ssh-ed25519\nAuthorizedKeysFile {}\n\
                 PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 StrictModes no\nUsePAM no\nPidFile none\nLogLevel VERBOSE\n",
                setup.ip,
                setup.host_key.display(),
                setup.authorized.display()
            ),
        )
        .expect("sshd_config");
        let user = setup.user;
        let staged = dir.join("etc");
        let mut script = format!(
            "set -e\nmkdir -p {d}/ovl\nmount -t tmpfs tmpfs {d}/ovl\nmkdir {d}/ovl/upper {d}/ovl/work\n\
             mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/ovl/upper,workdir={d}/ovl/work /etc\n\
             mkdir {d}/ovl/var-upper {d}/ovl/var-work\n\
             mount -t overlay overlay -o lowerdir=/var/lib,upperdir={d}/ovl/var-upper,workdir={d}/ovl/var-work /var/lib\n\
             echo '{user}:x:{UID}:{UID}:node user:{d}:/bin/sh' >> /etc/passwd\n\
             echo '{user}:x:{UID}:' >> /etc/group\n\
             echo '{user}:*:19000:0:99999:7:::' >> /etc/shadow\n\
             mkdir -p /etc/sudoers.d\n\
             echo '{user} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{user}\n\
             chmod 0440 /etc/sudoers.d/{user}\n",
            d = dir.display()
        );
        for (i, (path, contents, mode)) in setup.files.iter().enumerate() {
            std::fs::create_dir_all(&staged).expect("staging");
            let source = staged.join(i.to_string());
            std::fs::write(&source, contents).expect("staged file");
            let parent = Path::new(path).parent().map(|p| p.display().to_string()).unwrap_or_default();
            script.push_str(&format!("mkdir -p {parent}\ncp {} {path}\nchmod {mode:o} {path}\n", source.display()));
        }
        script.push_str(&format!("mkdir -p -m 0755 /run/sshd\nexec /usr/sbin/sshd -D -e -f {}\n", config.display()));
        let log = dir.join(format!("sshd-{}.log", setup.ip));
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns, "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("sshd log"))
            .spawn()
            .expect("sshd (apt install openssh-server)");
        let sshd = Sshd { child, log };
        let ip = setup.ip.to_owned();
        let ns = lab.ns.clone();
        support::eventually("sshd listening", Duration::from_secs(10), || {
            let ip = ip.clone();
            crate::netns::in_netns(&ns, move || std::net::TcpStream::connect((ip.as_str(), 22)).is_ok())
        });
        sshd
    }

    /// The files of `dir` as this node sees them (name, bytes), dotfiles left out.
    pub fn files(&self, dir: &str) -> Vec<(String, Vec<u8>)> {
        files_of(self.pid(), dir)
    }

    /// sshd's process: its mount namespace is the node's disk.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it; its log.
    pub fn stop(mut self) -> String {
        support::signal(&self.child, "TERM");
        support::wait_exit(&mut self.child, Duration::from_secs(10)).expect("sshd stops");
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The files of `dir` as the node whose sshd is process `pid` sees them (name, bytes),
/// dotfiles left out.
pub fn files_of(pid: u32, dir: &str) -> Vec<(String, Vec<u8>)> {
    let pid = pid.to_string();
    let listed = Command::new("nsenter")
        .args(["-t", &pid, "-m", "--", "find", dir, "-maxdepth", "1", "-type", "f", "!", "-name", ".*"])
        .output()
        .expect("nsenter");
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|path| {
            let read = Command::new("nsenter").args(["-t", &pid, "-m", "--", "cat", path]).output().expect("cat");
            (path.rsplit('/').next().unwrap_or(path).to_owned(), read.stdout)
        })
        .collect()
}
