//! The local QEMU backend, for labs, demos and tests on a machine without Proxmox: a VM is a
//! directory (`vm.json` with its spec, qcow2 disks, UEFI variables, the serial log, the QMP
//! socket, the pid file) and, while it runs, a daemonized `qemu-system-x86_64` process with a
//! tap device per NIC on a bridge. Processes outlive slipway, so a restarted daemon finds its
//! running VMs through the pid files; stop and delete remove processes, taps and disks.

pub mod command;
mod qmp;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::placement::Host;
use super::{Error, ErrorKind, Firmware, Hypervisor, Owner, Step, Vm, VmSpec, VmState};
use crate::inventory::Name;
pub use command::Accel;

#[derive(Clone, Debug)]
pub struct Settings {
    /// The config entry's name.
    pub name: String,
    /// One subdirectory per VM.
    pub dir: PathBuf,
    /// Bridge for NICs that name none.
    pub bridge: String,
    /// Run QEMU and its taps in this network namespace (labs and tests).
    pub netns: Option<String>,
    pub accel: Accel,
    /// The CPU model of a VM whose spec names none; `None`: QEMU's `max`.
    pub cpu: Option<String>,
    pub ovmf_code: PathBuf,
    pub ovmf_vars: PathBuf,
}

impl Settings {
    pub fn new(name: &str, dir: PathBuf, bridge: &str) -> Settings {
        Settings {
            name: name.to_owned(),
            dir,
            bridge: bridge.to_owned(),
            netns: None,
            accel: Accel::Auto,
            cpu: None,
            ovmf_code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            ovmf_vars: "/usr/share/OVMF/OVMF_VARS_4M.fd".into(),
        }
    }
}

/// What `vm.json` holds: the spec as created, with each NIC's bridge resolved.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    spec: VmSpec,
}

#[derive(Debug)]
pub struct Qemu {
    settings: Settings,
    /// One operation at a time: creates and deletes of one directory must not interleave.
    lock: tokio::sync::Mutex<()>,
}

const STATE_FILE: &str = "vm.json";
/// The one host local VMs run on.
pub const LOCAL_HOST: &str = "local";

impl Qemu {
    pub fn new(settings: Settings) -> Qemu {
        Qemu { settings, lock: tokio::sync::Mutex::new(()) }
    }

    fn vm_dir(&self, node: &Name) -> PathBuf {
        self.settings.dir.join(node.as_str())
    }

    /// The VM's serial console log (tests and operators read it).
    pub fn serial_log(&self, node: &Name) -> PathBuf {
        self.vm_dir(node).join("serial.log")
    }

