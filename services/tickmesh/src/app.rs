//! Building and running a set of tickmesh services in one process.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tickmesh_bus::{Bus, BusError, Relay};
use tickmesh_mesh::client::{ClientSettings, Dns, MeshChannel, StaticAddrs, connect};
use tickmesh_mesh::{ConfigHandle, Running, ServeError, Service, Shutdown};
use tickmesh_store::{Store, StoreError, StoreOptions};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::startup::{Dependency, Waiting};

/// One of the four tickmesh services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// `tickmesh.v1.IngestionService`.
    Ingestion,
    /// `tickmesh.v1.ComputationService`.
    Computation,
    /// `tickmesh.v1.CachingService`.
    Caching,
    /// `tickmesh.v1.QueryService`.
    Query,
}

impl Target {
    /// All four, in the order `tickmesh up` starts them.
    pub const ALL: [Target; 4] = [
        Target::Ingestion,
        Target::Computation,
        Target::Caching,
        Target::Query,
    ];

    /// Short name, as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Ingestion => "ingestion",
            Target::Computation => "computation",
            Target::Caching => "caching",
            Target::Query => "query",
        }
    }

    /// Full gRPC service name.
    pub fn service_name(self) -> &'static str {
        use tickmesh_proto::service_names as n;
        match self {
            Target::Ingestion => n::INGESTION,
            Target::Computation => n::COMPUTATION,
            Target::Caching => n::CACHING,
            Target::Query => n::QUERY,
        }
    }

    /// The documented default port: 7401-7404 (clear of 50051, which is often taken).
    pub fn default_port(self) -> u16 {
        match self {
            Target::Ingestion => 7401,
            Target::Computation => 7402,
            Target::Caching => 7403,
            Target::Query => 7404,
        }
    }

    /// Whether the service writes events to the store's outbox (ticks and candles, signals),
    /// which the process's one relay then publishes.
    fn writes_outbox(self) -> bool {
        matches!(self, Target::Ingestion | Target::Computation)
    }

    /// The service, and the background task it needs drained at shutdown (if any).
    fn service(
        self,
        config: &ConfigHandle,
        deps: &Deps,
        peers: &Peers,
        relay: Option<&Relay>,
        shutdown: &Shutdown,
    ) -> (Service, Option<JoinHandle<()>>) {
        let service = match self {
            Target::Ingestion => tickmesh_ingestion::service(
                config,
                deps.store.clone(),
                relay.cloned().expect("a relay runs where ingestion does"),
                deps.replay_dir.clone(),
                &deps.metrics,
            ),
            Target::Computation => {
                let mut api = tickmesh_computation::ComputationApi::new(
                    config,
                    deps.store.clone(),
                    deps.compute_pool.clone(),
                    &deps.metrics,
                );
                if let Some(caching) = peers.caching.clone() {
                    api = api.with_caching(caching, peers.own_key.clone());
                }
                if let Some(relay) = relay {
                    api = api.with_relay(relay.clone());
                }
                let worker = tickmesh_computation::signals::spawn_worker(
                    api.clone(),
                    deps.bus.clone(),
                    shutdown,
                );
                return (tickmesh_computation::service(api), Some(worker));
            }
            Target::Caching => tickmesh_caching::service(config, deps.cache.clone()),
            Target::Query => tickmesh_query::service(
                config,
                deps.store.clone(),
                deps.bus.clone(),
                peers.computation.clone(),
                peers.caching.clone(),
                &deps.metrics,
                shutdown,
            ),
        };
        (service, None)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!("unknown target {s:?}: use ingestion, computation, caching or query")
            })
    }
}

/// What the services of a process share.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The store (SQLite embedded by default, PostgreSQL in production).
    pub store: Arc<Store>,
    /// The market-event bus (in-process by default, Redis Streams in production).
    pub bus: Bus,
    /// Directory of the recorded sources `ReplaySource` may replay (`<name>.csv`).
    pub replay_dir: Option<std::path::PathBuf>,
    /// The process's metrics, served on its metrics port.
    pub metrics: tickmesh_mesh::Metrics,
    /// The configuration file, watched for changes (hot reload).
    pub config_file: Option<std::path::PathBuf>,
    /// The rayon pool of the computation service.
    pub compute_pool: tickmesh_computation::pool::ComputePool,
    /// `host:port` of the caching service when it runs in another process.
    pub caching_addr: Option<String>,
    /// The multi-tier cache of this process (used by the caching service).
    pub cache: tickmesh_cache::Cache,
    /// `host:port` of the computation service when it runs in another process (a headless
    /// Kubernetes service name resolves to every pod).
    pub computation_addr: Option<String>,
    /// The last sample of the outbox and the bus's consumer groups, for metrics.
    pub sampled: Arc<crate::observe::Sampled>,
}

