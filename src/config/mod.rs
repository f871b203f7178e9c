//! Configuration: the TOML file (`/etc/slipway/slipway.toml`) turned into checked types.
//!
//! `raw` mirrors the file; `check` converts it, collecting every problem it can find (cross-field
//! rules and the inventory's own validation) so `slipway check` lists them all at once. Every
//! error names the file, the line, the field and the value.

#[cfg(any(test, fuzzing))]
pub mod fuzz;
mod hypervisors;
mod locate;
mod raw;
mod store;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::boot::BootSettings;
use crate::cluster::definition::Definition;
use crate::cluster::plan::{Facts, plan};
use crate::inventory::types::{parse_duration, shown};
use crate::inventory::{Backends, Frontend, HasOrigin, Inventory, Kind, Name, Origin, Pool, validate_ranked};
pub use crate::listen::TlsFiles;
use crate::store::events::Retention;
pub use hypervisors::{Backend, HypervisorConfig, ProxmoxConfig, QemuConfig, SecretError, SecretSource};
pub use locate::FieldPath;
use locate::Locator;
pub use raw::HypervisorKind;
use raw::{Items, RawConfig, RawPool};
pub use store::hostname;

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/slipway/slipway.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/slipway";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9443";
/// The systemd credential name looked up when no token source is configured.
pub const DEFAULT_TOKEN_CREDENTIAL: &str = "admin-token";
/// Where Debian's `ipxe` package puts undionly.kpxe, ipxe.efi and snponly.efi. Some are
/// symlinks out of that directory (ipxe.efi -> /boot/ipxe.efi), which a confined TFTP root
/// refuses: without a configured root slipway copies these into `<state_dir>/tftp` and serves
/// that.
pub const IPXE_PACKAGE_DIR: &str = "/usr/lib/ipxe";

/// The checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub admin: AdminConfig,
    pub dhcp: Option<DhcpConfig>,
    pub dns: Option<DnsConfig>,
    /// Load-balancer timeouts (`[lb]`); frontends and pools are in the inventory.
    pub lb: crate::lb::Settings,
    pub tftp: Option<TftpConfig>,
    pub http: Option<HttpConfig>,
    pub ipxe: IpxeFiles,
    /// What DHCP tells booting machines; derived from `[boot]`, `[tftp]` and `[http]`.
    pub boot: BootSettings,
    pub events: Retention,
    /// `[store] backend = "etcd"`: the shared store of an HA pair or trio; `None`: the
    /// embedded file under `state_dir`.
    pub shared: Option<crate::store::shared::Settings>,
    /// The networks, clusters, nodes, profiles and LB objects declared in the file.
    pub inventory: Inventory,
    pub hypervisors: Vec<HypervisorConfig>,
    /// `[[cluster_definitions]]`: clusters slipway makes and drives, applied when the daemon
    /// starts (and whenever they change in the file).
    pub definitions: Vec<Definition>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// A file holding the token.
    File(PathBuf),
    /// A systemd credential (`LoadCredential=`), read from `$CREDENTIALS_DIRECTORY`.
    Credential(String),
    /// `admin-token` from `$CREDENTIALS_DIRECTORY` if present, else a token slipway generates
    /// once in the state directory (`admin.token`, mode 0600).
    Default,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: TokenSource,
    pub tls: Option<TlsFiles>,
    /// Named tokens with roles, beside the admin token.
    pub tokens_file: Option<PathBuf>,
    pub limits: crate::listen::Limits,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpConfig {
    pub interfaces: Vec<String>,
    /// Send empty IPv6 router advertisements on the interfaces (faster iPXE start).
    pub router_advertisements: bool,
    /// The address DHCP names as its own on the network each lies in (the floating address of
    /// an HA pair), instead of the interface's.
    pub server_addresses: Vec<std::net::Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Empty: port 53 on each network interface's IPv4 address, found when the daemon starts.
    pub listen: Vec<SocketAddr>,
    pub upstream: Vec<SocketAddr>,
    /// Zones, static records, TTL and the recursion list.
    pub settings: crate::dns::Settings,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TftpConfig {
    pub listen: SocketAddr,
    pub root: PathBuf,
}

/// Where the iPXE binaries are served from (TFTP root, HTTP `/ipxe/`), and whether slipway
/// fills that directory from Debian's `ipxe` package at start (no root configured).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpxeFiles {
    pub dir: PathBuf,
    pub copy_from: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub settings: crate::http::Settings,
    pub limits: crate::listen::Limits,
}

