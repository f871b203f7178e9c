//! The config's service sections, each bound into services from a config: at start, and again
//! when a reload changes what a section's services were bound from.

use std::net::SocketAddr;
use std::sync::Arc;

use super::AppError;
use super::services::Services;
use crate::api::reload::Running;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::service::{Deps, Refusals};
use crate::store::Store;
use crate::store::events::EventLog;

/// Where a service comes from: the section of the config whose change rebinds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Dhcp,
    Dns,
    Lb,
    Http,
    Tftp,
    /// The admin API: its listener changes only with a restart.
    Admin,
    /// The cluster lifecycle engine: it follows the store, never rebound.
    Engine,
}

impl Section {
    /// The sections a reload may rebind, in the order they are bound.
    pub const REBINDABLE: [Section; 5] = [Section::Dhcp, Section::Dns, Section::Lb, Section::Http, Section::Tftp];

    pub fn as_str(self) -> &'static str {
        match self {
            Section::Dhcp => "dhcp",
            Section::Dns => "dns",
            Section::Lb => "lb",
            Section::Http => "http",
            Section::Tftp => "tftp",
            Section::Admin => "admin",
            Section::Engine => "engine",
        }
    }

    /// Whether `new` binds this section's services differently from `old`.
    pub fn changed(self, old: &Config, new: &Config) -> bool {
        match self {
            Section::Dhcp => old.dhcp != new.dhcp || old.boot != new.boot || dhcp_ports(old) != dhcp_ports(new),
            Section::Dns => old.dns != new.dns || dns_listen(old).ok() != dns_listen(new).ok(),
            Section::Lb => old.lb != new.lb || old.inventory.frontends != new.inventory.frontends,
            Section::Http => old.http != new.http || old.ipxe != new.ipxe,
            Section::Tftp => old.tftp != new.tftp || old.boot.http_port != new.boot.http_port || old.ipxe != new.ipxe,
            Section::Admin | Section::Engine => false,
        }
    }
}

/// The interfaces DHCP serves with the network each serves and whether it proxies.
fn dhcp_ports(config: &Config) -> Vec<(String, String, bool)> {
    let interfaces = config.dhcp.as_ref().map(|d| d.interfaces.clone()).unwrap_or_default();
    let networks = config.inventory.networks.values();
    networks
        .filter(|n| interfaces.contains(&n.interface))
        .map(|n| (n.interface.clone(), n.name.to_string(), n.proxy))
        .collect()
}

/// What binding a section needs, kept for the daemon's life: a reload binds again from it.
pub struct Wiring {
    pub store: Store,
    pub events: EventLog,
    pub metrics: Arc<Metrics>,
    pub refusals: Refusals,
    /// The handles the admin API reads, set as services are bound.
    pub running: Running,
    /// The defined clusters (when a k3s node may fetch its config; the declared definitions).
    pub clusters: crate::cluster::Clusters,
    /// The tokens the admin API accepts.
    pub keys: Arc<crate::api::keys::Keys>,
    families: Families,
}

/// The services' metric families, registered the first time each is bound and kept across
/// rebinds (a family registered twice would be scraped twice).
#[derive(Default)]
struct Families {
    dhcp: Option<crate::dhcp::server::Metrics>,
    dns: Option<crate::dns::respond::Metrics>,
    lb: Option<crate::lb::server::Metrics>,
}

impl Wiring {
    pub fn new(
        store: &Store,
        events: &EventLog,
        metrics: Arc<Metrics>,
        clusters: crate::cluster::Clusters,
        keys: Arc<crate::api::keys::Keys>,
    ) -> Wiring {
        let refusals = metrics.register_with(|r| Refusals::register(events, r));
        Wiring {
            store: store.clone(),
            events: events.clone(),
            metrics,
            refusals,
            running: Running::default(),
            clusters,
            keys,
            families: Families::default(),
        }
    }

