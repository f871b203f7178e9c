//! Boot selection: what a machine is told to boot. DHCP asks here which answer a client gets
//! (TFTP + an iPXE binary, a UEFI HTTP boot URL, or the iPXE script URL); the HTTP boot service
//! asks which profile a machine boots (`select`) and renders what its URLs serve (`script`,
//! `ignition`, `cloudinit`, `k3s`), and who may fetch a config (`access`). Pure functions only:
//! no sockets, files or clocks here (a k3s node's turn is the cluster lifecycle's to say, behind
//! `k3s::Admission`).

pub mod access;
pub mod cloudinit;
pub mod ignition;
pub mod k3s;
pub mod script;
pub mod select;
pub mod timeline;

use std::net::Ipv4Addr;

/// What a DHCP client told us about its firmware.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootClient {
    /// Option 93, client system architecture (RFC 4578).
    pub arch: Option<u16>,
    /// Option 60, vendor class identifier (`PXEClient:Arch:...`, `HTTPClient:...`).
    pub vendor_class: Option<Vec<u8>>,
    /// Option 77 user class is `iPXE`, or option 175 (iPXE encapsulated options) is present.
    pub is_ipxe: bool,
}

impl BootClient {
    fn vendor_starts_with(&self, prefix: &[u8]) -> bool {
        self.vendor_class.as_deref().is_some_and(|v| v.starts_with(prefix))
    }

    /// Firmware that asks for a boot file (PXE or UEFI HTTP boot), as opposed to an OS.
    pub fn wants_boot(&self) -> bool {
        self.is_ipxe || self.vendor_starts_with(b"PXEClient") || self.vendor_starts_with(b"HTTPClient")
    }
}

/// Where boot files are served from; built from the `[boot]`, `[tftp]` and `[http]` config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootSettings {
    /// TFTP is served: firmware PXE clients can be handed an iPXE binary.
    pub tftp: bool,
    /// The HTTP boot port, when the HTTP boot service is configured.
    pub http_port: Option<u16>,
    /// iPXE binary for legacy BIOS PXE (option 93 = 0).
    pub bios_file: String,
    /// iPXE binary for x86-64 UEFI (option 93 = 7 or 9).
    pub uefi_file: String,
    /// iPXE binary for arm64 UEFI (option 93 = 11), when configured.
    pub arm64_file: Option<String>,
}

impl Default for BootSettings {
    fn default() -> Self {
        BootSettings {
            tftp: false,
            http_port: None,
            bios_file: "undionly.kpxe".into(),
            // iPXE on the firmware's own network driver: ~4 s sooner at its first DISCOVER
            // than ipxe.efi, which unloads the firmware's driver and starts its own
            // (benches/RESULTS.md, "Boot speed").
            uefi_file: "snponly.efi".into(),
            arm64_file: None,
        }
    }
}

/// The boot part of a DHCP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootAnswer {
    /// Not a boot client, or nothing to offer it.
    None,
    /// Firmware PXE: fetch `file` over TFTP from `server` (siaddr / next-server).
    Tftp { server: Ipv4Addr, file: String },
    /// UEFI HTTP boot: fetch this URL; echo vendor class `HTTPClient`.
    HttpBoot { url: String },
    /// iPXE already running: chain the rendered script, so there is no chainload loop.
    IpxeScript { url: String },
}

const ARCH_BIOS: u16 = 0;
const ARCH_X64_UEFI: u16 = 7;
const ARCH_EFI_BC: u16 = 9;
const ARCH_ARM64_UEFI: u16 = 11;
const ARCH_X64_HTTP: u16 = 16;
const ARCH_ARM64_HTTP: u16 = 19;