/// One problem in the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub field: String,
    pub value: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if !self.field.is_empty() {
            write!(f, "{}", self.field)?;
            if let Some(value) = &self.value {
                write!(f, " = {value}")?;
            }
            write!(f, ": ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a config file, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and checks the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            line: None,
            field: String::new(),
            value: None,
            message: format!("cannot read the config file: {e}"),
        }])),
    }
}

/// Collects errors against the text they came from.
struct Report<'t> {
    file: PathBuf,
    locator: Locator<'t>,
    errors: Vec<ConfigError>,
}

impl Report<'_> {
    fn add(&mut self, path: &FieldPath, value: Option<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: self.locator.line_of(path),
            field: path.to_string(),
            value: value.map(|v| shown(&v)),
            message: message.into(),
        });
    }
}

/// Checks config text; `path` is used in messages and to resolve relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let mut report = Report { file: path.to_owned(), locator: Locator::new(text), errors: Vec::new() };
    let document: raw::Document = match toml::from_str(text) {
        Ok(document) => document,
        Err(e) => {
            let (line, field) = match e.span() {
                Some(span) => {
                    (Some(report.locator.line_col(span.start).0), report.locator.path_at(span.start).to_string())
                }
                None => (None, String::new()),
            };
            report.errors.push(ConfigError {
                file: path.to_owned(),
                line,
                field,
                value: None,
                message: e.message().trim().to_owned(),
            });
            return Err(ConfigErrors(report.errors));
        }
    };
    let (raw, failed) = document.into_raw();
    for (table, e) in failed {
        let mut path = FieldPath::parse(table);
        path.0.extend(e.path.0);
        report.add(&path, e.value, e.message);
    }
    let config = check(raw, &mut report);
    report.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    match config {
        Some(config) if report.errors.is_empty() => Ok(config),
        _ => Err(ConfigErrors(report.errors)),
    }
}

