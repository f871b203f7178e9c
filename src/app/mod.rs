//! Wiring: opens the store, starts every configured subsystem under one shutdown token, tells
//! systemd when it is ready, and stops everything cleanly on SIGTERM/SIGINT.
//!
//! Start-up binds every listener before anything serves: a listener that cannot bind fails the
//! start with a message naming its address, and the daemon never runs half-started.

mod hypervisors;
pub mod notify;

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::store::events::{EventKind, EventLog, Source, Subject};
use crate::store::{Store, StoreError};

/// How long subsystems get to stop after SIGTERM before the daemon exits anyway.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] api::auth::TokenError),
    #[error(transparent)]
    Serve(#[from] crate::listen::ServeError),
    #[error(transparent)]
    Dhcp(#[from] crate::dhcp::server::DhcpError),
    #[error(transparent)]
    Dns(#[from] crate::dns::server::DnsError),
    #[error(transparent)]
    Lb(#[from] crate::lb::server::LbError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error(transparent)]
    Tftp(#[from] crate::tftp::server::TftpError),
    #[error(transparent)]
    Ipxe(#[from] crate::tftp::ipxe::CopyError),
    #[error(transparent)]
    Ra(#[from] crate::dhcp::ra::RaError),
    #[error(transparent)]
    Hypervisor(#[from] hypervisors::BuildError),
    #[error("cannot install the signal handler: {0}")]
    Signal(std::io::Error),
    #[error("{0} stopped on its own; see the log above")]
    ServiceStopped(&'static str),
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), AppError> {
    let shutdown = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate()).map_err(AppError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(AppError::Signal)?;

    raise_fd_limit();
    let store = Store::open(&config.state_dir, config.inventory.clone())?;
    let events = EventLog::open(&store, config.events)?;
    let (token, token_path) = api::auth::load(&config.admin.token, &config.state_dir, config.path.parent())?;
    let mut metrics = Metrics::new(&store, &events);
    let readiness = Readiness::default();

    let dhcp = match &config.dhcp {
        Some(d) => Some(crate::dhcp::server::Server::bind(&d.interfaces, &store.snapshot(), metrics.registry_mut())?),
        None => None,
    };
    for (interface, addr) in dhcp.iter().flat_map(|d| d.listeners()) {
        readiness.bound(&format!("dhcp {interface}"), addr);
    }
    let mut advertisers = Vec::new();
    for d in config.dhcp.iter().filter(|d| d.router_advertisements) {
        for interface in &d.interfaces {
            advertisers.push(crate::dhcp::ra::Advertiser::bind(interface)?);
        }
    }

    let dns = match &config.dns {
        Some(d) => Some(
            crate::dns::server::Server::bind(
                &dns_listen(d, &config.inventory)?,
                &d.upstream,
                d.settings.clone(),
                &store.snapshot(),
                metrics.registry_mut(),
            )
            .await?,
        ),
        None => None,
    };
    for (what, addr) in dns.iter().flat_map(|d| d.listeners()) {
        readiness.bound(&what, addr);
    }

    let lb = if store.snapshot().frontends.is_empty() {
        None
    } else {
        Some(crate::lb::server::Server::bind(&store.snapshot(), config.lb, metrics.registry_mut()).await?)
    };
    for (what, addr) in lb.iter().flat_map(|l| l.listeners()) {
        readiness.bound(&what, addr);
    }

    if let Some(from) = &config.ipxe.copy_from
        && (config.tftp.is_some() || config.http.is_some())
    {
        let missing = crate::tftp::ipxe::copy(from, &config.ipxe.dir)?;
        if !missing.is_empty() {
            tracing::warn!(?missing, from = %from.display(), "iPXE binaries missing: install Debian's ipxe package or set tftp.root");
        }
    }
    let boot_http = match &config.http {
        Some(h) => Some(crate::http::Server::bind(h.listen, h.settings.clone()).await?),
        None => None,
    };
    if let Some(h) = &boot_http {
        readiness.bound("http boot", h.local_addr());
    }

    let tftp = match &config.tftp {
        Some(t) => Some(
            crate::tftp::server::Server::bind(t.listen, &t.root, config.boot.http_port, store.clone(), events.clone())
                .await?,
        ),
        None => None,
    };
    if let Some(t) = &tftp {
        readiness.bound("tftp", t.local_addr());
    }

    readiness.expect("admin", config.admin.listen);
    let admin = crate::listen::bind(config.admin.listen, config.admin.tls.as_ref()).await?;
    let admin_addr = admin.local_addr().unwrap_or(config.admin.listen);
    readiness.bound("admin", admin_addr);
    if !admin.is_tls() && !admin_addr.ip().is_loopback() {
        tracing::warn!(%admin_addr, "the admin API listens beyond loopback without TLS; set admin.tls_cert and admin.tls_key");
    }
    let hypervisors = config.hypervisors.iter().map(hypervisors::build).collect::<Result<Vec<_>, _>>()?;

    let state = ApiState {
        store: store.clone(),
        events: events.clone(),
        token: Arc::new(token),
        readiness: readiness.clone(),
        metrics: Arc::new(metrics),
        dhcp: dhcp.as_ref().map(|d| d.handle()),
        dns: dns.as_ref().map(|d| d.zones()),
        lb: lb.as_ref().map(|l| l.state()),
        hypervisors,
        shutdown: shutdown.clone(),
    };
    let mut services = Services::default();
    services.spawn("admin", crate::listen::run(admin, api::router(state), shutdown.clone()), info_span!("admin"));
    if let Some(dhcp) = dhcp {
        let inventory = store.subscribe();
        let dhcp = dhcp.run(store.clone(), events.clone(), inventory, config.boot.clone(), shutdown.clone());
        services.spawn("dhcp", dhcp, info_span!("dhcp"));
    }
    if let Some(dns) = dns {
        services.spawn("dns", dns.run(events.clone(), store.subscribe(), shutdown.clone()), info_span!("dns"));
    }
    if let Some(lb) = lb {
        services.spawn("lb", lb.run(events.clone(), store.subscribe(), shutdown.clone()), info_span!("lb"));
    }
    if let Some(t) = tftp {
        services.spawn("tftp", t.run(shutdown.clone()), info_span!("tftp"));
    }
    for a in advertisers {
        services.spawn("ra", a.run(shutdown.clone()), info_span!("ra"));
    }
    if let Some(h) = boot_http {
        services.spawn("http boot", h.run(store.clone(), events.clone(), shutdown.clone()), info_span!("http_boot"));
    }

    let inv = store.snapshot();
    tracing::info!(
        admin = %admin_addr,
        tls = config.admin.tls.is_some(),
        token = %token_path.display(),
        store = %store.path().display(),
        networks = inv.networks.len(),
        clusters = inv.clusters.len(),
        nodes = inv.nodes.len(),
        inventory_version = inv.version,
        "slipway is ready"
    );
    events.append(
        Source::Daemon,
        Subject::default(),
        EventKind::DaemonStarted { version: env!("CARGO_PKG_VERSION").into() },
    );
    sd_notify(&format!("READY=1\nSTATUS=serving; admin API on {admin_addr}"));

    let mut failed = None;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
        Some(ended) = services.next() => {
            tracing::error!(service = ended, "a service stopped on its own; stopping the daemon");
            failed = Some(ended);
        }
    }
    sd_notify("STOPPING=1");
    events.append(Source::Daemon, Subject::default(), EventKind::DaemonStopping);
    shutdown.cancel();
    if tokio::time::timeout(STOP_TIMEOUT, services.all_stopped()).await.is_err() {
        tracing::warn!("services did not stop in time; exiting anyway");
        services.abort_all();
    }
    let events_for_close = events.clone();
    let _ = tokio::task::spawn_blocking(move || events_for_close.close()).await;
    tracing::info!("stopped");
    match failed {
        Some(service) => Err(AppError::ServiceStopped(service)),
        None => Ok(()),
    }
}

/// The running services, each known by its name: the one that ends first is named, and the
/// daemon stops with a failure.
#[derive(Default)]
struct Services(JoinSet<&'static str>);

impl Services {
    /// Runs `service` in `span` (its log lines carry the service's name).
    fn spawn(&mut self, name: &'static str, service: impl Future<Output = ()> + Send + 'static, span: tracing::Span) {
        self.0.spawn(async move {
            service.instrument(span).await;
            name
        });
    }

    /// The name of the next service to end (a panic counts as ending).
    async fn next(&mut self) -> Option<&'static str> {
        match self.0.join_next().await? {
            Ok(name) => Some(name),
            Err(e) => {
                tracing::error!(error = %e, "a service panicked");
                Some("a service that panicked")
            }
        }
    }

    async fn all_stopped(&mut self) {
        while self.0.join_next().await.is_some() {}
    }

    fn abort_all(&mut self) {
        self.0.abort_all();
    }
}

/// What `serve` would refuse at start beyond the config file itself: the admin token (readable,
/// at least 16 characters; a token slipway would generate is fine), the admin TLS files (they
/// load), each hypervisor's API token secret (readable, not empty). `slipway check` runs this,
/// so the unit's `ExecStartPre=` gate fails for the same reasons the start would. Sockets are
/// not tried: binding is `serve`'s job (it names an address that cannot bind).
pub fn preflight(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let state_dir = &config.state_dir;
    match api::auth::token_path(&config.admin.token, state_dir, config.path.parent()) {
        Ok(path) => {
            let generated = config.admin.token == crate::config::TokenSource::Default && path.starts_with(state_dir);
            if !generated || path.exists() {
                let read = std::fs::read_to_string(&path).map_err(|e| e.to_string());
                if let Err(e) = read.and_then(|text| api::auth::Token::new(&text).map(drop).map_err(|e| e.to_string()))
                {
                    problems.push(format!("admin token file {}: {e}", path.display()));
                }
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    if let Some(tls) = &config.admin.tls
        && let Err(e) = crate::listen::tls_acceptor(tls)
    {
        problems.push(e.to_string());
    }
    for h in &config.hypervisors {
        if let Err(e) = hypervisors::build(h) {
            problems.push(e.to_string());
        }
    }
    problems
}

/// The DNS listen addresses: as configured, else port 53 on every network interface's address.
fn dns_listen(
    dns: &crate::config::DnsConfig,
    inventory: &crate::inventory::Inventory,
) -> Result<Vec<std::net::SocketAddr>, AppError> {
    if !dns.listen.is_empty() {
        return Ok(dns.listen.clone());
    }
    let mut out = Vec::new();
    for net in inventory.networks.values() {
        let ip = crate::dhcp::server::interface_address(&net.interface)?;
        let addr = std::net::SocketAddr::from((ip, 53));
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}

/// Every load-balanced connection takes two file descriptors: lift the soft limit to the hard
/// one (systemd's `LimitNOFILE=` sets both), so a busy frontend is bounded by its
/// `max_connections`, not by a 1024 default.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

fn sd_notify(state: &str) {
    if let Err(e) = notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}