    fn deps(&self) -> Deps<'_> {
        Deps { store: &self.store, events: &self.events, refusals: &self.refusals }
    }

    /// Binds `section`'s services as `config` has them (none when it is off) into `services`,
    /// and gives the admin API their handles. Nothing serves until `services.start`.
    pub async fn bind(&mut self, section: Section, config: &Config, services: &mut Services) -> Result<(), AppError> {
        match section {
            Section::Dhcp => self.bind_dhcp(config, services),
            Section::Dns => self.bind_dns(config, services).await,
            Section::Lb => self.bind_lb(config, services).await,
            Section::Http => {
                let Some(h) = &config.http else { return Ok(()) };
                let admission: Option<Arc<dyn crate::boot::k3s::Admission>> = Some(Arc::new(self.clusters.clone()));
                let deps = self.deps();
                let http = crate::http::Server::bind(&deps, h.listen, h.settings.clone(), h.limits, admission).await?;
                services.add(section.as_str(), http);
                Ok(())
            }
            Section::Tftp => {
                let Some(t) = &config.tftp else { return Ok(()) };
                let deps = self.deps();
                let tftp = crate::tftp::server::Server::bind(&deps, t.listen, &t.root, config.boot.http_port).await?;
                services.add(section.as_str(), tftp);
                Ok(())
            }
            Section::Admin | Section::Engine => Ok(()),
        }
    }

    fn bind_dhcp(&mut self, config: &Config, services: &mut Services) -> Result<(), AppError> {
        let Some(d) = &config.dhcp else {
            self.running.update(|h| h.dhcp = None);
            return Ok(());
        };
        let metrics = self.metrics.clone();
        let families =
            self.families.dhcp.get_or_insert_with(|| metrics.register_with(crate::dhcp::server::Metrics::register));
        let metrics = families.clone();
        let networks = &config.inventory.networks;
        let dhcp = crate::dhcp::server::Server::bind(
            &self.deps(),
            metrics,
            &d.interfaces,
            &d.server_addresses,
            networks,
            config.boot.clone(),
        )?;
        let handle = dhcp.handle();
        let mut advertisers = Vec::new();
        for interface in d.interfaces.iter().filter(|_| d.router_advertisements) {
            advertisers.push(crate::dhcp::ra::Advertiser::bind(interface)?);
        }
        services.add(Section::Dhcp.as_str(), dhcp);
        for advertiser in advertisers {
            services.add(Section::Dhcp.as_str(), advertiser);
        }
        self.running.update(|h| h.dhcp = Some(handle));
        Ok(())
    }

    async fn bind_dns(&mut self, config: &Config, services: &mut Services) -> Result<(), AppError> {
        let Some(d) = &config.dns else {
            self.running.update(|h| h.dns = None);
            return Ok(());
        };
        let listen = dns_listen(config)?;
        let mut settings = d.settings.clone();
        // Listening by default or on 0.0.0.0: `ns.<zone>` is at the provisioning address, when
        // the interfaces have one.
        if settings.nameserver.is_none() {
            let provisioning = provisioning_dns(&config.inventory).unwrap_or_default();
            settings.nameserver = crate::dns::Settings::nameserver_of(&listen)
                .or_else(|| crate::dns::Settings::nameserver_of(&provisioning));
        }
        let metrics = self.metrics.clone();
        let metrics = self
            .families
            .dns
            .get_or_insert_with(|| {
                let families = crate::dns::respond::Metrics::default();
                metrics.register_with(|r| families.register(r));
                families
            })
            .clone();
        let dns = crate::dns::server::Server::bind(&self.deps(), metrics, &listen, &d.upstream, settings).await?;
        let zones = dns.zones();
        services.add(Section::Dns.as_str(), dns);
        self.running.update(|h| h.dns = Some(zones));
        Ok(())
    }

    async fn bind_lb(&mut self, config: &Config, services: &mut Services) -> Result<(), AppError> {
        if config.inventory.frontends.is_empty() {
            self.running.update(|h| h.lb = None);
            return Ok(());
        }
        let metrics = self.metrics.clone();
        let metrics =
            self.families.lb.get_or_insert_with(|| metrics.register_with(crate::lb::server::Metrics::register)).clone();
        let frontends = config.inventory.frontends.values().cloned().collect();
        let lb = crate::lb::server::Server::bind(&self.deps(), metrics, config.lb, frontends).await?;
        let state = lb.state();
        services.add(Section::Lb.as_str(), lb);
        self.running.update(|h| h.lb = Some(state));
        Ok(())
    }
}