/// The boot answer for `client`, asking DHCP server `server` (the address it reached us on).
pub fn dhcp_answer(client: &BootClient, settings: &BootSettings, server: Ipv4Addr) -> BootAnswer {
    let http = |path: &str| settings.http_port.map(|port| format!("http://{server}:{port}/{path}"));
    if client.is_ipxe {
        return http("boot.ipxe").map_or(BootAnswer::None, |url| BootAnswer::IpxeScript { url });
    }
    if client.vendor_starts_with(b"HTTPClient") {
        let file = match client.arch {
            Some(ARCH_X64_HTTP) | None => Some(settings.uefi_file.as_str()),
            Some(ARCH_ARM64_HTTP) => settings.arm64_file.as_deref(),
            Some(_) => None,
        };
        return match file.and_then(|f| http(&format!("ipxe/{f}"))) {
            Some(url) => BootAnswer::HttpBoot { url },
            None => BootAnswer::None,
        };
    }
    if !client.vendor_starts_with(b"PXEClient") || !settings.tftp {
        return BootAnswer::None;
    }
    let file = match client.arch {
        Some(ARCH_BIOS) | None => Some(settings.bios_file.clone()),
        Some(ARCH_X64_UEFI | ARCH_EFI_BC) => Some(settings.uefi_file.clone()),
        Some(ARCH_ARM64_UEFI) => settings.arm64_file.clone(),
        Some(_) => None,
    };
    file.map_or(BootAnswer::None, |file| BootAnswer::Tftp { server, file })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 107, 1);

    fn settings() -> BootSettings {
        BootSettings {
            tftp: true,
            http_port: Some(8080),
            arm64_file: Some("arm64/snp.efi".into()),
            ..BootSettings::default()
        }
    }

    fn pxe(arch: u16) -> BootClient {
        BootClient {
            arch: Some(arch),
            vendor_class: Some(format!("PXEClient:Arch:{arch:05}:UNDI:003016").into_bytes()),
            is_ipxe: false,
        }
    }

    #[test]
    fn firmware_pxe_gets_the_ipxe_binary_for_its_architecture() {
        let tftp = |file: &str| BootAnswer::Tftp { server: SERVER, file: file.into() };
        assert_eq!(dhcp_answer(&pxe(0), &settings(), SERVER), tftp("undionly.kpxe"));
        assert_eq!(dhcp_answer(&pxe(7), &settings(), SERVER), tftp("snponly.efi"));
        assert_eq!(dhcp_answer(&pxe(9), &settings(), SERVER), tftp("snponly.efi"));
        assert_eq!(dhcp_answer(&pxe(11), &settings(), SERVER), tftp("arm64/snp.efi"));
        assert_eq!(dhcp_answer(&pxe(2), &settings(), SERVER), BootAnswer::None, "Itanium: nothing to offer");
    }

    #[test]
    fn arm64_gets_nothing_unless_configured() {
        let s = BootSettings { arm64_file: None, ..settings() };
        assert_eq!(dhcp_answer(&pxe(11), &s, SERVER), BootAnswer::None);
    }

    #[test]
    fn ipxe_gets_the_script_url_whatever_its_architecture() {
        let mut client = pxe(7);
        client.is_ipxe = true;
        assert_eq!(
            dhcp_answer(&client, &settings(), SERVER),
            BootAnswer::IpxeScript { url: "http://10.1.107.1:8080/boot.ipxe".into() }
        );
    }

    #[test]
    fn uefi_http_boot_gets_an_http_url() {
        let client = BootClient {
            arch: Some(16),
            vendor_class: Some(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()),
            is_ipxe: false,
        };
        assert_eq!(
            dhcp_answer(&client, &settings(), SERVER),
            BootAnswer::HttpBoot { url: "http://10.1.107.1:8080/ipxe/snponly.efi".into() }
        );
    }

    #[test]
    fn an_os_dhcp_client_gets_no_boot_answer() {
        let client = BootClient { arch: None, vendor_class: Some(b"udhcp 1.36.1".to_vec()), is_ipxe: false };
        assert_eq!(dhcp_answer(&client, &settings(), SERVER), BootAnswer::None);
        assert!(!client.wants_boot());
    }

    #[test]
    fn without_tftp_or_http_nothing_is_offered() {
        let off = BootSettings::default();
        assert_eq!(dhcp_answer(&pxe(0), &off, SERVER), BootAnswer::None);
        let mut ipxe = pxe(0);
        ipxe.is_ipxe = true;
        assert_eq!(dhcp_answer(&ipxe, &off, SERVER), BootAnswer::None);
    }
}
