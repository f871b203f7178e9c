//! The load-balancer adapter: one accept loop per frontend, live pool state that follows the
//! inventory (backends join, and leave by draining), a health-check task per backend, and the
//! status the API shows.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tracing::Instrument;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::check::Probe;
use super::health::Health;
use super::select::{Candidate, select};
use super::{Settings, members};
use crate::inventory::{Algorithm, Frontend, Inventory, Name, Pool};
use crate::service::{Deps, RunError, Service};
use crate::store::events::{EventKind, EventLog, Source, Subject};

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("load balancer: frontend {frontend}: cannot listen on {addr}: {source}")]
    Bind { frontend: Name, addr: SocketAddr, source: std::io::Error },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontendLabel {
    frontend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    pool: String,
    backend: String,
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    connections: Family<FrontendLabel, Counter>,
    refused: Family<FrontendLabel, Counter>,
    active: Family<BackendLabels, Gauge>,
    up: Family<BackendLabels, Gauge>,
    bytes_in: Family<BackendLabels, Counter>,
    bytes_out: Family<BackendLabels, Counter>,
}

impl Metrics {
    /// The load balancer's families, registered in `registry` (once for the process).
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Metrics {
        let metrics = Metrics::default();
        let sub = registry.sub_registry_with_prefix("lb");
        sub.register("connections", "Connections accepted, by frontend", metrics.connections.clone());
        sub.register(
            "refused",
            "Connections refused at a frontend's limit or with no usable backend",
            metrics.refused.clone(),
        );
        sub.register("active", "Open connections, by backend", metrics.active.clone());
        sub.register("backend_up", "1 when a backend passes its health check", metrics.up.clone());
        sub.register("bytes_in", "Bytes from clients to a backend", metrics.bytes_in.clone());
        sub.register("bytes_out", "Bytes from a backend to its clients", metrics.bytes_out.clone());
        metrics
    }
}

/// One backend of one pool, shared by the connections using it.
#[derive(Debug)]
struct Backend {
    addr: SocketAddr,
    pool: Name,
    up: AtomicBool,
    /// Still a member of its pool; false while it drains.
    member: AtomicBool,
    active: AtomicUsize,
    total: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    health: Mutex<Health>,
    /// Fired when draining ends: its remaining connections close.
    drain: CancellationToken,
    /// Stops its health checks.
    checks: CancellationToken,
}

/// A pool's live state.
#[derive(Debug)]
struct PoolState {
    pool: Pool,
    backends: RwLock<Vec<Arc<Backend>>>,
    turn: AtomicU64,
}

/// The live load balancer, shared with the API.
#[derive(Debug, Default)]
pub struct State {
    pools: RwLock<BTreeMap<Name, Arc<PoolState>>>,
    frontends: RwLock<Vec<FrontendState>>,
}

#[derive(Debug)]
struct FrontendState {
    frontend: Frontend,
    addr: SocketAddr,
    active: Arc<Semaphore>,
}

