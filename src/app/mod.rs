//! Wiring: opens the store, starts every configured subsystem under one shutdown token, tells
//! systemd when it is ready, and stops everything cleanly on SIGTERM/SIGINT.
//!
//! Start-up binds every listener before anything serves: a listener that cannot bind fails the
//! start with a message naming its address, and the daemon never runs half-started.

mod hypervisors;
pub mod notify;
mod reload;
mod sections;
mod services;

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::events::{EventKind, EventLog, Source, Subject};
use crate::store::{Store, StoreError};
use sections::{Section, Wiring};
use services::Services;

/// How long subsystems get to stop after SIGTERM before the daemon exits anyway.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] api::auth::TokenError),
    #[error(transparent)]
    Keys(#[from] api::keys::KeysError),
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
    #[error("the {0} service stopped on its own; see the log above")]
    ServiceStopped(&'static str),
    #[error(
        "the {0} services did not stop for a reload in time; stopping the daemon rather than run a second copy beside them"
    )]
    NotStopped(&'static str),
}

/// Runs the daemon until SIGTERM or SIGINT, or until a service fails.
pub async fn run(config: Config) -> Result<(), AppError> {
    let (mut terminate, mut interrupt) = (on(SignalKind::terminate())?, on(SignalKind::interrupt())?);
    let mut hangup = on(SignalKind::hangup())?;
    raise_fd_limit();
    let mut config = config;
    let store = match &config.shared {
        None => Store::open(&config.state_dir, config.inventory.clone())?,
        Some(settings) => {
            let shared = crate::store::shared::Shared::connect(settings.clone()).await.map_err(StoreError::from)?;
            tracing::info!(instance = %settings.instance, prefix = %settings.prefix, revision = shared.revision(), "store: etcd");
            Store::open_shared(&config.state_dir, config.inventory.clone(), shared)?
        }
    };
    let events = EventLog::open(&store, config.events)?;
    let (token, token_path) = api::auth::load(&config.admin.token, &config.state_dir, config.path.parent())?;
    let keys = Arc::new(match &config.admin.tokens_file {
        Some(file) => api::keys::Keys::with_file(token, file)?,
        None => api::keys::Keys::single(token),
    });
    let metrics = Arc::new(Metrics::new(&store, &events));
    let shutdown = CancellationToken::new();
    let mut services = Services::default();
    let hypervisors = config.hypervisors.iter().map(hypervisors::build).collect::<Result<Vec<_>, _>>()?;
    let declared =
        crate::cluster::control::Declared { file: config.path.clone(), definitions: config.definitions.clone() };
    let clusters = crate::cluster::Clusters::new(&store, &events, hypervisors.clone())
        .with_declared(declared)
        .with_images(images_dir(&config));
    metrics.register_with(|r| r.register_collector(Box::new(crate::cluster::metrics::Lifecycle::new(&store))));
    let mut wiring = Wiring::new(&store, &events, metrics.clone(), clusters.clone(), keys.clone());
    sections::copy_ipxe(&config)?;
    for section in Section::REBINDABLE {
        wiring.bind(section, &config, &mut services).await?;
    }
    services.add(Section::Engine.as_str(), crate::cluster::engine::Engine::bind(&clusters));
    if store.shared().is_some() {
        services.add("store", Follow(store.clone(), events.clone()));
    }
    let (reloader, mut reloads) = tokio::sync::mpsc::channel::<api::reload::Request>(4);
    let state = ApiState {
        store: store.clone(),
        events: events.clone(),
        keys,
        backoff: Arc::default(),
        readiness: services.readiness(),
        metrics,
        running: wiring.running.clone(),
        reloader: Some(api::reload::Reloader(reloader)),
        hypervisors,
        clusters,
        shutdown: shutdown.clone(),
    };
    let refused = wiring.refusals.reporter("admin", Source::Api);
    let (admin, tls) = (&config.admin, config.admin.tls.as_ref());
    let admin = api::server::Server::bind(admin.listen, tls, admin.limits, refused, state).await?;
    let admin_addr = admin.local_addr();
    store.announce(crate::store::shared::Member {
        name: config.shared.as_ref().map_or_else(crate::config::hostname, |s| s.instance.clone()),
        admin: format!("{}://{admin_addr}", if config.admin.tls.is_some() { "https" } else { "http" }),
        version: env!("CARGO_PKG_VERSION").into(),
        started: crate::inventory::Timestamp::now().to_string(),
    });
    services.add(Section::Admin.as_str(), admin);
    services.start(&shutdown);
    let inv = store.snapshot();
    let (networks, clusters, nodes) = (inv.networks.len(), inv.clusters.len(), inv.nodes.len());
    let (tls, token, store_path) = (config.admin.tls.is_some(), token_path.display(), store.path().display());
    tracing::info!(admin = %admin_addr, tls, %token, store = %store_path, networks, clusters, nodes, inventory_version = inv.version, "slipway is ready");
    events.append(
        Source::Daemon,
        Subject::default(),
        EventKind::DaemonStarted { version: env!("CARGO_PKG_VERSION").into() },
    );
    sd_notify(&format!("READY=1\nSTATUS=serving; admin API on {admin_addr}"));

    let failed = loop {
        tokio::select! {
            _ = terminate.recv() => { tracing::info!("SIGTERM: stopping"); break None }
            _ = interrupt.recv() => { tracing::info!("SIGINT: stopping"); break None }
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reading the config file again");
                if let Err(e) = reloaded(&mut config, &mut wiring, &mut services, &shutdown).await {
                    break Some(e);
                }
            }
            Some(reply) = reloads.recv() => {
                match reloaded(&mut config, &mut wiring, &mut services, &shutdown).await {
                    Ok(outcome) => { let _ = reply.send(outcome); }
                    Err(e) => break Some(e),
                }
            }
            ended = services.next() => {
                let error = ended.error.as_deref().unwrap_or("returned before the daemon was asked to stop");
                tracing::error!(service = ended.name, error, "a service stopped on its own; stopping the daemon");
                break Some(AppError::ServiceStopped(ended.name));
            }
        }
    };
    // A reload asked for and not yet begun is answered (the daemon is stopping), not left waiting.
    drop(reloads);
    stop(&shutdown, &mut services, &events).await;
    failed.map_or(Ok(()), Err)
}