fn check(raw: RawConfig, report: &mut Report<'_>) -> Option<Config> {
    let base = report.file.parent().map(Path::to_owned).unwrap_or_default();
    let resolve = |p: &Path| {
        if p.is_absolute() { p.to_owned() } else { base.join(p) }
    };
    let state_dir = raw.state_dir.as_deref().map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), resolve);

    report_unparsed(&raw, report);
    let admin = check_admin(&raw, report, &resolve);
    let events = check_events(&raw, report);
    let shared = store::check(&raw.store, report, &resolve);
    let inventory = check_inventory(&raw, report);

    if let Some(dhcp) = &raw.dhcp {
        check_server_addresses(dhcp, &inventory, report);
        for (i, iface) in dhcp.interfaces.iter().enumerate() {
            if raw.networks.failed().count() == 0 && !inventory.networks.values().any(|n| &n.interface == iface) {
                report.add(
                    &FieldPath::parse("dhcp.interfaces").index(i),
                    Some(iface.clone()),
                    "no network uses this interface",
                );
            }
        }
    }
    check_listeners(&raw, &admin, report);

    let hypervisors = hypervisors::check(&raw.hypervisors, &state_dir, &resolve, report);
    let definitions = check_definitions(&raw, &inventory, report);

    let boot = check_boot(&raw, report);
    // A record outside every zone is only known to be when the networks and clusters all parsed.
    let complete = raw.networks.failed().count() + raw.clusters.failed().count() == 0;
    let dns = raw.dns.as_ref().map(|d| check_dns(d, &inventory, complete, report));
    let lb = check_lb(&raw.lb, report);
    let tftp_root = raw.tftp.as_ref().and_then(|t| t.root.as_deref()).map_or_else(|| state_dir.join("tftp"), resolve);
    let ipxe_source = match raw.tftp.as_ref().and_then(|t| t.root.as_ref()) {
        Some(_) => None,
        None => Some(PathBuf::from(IPXE_PACKAGE_DIR)),
    };
    for (i, key) in raw.boot.ssh_authorized_keys.iter().enumerate() {
        if key.trim().is_empty() || key.contains(['\n', '\r']) || key.split_whitespace().count() < 2 {
            report.add(
                &FieldPath::parse("boot.ssh_authorized_keys").index(i),
                Some(key.clone()),
                "must be one OpenSSH public key line (`ssh-ed25519 AAAA... comment`)",
            );
        }
    }
    let http_limits = raw
        .http
        .as_ref()
        .map(|h| limits(FieldPath::parse("http"), h.max_connections, h.max_connections_per_address, report));
    let http = raw.http.map(|h| HttpConfig {
        limits: http_limits.unwrap_or_default(),
        listen: h.listen,
        settings: crate::http::Settings {
            images: h.images.as_deref().map_or_else(|| state_dir.join("images"), resolve),
            ipxe: tftp_root.clone(),
            templates: raw.boot.templates.as_deref().map(resolve),
            ssh_keys: raw.boot.ssh_authorized_keys.clone(),
        },
    });
    Some(Config {
        path: report.file.clone(),
        state_dir,
        admin,
        dhcp: raw.dhcp.map(|d| DhcpConfig {
            interfaces: d.interfaces,
            router_advertisements: d.router_advertisements,
            server_addresses: d.server_addresses,
        }),
        dns,
        lb,
        tftp: raw.tftp.map(|t| TftpConfig { listen: t.listen, root: tftp_root.clone() }),
        ipxe: IpxeFiles { dir: tftp_root, copy_from: ipxe_source },
        http,
        boot,
        events,
        shared,
        inventory,
        hypervisors,
        definitions,
    })
}

/// `[dhcp] server_addresses`: each a host address of exactly one served network, one per
/// network.
fn check_server_addresses(dhcp: &raw::RawDhcp, inventory: &Inventory, report: &mut Report<'_>) {
    let mut taken: HashMap<&Name, std::net::Ipv4Addr> = HashMap::new();
    for (i, addr) in dhcp.server_addresses.iter().enumerate() {
        let at = FieldPath::parse("dhcp.server_addresses").index(i);
        let served = inventory.networks.values().filter(|n| dhcp.interfaces.contains(&n.interface));
        let Some(net) = served.into_iter().find(|n| n.cidr.contains(addr)) else {
            report.add(
                &at,
                Some(addr.to_string()),
                "not inside the cidr of any network DHCP serves ([dhcp] interfaces)",
            );
            continue;
        };
        if *addr == net.cidr.network() || *addr == net.cidr.broadcast() {
            report.add(
                &at,
                Some(addr.to_string()),
                format!("the network or broadcast address of network {}", net.name),
            );
        } else if let Some(first) = taken.insert(&net.name, *addr) {
            report.add(
                &at,
                Some(addr.to_string()),
                format!("network {} has a server address already ({first})", net.name),
            );
        }
    }
}

/// Every array element that did not parse, each at its own place in the file.
fn report_unparsed(raw: &RawConfig, report: &mut Report<'_>) {
    fn each<T>(table: &str, items: &Items<T>, report: &mut Report<'_>) {
        for (i, e) in items.failed() {
            let mut path = FieldPath::parse(table).index(i);
            path.0.extend(e.path.0.iter().cloned());
            report.add(&path, e.value.clone(), e.message.clone());
        }
    }
    each("networks", &raw.networks, report);
    each("clusters", &raw.clusters, report);
    each("nodes", &raw.nodes, report);
    each("profiles", &raw.profiles, report);
    each("hypervisors", &raw.hypervisors, report);
    each("cluster_definitions", &raw.cluster_definitions, report);
    each("lb.frontends", &raw.lb.frontends, report);
    each("lb.pools", &raw.lb.pools, report);
    if let Some(dns) = &raw.dns {
        each("dns.records", &dns.records, report);
    }
}