/// What `GET /api/v1/lb` shows.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = LbStatus)]
pub struct Status {
    pub frontends: Vec<FrontendStatus>,
    pub pools: Vec<PoolStatus>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FrontendStatus {
    pub name: Name,
    #[schema(value_type = String)]
    pub listen: SocketAddr,
    pub pool: Name,
    pub active: usize,
    pub max_connections: usize,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PoolStatus {
    pub name: Name,
    pub algorithm: Algorithm,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BackendStatus {
    #[schema(value_type = String)]
    pub address: SocketAddr,
    /// `up`, `down`, or `draining` (left the pool; open connections continue).
    pub state: String,
    pub active: usize,
    pub connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl State {
    pub fn status(&self) -> Status {
        let frontends = read(&self.frontends)
            .iter()
            .map(|f| FrontendStatus {
                name: f.frontend.name.clone(),
                listen: f.addr,
                pool: f.frontend.pool.clone(),
                active: f.frontend.max_connections.saturating_sub(f.active.available_permits()),
                max_connections: f.frontend.max_connections,
            })
            .collect();
        let pools = read(&self.pools)
            .values()
            .map(|p| PoolStatus {
                name: p.pool.name.clone(),
                algorithm: p.pool.algorithm,
                backends: read(&p.backends)
                    .iter()
                    .map(|b| BackendStatus {
                        address: b.addr,
                        state: match (b.member.load(Ordering::Relaxed), b.up.load(Ordering::Relaxed)) {
                            (false, _) => "draining",
                            (true, true) => "up",
                            (true, false) => "down",
                        }
                        .into(),
                        active: b.active.load(Ordering::Relaxed),
                        connections: b.total.load(Ordering::Relaxed),
                        bytes_in: b.bytes_in.load(Ordering::Relaxed),
                        bytes_out: b.bytes_out.load(Ordering::Relaxed),
                    })
                    .collect(),
            })
            .collect();
        Status { frontends, pools }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Bound frontends, ready to serve.
#[derive(Debug)]
pub struct Server {
    listeners: Vec<(Frontend, TcpListener)>,
    settings: Settings,
    metrics: Metrics,
    state: Arc<State>,
    events: EventLog,
    inventory: watch::Receiver<Arc<Inventory>>,
}

impl Server {
    /// Binds every frontend of the inventory.
    /// `metrics`: registered once for the process (`Metrics::register`), kept across rebinds.
    /// `frontends`: the config's (a reload binds before its inventory is committed).
    pub async fn bind(
        deps: &Deps<'_>,
        metrics: Metrics,
        settings: Settings,
        frontends: Vec<Frontend>,
    ) -> Result<Server, LbError> {
        let inventory = deps.store.subscribe();
        let mut listeners = Vec::new();
        for fe in frontends {
            let listener = crate::sockets::tcp_listener(fe.listen).map_err(|source| LbError::Bind {
                frontend: fe.name.clone(),
                addr: fe.listen,
                source,
            })?;
            listeners.push((fe, listener));
        }
        Ok(Server {
            listeners,
            settings,
            metrics,
            state: Arc::new(State::default()),
            events: deps.events.clone(),
            inventory,
        })
    }

    pub fn state(&self) -> Arc<State> {
        self.state.clone()
    }
}

impl Service for Server {
    const NAME: &'static str = "lb";

    fn span(&self) -> tracing::Span {
        tracing::info_span!("lb")
    }

    fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.iter().map(|(fe, l)| (format!("lb {}", fe.name), l.local_addr().unwrap_or(fe.listen))).collect()
    }

    /// Serves until `shutdown`; pools follow every inventory change. A frontend whose listener
    /// breaks stops the service.
    async fn run(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let mut inventory = self.inventory;
        let ctx = Arc::new(Context {
            settings: self.settings,
            metrics: self.metrics,
            events: self.events,
            state: self.state,
        });
        ctx.reconcile(&inventory.borrow_and_update().clone(), &shutdown);
        let mut tasks = tokio::task::JoinSet::new();
        for (fe, listener) in self.listeners {
            let addr = listener.local_addr().unwrap_or(fe.listen);
            let limit = Arc::new(Semaphore::new(fe.max_connections));
            write(&ctx.state.frontends).push(FrontendState { frontend: fe.clone(), addr, active: limit.clone() });
            tasks.spawn(accept(ctx.clone(), fe, listener, limit, shutdown.clone()).in_current_span());
        }
        let outcome = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                Some(Ok(Err(e))) = tasks.join_next() => break Err(e),
                changed = inventory.changed() => {
                    if changed.is_err() {
                        break Ok(());
                    }
                    let snapshot = inventory.borrow_and_update().clone();
                    ctx.reconcile(&snapshot, &shutdown);
                }
            }
        };
        // Every listener is closed when this returns: a reload may bind its address again.
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        outcome
    }
}

struct Context {
    settings: Settings,
    metrics: Metrics,
    events: EventLog,
    state: Arc<State>,
}

impl Context {
    /// Makes the live pools match the inventory: new backends join (and get checked), backends
    /// that left stop taking connections and drain.
    fn reconcile(self: &Arc<Self>, inv: &Inventory, shutdown: &CancellationToken) {
        let mut pools = write(&self.state.pools);
        pools.retain(|name, _| inv.pools.contains_key(name));
        for pool in inv.pools.values() {
            let state = pools
                .entry(pool.name.clone())
                .or_insert_with(|| {
                    Arc::new(PoolState {
                        pool: pool.clone(),
                        backends: RwLock::new(Vec::new()),
                        turn: AtomicU64::new(0),
                    })
                })
                .clone();
            let wanted = members::backends(inv, pool);
            let mut backends = write(&state.backends);
            for b in backends.iter() {
                if !wanted.contains(&b.addr) && b.member.swap(false, Ordering::Relaxed) {
                    tracing::info!(pool = %pool.name, backend = %b.addr, "backend left its pool; draining");
                    b.checks.cancel();
                    let (b, drain) = (b.clone(), self.settings.drain_timeout);
                    tokio::spawn(
                        async move {
                            tokio::time::sleep(drain).await;
                            b.drain.cancel();
                        }
                        .in_current_span(),
                    );
                }
            }
            backends.retain(|b| b.member.load(Ordering::Relaxed) || b.active.load(Ordering::Relaxed) > 0);
            for addr in wanted {
                if backends.iter().any(|b| b.addr == addr && b.member.load(Ordering::Relaxed)) {
                    continue;
                }
                let backend = Arc::new(Backend {
                    addr,
                    pool: pool.name.clone(),
                    up: AtomicBool::new(true),
                    member: AtomicBool::new(true),
                    active: AtomicUsize::new(0),
                    total: AtomicU64::new(0),
                    bytes_in: AtomicU64::new(0),
                    bytes_out: AtomicU64::new(0),
                    health: Mutex::new(Health::default()),
                    drain: shutdown.child_token(),
                    checks: shutdown.child_token(),
                });
                self.labels(&backend, |m, l| {
                    m.up.get_or_create(l).set(1);
                });
                tokio::spawn(check_loop(self.clone(), backend.clone(), pool.clone()).in_current_span());
                backends.push(backend);
            }
        }
    }

    fn labels(&self, b: &Backend, f: impl FnOnce(&Metrics, &BackendLabels)) {
        f(&self.metrics, &BackendLabels { pool: b.pool.to_string(), backend: b.addr.to_string() });
    }
}

/// Checks one backend every interval until it leaves its pool.
async fn check_loop(ctx: Arc<Context>, backend: Arc<Backend>, pool: Pool) {
    let probe = match Probe::new(&pool.check) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(pool = %pool.name, error = %e, "cannot build the health check; backend stays up unchecked");
            return;
        }
    };
    let mut ticker = tokio::time::interval(pool.check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = backend.checks.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let result = probe.run(backend.addr).await;
        let change = {
            let mut health = backend.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            health.observe(result.is_ok(), pool.check.rise, pool.check.fall)
        };
        let Some(up) = change else { continue };
        backend.up.store(up, Ordering::Relaxed);
        ctx.labels(&backend, |m, l| {
            m.up.get_or_create(l).set(i64::from(up));
        });
        let (pool_name, addr) = (pool.name.clone(), backend.addr.to_string());
        if up {
            tracing::info!(pool = %pool_name, backend = %addr, "backend up");
            ctx.events.append(Source::Lb, Subject::default(), EventKind::BackendUp { pool: pool_name, backend: addr });
        } else {
            let reason = result.err().map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(pool = %pool_name, backend = %addr, %reason, "backend down");
            ctx.events.append(
                Source::Lb,
                Subject::default(),
                EventKind::BackendDown { pool: pool_name, backend: addr, reason },
            );
        }
    }
}

async fn accept(
    ctx: Arc<Context>,
    fe: Frontend,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let label = FrontendLabel { frontend: fe.name.to_string() };
    loop {
        let (client, peer) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            accepted = crate::sockets::accept(&listener, "load-balancer frontend") => accepted?,
        };
        ctx.metrics.connections.get_or_create(&label).inc();
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            // At the limit: refuse cleanly (close now) and keep serving the others.
            ctx.metrics.refused.get_or_create(&label).inc();
            drop(client);
            continue;
        };
        let pool = read(&ctx.state.pools).get(&fe.pool).cloned();
        let (ctx, label) = (ctx.clone(), label.clone());
        tokio::spawn(
            async move {
                let _permit = permit;
                let Some(pool) = pool else { return };
                if !serve(&ctx, &pool, client, peer).await {
                    ctx.metrics.refused.get_or_create(&label).inc();
                }
            }
            .instrument(tracing::info_span!("connection", frontend = %fe.name, client = %peer)),
        );
    }
}

