//! Network boot end to end: QEMU (TCG) boots from slipway alone — DHCP, the iPXE script, the
//! kernel and an initramfs over HTTP, the node's own cloud-init user-data, phone-home — in a
//! network namespace with a bridge and a tap. The kernel is Debian's; the initramfs (busybox and
//! the virtio NIC modules; its /init prints the user-data and phones home) is built by
//! `scripts/boot-kit`, which the test runs. Needs root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, Config, TOKEN};

pub const SERVER: &str = "10.1.107.1";
pub const NODE: (&str, &str, &str) = ("vm-0", "52:54:00:a0:00:10", "10.1.107.10");
/// Under TCG a boot to phone-home takes tens of seconds; this bounds it.
pub const BOOT_LIMIT: Duration = Duration::from_secs(240);

/// A namespace holding a bridge (`br0`, the server's side) and a tap for QEMU (`tap0`).
pub struct Lab {
    pub ns: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip (iproute2)");
    assert!(out.status.success(), "ip {args:?}: {} (needs root)", String::from_utf8_lossy(&out.stderr));
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let lab = Lab::bridge_only(tag);
        let ns = &lab.ns;
        ip(&["-n", ns, "tuntap", "add", "tap0", "mode", "tap"]);
        ip(&["-n", ns, "link", "set", "tap0", "master", "br0"]);
        ip(&["-n", ns, "link", "set", "tap0", "up"]);
        lab
    }

    /// The namespace and its bridge, with no tap (a hypervisor backend adds its own).
    pub fn bridge_only(tag: &str) -> Lab {
        let ns = format!("swb{}{tag}", std::process::id() % 100_000);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &ns, "addr", "add", &format!("{SERVER}/24"), "dev", "br0"]);
        ip(&["-n", &ns, "link", "set", "br0", "up"]);
        Lab { ns }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", &self.ns]).output() {
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).output();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// The kernel and the initramfs (cached under target/boot-kit).
pub fn boot_kit() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/boot-kit");
    let out = Command::new(root.join("scripts/boot-kit")).arg(&dir).output().expect("scripts/boot-kit");
    assert!(out.status.success(), "scripts/boot-kit failed: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// The lab network on `br0` (last, so the caller may add keys to it).
pub fn lab_network(config: Config) -> Config {
    config.network("lab", "br0", "10.1.107.0/24").set("gateway", SERVER).set("domain", "lab.example")
}

/// A `[[hypervisors]]` entry (just opened) for the Proxmox stand-in, named `pve`: its URL, the
/// token (written to `dir/pve-token`) and its pinned certificate.
pub fn pve_hypervisor(config: Config, dir: &Path, pve: &crate::pve::StandIn) -> Config {
    std::fs::write(dir.join("pve-token"), format!("{}\n", crate::pve::SECRET)).expect("token file");
    config
        .set("name", "pve")
        .set("kind", "proxmox")
        .set("url", &pve.url)
        .set("token_id", crate::pve::TOKEN_ID)
        .set("token_file", dir.join("pve-token").display())
        .set("fingerprint", &pve.fingerprint)
}

/// A config with the HTTP boot service on the lab, the Proxmox stand-in as hypervisor `pve`, and
/// cluster `name` of `kind` defined on it with `groups` (TOML inline tables), its `api`,
/// `api-int` and ingress addresses all the lab's server; the caller adds the rest and writes it.
pub fn pve_cluster(dir: &Path, pve: &crate::pve::StandIn, name: &str, kind: &str, groups: &[String]) -> Config {
    std::fs::create_dir_all(dir.join("images")).expect("images");
    let config = Config::new(dir)
        .section("[http]")
        .set("listen", format!("{SERVER}:8080"))
        .set("images", dir.join("images").display());
    let config = lab_network(config).value("static_range", r#"{ start = "10.1.107.10", end = "10.1.107.99" }"#);
    pve_hypervisor(config.section("[[hypervisors]]"), dir, pve)
        .section("[[cluster_definitions]]")
        .set("name", name)
        .set("kind", kind)
        .set("base_domain", "lab.example")
        .set("network", "lab")
        .set("api_address", SERVER)
        .set("api_int_address", SERVER)
        .set("ingress_address", SERVER)
        .set("hypervisor", "pve")
        .value("node_groups", format!("[{}]", groups.join(", ")))
}

/// The boot kit's `tiny` profile (cloud-init).
pub fn tiny_profile(config: Config) -> Config {
    config
        .profile("tiny", "vmlinuz")
        .list("initrds", ["initrd.cpio"])
        // Like CentOS Stream CoreOS, it needs an x86-64-v2 CPU.
        .list("args", ["console=ttyS0", "ds=nocloud;s={{config_url}}", "panic=-1", "tiny.require=x86-64-v2"])
        .set("config", "cloud-init")
}

/// DHCP (with router advertisements), HTTP boot from `images` and, with `tftp`, TFTP on `br0`
/// for `NODE`, which boots profile `tiny` (cloud-init).
pub fn config(dir: &Path, images: &Path, tftp: bool) -> PathBuf {
    let (name, mac, ipv4) = NODE;
    let config = Config::new(dir)
        .section("[dhcp]")
        .list("interfaces", ["br0"])
        .value("router_advertisements", true)
        .section("[http]")
        .set("listen", format!("{SERVER}:8080"))
        .set("images", images.display());
    let config = tiny_profile(lab_network(config)).node(name, mac, ipv4).set("profile", "tiny");
    if tftp { config.section("[tftp]").set("listen", format!("{SERVER}:69")) } else { config }.write()
}

/// Starts slipway in the lab serving DHCP, HTTP boot (and TFTP) for `NODE` with the boot kit.
pub fn serve(lab: &Lab, dir: &Path, tftp: bool) -> support::Daemon {
    let kit = boot_kit();
    let images = dir.join("images");
    std::fs::create_dir(&images).expect("images dir");
    std::fs::copy(kit.join("vmlinuz"), images.join("vmlinuz")).expect("kernel");
    std::fs::copy(kit.join("initrd.cpio"), images.join("initrd.cpio")).expect("initramfs");
    support::start_in(Some(&lab.ns), &config(dir, &images, tftp), &[])
}

/// How the VM's firmware reaches iPXE.
#[derive(Clone, Copy)]
enum Firmware {
    /// SeaBIOS with the iPXE NIC ROM.
    BiosIpxeRom,
    /// OVMF with the iPXE NIC ROM.
    UefiIpxeRom,
    /// OVMF's own PXE (no NIC ROM): DHCP, then snponly.efi over TFTP, then HTTP.
    UefiPxe,
}

fn qemu(lab: &Lab, serial: &Path, firmware: Firmware) -> Child {
    let (bios, rom): (&[&str], &str) = match firmware {
        Firmware::BiosIpxeRom => (&[], ""),
        Firmware::UefiIpxeRom => (&["-bios", "/usr/share/ovmf/OVMF.fd"], ""),
        Firmware::UefiPxe => (&["-bios", "/usr/share/ovmf/OVMF.fd"], ",romfile="),
    };
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns,
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "512",
            "-no-reboot",
        ])
        .args(["-display", "none", "-monitor", "none", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={}{rom}", NODE.1), "-boot", "n"])
        .args(bios)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 (apt install qemu-system-x86 ipxe-qemu)")
}

/// The node's events, as `type` strings, from the admin API.
pub fn event_types(daemon: &support::Daemon, lab: &Lab) -> Vec<serde_json::Value> {
    events(daemon, lab, &format!("node={}", NODE.0))
}

fn events(daemon: &support::Daemon, lab: &Lab, query: &str) -> Vec<serde_json::Value> {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns, "curl", "-sf", "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .arg(daemon.url(&format!("/api/v1/events?{query}")))
        .output()
        .expect("curl");
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn boots_from_slipway_alone(tag: &str, firmware: Firmware) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::new(tag);
    let tftp = matches!(firmware, Firmware::UefiPxe);
    let daemon = serve(&lab, dir.path(), tftp);
    let serial = dir.path().join("serial.log");
    let mut vm = qemu(&lab, &serial, firmware);

    let deadline = Instant::now() + BOOT_LIMIT;
    let mut phoned = None;
    while Instant::now() < deadline && phoned.is_none() {
        std::thread::sleep(Duration::from_secs(1));
        phoned = event_types(&daemon, &lab).into_iter().find(|e| e["details"]["type"] == "phone_home");
        if let Ok(Some(status)) = vm.try_wait() {
            std::thread::sleep(Duration::from_secs(1));
            phoned = event_types(&daemon, &lab).into_iter().find(|e| e["details"]["type"] == "phone_home");
            assert!(
                phoned.is_some(),
                "the VM stopped ({status}) without phoning home; serial:\n{}",
                std::fs::read_to_string(&serial).unwrap_or_default()
            );
        }
    }
    let _ = vm.kill();
    let _ = vm.wait();
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    let phoned = phoned.unwrap_or_else(|| panic!("no phone-home within {BOOT_LIMIT:?}; serial:\n{console}"));
    assert_eq!(phoned["details"]["ip"], NODE.2, "the phone-home came from the reserved address");
    assert!(console.contains(&format!("tiny: address 2: eth0    inet {}/24", NODE.2)), "{console}");
    assert!(console.contains(&format!("tiny: hostname {}", NODE.0)), "{console}");
    let user_data = console
        .split("tiny: user-data begin")
        .nth(1)
        .and_then(|rest| rest.split("tiny: user-data end").next())
        .unwrap_or_else(|| panic!("no user-data on the console:\n{console}"));
    // The serial console interleaves the kernel's own lines (`[    2.02] ...`) with the init's.
    let user_data: String = user_data
        .lines()
        .filter(|l| !(l.starts_with('[') && l.split(']').next().is_some_and(|t| t[1..].trim().parse::<f64>().is_ok())))
        .map(|l| format!("{}\n", l.trim_end_matches('\r')))
        .collect();
    assert!(user_data.trim_start().starts_with("#cloud-config"), "{user_data}");
    crate::validate::user_data("the user-data the VM printed", user_data.trim_start().as_bytes());
    let parsed: serde_json::Value = serde_norway::from_str(user_data.trim()).expect("the user-data is YAML");
    assert_eq!(parsed["hostname"], NODE.0, "{user_data}");
    assert_eq!(parsed["phone_home"]["url"], format!("http://{SERVER}:8080/phone-home"), "{user_data}");

    let steps: Vec<String> =
        event_types(&daemon, &lab).iter().filter_map(|e| e["details"]["type"].as_str().map(String::from)).collect();
    for step in ["lease_acked", "boot_script_served", "file_fetched", "config_fetched", "phone_home"] {
        assert!(steps.iter().any(|s| s == step), "no {step} event in the timeline: {steps:?}");
    }
    // iPXE asks for its offer at once: one offer, then its ack, with no second DISCOVER (and
    // offer) between them, as there is while iPXE waits for ProxyDHCP offers.
    let script = steps.iter().position(|s| s == "boot_script_served").expect("boot script");
    let ack = steps[..script].iter().rposition(|s| s == "lease_acked").expect("iPXE's ack");
    let since = steps[..ack].iter().rposition(|s| s == "lease_acked").map_or(0, |a| a + 1);
    let offers = steps[since..ack].iter().filter(|s| *s == "lease_offered").count();
    assert_eq!(offers, 1, "iPXE's DHCP: one offer, then the ack: {steps:?}");
    if tftp {
        let from_tftp = event_types(&daemon, &lab)
            .into_iter()
            .any(|e| e["source"] == "tftp" && e["details"]["path"] == "snponly.efi");
        assert!(from_tftp, "the firmware fetched snponly.efi over TFTP: {:?}", events(&daemon, &lab, "source=tftp"));
    }
    eprintln!("serial console:\n{console}\nsteps: {steps:?}");
    daemon.stop(Duration::from_secs(10));
}

#[test]
fn a_bios_vm_with_the_ipxe_nic_rom_boots_from_slipway_and_phones_home() {
    boots_from_slipway_alone("b", Firmware::BiosIpxeRom);
}

#[test]
fn a_uefi_vm_with_the_ipxe_nic_rom_boots_from_slipway_and_phones_home() {
    boots_from_slipway_alone("u", Firmware::UefiIpxeRom);
}

#[test]
fn a_uefi_vm_with_firmware_pxe_gets_ipxe_over_tftp_then_boots_over_http() {
    boots_from_slipway_alone("p", Firmware::UefiPxe);
}