/// Stream key of the market-event bus in Redis.
pub const BUS_STREAM: &str = "tickmesh:events";

impl Deps {
    /// Opens the store (running its migrations) and the bus: Redis Streams at `bus_url`, or
    /// in-process when there is none.
    pub async fn open(
        store: &StoreOptions,
        bus_url: Option<&str>,
        config: &ConfigHandle,
    ) -> Result<Deps, AppError> {
        let opened = Self::open_with(store, bus_url, config, None).await?;
        Ok(opened.unwrap_or_else(|| unreachable!("only waiting for a dependency is cut short")))
    }

    /// As [`Deps::open`], but a store or bus that cannot be reached yet is tried again and again
    /// (see [`crate::startup`]) while `waiting` answers on the service ports; `None` when
    /// `shutdown` fires first.
    pub async fn open_waiting(
        store: &StoreOptions,
        bus_url: Option<&str>,
        config: &ConfigHandle,
        waiting: &Waiting,
        shutdown: &Shutdown,
    ) -> Result<Option<Deps>, AppError> {
        Self::open_with(store, bus_url, config, Some((waiting, shutdown))).await
    }

    async fn open_with(
        store: &StoreOptions,
        bus_url: Option<&str>,
        config: &ConfigHandle,
        patience: Option<(&Waiting, &Shutdown)>,
    ) -> Result<Option<Deps>, AppError> {
        let store = match patience {
            None => Store::open(store).await?,
            Some((waiting, shutdown)) => {
                let opened = waiting
                    .reach(
                        Dependency::Store,
                        &store.url,
                        shutdown,
                        StoreError::is_transient,
                        || Store::open(store),
                    )
                    .await?;
                match opened {
                    Some(store) => store,
                    None => return Ok(None),
                }
            }
        };
        tracing::info!(backend = ?store.kind(), "store open");
        let store_arc = Arc::new(store);
        let capacity = config
            .current()
            .config
            .processing
            .map_or(10_000, |p| p.queue_capacity as usize);
        let threads = config
            .current()
            .config
            .processing
            .map_or(0, |p| p.worker_threads as usize);
        let compute_pool = tickmesh_computation::pool::ComputePool::new(threads)
            .map_err(|e| AppError::Peer(format!("cannot start the computation pool: {e}")))?;
        // L2 lives in the Redis of the bus (when there is one) unless the strategy is in-memory.
        let snapshot = config.current();
        let strategy =
            tickmesh_proto::v1::CachingStrategy::try_from(snapshot.config.caching_strategy)
                .unwrap_or_default();
        let cache_url = match strategy {
            tickmesh_proto::v1::CachingStrategy::InMemory
            | tickmesh_proto::v1::CachingStrategy::Unspecified => None,
            _ => bus_url.filter(|u| u.starts_with("redis")),
        };
        let cache = tickmesh_cache::Cache::new(&snapshot.config, cache_url)
            .await
            .map_err(|e| AppError::Peer(format!("cache: {e}")))?;
        // Policies and the Redis timeout follow file reloads and UpdateConfig.
        cache.follow_config(config.subscribe());
        let method =
            tickmesh_proto::v1::SerializationMethod::try_from(snapshot.config.serialization_method)
                .unwrap_or_default();
        tickmesh_caching::register_loaders(&cache, store_arc.clone(), method)
            .map_err(|e| AppError::Peer(format!("cache: {e}")))?;
        let metrics = tickmesh_mesh::Metrics::new();
        metrics.register(|registry| cache.register_metrics(registry));
        let scraped = cache.clone();
        metrics.add_text_source(Arc::new(move || {
            tickmesh_caching::prometheus_text(&scraped)
        }));
        let bus = match (bus_url, patience) {
            (Some(url), None) => Bus::redis(url, BUS_STREAM, capacity).await?,
            (Some(url), Some((waiting, shutdown))) => {
                let connect = || Bus::redis(url, BUS_STREAM, capacity);
                match waiting
                    .reach(
                        Dependency::Bus,
                        url,
                        shutdown,
                        BusError::is_transient,
                        connect,
                    )
                    .await?
                {
                    Some(bus) => bus,
                    None => return Ok(None),
                }
            }
            (None, _) => Bus::in_process(capacity),
        };
        let sampled = Arc::new(crate::observe::Sampled::default());
        crate::observe::register(&metrics, &store_arc, &bus, &sampled);
        Ok(Some(Deps {
            sampled,
            store: store_arc,
            bus,
            replay_dir: None,
            metrics,
            compute_pool,
            config_file: None,
            caching_addr: None,
            cache,
            computation_addr: None,
        }))
    }
}

