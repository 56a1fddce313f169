//! The cache: L1 → L2 → source, with stampede protection, refresh-ahead, cross-process
//! invalidation and graceful degradation when Redis is gone.
//!
//! This module builds the cache and holds what every part shares; each part of its work has
//! a module of its own: [`read`] (the L1 hit path, then L2), [`load`] (single-flight loading),
//! [`write`], [`invalidate`] (and the pub/sub subscriber), [`refresh`] (refresh-ahead),
//! [`reconfigure`] (live configuration changes), [`warm`], and [`namespace`].

mod invalidate;
mod load;
mod missed;
mod namespace;
mod read;
mod reconfigure;
mod refresh;
mod warm;
mod write;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::Timestamp;
use tickmesh_proto::v1::PerformanceOptimizationConfig;
use tickmesh_resilience::BreakerState;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::adaptive::{AdaptiveTtl, VolatilityTracker};
use crate::error::CacheError;
use crate::flight::Flights;
use crate::key;
use crate::l1::L1;
use crate::l2::{L2, RedisPool};
use crate::loader::SharedLoader;
use crate::settings::{Eviction, Policy, Settings, Tiers};
use crate::stats::CacheStats;

pub use invalidate::Invalidated;
pub use namespace::MAX_NAMESPACES;
pub use read::{Hit, Tier};
pub use reconfigure::Reconfigured;
pub use warm::WarmReport;
pub use write::{SetOptions, Stored};

use invalidate::subscriber_loop;
use load::Outcome;
use missed::MissedInvalidations;
use namespace::{Namespace, Namespaces};

/// How often the L2 health probe pings Redis.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long `Cache::new` waits for the invalidation subscription before going on without it.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(1);

/// The multi-tier cache; cheap to clone, clones share everything.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("origin", &self.inner.origin)
            .field("tiers", &self.inner.tiers)
            .field("l2_available", &self.l2_available())
            .finish_non_exhaustive()
    }
}

/// The settings that follow configuration changes (besides the namespaces' policies and the
/// Redis timeout, which live with the namespaces and L2).
struct Live {
    max_value_bytes: u64,
    lock_ttl: Duration,
    default_policy: Policy,
    adaptive: AdaptiveTtl,
}

struct Inner {
    origin: String,
    tiers: Tiers,
    /// Whether the cache was given a Redis url.
    has_redis: bool,
    live: RwLock<Live>,
    /// The settings it started with (what needs a restart cannot differ from these) and the
    /// last ones applied (so a setting that needs a restart is reported once per change).
    started: Settings,
    applied: Mutex<Settings>,
    volatility: VolatilityTracker,
    l1: Option<L1>,
    l2: Option<L2>,
    namespaces: Namespaces,
    /// Loads in flight by (namespace id, key).
    flights: Flights<(u64, Box<str>), Outcome>,
    tokens: AtomicU64,
    /// Invalidations Redis missed, sent again when it is back.
    missed: MissedInvalidations,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Cache {
    /// Builds the cache from the configuration; `redis_url` is needed for the DISTRIBUTED and
    /// MULTI_LAYER strategies (and ignored by IN_MEMORY).
    ///
    /// Redis being down is not an error: the cache starts degraded (L1 and the source) and
    /// picks Redis up when it answers.
    pub async fn new(
        config: &PerformanceOptimizationConfig,
        redis_url: Option<&str>,
    ) -> Result<Self, CacheError> {
        let settings = Settings::from_config(config, redis_url.is_some())?;
        let tiers = settings.tiers;
        if !tiers.l2 && redis_url.is_some() {
            info!("in-memory caching: the redis url is not used");
        }
        let l1 = tiers.l1.then(|| {
            let mut shares: Vec<(Eviction, u64)> = Vec::new();
            let policies = std::iter::once(&settings.default_policy)
                .chain(settings.namespaces.iter().map(|(_, p)| p));
            for policy in policies {
                match shares.iter_mut().find(|(e, _)| *e == policy.eviction) {
                    Some((_, n)) => *n += 1,
                    None => shares.push((policy.eviction, 1)),
                }
            }
            L1::new(settings.l1_max_entries, settings.l1_max_bytes, &shares)
        });
        let l2 = match (tiers.l2, redis_url) {
            (true, Some(url)) => Some(L2::new(url, &settings.breaker, settings.redis_timeout)?),
            _ => None,
        };
        let window = settings.adaptive.window_bars();
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            origin: new_origin(),
            tiers,
            has_redis: redis_url.is_some(),
            live: RwLock::new(Live {
                max_value_bytes: settings.max_value_bytes,
                lock_ttl: settings.lock_ttl,
                default_policy: settings.default_policy,
                adaptive: settings.adaptive.clone(),
            }),
            started: settings.clone(),
            applied: Mutex::new(settings.clone()),
            volatility: VolatilityTracker::new(window),
            l1,
            l2,
            namespaces: Namespaces::new(),
            flights: Flights::default(),
            tokens: AtomicU64::new(0),
            missed: MissedInvalidations::default(),
            shutdown,
            tasks: Mutex::new(Vec::new()),
        });
        for (name, policy) in &settings.namespaces {
            inner.add_namespace(name, *policy, None)?;
        }