fn check_admin(raw: &RawConfig, report: &mut Report<'_>, resolve: &dyn Fn(&Path) -> PathBuf) -> AdminConfig {
    let a = &raw.admin;
    let at = |f: &str| FieldPath::parse("admin").key(f);
    let token = match (&a.token_file, &a.token_credential) {
        (Some(file), Some(_)) => {
            report.add(&at("token_credential"), None, "set token_file or token_credential, not both");
            TokenSource::File(resolve(file))
        }
        (Some(file), None) => TokenSource::File(resolve(file)),
        (None, Some(name)) => {
            if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
                report.add(&at("token_credential"), Some(name.clone()), "not a credential name");
            }
            TokenSource::Credential(name.clone())
        }
        (None, None) => TokenSource::Default,
    };
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => {
            let files = TlsFiles { cert: resolve(cert), key: resolve(key) };
            for (field, file) in [("tls_cert", &files.cert), ("tls_key", &files.key)] {
                if let Err(e) = std::fs::metadata(file) {
                    report.add(&at(field), Some(file.display().to_string()), format!("cannot read: {e}"));
                }
            }
            Some(files)
        }
        (None, None) => None,
        (Some(_), None) => {
            report.add(&at("tls_cert"), None, "tls_cert needs tls_key");
            None
        }
        (None, Some(_)) => {
            report.add(&at("tls_key"), None, "tls_key needs tls_cert");
            None
        }
    };
    #[allow(clippy::unwrap_used)] // a constant that parses
    let listen = a.listen.unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.parse().unwrap());
    let limits = limits(FieldPath::parse("admin"), a.max_connections, a.max_connections_per_address, report);
    let tokens_file = a.tokens_file.as_deref().map(resolve);
    if let Some(file) = &tokens_file
        && let Err(e) = std::fs::metadata(file)
    {
        report.add(&at("tokens_file"), Some(file.display().to_string()), format!("cannot read: {e}"));
    }
    AdminConfig { listen, token, tls, tokens_file, limits }
}

/// A listener's connection limits: each at least 1, the per-address one at most the total.
fn limits(
    at: FieldPath,
    total: Option<usize>,
    per_address: Option<usize>,
    report: &mut Report<'_>,
) -> crate::listen::Limits {
    let default = crate::listen::Limits::default();
    let mut limits = crate::listen::Limits {
        total: total.unwrap_or(default.total),
        per_address: per_address.unwrap_or(default.per_address.min(total.unwrap_or(default.total).max(1))),
    };
    for (field, value) in [("max_connections", limits.total), ("max_connections_per_address", limits.per_address)] {
        if value == 0 {
            report.add(&at.clone().key(field), Some("0".into()), "must be at least 1");
        }
    }
    if limits.total > 0 && limits.per_address > limits.total {
        report.add(
            &at.key("max_connections_per_address"),
            Some(limits.per_address.to_string()),
            format!("more than max_connections ({})", limits.total),
        );
        limits.per_address = limits.total;
    }
    limits
}