/// Connects the client to a backend, trying the next usable one after a failed connect, and
/// copies until either side is done. False when no backend could be reached.
async fn serve(ctx: &Context, pool: &PoolState, client: TcpStream, peer: SocketAddr) -> bool {
    let mut tried = Vec::new();
    let turn = pool.turn.fetch_add(1, Ordering::Relaxed);
    loop {
        let (backend, addr) = {
            let backends = read(&pool.backends);
            let candidates: Vec<Candidate> = backends
                .iter()
                .map(|b| Candidate {
                    addr: b.addr,
                    usable: b.member.load(Ordering::Relaxed) && b.up.load(Ordering::Relaxed),
                    active: b.active.load(Ordering::Relaxed),
                })
                .collect();
            let Some(addr) = select(pool.pool.algorithm, &candidates, turn, peer.ip(), &tried) else {
                tracing::debug!(pool = %pool.pool.name, %peer, "no usable backend");
                return false;
            };
            let Some(b) = backends.iter().find(|b| b.addr == addr && b.member.load(Ordering::Relaxed)).cloned() else {
                return false;
            };
            (b, addr)
        };
        let connected = tokio::time::timeout(ctx.settings.connect_timeout, TcpStream::connect(addr)).await;
        let stream = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(backend = %addr, error = %e, "connect failed; trying the next backend");
                tried.push(addr);
                continue;
            }
            Err(_) => {
                tracing::debug!(backend = %addr, "connect timed out; trying the next backend");
                tried.push(addr);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = client.set_nodelay(true);
        backend.active.fetch_add(1, Ordering::Relaxed);
        backend.total.fetch_add(1, Ordering::Relaxed);
        ctx.labels(&backend, |m, l| {
            m.active.get_or_create(l).inc();
        });
        let (up, down) = super::proxy::pipe(client, stream, ctx.settings.idle_timeout, backend.drain.clone()).await;
        backend.active.fetch_sub(1, Ordering::Relaxed);
        backend.bytes_in.fetch_add(up, Ordering::Relaxed);
        backend.bytes_out.fetch_add(down, Ordering::Relaxed);
        ctx.labels(&backend, |m, l| {
            m.active.get_or_create(l).dec();
            m.bytes_in.get_or_create(l).inc_by(up);
            m.bytes_out.get_or_create(l).inc_by(down);
        });
        return true;
    }
}