        if let Some(l2) = &inner.l2 {
            if let Err(err) = l2.ping().await {
                warn!(error = %err, "redis is unreachable; answering from L1 and the source until it is back");
            }
            let probe = tokio::spawn(probe_loop(
                Arc::downgrade(&inner),
                inner.shutdown.subscribe(),
            ));
            inner.tasks().push(probe);
            if inner.l1.is_some() {
                let (ready, subscribed) = oneshot::channel();
                let subscriber = tokio::spawn(subscriber_loop(
                    Arc::downgrade(&inner),
                    l2.client().clone(),
                    inner.shutdown.subscribe(),
                    ready,
                ));
                inner.tasks().push(subscriber);
                if tokio::time::timeout(SUBSCRIBE_WAIT, subscribed)
                    .await
                    .is_err()
                {
                    warn!("not subscribed to cache invalidations yet; retrying in the background");
                }
            }
        }
        Ok(Self { inner })
    }

    /// Sets the loader of a namespace; a namespace not in the configuration is created with
    /// the default policy.
    pub fn register_loader(&self, namespace: &str, loader: SharedLoader) -> Result<(), CacheError> {
        key::validate_namespace(namespace)?;
        let default_policy = self.inner.live().default_policy;
        let ns = self.inner.add_namespace(namespace, default_policy, None)?;
        *ns.loader.write().unwrap_or_else(|e| e.into_inner()) = Some(loader);
        Ok(())
    }

    /// Records a price of a symbol for the realised volatility the adaptive TTL uses.
    pub fn record_price(&self, symbol: &str, price: f64) {
        self.inner.volatility.record(symbol, price);
    }

    /// The TTL a write of `key` would get now.
    pub fn ttl_for(
        &self,
        namespace: &str,
        key: &str,
        options: SetOptions<'_>,
    ) -> Result<Duration, CacheError> {
        let ns = self.inner.namespace(namespace)?;
        Ok(self.inner.ttl_for(ns, key, &options))
    }

    /// The policy a namespace follows now.
    pub fn policy(&self, namespace: &str) -> Result<Policy, CacheError> {
        Ok(self.inner.namespace(namespace)?.policy())
    }

    /// The timeout of each Redis wait (connection, reply) now; `None` without L2.
    pub fn redis_timeout(&self) -> Option<Duration> {
        self.inner.l2.as_ref().map(|l2| l2.timeout().get())
    }

    /// Registers `tickmesh_cache_l2_duration_seconds{operation}` (GET and SET round trips
    /// to Redis, failures and timeouts included); nothing without an L2.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        if let Some(l2) = &self.inner.l2 {
            registry.register_with_unit(
                "tickmesh_cache_l2_duration",
                "Time of a round trip to the cache's Redis tier (L2), by operation",
                prometheus_client::registry::Unit::Seconds,
                l2.durations.clone(),
            );
        }
    }

    /// Counters per namespace and tier. L1 maintenance is lazy, so evictions and memory may
    /// trail by a moment; [`Cache::run_pending_tasks`] settles them.
    pub fn stats(&self) -> CacheStats {
        let mut namespaces: Vec<_> = self
            .inner
            .namespaces
            .all()
            .map(|ns| ns.counters.snapshot(&ns.name, self.inner.l1.is_some()))
            .collect();
        namespaces.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        CacheStats::from_namespaces(namespaces, self.l2_available())
    }

    /// Runs L1's pending maintenance (evictions, expirations, counters).
    pub async fn run_pending_tasks(&self) {
        if let Some(l1) = &self.inner.l1 {
            l1.run_pending_tasks().await;
        }
    }

    /// Whether L2 is in use and Redis answers (the circuit is closed).
    pub fn l2_available(&self) -> bool {
        self.inner.l2.as_ref().is_some_and(L2::available)
    }

    /// The state of the circuit breaker in front of Redis; `None` without L2.
    pub fn l2_circuit(&self) -> Option<BreakerState> {
        self.inner.l2.as_ref().map(L2::circuit)
    }

    /// The tiers in use.
    pub fn tiers(&self) -> Tiers {
        self.inner.tiers
    }

    /// The Redis pool, when L2 is in use (for health checks).
    pub fn redis_pool(&self) -> Option<RedisPool> {
        self.inner.l2.as_ref().map(|l2| l2.pool().clone())
    }

    /// Known namespaces, sorted.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .namespaces
            .all()
            .map(|ns| ns.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Stops the background tasks (invalidation subscriber, Redis probe). Reads and writes keep
    /// working, without cross-process invalidation.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let tasks: Vec<_> = self.inner.tasks().drain(..).collect();
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

impl Inner {
    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> std::sync::RwLockReadGuard<'_, Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_ttl(&self) -> Duration {
        self.live().lock_ttl
    }

    fn check_size(&self, len: usize) -> Result<(), CacheError> {
        let len = len as u64;
        let max = self.live().max_value_bytes;
        if len > max {
            return Err(CacheError::ValueTooLarge { len, max });
        }
        Ok(())
    }

    fn token(&self) -> String {
        format!(
            "{}:{}",
            self.origin,
            self.tokens.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn ttl_for(&self, ns: &Namespace, key: &str, options: &SetOptions<'_>) -> Duration {
        if let Some(ttl) = options.ttl.filter(|t| !t.is_zero()) {
            return ttl;
        }
        let policy = ns.policy();
        if !policy.adaptive_ttl {
            return policy.ttl;
        }
        let symbol = options.symbol.unwrap_or_else(|| symbol_of(key));
        let volatility = options
            .volatility
            .or_else(|| self.volatility.volatility(symbol));
        self.live()
            .adaptive
            .ttl(symbol, volatility, Timestamp::now())
    }
}

/// The symbol a key is about, for the adaptive TTL: the key up to its first `/`
/// (`AAPL/1m/…` → `AAPL`; `NYSE:IBM` stays whole).
pub fn symbol_of(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

fn new_origin() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:x}-{:x}-{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Pings Redis through the breaker, so the circuit opens when Redis goes away and closes again
/// when it is back even while every read is an L1 hit and nothing else touches Redis; once it
/// answers, sends the invalidations it missed meanwhile.
async fn probe_loop(inner: Weak<Inner>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Some(l2) = &inner.l2 {
            let _ = l2.ping().await;
            if inner.missed.pending() && l2.available() {
                inner.replay_missed(l2).await;
            }
        }
    }
}