    fn record(&self, node: &Name, step: Step) -> Result<Option<Record>, Error> {
        let path = self.vm_dir(node).join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::new(node.as_str(), step, ErrorKind::Local(format!("{}: {e}", path.display())))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::new(node.as_str(), step, ErrorKind::Local(format!("{}: {e}", path.display())))),
        }
    }

    /// The record of `owner`'s VM (a directory of the same node name another owner made is not it).
    fn owned(&self, owner: &Owner, step: Step) -> Result<Option<Record>, Error> {
        Ok(self.record(&owner.node, step)?.filter(|r| &r.spec.owner == owner))
    }

    /// The QEMU process of this VM, if one runs: the pid file's process, checked by its
    /// command line so a recycled pid is not mistaken for the VM.
    fn pid(&self, node: &Name) -> Option<i32> {
        let dir = self.vm_dir(node);
        let pid: i32 = std::fs::read_to_string(dir.join("qemu.pid")).ok()?.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let want = dir.join("qmp.sock");
        let mine = cmdline
            .split(|b| *b == 0)
            .any(|arg| std::str::from_utf8(arg).is_ok_and(|a| a.contains(want.to_str().unwrap_or("\u{0}"))));
        mine.then_some(pid)
    }

    fn vm(&self, node: &Name, record: &Record) -> Vm {
        Vm {
            name: node.to_string(),
            cluster: record.spec.owner.cluster.as_ref().map(Name::to_string),
            hypervisor: self.settings.name.clone(),
            id: node.to_string(),
            host: LOCAL_HOST.into(),
            state: if self.pid(node).is_some() { VmState::Running } else { VmState::Stopped },
        }
    }

    fn ip(&self) -> Command {
        let mut cmd = Command::new("ip");
        if let Some(ns) = &self.settings.netns {
            cmd.args(["-n", ns]);
        }
        cmd
    }

    fn in_netns(&self, program: &str) -> Command {
        match &self.settings.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, program]);
                cmd
            }
            None => Command::new(program),
        }
    }

    async fn build(&self, spec: &VmSpec, dir: &Path) -> Result<(), LocalError> {
        std::fs::create_dir_all(dir).map_err(file(dir))?;
        for (i, disk) in spec.disks.iter().enumerate() {
            let file = command::disk_file(dir, i);
            let size = format!("{}G", disk.size_gib);
            run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&file).arg(&size)).await?;
        }
        if spec.firmware == Firmware::Uefi {
            let vars = command::efivars_file(dir);
            std::fs::copy(&self.settings.ovmf_vars, &vars).map_err(file(&self.settings.ovmf_vars))?;
        }
        let record = Record { spec: spec.clone() };
        let json = serde_json::to_vec_pretty(&record).map_err(LocalError::Record)?;
        let path = dir.join(STATE_FILE);
        std::fs::write(&path, json).map_err(file(&path))
    }

    async fn add_taps(&self, spec: &VmSpec, dir: &Path) -> Result<(), LocalError> {
        let taps = command::tap_names(dir, spec.nics.len());
        for (nic, tap) in spec.nics.iter().zip(&taps) {
            let bridge = nic.bridge.as_deref().unwrap_or(&self.settings.bridge);
            let _ = self.ip().args(["link", "del", tap]).output().await;
            run(self.ip().args(["tuntap", "add", "dev", tap, "mode", "tap"])).await?;
            if let Err(e) = run(self.ip().args(["link", "set", tap, "master", bridge])).await {
                return Err(LocalError::Bridge { bridge: bridge.to_owned(), source: Box::new(e) });
            }
            if let Some(vlan) = nic.vlan {
                let mut cmd = match &self.settings.netns {
                    Some(ns) => {
                        let mut c = Command::new("ip");
                        c.args(["netns", "exec", ns, "bridge"]);
                        c
                    }
                    None => Command::new("bridge"),
                };
                let vid = vlan.to_string();
                run(cmd.args(["vlan", "add", "dev", tap, "vid", &vid, "pvid", "untagged"]))
                    .await
                    .map_err(|e| LocalError::Vlan { vlan, bridge: bridge.to_owned(), source: Box::new(e) })?;
            }
            run(self.ip().args(["link", "set", tap, "up"])).await?;
        }
        Ok(())
    }

    async fn remove_taps(&self, node: &Name, nics: usize) {
        for tap in command::tap_names(&self.vm_dir(node), nics) {
            let _ = self.ip().args(["link", "del", &tap]).output().await;
        }
    }

    /// SIGKILL, then wait (bounded) for the process to go.
    async fn kill(&self, node: &Name, step: Step) -> Result<(), Error> {
        let Some(pid) = self.pid(node) else { return Ok(()) };
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        if !self.wait_gone(node, Duration::from_secs(10)).await {
            return Err(Error::new(node.as_str(), step, ErrorKind::Local(format!("QEMU pid {pid} survived SIGKILL"))));
        }
        Ok(())
    }

    async fn wait_gone(&self, node: &Name, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.pid(node).is_none() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Why a local step of a VM's life failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{program} is not installed (Debian: qemu-system-x86, qemu-utils)")]
    NotInstalled { program: String },
    #[error("{program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program}: {stderr} ({status})")]
    Failed { program: String, stderr: String, status: std::process::ExitStatus },
    #[error("{}: {source}", path.display())]
    File { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot write the VM record: {0}")]
    Record(serde_json::Error),
    #[error("bridge '{bridge}': {source}")]
    Bridge { bridge: String, source: Box<LocalError> },
    #[error("VLAN {vlan} on bridge '{bridge}' (needs vlan_filtering): {source}")]
    Vlan { vlan: u16, bridge: String, source: Box<LocalError> },
}

fn file(path: &Path) -> impl FnOnce(std::io::Error) -> LocalError {
    let path = path.to_owned();
    move |source| LocalError::File { path, source }
}

/// Runs a command; its stderr is the error.
async fn run(cmd: &mut Command) -> Result<(), LocalError> {
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let out = cmd.output().await.map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => LocalError::NotInstalled { program: program.clone() },
        _ => LocalError::Spawn { program: program.clone(), source },
    })?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(LocalError::Failed { program, stderr, status: out.status })
    }
}

#[async_trait]
impl Hypervisor for Qemu {
    fn name(&self) -> &str {
        &self.settings.name
    }