fn check_dns(raw: &raw::RawDns, inventory: &Inventory, complete: bool, report: &mut Report<'_>) -> DnsConfig {
    use crate::dns::{self, records};
    let at = |f: &str| FieldPath::parse("dns").key(f);
    let ttl_of = |field: &FieldPath, text: &Option<String>, report: &mut Report<'_>, default: u32| match text {
        None => default,
        Some(t) => match parse_duration(t).ok().and_then(|d| u32::try_from(d.as_secs()).ok()) {
            Some(secs) => secs,
            None => {
                report.add(field, Some(t.clone()), "not a duration (e.g. 60s, 5m)");
                default
            }
        },
    };
    let ttl = ttl_of(&at("ttl"), &raw.ttl, report, dns::Settings::default().ttl);
    let mut zones = Vec::new();
    for (i, z) in raw.zones.iter().enumerate() {
        match records::parse_name(z) {
            Ok(name) => zones.push(name),
            Err(e) => report.add(&at("zones").index(i), Some(z.clone()), e.to_string()),
        }
    }
    let mut served: Vec<hickory_proto::rr::Name> = zones.clone();
    served.extend(inventory.clusters.values().filter_map(|c| records::parse_name(&c.zone()).ok()));
    served.extend(
        inventory
            .networks
            .values()
            .filter_map(|n| n.domain.as_ref())
            .filter_map(|d| records::parse_name(d.as_str()).ok()),
    );
    served.extend(inventory.networks.values().flat_map(|n| dns::zones::reverse_zones(n.cidr)));
    let mut recs = Vec::new();
    for (i, r) in raw.records.parsed() {
        let field = at("records").index(i);
        let record_ttl = ttl_of(&field.clone().key("ttl"), &r.ttl, report, ttl);
        match records::parse(&r.name, &r.rtype, &r.value, record_ttl) {
            Ok(record) if served.iter().any(|z| z.zone_of(&record.name)) => recs.push(record),
            Ok(_) if !complete => {}
            Ok(_) => report.add(
                &field.key("name"),
                Some(r.name.clone()),
                "not inside any zone slipway serves; add its zone to dns.zones",
            ),
            Err(records::RecordError::Name(e)) => report.add(&field.key("name"), Some(r.name.clone()), e),
            Err(records::RecordError::Type(e)) => report.add(&field.key("type"), Some(r.rtype.clone()), e),
            Err(records::RecordError::Value(e)) => report.add(&field.key("value"), Some(r.value.clone()), e),
        }
    }
    let allow_recursion = match &raw.allow_recursion {
        Some(nets) => dns::Acl(nets.clone()),
        None => dns::Acl::default_for(inventory.networks.values().map(|n| n.cidr)),
    };
    let nameserver = dns::Settings::nameserver_of(&raw.listen);
    DnsConfig {
        listen: raw.listen.clone(),
        upstream: raw.upstream.clone(),
        settings: dns::Settings { ttl, nameserver, zones, records: recs, allow_recursion },
    }
}

fn check_lb(raw: &raw::RawLb, report: &mut Report<'_>) -> crate::lb::Settings {
    let defaults = crate::lb::Settings::default();
    let mut duration = |field: &str, text: &Option<String>, default: std::time::Duration| match text {
        None => default,
        Some(t) => match parse_duration(t) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                report.add(
                    &FieldPath::parse("lb").key(field),
                    Some(t.clone()),
                    "not a positive duration (e.g. 3s, 1h)",
                );
                default
            }
        },
    };
    crate::lb::Settings {
        connect_timeout: duration("connect_timeout", &raw.connect_timeout, defaults.connect_timeout),
        idle_timeout: duration("idle_timeout", &raw.idle_timeout, defaults.idle_timeout),
        drain_timeout: duration("drain_timeout", &raw.drain_timeout, defaults.drain_timeout),
    }
}

fn check_boot(raw: &RawConfig, report: &mut Report<'_>) -> BootSettings {
    let mut boot = BootSettings {
        tftp: raw.tftp.is_some(),
        http_port: raw.http.as_ref().map(|h| h.listen.port()),
        ..BootSettings::default()
    };
    let files =
        [("bios_file", &raw.boot.bios_file), ("uefi_file", &raw.boot.uefi_file), ("arm64_file", &raw.boot.arm64_file)];
    for (field, value) in files {
        if let Some(file) = value
            && (file.is_empty() || file.len() > 127 || file.starts_with('/') || file.split('/').any(|s| s == ".."))
        {
            report.add(
                &FieldPath::parse("boot").key(field),
                Some(file.clone()),
                "must be a relative path under the TFTP root, at most 127 bytes",
            );
        }
    }
    if let Some(f) = &raw.boot.bios_file {
        boot.bios_file = f.clone();
    }
    if let Some(f) = &raw.boot.uefi_file {
        boot.uefi_file = f.clone();
    }
    boot.arm64_file = raw.boot.arm64_file.clone();
    boot
}