/// Fills the iPXE directory from Debian's package when no TFTP root is configured (and TFTP
/// or HTTP boot is served).
pub fn copy_ipxe(config: &Config) -> Result<(), AppError> {
    if let Some(from) = &config.ipxe.copy_from
        && (config.tftp.is_some() || config.http.is_some())
    {
        let missing = crate::tftp::ipxe::copy(from, &config.ipxe.dir)?;
        if !missing.is_empty() {
            tracing::warn!(?missing, from = %from.display(), "iPXE binaries missing: install Debian's ipxe package or set tftp.root");
        }
    }
    Ok(())
}

/// Where DNS listens: as configured, or port 53 on every network interface's address.
fn dns_listen(config: &Config) -> Result<Vec<SocketAddr>, AppError> {
    match &config.dns {
        Some(d) if !d.listen.is_empty() => Ok(d.listen.clone()),
        _ => provisioning_dns(&config.inventory),
    }
}

/// Port 53 on every network interface's address: where DNS listens unless told.
fn provisioning_dns(inventory: &crate::inventory::Inventory) -> Result<Vec<SocketAddr>, AppError> {
    let mut out = Vec::new();
    for net in inventory.networks.values() {
        let ip = crate::dhcp::server::interface_address(&net.interface)?;
        let addr = SocketAddr::from((ip, 53));
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::Section;
    use crate::config::{Config, parse};

    fn config(text: &str) -> Config {
        let base = "[[networks]]\nname = \"lab\"\ninterface = \"lo\"\ncidr = \"127.77.0.0/24\"\n";
        parse(&format!("{base}{text}"), std::path::Path::new("/etc/slipway/slipway.toml")).expect("valid")
    }

    fn rebound(old: &str, new: &str) -> Vec<&'static str> {
        let (old, new) = (config(old), config(new));
        Section::REBINDABLE.into_iter().filter(|s| s.changed(&old, &new)).map(Section::as_str).collect()
    }

    #[test]
    fn only_the_sections_whose_settings_changed_are_rebound() {
        let node = "[[nodes]]\nname = \"n1\"\nmac = \"52:54:00:00:77:02\"\nipv4 = \"127.77.0.11\"\n";
        assert!(rebound("", node).is_empty(), "a node is an inventory change");
        let dns = "[dns]\nlisten = [\"127.0.0.1:5353\"]\n";
        assert_eq!(rebound(dns, &format!("{dns}ttl = \"30s\"\n")), ["dns"]);
        assert_eq!(rebound("", "[boot]\nbios_file = \"ipxe.pxe\"\n"), ["dhcp"]);
        let http = "[http]\nlisten = \"127.0.0.1:8080\"\n";
        assert_eq!(rebound(http, "[http]\nlisten = \"127.0.0.1:8081\"\n"), ["dhcp", "http", "tftp"]);
        let pool = "[[lb.pools]]\nname = \"web\"\nbackends = [\"127.0.0.1:9\"]\n";
        let frontend = "[[lb.frontends]]\nname = \"web\"\nlisten = \"127.0.0.1:8443\"\npool = \"web\"\n";
        assert_eq!(rebound(pool, &format!("{pool}{frontend}")), ["lb"]);
        let other = pool.replace("127.0.0.1:9", "127.0.0.1:10");
        assert!(rebound(&format!("{pool}{frontend}"), &format!("{other}{frontend}")).is_empty(), "pools follow");
    }
}