    #[tracing::instrument(name = "vm", skip_all, fields(hypervisor = %self.settings.name, op = "create", vm = %spec.owner.node))]
    async fn create(&self, spec: &VmSpec) -> Result<Vm, Error> {
        let _guard = self.lock.lock().await;
        let node = &spec.owner.node;
        if let Some(record) = self.record(node, Step::Create)? {
            if record.spec.owner != spec.owner {
                let other = record.spec.owner.cluster.as_ref().map_or("no cluster".into(), |c| format!("cluster {c}"));
                let msg = format!("a VM for node {node} of {other} already exists in {}", self.settings.dir.display());
                return Err(Error::new(node.as_str(), Step::Create, ErrorKind::Rejected(msg)));
            }
            return Ok(self.vm(node, &record));
        }
        // Built beside its final place and renamed in, so a failed create leaves nothing.
        let dir = self.vm_dir(node);
        let partial = self.settings.dir.join(format!(".{node}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        if let Err(e) = self.build(spec, &partial).await {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(Error::new(node.as_str(), Step::Create, ErrorKind::Local(e.to_string())));
        }
        std::fs::rename(&partial, &dir).map_err(|e| {
            let _ = std::fs::remove_dir_all(&partial);
            Error::new(node.as_str(), Step::Create, ErrorKind::Local(format!("{}: {e}", dir.display())))
        })?;
        tracing::info!(vm = %node, hypervisor = %self.settings.name, "VM created");
        Ok(self.vm(node, &Record { spec: spec.clone() }))
    }

    #[tracing::instrument(name = "vm", skip_all, fields(hypervisor = %self.settings.name, op = "start", vm = %owner.node))]
    async fn start(&self, owner: &Owner) -> Result<(), Error> {
        let _guard = self.lock.lock().await;
        let node = &owner.node;
        let record =
            self.owned(owner, Step::Start)?.ok_or(Error::new(node.as_str(), Step::Start, ErrorKind::NotFound))?;
        if self.pid(node).is_some() {
            return Ok(());
        }
        let dir = self.vm_dir(node);
        let fail = |e: LocalError| Error::new(node.as_str(), Step::Start, ErrorKind::Local(e.to_string()));
        if let Err(e) = self.add_taps(&record.spec, &dir).await {
            self.remove_taps(node, record.spec.nics.len()).await;
            return Err(fail(e));
        }
        let _ = std::fs::remove_file(dir.join("qmp.sock"));
        let paths = command::Paths { dir: &dir, ovmf_code: &self.settings.ovmf_code };
        let mut spec = record.spec.clone();
        if spec.cpu.is_none() {
            spec.cpu.clone_from(&self.settings.cpu);
        }
        let args = command::args(&spec, &paths, self.settings.accel);
        if let Err(e) = run(self.in_netns("qemu-system-x86_64").args(&args)).await {
            self.remove_taps(node, record.spec.nics.len()).await;
            return Err(fail(e));
        }
        tracing::info!(vm = %node, hypervisor = %self.settings.name, "VM started");
        Ok(())
    }

    #[tracing::instrument(name = "vm", skip_all, fields(hypervisor = %self.settings.name, op = "shutdown", vm = %owner.node))]
    async fn shutdown(&self, owner: &Owner, timeout: Duration) -> Result<(), Error> {
        let _guard = self.lock.lock().await;
        let node = &owner.node;
        let record =
            self.owned(owner, Step::Shutdown)?.ok_or(Error::new(node.as_str(), Step::Shutdown, ErrorKind::NotFound))?;
        if self.pid(node).is_some() {
            let socket = self.vm_dir(node).join("qmp.sock");
            match qmp::execute(&socket, "system_powerdown").await {
                Ok(()) if self.wait_gone(node, timeout).await => {}
                Ok(()) => tracing::warn!(vm = %node, "no ACPI shutdown within the timeout; stopping it"),
                Err(e) => tracing::warn!(vm = %node, error = %e, "cannot ask for an ACPI shutdown; stopping it"),
            }
            self.kill(node, Step::Stop).await?;
        }
        self.remove_taps(node, record.spec.nics.len()).await;
        Ok(())
    }

    #[tracing::instrument(name = "vm", skip_all, fields(hypervisor = %self.settings.name, op = "delete", vm = %owner.node))]
    async fn delete(&self, owner: &Owner) -> Result<(), Error> {
        let _guard = self.lock.lock().await;
        let node = &owner.node;
        let Some(record) = self.owned(owner, Step::Delete)? else { return Ok(()) };
        self.kill(node, Step::Delete).await?;
        self.remove_taps(node, record.spec.nics.len()).await;
        let dir = self.vm_dir(node);
        std::fs::remove_dir_all(&dir).map_err(|e| {
            Error::new(node.as_str(), Step::Delete, ErrorKind::Local(format!("{}: {e}", dir.display())))
        })?;
        tracing::info!(vm = %node, hypervisor = %self.settings.name, "VM deleted");
        Ok(())
    }

    async fn status(&self, owner: &Owner) -> Result<Option<Vm>, Error> {
        Ok(self.owned(owner, Step::Status)?.map(|r| self.vm(&owner.node, &r)))
    }

    /// One host, this machine, with its available memory.
    async fn hosts(&self) -> Result<Vec<Host>, Error> {
        let meminfo = std::fs::read_to_string("/proc/meminfo")
            .map_err(|e| Error::new("*", Step::List, ErrorKind::Local(format!("/proc/meminfo: {e}"))))?;
        let available_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        Ok(vec![Host {
            name: LOCAL_HOST.into(),
            online: true,
            mem_free_mib: available_kib / 1024,
            default_target: true,
        }])
    }

    async fn list(&self) -> Result<Vec<Vm>, Error> {
        let entries = match std::fs::read_dir(&self.settings.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                let msg = format!("{}: {e}", self.settings.dir.display());
                return Err(Error::new("*", Step::List, ErrorKind::Local(msg)));
            }
        };
        let mut vms = Vec::new();
        for entry in entries.flatten() {
            let Some(node) = entry.file_name().to_str().and_then(|n| n.parse::<Name>().ok()) else { continue };
            if let Some(record) = self.record(&node, Step::List)? {
                vms.push(self.vm(&node, &record));
            }
        }
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(vms)
    }
}
