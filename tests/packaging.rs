//! The systemd unit and the NixOS module, checked with the tools that consume them.

use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn tool(name: &str) -> Command {
    let found = Command::new("sh").args(["-c", &format!("command -v {name}")]).output().expect("sh");
    assert!(found.status.success(), "{name} is not installed; run ./scripts/test, which installs it");
    Command::new(name)
}

/// The unit with ExecStart pointing at the binary under test (verify checks it exists).
fn unit_under_test(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("{ROOT}/systemd/slipway.service")).expect("unit");
    let path = dir.join("slipway.service");
    std::fs::write(&path, text.replace("/usr/bin/slipway", env!("CARGO_BIN_EXE_slipway"))).expect("write");
    path
}

#[test]
fn the_systemd_unit_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tool("systemd-analyze").arg("verify").arg(unit_under_test(dir.path())).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("slipway.service:"), "{stderr}");
}

#[test]
fn the_ha_drop_in_verifies_with_the_unit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_under_test(dir.path());
    let drop_in = dir.path().join("slipway.service.d");
    std::fs::create_dir(&drop_in).expect("drop-in dir");
    std::fs::copy(format!("{ROOT}/systemd/slipway-ha.conf"), drop_in.join("ha.conf")).expect("copy");
    let out = tool("systemd-analyze").arg("verify").arg(&unit).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("slipway.service:") && !stderr.contains("ha.conf"), "{stderr}");
    // verify reads the drop-in beside the unit: a misspelt key in it is reported.
    let text = std::fs::read_to_string(drop_in.join("ha.conf")).expect("read");
    std::fs::write(drop_in.join("ha.conf"), text.replace("RestartSec=", "RestartSek=")).expect("write");
    let out = tool("systemd-analyze").arg("verify").arg(&unit).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("RestartSek"), "{out:?}");
}

#[test]
fn the_systemd_unit_scores_as_documented_in_the_readme() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tool("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit_under_test(dir.path()))
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    let score = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for slipway.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an exposure score");
    let value: f64 = score.parse().expect("number");
    assert!(value <= 2.0, "exposure {value} regressed: {text}");
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).expect("README");
    assert!(readme.contains(&format!("exposure level {score}")), "README must state the current score {score}");
}

#[test]
fn the_unit_and_the_nixos_module_keep_the_same_hardening() {
    let unit = std::fs::read_to_string(format!("{ROOT}/systemd/slipway.service")).expect("unit");
    let module = std::fs::read_to_string(format!("{ROOT}/nixos/module.nix")).expect("module");
    let directives = [
        "NoNewPrivileges",
        "ProtectSystem",
        "CapabilityBoundingSet",
        "AmbientCapabilities",
        "DynamicUser",
        "StateDirectory",
        "SystemCallFilter",
        "RestrictAddressFamilies",
        "MemoryDenyWriteExecute",
        "ProtectProc",
        "Type",
    ];
    for d in directives {
        assert!(unit.contains(&format!("{d}=")), "unit lacks {d}");
        assert!(module.contains(&format!("{d} = ")), "module lacks {d}");
    }
}