/// Where images (and add-on sets) are: `[http] images`, else `<state_dir>/images`.
fn images_dir(config: &Config) -> std::path::PathBuf {
    config.http.as_ref().map_or_else(|| config.state_dir.join("images"), |h| h.settings.images.clone())
}

/// A reload, told to systemd (`RELOADING=1`, then `READY=1`).
async fn reloaded(
    config: &mut Config,
    wiring: &mut Wiring,
    services: &mut Services,
    shutdown: &CancellationToken,
) -> Result<api::reload::Outcome, AppError> {
    sd_notify("RELOADING=1");
    let outcome = reload::reload(config, wiring, services, shutdown).await;
    sd_notify("READY=1");
    outcome
}

/// Tells systemd and the event log, cancels every service and waits `STOP_TIMEOUT` for them.
async fn stop(shutdown: &CancellationToken, services: &mut Services, events: &EventLog) {
    sd_notify("STOPPING=1");
    events.append(Source::Daemon, Subject::default(), EventKind::DaemonStopping);
    shutdown.cancel();
    if tokio::time::timeout(STOP_TIMEOUT, services.all_stopped()).await.is_err() {
        tracing::warn!("services did not stop in time; exiting anyway");
        services.abort_all();
    }
    let events = events.clone();
    let _ = tokio::task::spawn_blocking(move || events.close()).await;
    tracing::info!("stopped");
}

fn on(kind: SignalKind) -> Result<Signal, AppError> {
    signal(kind).map_err(AppError::Signal)
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

/// An etcd-backed store's mirror and leadership, run like a service (`Store::follow`).
struct Follow(Store, EventLog);

impl crate::service::Service for Follow {
    const NAME: &'static str = "store";

    fn span(&self) -> tracing::Span {
        tracing::info_span!("store")
    }

    fn listeners(&self) -> Vec<(String, std::net::SocketAddr)> {
        Vec::new()
    }

    async fn run(self, shutdown: CancellationToken) -> Result<(), crate::service::RunError> {
        self.0.follow(Some(self.1), shutdown).await;
        Ok(())
    }
}