fn check_events(raw: &RawConfig, report: &mut Report<'_>) -> Retention {
    let mut retention = Retention::default();
    let e = &raw.events;
    for (field, value, kept) in [
        ("max_count", e.max_count, &mut retention.max_count),
        ("audit_max_count", e.audit_max_count, &mut retention.audit_max_count),
    ] {
        if let Some(count) = value {
            if count == 0 {
                report.add(&FieldPath::parse("events").key(field), Some(count.to_string()), "must be at least 1");
            }
            *kept = count;
        }
    }
    for (field, value, kept) in [
        ("max_age", &e.max_age, &mut retention.max_age),
        ("audit_max_age", &e.audit_max_age, &mut retention.audit_max_age),
    ] {
        if let Some(age) = value {
            let at = FieldPath::parse("events").key(field);
            match parse_duration(age) {
                Ok(d) if d >= Duration::from_secs(60) => *kept = d,
                Ok(_) => report.add(&at, Some(age.clone()), "must be at least 1 minute"),
                Err(err) => report.add(&at, Some(age.clone()), err.to_string()),
            }
        }
    }
    retention
}

/// Each cluster definition planned against the declared objects, as `slipway cluster plan`
/// would: every problem it has, at its field (`cluster_definitions[0].node_groups[1].count`).
/// What only the running daemon knows (nodes made through the API, the hypervisor's hosts) is
/// checked when it applies the definition.
fn check_definitions(raw: &RawConfig, inventory: &Inventory, report: &mut Report<'_>) -> Vec<Definition> {
    let hypervisors: Vec<String> = raw.hypervisors.parsed().map(|(_, h)| h.name.to_string()).collect();
    let facts = Facts { hypervisors, ..Facts::default() };
    let mut out: Vec<Definition> = Vec::new();
    // Each definition is planned with the ones before it applied: two that claim one name,
    // MAC or address clash here, not at the daemon's start.
    let mut planned = inventory.clone();
    for (i, def) in raw.cluster_definitions.parsed() {
        let at = FieldPath::parse("cluster_definitions").index(i);
        if out.iter().any(|d| d.name == def.name) {
            report.add(&at.key("name"), Some(def.name.to_string()), "another cluster definition has this name");
            continue;
        }
        if inventory.clusters.contains_key(&def.name) {
            let message = "a [[clusters]] entry has this name (a cluster is either listed or defined)";
            report.add(&at.key("name"), Some(def.name.to_string()), message);
            continue;
        }
        // Problems that only mean a declared object did not parse wait for it to parse.
        let complete = raw.networks.failed().count() + raw.hypervisors.failed().count() == 0;
        match plan(def, &planned, &facts) {
            Ok(made) => {
                planned.clusters.insert(made.cluster.name.clone(), made.cluster);
                for p in made.nodes {
                    planned.nodes.insert(p.node.name.clone(), p.node);
                }
                planned.reindex();
            }
            Err(problems) => {
                for p in problems.into_iter().filter(|_| complete) {
                    // A problem of the inventory it would make names that object's field instead.
                    let message = if p.field.contains(' ') { format!("{}: {}", p.field, p.message) } else { p.message };
                    report.add(&at.clone().key_path(&p.field), Some(p.value), message);
                }
            }
        }
        out.push(def.clone());
    }
    out
}