#[test]
fn the_nixos_module_parses() {
    let out = tool("nix-instantiate").arg("--parse").arg(format!("{ROOT}/nixos/module.nix")).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The README's install commands (the `sh` block of its Packaging section).
fn readme_install_steps() -> Vec<String> {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).expect("README");
    let section = &readme[readme.find("## Packaging").expect("Packaging section")..];
    let block = section.split("```sh").nth(1).and_then(|b| b.split("```").next()).expect("install block");
    block
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A container booted with systemd as PID 1 from the kit's tree; ended (by PID) on drop.
struct Container {
    nspawn: std::process::Child,
    init: u32,
}

impl Container {
    fn boot(tree: &std::path::Path) -> Container {
        let mut nspawn = tool("systemd-nspawn")
            .args(["-q", "--boot", "--register=no", "--keep-unit", "--private-network", "--console=pipe", "-D"])
            .arg(tree)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("systemd-nspawn");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", nspawn.id()));
            if let Some(pid) = children.unwrap_or_default().split_whitespace().next().and_then(|p| p.parse().ok()) {
                return Container { nspawn, init: pid }.wait_running();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = nspawn.kill();
        let _ = nspawn.wait();
        panic!("systemd-nspawn started no container within 60 s");
    }

    /// Waits (bounded) until the container's systemd has finished booting.
    fn wait_running(self) -> Container {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let state = self.run(&["systemctl", "is-system-running"]).1;
            if state.trim() == "running" || state.trim() == "degraded" {
                return self;
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        panic!("the container's systemd did not finish booting within 60 s");
    }

    /// Runs a command inside the container: (success, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out =
            // Bounded: a command that hangs inside the container ends the test, not the run.
            Command::new("timeout").args(["120", "nsenter", "-t", &self.init.to_string(), "-a"]).args(args).output().expect("nsenter");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// The kit's Debian tree with nothing of slipway's in it: the package purged, the README's
/// files and any state gone. The tests that boot it run one at a time (the `systemd-kit` test
/// group in .config/nextest.toml).
fn fresh_tree() -> std::path::PathBuf {
    let kit = std::path::Path::new(ROOT).join("target/systemd-kit");
    let out = Command::new(format!("{ROOT}/scripts/systemd-kit")).arg(&kit).output().expect("scripts/systemd-kit");
    assert!(out.status.success(), "scripts/systemd-kit: {}", String::from_utf8_lossy(&out.stderr));
    let tree = kit.join("root");
    let out = Command::new("chroot").arg(&tree).args(["dpkg", "--purge", "slipway"]).output().expect("chroot dpkg");
    assert!(out.status.success(), "dpkg --purge: {}", String::from_utf8_lossy(&out.stderr));
    let leftovers = [
        "var/lib/private/slipway",
        "var/lib/slipway",
        "etc/slipway",
        "src",
        "usr/bin/slipway",
        "etc/systemd/system/slipway.service",
        "etc/systemd/system/multi-user.target.wants/slipway.service",
        "slipway.deb",
    ];
    for leftover in leftovers {
        let path = tree.join(leftover);
        if path.is_symlink() || path.is_file() {
            let _ = std::fs::remove_file(&path);
        } else {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    tree
}

#[test]
fn the_readme_installation_runs_the_unit_under_systemd() {
    let tree = fresh_tree();
    // The README's files, where its commands expect them (the binary under test as the release one).
    let src = tree.join("src");
    std::fs::create_dir_all(src.join("target/release")).expect("src");
    std::fs::copy(env!("CARGO_BIN_EXE_slipway"), src.join("target/release/slipway")).expect("binary");
    for file in ["systemd/slipway.service", "examples/slipway.toml"] {
        std::fs::create_dir_all(src.join(file).parent().expect("dir")).expect("dir");
        std::fs::copy(format!("{ROOT}/{file}"), src.join(file)).expect("file");
    }
    let steps = readme_install_steps();
    let (offline, online): (Vec<&String>, Vec<&String>) =
        steps.iter().partition(|s| !s.starts_with("systemctl") && !s.starts_with("slipway"));
    for step in &offline {
        let out = Command::new("chroot")
            .arg(&tree)
            .args(["sh", "-c", &format!("cd /src && {step}")])
            .output()
            .expect("chroot");
        assert!(out.status.success(), "{step}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // "then edit it": a config for this container (no DHCP interface here), same file and mode.
    let config = tree.join("etc/slipway/slipway.toml");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&config).expect("config").permissions());
    std::fs::write(
        &config,
        "[[networks]]\nname = \"lab\"\ninterface = \"lo\"\ncidr = \"127.77.0.0/24\"\n\
         [[nodes]]\nname = \"n0\"\nmac = \"52:54:00:00:77:01\"\nipv4 = \"127.77.0.10\"\n",
    )
    .expect("edit the config");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&config).expect("config").permissions()),
        mode
    );

    let container = Container::boot(&tree);
    for step in &online {
        let (ok, stdout, stderr) = container.run(&["sh", "-c", step]);
        let journal = container.run(&["journalctl", "-u", "slipway", "--no-pager"]).1;
        assert!(ok, "{step}: {stdout}{stderr}\n{journal}");
        if step.starts_with("slipway get nodes") {
            assert!(stdout.contains("n0") && stdout.contains("127.77.0.10"), "{stdout}");
        }
    }
    let (_, active, _) = container.run(&["systemctl", "is-active", "slipway"]);
    assert_eq!(active.trim(), "active");
    // `systemctl reload`: a node added to the file is served without a restart; a file with a
    // problem is refused whole (each problem in the journal) and changes nothing.
    let (_, pid, _) = container.run(&["systemctl", "show", "-p", "MainPID", "--value", "slipway"]);
    let edited = std::fs::read_to_string(&config).expect("config")
        + "[[nodes]]\nname = \"n1\"\nmac = \"52:54:00:00:77:02\"\nipv4 = \"127.77.0.11\"\n";
    std::fs::write(&config, &edited).expect("edit the config");
    let journal = || container.run(&["journalctl", "-u", "slipway", "--no-pager"]).1;
    let (ok, _, stderr) = container.run(&["systemctl", "reload", "slipway"]);
    assert!(ok, "{stderr}\n{}", journal());
    let nodes = || container.run(&["slipway", "get", "nodes"]).1;
    let limit = std::time::Duration::from_secs(20);
    crate::support::eventually("n1 served after the reload", limit, || nodes().contains("127.77.0.11"));
    std::fs::write(&config, edited.replace("52:54:00:00:77:02", "52:54:00:00:77:zz")).expect("break the config");
    let (ok, _, stderr) = container.run(&["systemctl", "reload", "slipway"]);
    assert!(ok, "{stderr}");
    crate::support::eventually("the refusal in the journal", limit, || {
        let log = journal();
        log.contains("reload refused") && log.contains("nodes[1].mac")
    });
    let (_, active, _) = container.run(&["systemctl", "is-active", "slipway"]);
    assert_eq!(active.trim(), "active");
    assert!(nodes().contains("127.77.0.11"), "the running config stays");
    let (_, after, _) = container.run(&["systemctl", "show", "-p", "MainPID", "--value", "slipway"]);
    assert_eq!(pid, after, "reloaded, not restarted");
    let (_, user, _) = container.run(&["systemctl", "show", "-p", "MainPID", "--value", "slipway"]);
    let (_, status, _) = container.run(&["sh", "-c", &format!("grep '^Uid:' /proc/{}/status", user.trim())]);
    let uid = status.split_whitespace().nth(1).and_then(|u| u.parse::<u32>().ok());
    assert!(uid.is_some_and(|u| u != 0), "runs as a dynamic user: {status}");
    let (ok, _, stderr) = container.run(&["systemctl", "stop", "slipway"]);
    assert!(ok, "{stderr}");
    let (_, result, _) = container.run(&["systemctl", "show", "-p", "Result", "-p", "ExecMainStatus", "slipway"]);
    assert!(result.contains("Result=success") && result.contains("ExecMainStatus=0"), "{result}");
    let journal = container.run(&["journalctl", "-u", "slipway", "--no-pager"]).1;
    assert!(journal.contains("\"message\":\"stopped\""), "{journal}");
    assert!(
        !journal.contains(&std::fs::read_to_string(tree.join("etc/slipway/admin.token")).expect("token")),
        "no token in the journal"
    );
}

/// `scripts/deb` packs the binary under test: lintian finds nothing (every override justified in
/// deb/lintian-overrides); `dpkg -i` in a Debian 12 tree booted with systemd makes the token,
/// enables and starts the unit, which serves the admin API with the shipped config as a dynamic
/// user with its state in /var/lib/slipway; `slipway get nodes` works as root; completions and
/// man pages are where bash, zsh, fish and man look; `dpkg --purge` stops it and leaves nothing.
#[test]
fn the_debian_package_is_lintian_clean_and_installs_a_running_service() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(format!("{ROOT}/scripts/deb"))
        .args(["--binary", env!("CARGO_BIN_EXE_slipway"), "--out"])
        .arg(out_dir.path())
        .output()
        .expect("scripts/deb");
    assert!(out.status.success(), "scripts/deb: {}", String::from_utf8_lossy(&out.stderr));
    let deb = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(deb.file_name().and_then(|n| n.to_str()), Some(format!("slipway_{version}_amd64.deb").as_str()));

    let lint = tool("lintian")
        .args(["--fail-on", "error,warning,info", "--display-info"])
        .arg(&deb)
        .output()
        .expect("lintian");
    let report = String::from_utf8_lossy(&lint.stdout);
    assert!(lint.status.success() && !report.lines().any(|l| l.starts_with(['E', 'W', 'I'])), "lintian:\n{report}");

    let tree = fresh_tree();
    std::fs::copy(&deb, tree.join("slipway.deb")).expect("copy the package");
    let container = Container::boot(&tree);
    let (ok, stdout, stderr) = container.run(&["dpkg", "-i", "/slipway.deb"]);
    let journal = || container.run(&["journalctl", "-u", "slipway", "--no-pager"]).1;
    assert!(ok, "dpkg -i: {stdout}{stderr}\n{}", journal());
    let (_, active, _) = container.run(&["systemctl", "is-active", "slipway"]);
    assert_eq!(active.trim(), "active", "{}", journal());
    let (_, enabled, _) = container.run(&["systemctl", "is-enabled", "slipway"]);
    assert_eq!(enabled.trim(), "enabled");
    let (ok, stdout, stderr) = container.run(&["slipway", "get", "nodes"]);
    assert!(ok, "slipway get nodes: {stdout}{stderr}");
    let (_, mode, _) = container.run(&["stat", "-c", "%a %U", "/etc/slipway/admin.token"]);
    assert_eq!(mode.trim(), "600 root");
    // StateDirectory= with DynamicUser=: /var/lib/slipway leads to the service's own directory.
    let (_, owner, _) = container.run(&["stat", "-L", "-c", "%a %U", "/var/lib/slipway"]);
    let (_, user, _) = container.run(&["systemctl", "show", "-p", "MainPID", "--value", "slipway"]);
    let (_, status, _) = container.run(&["sh", "-c", &format!("grep '^Uid:' /proc/{}/status", user.trim())]);
    let uid = status.split_whitespace().nth(1).expect("uid");
    assert_ne!(uid, "0", "runs as a dynamic user");
    assert!(owner.starts_with("700 ") && !owner.trim().ends_with(" root"), "state directory: {owner}");
    let (_, files, _) = container.run(&["dpkg", "-L", "slipway"]);
    for path in [
        "/usr/bin/slipway",
        "/lib/systemd/system/slipway.service",
        "/etc/slipway/slipway.toml",
        "/usr/share/bash-completion/completions/slipway",
        "/usr/share/zsh/vendor-completions/_slipway",
        "/usr/share/fish/vendor_completions.d/slipway.fish",
        "/usr/share/man/man1/slipway.1.gz",
        "/usr/share/man/man1/slipway-cluster-apply.1.gz",
        "/usr/share/doc/slipway/copyright",
    ] {
        assert!(files.lines().any(|l| l == path), "{path} not in the package:\n{files}");
    }
    let (_, conffiles, _) = container.run(&["dpkg-query", "-W", "-f", "${Conffiles}", "slipway"]);
    assert!(conffiles.contains("/etc/slipway/slipway.toml"), "{conffiles}");

    let (ok, stdout, stderr) = container.run(&["dpkg", "--purge", "slipway"]);
    assert!(ok, "dpkg --purge: {stdout}{stderr}");
    let (_, active, _) = container.run(&["systemctl", "is-active", "slipway"]);
    assert_ne!(active.trim(), "active");
    for gone in ["/etc/slipway", "/var/lib/private/slipway", "/usr/bin/slipway"] {
        let (exists, _, _) = container.run(&["test", "-e", gone]);
        assert!(!exists, "{gone} left after purge");
    }
}
