//! The iPXE script a machine gets from `GET /boot.ipxe`: first a probe that asks iPXE for its
//! architecture and platform, then one of: boot a profile (kernel, initrds, arguments), boot the
//! local disk (installed nodes), or a message and a later retry (nothing to boot). Every script
//! retries DHCP and the chain on failure. Pure; no secret goes into a script.

use std::collections::BTreeMap;

use crate::inventory::{ConfigKind, Inventory, MacAddr, Node, Profile};
use crate::template::{self, TemplateError};

/// Seconds a failed or refused machine waits before it asks again.
pub const RETRY_SECS: u32 = 10;

/// The first answer, when the request did not say what the machine is: iPXE fills in its
/// architecture and platform and asks again.
pub fn probe(server: &str) -> String {
    format!(
        "#!ipxe\nchain --replace --autofree {server}/boot.ipxe?arch=${{buildarch:uristring}}&platform=${{platform:uristring}} || goto retry\n{}",
        retry(server)
    )
}

/// Boots `profile` with the variables of the machine asking.
pub fn boot(profile: &Profile, vars: &BTreeMap<&str, String>) -> Result<String, TemplateError> {
    let server = vars.get("server").map_or("", String::as_str);
    let image = |path: &str| -> Result<String, TemplateError> {
        let path = template::render(path, vars)?;
        Ok(if path.starts_with("http://") || path.starts_with("https://") {
            path
        } else {
            format!("{server}/images/{path}")
        })
    };
    let mut kernel_line = format!("kernel {}", image(&profile.kernel)?);
    let mut initrd_lines = String::new();
    for initrd in &profile.initrds {
        let url = image(initrd)?;
        let name = url.rsplit('/').next().unwrap_or("initrd").split('?').next().unwrap_or("initrd").to_string();
        kernel_line.push_str(&format!(" initrd={name}"));
        initrd_lines.push_str(&format!("initrd --name {name} {url} || goto retry\n"));
    }
    for arg in &profile.args {
        kernel_line.push(' ');
        kernel_line.push_str(&template::render(arg, vars)?);
    }
    let who = vars.get("node").filter(|n| !n.is_empty()).map_or("an unknown machine", String::as_str);
    Ok(format!(
        "#!ipxe\necho slipway: profile {} for {who}\n{kernel_line} || goto retry\n{initrd_lines}boot || goto retry\n{}",
        profile.name,
        retry(server)
    ))
}

/// The first per-node variable (`template::NODE_VARIABLES`) `profile`'s kernel, initrds or
/// arguments use: a machine that is not a node cannot boot such a profile (its
/// `{{config_url}}` would be empty).
pub fn needs_node(profile: &Profile) -> Option<&'static str> {
    std::iter::once(&profile.kernel)
        .chain(&profile.initrds)
        .chain(&profile.args)
        .find_map(|text| template::first_used(text, template::NODE_VARIABLES))
}

/// An installed node boots its own disk: `sanboot` the first BIOS disk, or leave iPXE so the
/// UEFI firmware tries its next boot entry.
pub fn local_disk(node: &Node) -> String {
    format!(
        "#!ipxe\necho slipway: {} is installed; booting from its disk\n\
         iseq ${{platform}} pcbios && sanboot --no-describe --drive 0x80 ||\nexit 0\n",
        node.name
    )
}

/// Nothing to boot: say why on the console and ask again later.
pub fn nothing(server: &str, why: &str) -> String {
    format!("#!ipxe\necho slipway: {why}\ngoto retry\n{}", retry(server))
}

fn retry(server: &str) -> String {
    format!(
        ":retry\necho slipway: retrying in {RETRY_SECS} s\nsleep {RETRY_SECS}\ndhcp ||\nchain --replace --autofree {server}/boot.ipxe || goto retry\n"
    )
}

/// The template variables for a machine (`template::VARIABLES`). An unknown machine has only
/// its address, MAC and the server.
pub fn variables(
    inv: &Inventory,
    node: Option<&Node>,
    ip: std::net::Ipv4Addr,
    mac: Option<MacAddr>,
    profile: Option<&Profile>,
    server: &str,
) -> BTreeMap<&'static str, String> {
    let text = |v: Option<String>| v.unwrap_or_default();
    let config_url = match (profile.map(|p| p.config), node) {
        (Some(ConfigKind::Ignition), Some(_)) => format!("{server}/ignition"),
        (Some(ConfigKind::CloudInit), Some(n)) => format!("{server}/nocloud/{}/", n.name),
        _ => String::new(),
    };
    BTreeMap::from([
        ("server", server.to_string()),
        ("node", text(node.map(|n| n.name.to_string()))),
        ("hostname", text(node.map(|n| n.hostname().to_string()))),
        ("fqdn", text(node.and_then(|n| inv.fqdn(n)))),
        ("ip", ip.to_string()),
        ("mac", text(node.map(|n| n.mac).or(mac).map(|m| m.to_string()))),
        ("cluster", text(node.and_then(|n| n.cluster.as_ref()).map(ToString::to_string))),
        ("role", text(node.and_then(|n| n.role).map(|r| r.as_str().to_string()))),
        ("config_url", config_url),
        ("phone_home_url", format!("{server}/phone-home")),
    ])
}

#[cfg(test)]
pub(crate) mod tests;