/// Declared objects go into one inventory (origin `config`) which then gets the same whole
/// validation the store runs; problems are mapped back to the file's lines.
fn check_inventory(raw: &RawConfig, report: &mut Report<'_>) -> Inventory {
    let mut inv = Inventory::default();
    let mut index: HashMap<(Kind, String), usize> = HashMap::new();
    fn insert<'a, T: Clone + 'a>(
        map: &mut std::collections::BTreeMap<Name, T>,
        index: &mut HashMap<(Kind, String), usize>,
        report: &mut Report<'_>,
        kind: Kind,
        items: impl Iterator<Item = (usize, &'a T)>,
        name: fn(&T) -> &Name,
    ) {
        for (i, item) in items {
            let n = name(item);
            if map.insert(n.clone(), item.clone()).is_some() {
                report.add(
                    &FieldPath::parse(kind.config_table()).index(i).key("name"),
                    Some(n.to_string()),
                    format!("another {kind} has this name"),
                );
            } else {
                index.insert((kind, n.to_string()), i);
            }
        }
    }
    insert(&mut inv.networks, &mut index, report, Kind::Network, raw.networks.parsed(), |n| &n.name);
    insert(&mut inv.clusters, &mut index, report, Kind::Cluster, raw.clusters.parsed(), |c| &c.name);
    insert(&mut inv.nodes, &mut index, report, Kind::Node, raw.nodes.parsed(), |n| &n.name);
    insert(&mut inv.profiles, &mut index, report, Kind::Profile, raw.profiles.parsed(), |p| &p.name);
    let pools: Vec<(usize, Pool)> =
        raw.lb.pools.parsed().filter_map(|(i, p)| check_pool(p, i, report).map(|pool| (i, pool))).collect();
    insert(&mut inv.pools, &mut index, report, Kind::Pool, pools.iter().map(|(i, p)| (*i, p)), |p| &p.name);
    let frontends: Vec<(usize, Frontend)> = raw
        .lb
        .frontends
        .parsed()
        .map(|(i, f)| {
            let frontend = Frontend {
                name: f.name.clone(),
                listen: f.listen,
                pool: f.pool.clone(),
                max_connections: f.max_connections.unwrap_or(10_000),
            };
            (i, frontend)
        })
        .collect();
    insert(&mut inv.frontends, &mut index, report, Kind::Frontend, frontends.iter().map(|(i, f)| (*i, f)), |f| &f.name);
    for c in inv.clusters.values_mut() {
        *c.origin_mut() = Origin::Config;
    }
    for n in inv.nodes.values_mut() {
        *n.origin_mut() = Origin::Config;
    }
    for p in inv.profiles.values_mut() {
        *p.origin_mut() = Origin::Config;
    }
    inv.reindex();
    // Objects others refer to (by name or by address range) that did not parse would make the
    // cross-object checks report their absence on every object that uses them: those checks
    // wait until they parse (the next run shows them).
    let missing: Vec<Kind> = [
        (Kind::Network, raw.networks.failed().count()),
        (Kind::Cluster, raw.clusters.failed().count()),
        (Kind::Profile, raw.profiles.failed().count()),
        (Kind::Pool, raw.lb.pools.failed().count()),
    ]
    .into_iter()
    .filter_map(|(kind, failed)| (failed > 0).then_some(kind))
    .collect();
    // A clash names the object declared later in the file.
    let position = |kind: Kind, name: &str| index.get(&(kind, name.to_string())).copied().unwrap_or(0);
    for problem in validate_ranked(&inv, &position) {
        if refers_to(&problem, &missing) {
            continue;
        }
        let i = index.get(&(problem.kind, problem.name.clone())).copied().unwrap_or(0);
        let path = FieldPath::parse(problem.kind.config_table()).index(i).key(&problem.field);
        report.add(&path, Some(problem.value), format!("{} {}: {}", problem.kind, problem.name, problem.message));
    }
    inv
}

/// Whether `problem` is about a reference to an object of a kind in `missing` (one that did not
/// parse, so its absence proves nothing).
fn refers_to(problem: &crate::inventory::Problem, missing: &[Kind]) -> bool {
    let field = problem.field.as_str();
    missing.iter().any(|kind| match kind {
        Kind::Network => {
            matches!((problem.kind, field), (Kind::Node, "ipv4") | (Kind::Cluster, "network" | "api_int_address"))
        }
        Kind::Cluster => matches!(
            (problem.kind, field),
            (Kind::Node, "cluster" | "role" | "hostname") | (Kind::Profile, "match.cluster") | (Kind::Pool, "cluster")
        ),
        Kind::Profile => matches!((problem.kind, field), (Kind::Node, "profile")),
        Kind::Pool => matches!((problem.kind, field), (Kind::Frontend, "pool")),
        _ => false,
    })
}

fn check_pool(p: &RawPool, i: usize, report: &mut Report<'_>) -> Option<Pool> {
    let at = FieldPath::parse("lb.pools").index(i);
    let backends = match (&p.backends, &p.cluster, p.members, p.port) {
        (Some(list), None, None, None) => Backends::Static { addresses: list.clone() },
        (None, Some(cluster), Some(members), Some(port)) => {
            Backends::Cluster { cluster: cluster.clone(), members, port }
        }
        (Some(list), _, _, _) => {
            report.add(
                &at.clone().key("backends"),
                None,
                format!("pool {}: list backends, or derive them with cluster/members/port, not both", p.name),
            );
            Backends::Static { addresses: list.clone() }
        }
        (None, _, _, _) => {
            report.add(
                &at.clone().key("name"),
                Some(p.name.to_string()),
                "a pool needs backends = [...] or cluster, members and port",
            );
            return None;
        }
    };
    let check = &p.check;
    if check.rise == 0 || check.fall == 0 {
        report.add(&at.clone().key("check"), None, format!("pool {}: rise and fall must be at least 1", p.name));
    }
    if check.interval < std::time::Duration::from_millis(100) || check.timeout > check.interval {
        report.add(
            &at.clone().key("check"),
            None,
            format!("pool {}: interval must be at least 100ms and timeout at most the interval", p.name),
        );
    }
    if !check.path.starts_with('/') || check.path.contains(['\r', '\n', ' ']) {
        report.add(&at.clone().key("check").key("path"), Some(check.path.clone()), "must be an absolute HTTP path");
    }
    Some(Pool { name: p.name.clone(), algorithm: p.algorithm, backends, check: check.clone() })
}

/// TCP listeners must not collide (admin, HTTP boot, DNS over TCP, LB frontends); nor UDP ones.
fn check_listeners(raw: &RawConfig, admin: &AdminConfig, report: &mut Report<'_>) {
    let mut tcp: Vec<(FieldPath, SocketAddr)> = vec![(FieldPath::parse("admin.listen"), admin.listen)];
    let mut udp: Vec<(FieldPath, SocketAddr)> = Vec::new();
    if let Some(http) = &raw.http {
        tcp.push((FieldPath::parse("http.listen"), http.listen));
    }
    if let Some(dns) = &raw.dns {
        for (i, addr) in dns.listen.iter().enumerate() {
            tcp.push((FieldPath::parse("dns.listen").index(i), *addr));
            udp.push((FieldPath::parse("dns.listen").index(i), *addr));
        }
    }
    if let Some(tftp) = &raw.tftp {
        udp.push((FieldPath::parse("tftp.listen"), tftp.listen));
    }
    for (i, fe) in raw.lb.frontends.parsed() {
        tcp.push((FieldPath::parse("lb.frontends").index(i).key("listen"), fe.listen));
    }
    for (proto, list) in [("TCP", &tcp), ("UDP", &udp)] {
        for (i, (path, addr)) in list.iter().enumerate() {
            let clash = list[..i].iter().find(|(_, other)| {
                other.port() == addr.port()
                    && (other.ip() == addr.ip() || other.ip().is_unspecified() || addr.ip().is_unspecified())
            });
            if let Some((first, _)) = clash
                && !(path.to_string().starts_with("lb.frontends") && first.to_string().starts_with("lb.frontends"))
            {
                report.add(path, Some(addr.to_string()), format!("{proto} address already used by {first}"));
            }
        }
    }
}

#[cfg(test)]
mod tests;
