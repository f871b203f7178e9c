//! The `qemu-system-x86_64` command line for a VM spec, and its tap device names. Pure: the
//! backend runs what this builds.

use std::path::Path;

use super::super::{Firmware, VmSpec};

/// Which accelerator QEMU uses. `Auto` lists KVM then TCG: QEMU takes the first that works.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Accel {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// Files the command line refers to.
#[derive(Debug)]
pub struct Paths<'a> {
    pub dir: &'a Path,
    pub ovmf_code: &'a Path,
}

/// Names of the VM's tap devices: `sw` + 8 hex digits of a hash of the VM directory + the NIC
/// index, within Linux's 15 characters and distinct across VMs with the same node name in
/// different state directories.
pub fn tap_names(dir: &Path, nics: usize) -> Vec<String> {
    // FNV-1a: stable across releases (std's hasher is not).
    let mut hash: u32 = 0x811c_9dc5;
    for b in dir.as_os_str().as_encoded_bytes() {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (0..nics).map(|i| format!("sw{hash:08x}{i}")).collect()
}

pub fn disk_file(dir: &Path, index: usize) -> std::path::PathBuf {
    dir.join(format!("disk{index}.qcow2"))
}

pub fn efivars_file(dir: &Path) -> std::path::PathBuf {
    dir.join("efivars.fd")
}

/// The arguments after `qemu-system-x86_64`. The disk boots first (bootindex 1) and the first
/// NIC next, so an empty disk falls through to the network and an installed one boots itself.
/// QEMU's `-cpu` for a CPU model named as Proxmox names it: Proxmox's own `x86-64-v*` models
/// are `qemu64` with the flags qemu-server adds (its `CPUConfig.pm`); other names (`kvm64`,
/// `host`, `max`, `Skylake-Server`...) are QEMU's already. `None`: `max`, every feature the
/// accelerator has.
pub fn cpu(model: Option<&str>) -> String {
    const V2: &str = "+popcnt,+pni,+sse4.1,+sse4.2,+ssse3";
    const V3: &str = "+avx,+avx2,+bmi1,+bmi2,+f16c,+fma,+abm,+movbe,+xsave";
    const V4: &str = "+avx512f,+avx512bw,+avx512cd,+avx512dq,+avx512vl";
    match model {
        None => "max".into(),
        Some("x86-64-v2") => format!("qemu64,{V2}"),
        Some("x86-64-v2-AES") => format!("qemu64,+aes,{V2}"),
        Some("x86-64-v3") => format!("qemu64,+aes,{V2},{V3}"),
        Some("x86-64-v4") => format!("qemu64,+aes,{V2},{V3},{V4}"),
        Some(other) => other.to_owned(),
    }
}

pub fn args(spec: &VmSpec, paths: &Paths<'_>, accel: Accel) -> Vec<String> {
    let dir = paths.dir;
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| (*s).to_owned()));
    let node = spec.owner.node.as_str();
    push(&["-name", &format!("slipway-{node},process=slipway-{node}")]);
    match accel {
        Accel::Auto => push(&["-accel", "kvm", "-accel", "tcg"]),
        Accel::Kvm => push(&["-accel", "kvm"]),
        Accel::Tcg => push(&["-accel", "tcg"]),
    }
    push(&["-machine", "q35", "-smp", &spec.cores.to_string(), "-m", &spec.memory_mib.to_string()]);
    push(&["-cpu", &cpu(spec.cpu.as_deref())]);
    push(&["-display", "none", "-monitor", "none", "-nodefaults", "-vga", "none"]);
    push(&["-serial", &format!("file:{}", dir.join("serial.log").display())]);
    push(&["-qmp", &format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display())]);
    push(&["-pidfile", &dir.join("qemu.pid").display().to_string(), "-daemonize"]);
    if spec.firmware == Firmware::Uefi {
        let code = format!("if=pflash,format=raw,unit=0,readonly=on,file={}", paths.ovmf_code.display());
        let vars = format!("if=pflash,format=raw,unit=1,file={}", efivars_file(dir).display());
        push(&["-drive", &code, "-drive", &vars]);
    }
    for (i, _) in spec.disks.iter().enumerate() {
        let file = disk_file(dir, i);
        push(&["-drive", &format!("if=none,id=disk{i},format=qcow2,file={}", file.display())]);
        let boot = if i == 0 { ",bootindex=1" } else { "" };
        push(&["-device", &format!("virtio-blk-pci,drive=disk{i}{boot}")]);
    }
    let taps = tap_names(dir, spec.nics.len());
    for (i, (nic, tap)) in spec.nics.iter().zip(&taps).enumerate() {
        push(&["-netdev", &format!("tap,id=net{i},ifname={tap},script=no,downscript=no")]);
        let model = match nic.model {
            super::super::NicModel::Virtio => "virtio-net-pci",
            super::super::NicModel::E1000 => "e1000",
        };
        let boot = if i == 0 { ",bootindex=2" } else { "" };
        push(&["-device", &format!("{model},netdev=net{i},mac={}{boot}", nic.mac)]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{Disk, Nic, NicModel, Owner, Placement};

    fn spec(firmware: Firmware) -> VmSpec {
        VmSpec {
            owner: Owner { cluster: None, node: "master-0".parse().expect("name") },
            cores: 2,
            cpu: None,
            memory_mib: 2048,
            disks: vec![Disk { storage: None, size_gib: 16 }],
            nics: vec![
                Nic {
                    bridge: None,
                    vlan: None,
                    mac: "52:54:00:00:00:01".parse().expect("mac"),
                    model: NicModel::Virtio,
                },
                Nic {
                    bridge: None,
                    vlan: Some(3),
                    mac: "52:54:00:00:00:02".parse().expect("mac"),
                    model: NicModel::E1000,
                },
            ],
            firmware,
            placement: Placement::default(),
        }
    }

    fn line(firmware: Firmware) -> String {
        let paths = Paths { dir: Path::new("/var/lib/slipway/vms/master-0"), ovmf_code: Path::new("/ovmf/CODE.fd") };
        args(&spec(firmware), &paths, Accel::Auto).join(" ")
    }

    #[test]
    fn the_disk_boots_first_then_the_first_nic() {
        let l = line(Firmware::Bios);
        assert!(l.contains("virtio-blk-pci,drive=disk0,bootindex=1"), "{l}");
        assert!(l.contains("virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,bootindex=2"), "{l}");
        assert!(l.ends_with("e1000,netdev=net1,mac=52:54:00:00:00:02"), "only the first NIC boots: {l}");
        assert!(!l.contains("pflash"), "{l}");
        assert!(l.contains("-accel kvm -accel tcg"), "{l}");
    }

    #[test]
    fn uefi_gets_read_only_code_and_its_own_vars() {
        let l = line(Firmware::Uefi);
        assert!(l.contains("if=pflash,format=raw,unit=0,readonly=on,file=/ovmf/CODE.fd"), "{l}");
        assert!(l.contains("unit=1,file=/var/lib/slipway/vms/master-0/efivars.fd"), "{l}");
    }

    #[test]
    fn proxmox_cpu_models_become_qemu64_with_their_flags() {
        assert!(line(Firmware::Bios).contains("-cpu max"), "no model: every feature there is");
        assert_eq!(cpu(Some("x86-64-v2-AES")), "qemu64,+aes,+popcnt,+pni,+sse4.1,+sse4.2,+ssse3");
        assert!(cpu(Some("x86-64-v3")).ends_with("+movbe,+xsave") && cpu(Some("x86-64-v3")).contains("+aes"));
        assert_eq!(cpu(Some("kvm64")), "kvm64", "QEMU's own names pass through");
    }

    #[test]
    fn tap_names_fit_linux_and_differ_per_directory() {
        let a = tap_names(Path::new("/a/master-0"), 2);
        let b = tap_names(Path::new("/b/master-0"), 2);
        assert!(a.iter().chain(&b).all(|n| n.len() <= 15), "{a:?}");
        assert_ne!(a, b);
        assert_ne!(a[0], a[1]);
    }
}
