//! Proxmox VE 9 parameter strings for a VM spec, built by typed helpers so no caller writes
//! `net0=virtio=…,bridge=…` by hand: `memory`, `net[n]`, `scsi[n]` (a new volume of N GiB),
//! `boot` (`order=scsi0;net0`: an empty disk falls through to the network), `bios=ovmf` with an
//! `efidisk0`, `machine=q35`, and the ownership tags. Pure.

use std::collections::BTreeMap;

use super::super::{Disk, Firmware, Nic, VmSpec};

/// Hypervisor-wide defaults for what a spec leaves open.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub storage: String,
    pub bridge: String,
    /// The CPU model of a spec that names none. Proxmox's own default when none is sent is
    /// `kvm64` (x86-64-v1), on which CentOS Stream CoreOS (OKD's SCOS) does not boot.
    pub cpu: String,
}

/// The CPU model slipway asks for by default: what Proxmox's GUI picks for new VMs, enough for
/// x86-64-v2 guests and migratable between hosts.
pub const DEFAULT_CPU: &str = "x86-64-v2-AES";

/// `virtio=52:54:00:AA:BB:CC,bridge=vmbr0,tag=107` (Proxmox writes MACs in upper case).
pub fn net(nic: &Nic, defaults: &Defaults) -> String {
    let mac = nic.mac.to_string().to_uppercase();
    let bridge = nic.bridge.as_deref().unwrap_or(&defaults.bridge);
    let mut value = format!("{}={mac},bridge={bridge}", nic.model.as_str());
    if let Some(tag) = nic.vlan {
        value.push_str(&format!(",tag={tag}"));
    }
    value
}

/// `local-lvm:32`: allocate a new 32 GiB volume on that storage.
pub fn scsi(disk: &Disk, defaults: &Defaults) -> String {
    format!("{}:{},discard=on,iothread=1", storage(disk, defaults), disk.size_gib)
}

pub fn storage<'a>(disk: &'a Disk, defaults: &'a Defaults) -> &'a str {
    disk.storage.as_deref().unwrap_or(&defaults.storage)
}

/// Disk first, then the first NIC.
pub fn boot(spec: &VmSpec) -> String {
    let mut order = Vec::new();
    if !spec.disks.is_empty() {
        order.push("scsi0");
    }
    if !spec.nics.is_empty() {
        order.push("net0");
    }
    format!("order={}", order.join(";"))
}

/// EFI variables on the first disk's storage, without Microsoft's keys pre-enrolled: Secure
/// Boot stays off, so iPXE (unsigned) runs.
pub fn efidisk(spec: &VmSpec, defaults: &Defaults) -> String {
    let storage = spec.disks.first().map_or(defaults.storage.as_str(), |d| storage(d, defaults));
    format!("{storage}:1,efitype=4m,pre-enrolled-keys=0")
}

pub fn tags(spec: &VmSpec) -> String {
    let mut tags = spec.owner.tags();
    if let Some(group) = &spec.placement.group {
        tags.push(format!("slipway.group.{group}"));
    }
    tags.join(";")
}

/// Every parameter of `POST /nodes/{node}/qemu` for the spec, as Proxmox names them.
pub fn create(spec: &VmSpec, vmid: i128, defaults: &Defaults) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    let mut set = |k: &str, v: String| p.insert(k.to_owned(), v);
    set("vmid", vmid.to_string());
    set("name", spec.owner.node.to_string());
    set("cores", spec.cores.to_string());
    set("cpu", spec.cpu.clone().unwrap_or_else(|| defaults.cpu.clone()));
    set("memory", spec.memory_mib.to_string());
    set("machine", "q35".into());
    set("ostype", "l26".into());
    set("scsihw", "virtio-scsi-single".into());
    set("boot", boot(spec));
    set("tags", tags(spec));
    set("description", "Created by slipway; deleted with its node.".into());
    if spec.firmware == Firmware::Uefi {
        set("bios", "ovmf".into());
        set("efidisk0", efidisk(spec, defaults));
    }
    for (i, disk) in spec.disks.iter().enumerate() {
        set(&format!("scsi{i}"), scsi(disk, defaults));
    }
    for (i, nic) in spec.nics.iter().enumerate() {
        set(&format!("net{i}"), net(nic, defaults));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{NicModel, Owner, Placement};

    fn defaults() -> Defaults {
        Defaults { storage: "local-lvm".into(), bridge: "vmbr0".into(), cpu: DEFAULT_CPU.into() }
    }

    fn spec() -> VmSpec {
        VmSpec {
            owner: Owner { cluster: Some("prod".parse().expect("name")), node: "master-0".parse().expect("name") },
            cores: 4,
            cpu: None,
            memory_mib: 16384,
            disks: vec![Disk { storage: None, size_gib: 120 }, Disk { storage: Some("ceph".into()), size_gib: 50 }],
            nics: vec![
                Nic {
                    bridge: None,
                    vlan: Some(107),
                    mac: "52:54:00:6b:00:10".parse().expect("mac"),
                    model: NicModel::Virtio,
                },
                Nic {
                    bridge: Some("vmbr1".into()),
                    vlan: None,
                    mac: "52:54:00:6b:01:10".parse().expect("mac"),
                    model: NicModel::E1000,
                },
            ],
            firmware: Firmware::Uefi,
            placement: Placement { group: Some("prod-control-plane".parse().expect("name")), ..Placement::default() },
        }
    }

    #[test]
    fn a_dual_homed_uefi_vm_gets_proxmox_9_parameters() {
        let p = create(&spec(), 105, &defaults());
        let get = |k: &str| p.get(k).map(String::as_str);
        assert_eq!(get("vmid"), Some("105"));
        assert_eq!(get("memory"), Some("16384"));
        assert_eq!(get("net0"), Some("virtio=52:54:00:6B:00:10,bridge=vmbr0,tag=107"));
        assert_eq!(get("net1"), Some("e1000=52:54:00:6B:01:10,bridge=vmbr1"));
        assert_eq!(get("scsi0"), Some("local-lvm:120,discard=on,iothread=1"));
        assert_eq!(get("scsi1"), Some("ceph:50,discard=on,iothread=1"));
        assert_eq!(get("boot"), Some("order=scsi0;net0"));
        assert_eq!(get("bios"), Some("ovmf"));
        assert_eq!(get("efidisk0"), Some("local-lvm:1,efitype=4m,pre-enrolled-keys=0"));
        assert_eq!(get("machine"), Some("q35"));
        assert_eq!(get("cpu"), Some("x86-64-v2-AES"), "never Proxmox's kvm64 default");
        assert_eq!(
            get("tags"),
            Some("slipway;slipway.cluster.prod;slipway.node.master-0;slipway.group.prod-control-plane")
        );
    }

    #[test]
    fn a_spec_s_cpu_model_wins_over_the_default() {
        let mut s = spec();
        s.cpu = Some("host".into());
        assert_eq!(create(&s, 107, &defaults()).get("cpu").map(String::as_str), Some("host"));
    }

    #[test]
    fn a_bios_vm_has_no_efi_disk() {
        let mut s = spec();
        s.firmware = Firmware::Bios;
        let p = create(&s, 106, &defaults());
        assert!(!p.contains_key("bios") && !p.contains_key("efidisk0"));
    }
}