/// Why the app could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} for {target}: {source}")]
    Bind {
        /// The service.
        target: Target,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bus could not be reached.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A peer service address is malformed.
    #[error("{0}")]
    Peer(String),
    /// The API keys (for `auth.peer_key_name`) could not be loaded.
    #[error(transparent)]
    Keys(#[from] tickmesh_mesh::server::auth::KeysError),
}

/// Client stacks to the peer services a service calls.
#[derive(Clone, Default)]
struct Peers {
    computation: Option<MeshChannel>,
    caching: Option<MeshChannel>,
    /// The key this process sends on its own calls to peers (`auth.peer_key_name`).
    own_key: Option<String>,
}

impl Peers {
    /// A peer served by this process is reached on its bound address; one served elsewhere by
    /// resolving its `host:port` again and again.
    fn new(
        listeners: &[(Target, TcpListener)],
        config: &ConfigHandle,
        deps: &Deps,
        shutdown: &Shutdown,
    ) -> Result<Self, AppError> {
        // The query service calls computation and caching; computation calls caching (its
        // signal write-through).
        let serves = |wanted: Target| listeners.iter().any(|(target, _)| *target == wanted);
        let query = serves(Target::Query);
        let auth = config.current().config.auth.clone().unwrap_or_default();
        // Only computation calls a peer on its own behalf (the signal write-through).
        let own_key = if serves(Target::Computation)
            && auth.enabled
            && !auth.peer_key_name.is_empty()
        {
            Some(tickmesh_mesh::server::auth::Keys::load(&auth)?.peer_secret(&auth.peer_key_name)?)
        } else {
            None
        };
        let peer = |wanted: bool, target: Target, addr: Option<&str>| match wanted {
            true => Self::peer(target, addr, listeners, config, deps, shutdown),
            false => Ok(None),
        };
        Ok(Self {
            own_key,
            computation: peer(query, Target::Computation, deps.computation_addr.as_deref())?,
            caching: peer(
                query || serves(Target::Computation),
                Target::Caching,
                deps.caching_addr.as_deref(),
            )?,
        })
    }

    fn peer(
        target: Target,
        remote: Option<&str>,
        listeners: &[(Target, TcpListener)],
        config: &ConfigHandle,
        deps: &Deps,
        shutdown: &Shutdown,
    ) -> Result<Option<MeshChannel>, AppError> {
        let mut settings =
            ClientSettings::new(target.service_name(), config.current().config.clone());
        settings.metrics = Some(deps.metrics.clone());
        settings.updates = Some(config.subscribe());
        let local = listeners
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, listener)| listener.local_addr())
            .transpose()
            .map_err(|source| AppError::Bind {
                target,
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
        Ok(match (local, remote) {
            (Some(mut addr), _) => {
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                Some(connect(&settings, StaticAddrs::new(vec![addr]), shutdown)?)
            }
            (None, Some(host_port)) => {
                let (host, port) = host_port.rsplit_once(':').ok_or_else(|| {
                    AppError::Peer(format!("{target} address {host_port:?} is not host:port"))
                })?;
                let port = port.parse().map_err(|_| {
                    AppError::Peer(format!("{target} address {host_port:?} has no valid port"))
                })?;
                let host = host.trim_matches(['[', ']']);
                settings.server_name = Some(host.to_owned());
                Some(connect(&settings, Dns::new(host, port), shutdown)?)
            }
            (None, None) => None,
        })
    }
}

/// A set of services running in this process.
#[derive(Debug)]
pub struct App {
    running: Vec<(Target, Running)>,
    background: Vec<JoinHandle<()>>,
    relay: Option<RelayRun>,
}

/// The process's outbox relay, stopped after the servers and bounded by the grace period.
#[derive(Debug)]
struct RelayRun {
    task: JoinHandle<()>,
    stop: Shutdown,
    shutdown: Shutdown,
    grace: Duration,
}

impl App {
    /// Binds every listener first (so a taken port fails before anything serves), then serves
    /// each target on its own port. Port 0 picks a free port; see [`App::addrs`].
    pub async fn build(
        targets: &[(Target, SocketAddr)],
        config: &ConfigHandle,
        deps: &Deps,
        shutdown: &Shutdown,
    ) -> Result<App, AppError> {
        let listeners = Self::bind(targets).await?;
        Self::build_on(listeners, None, config, deps, shutdown).await
    }

    /// Binds the listener of every target, in order; the first that fails is the error.
    pub async fn bind(
        targets: &[(Target, SocketAddr)],
    ) -> Result<Vec<(Target, TcpListener)>, AppError> {
        let mut listeners = Vec::with_capacity(targets.len());
        for &(target, addr) in targets {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Bind {
                    target,
                    addr,
                    source,
                })?;
            listeners.push((target, listener));
        }
        Ok(listeners)
    }

    /// Serves each target on its listener, bound already (by [`App::bind`]), and the dashboard
    /// on `web` (next to the query service, behind its stack, with gRPC-Web for the query
    /// service and this process's caching and computation services).
    pub async fn build_on(
        listeners: Vec<(Target, TcpListener)>,
        web: Option<TcpListener>,
        config: &ConfigHandle,
        deps: &Deps,
        shutdown: &Shutdown,
    ) -> Result<App, AppError> {
        let peers = Peers::new(&listeners, config, deps, shutdown)?;
        let mut running = Vec::with_capacity(listeners.len());
        let mut background = Vec::new();
        let servers_stopped = Shutdown::new();
        let mut relay_task = None;
        // One relay per process publishes what its services queued in the outbox (two relays
        // on SQLite, where every relay holds the lease, would publish each event twice).
        let relay = listeners
            .iter()
            .any(|(target, _)| target.writes_outbox())
            .then(|| {
                // The relay outlives the servers: it stops once they have drained (App::wait),
                // so that what the drain committed is published too.
                let stop = servers_stopped.clone();
                let (relay, task) =
                    Relay::spawn(deps.store.clone(), deps.bus.clone(), async move {
                        stop.wait().await
                    });
                relay_task = Some(task);
                relay
            });
        background.push(tokio::spawn(crate::observe::sample(
            deps.store.clone(),
            deps.bus.clone(),
            deps.sampled.clone(),
            relay.is_some(),
            shutdown.clone(),
        )));
        let mut web = web;
        // The read APIs of the mesh panel, when those services run in this process.
        let mut extra = Vec::new();
        for (target, listener) in listeners {
            let (mut service, task) =
                target.service(config, deps, &peers, relay.as_ref(), shutdown);
            background.extend(task);
            match target {
                Target::Caching | Target::Computation => {
                    extra.push((service.name, service.routes.clone()));
                }
                Target::Query => {
                    if let Some(listener) = web.take() {
                        service.web = Some(tickmesh_mesh::server::web::Web {
                            listener,
                            assets: crate::web::ASSETS,
                            extra: std::mem::take(&mut extra),
                            cors_allowed_origins: config
                                .current()
                                .config
                                .web
                                .clone()
                                .unwrap_or_default()
                                .cors_allowed_origins,
                        });
                    }
                }
                Target::Ingestion => {}
            }
            let served =
                tickmesh_mesh::serve(service, listener, config, &deps.metrics, shutdown).await?;
            running.push((target, served));
        }
        let grace = tickmesh_config::std_duration(
            config
                .current()
                .config
                .server
                .unwrap_or_default()
                .shutdown_grace_period
                .as_ref(),
        );
        Ok(App {
            running,
            background,
            relay: relay_task.map(|task| RelayRun {
                task,
                stop: servers_stopped,
                shutdown: shutdown.clone(),
                grace,
            }),
        })
    }

    /// The dashboard's address, when this process serves it.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.running.iter().find_map(|(_, r)| r.web_addr())
    }

    /// The bound address of every service.
    pub fn addrs(&self) -> BTreeMap<Target, SocketAddr> {
        self.running
            .iter()
            .map(|(t, r)| (*t, r.local_addr()))
            .collect()
    }

    /// Runs until the shutdown signal has fired and every service has drained (in parallel,
    /// each within the grace period).
    pub async fn wait(self) -> Result<(), AppError> {
        // The grace period runs from the signal, for the servers and the relay's last drain.
        let deadline = self.relay.as_ref().map(|relay| {
            let (shutdown, grace) = (relay.shutdown.clone(), relay.grace);
            tokio::spawn(async move {
                shutdown.wait().await;
                tokio::time::Instant::now() + grace
            })
        });
        let mut servers = tokio::task::JoinSet::new();
        for (_, running) in self.running {
            servers.spawn(running.wait());
        }
        let mut first_error: Option<AppError> = None;
        while let Some(result) = servers.join_next().await {
            let error = match result {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) => ServeError::Task(e),
            };
            first_error.get_or_insert(error.into());
        }
        // The relay publishes what the drain committed, until the outbox is empty or the grace
        // period is over (what is left waits in the outbox for the next process).
        if let (Some(relay), Some(deadline)) = (self.relay, deadline) {
            relay.stop.trigger();
            let deadline = if relay.shutdown.is_triggered() {
                deadline
                    .await
                    .unwrap_or_else(|_| tokio::time::Instant::now())
            } else {
                // A server stopped on its own (an error): no signal to count from.
                deadline.abort();
                tokio::time::Instant::now() + relay.grace
            };
            let mut task = relay.task;
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                warn!(
                    "grace period over with events still in the outbox; the next relay publishes them"
                );
            }
        }
        // Other background work ends after the servers.
        for task in self.background {
            if let Err(e) = task.await {
                first_error.get_or_insert(ServeError::Task(e).into());
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                info!("all services stopped");
                Ok(())
            }
        }
    }
}
