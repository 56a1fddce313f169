//! The cache: L1 → L2 → source, with stampede protection, refresh-ahead, cross-process
//! invalidation and graceful degradation when Redis is gone.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use jiff::Timestamp;
use redis::{Client, RedisError, Value};
use tickmesh_mesh::ConfigSnapshot;
use tickmesh_proto::v1::{CacheTier, PerformanceOptimizationConfig};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::adaptive::{AdaptiveTtl, VolatilityTracker};
use crate::error::CacheError;
use crate::flight::{Flights, Outcome};
use crate::key;
use crate::l1::{KeyRef, L1, Slot};
use crate::l2::{L2, L2Error, RedisPool};
use crate::loader::SharedLoader;
use crate::pubsub::{self, Target};
use crate::settings::{Eviction, Policy, Settings, Tiers};
use crate::stats::{CacheStats, NsCounters, SkipCounters, SkipStats};

/// How often the L2 health probe pings Redis.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long `Cache::new` waits for the invalidation subscription before going on without it.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(1);
/// How often the subscriber pings its connection to notice a silent drop.
const SUBSCRIBER_PING: Duration = Duration::from_secs(1);
/// First and longest pause between subscriber reconnection attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// First and longest pause between polls of L2 while another process holds the load lock.
const LOCK_POLL_MIN: Duration = Duration::from_millis(2);
const LOCK_POLL_MAX: Duration = Duration::from_millis(25);
/// Keys loaded at once by `warm`.
const WARM_CONCURRENCY: usize = 16;

/// The tier that answered a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The in-process cache.
    L1,
    /// Redis.
    L2,
    /// The namespace's loader.
    Source,
}

impl Tier {
    /// The proto enum.
    pub fn to_proto(self) -> CacheTier {
        match self {
            Self::L1 => CacheTier::L1,
            Self::L2 => CacheTier::L2,
            Self::Source => CacheTier::Source,
        }
    }
}

/// A value found in the cache (or loaded from the source).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The encoded value.
    pub value: Bytes,
    /// Which tier answered.
    pub tier: Tier,
    /// When its time to live ends.
    pub expires_at: Instant,
}

impl Hit {
    /// Time to live left now (computed when asked, so a read that does not want it does not
    /// read the clock for it).
    pub fn ttl_remaining(&self) -> Duration {
        self.expires_at.saturating_duration_since(Instant::now())
    }
}

/// Options of a write.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetOptions<'a> {
    /// Overrides the namespace's TTL (`None` or zero: the policy, adaptive when configured).
    pub ttl: Option<Duration>,
    /// The symbol the adaptive TTL looks at (default: the key up to its first `/`).
    pub symbol: Option<&'a str>,
    /// Realised volatility of the symbol for the adaptive TTL (default: what
    /// [`Cache::record_price`] measured).
    pub volatility: Option<f64>,
}

/// Where a write landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The TTL applied.
    pub ttl: Duration,
    /// Written to L1.
    pub l1: bool,
    /// Written to L2 (false when Redis is unavailable).
    pub l2: bool,
}

/// Entries dropped by an invalidation on this process's tiers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Invalidated {
    /// From L1.
    pub l1: u64,
    /// From L2.
    pub l2: u64,
}

impl Invalidated {
    /// Both tiers together.
    pub fn total(&self) -> u64 {
        self.l1 + self.l2
    }
}

/// What a configuration change did to the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Changed settings that keep their running value until a restart (field paths, e.g.
    /// `cache.l1_max_entries`).
    pub needs_restart: Vec<String>,
}

/// What a warm-up did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmReport {
    /// Keys asked for.
    pub total: u64,
    /// Keys now cached (loaded, or cached already).
    pub loaded: u64,
    /// Keys the source does not have.
    pub missing: u64,
    /// Keys whose load failed.
    pub failed: u64,
}

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

/// One namespace: its policy, loader and counters.
pub(crate) struct Namespace {
    /// A full word: ids are copied into lookup keys on the hit path, and a 4-byte id copied as
    /// part of an 8-byte word stalls store forwarding.
    id: u64,
    name: String,
    /// Changes with the configuration; the L1 hit path never reads it (an entry carries what
    /// it needs from the policy it was written under).
    policy: RwLock<Policy>,
    segment: usize,
    loader: RwLock<Option<SharedLoader>>,
    counters: Arc<NsCounters>,
    /// Bumped by every write and invalidation; a fill that raced one does not enter L1.
    epoch: AtomicU64,
    /// Keys with a refresh-ahead reload running.
    refreshing: Mutex<HashSet<String>>,
}

impl Namespace {
    fn loader(&self) -> Option<SharedLoader> {
        self.loader
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn key_ref<'a>(&self, key: &'a str) -> KeyRef<'a> {
        KeyRef { ns: self.id, key }
    }

    /// The policy now (a configuration change replaces it).
    fn policy(&self) -> Policy {
        *self.policy.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    fn slot<'a>(&'a self, key: &'a str) -> Slot<'a> {
        let policy = self.policy();
        Slot {
            segment: self.segment,
            ns: self.id,
            key,
            counters: &self.counters,
            tti: policy.tti,
            refresh_fraction: policy.refresh_ahead_fraction,
        }
    }

    fn refreshing(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.refreshing.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Most namespaces one cache knows (configured plus registered).
pub const MAX_NAMESPACES: usize = 256;

/// The namespaces: append-only slots, so a lookup neither locks nor clones; a name index for
/// when there are many.
struct Namespaces {
    slots: Box<[OnceLock<Arc<Namespace>>]>,
    len: AtomicUsize,
    by_name: RwLock<HashMap<String, usize>>,
    adding: Mutex<()>,
}

impl Namespaces {
    fn new() -> Self {
        Self {
            slots: (0..MAX_NAMESPACES).map(|_| OnceLock::new()).collect(),
            len: AtomicUsize::new(0),
            by_name: RwLock::new(HashMap::new()),
            adding: Mutex::new(()),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Namespace>> {
        self.slots[..self.len.load(Ordering::Acquire)]
            .iter()
            .filter_map(OnceLock::get)
    }

    fn find(&self, name: &str) -> Option<&Arc<Namespace>> {
        let len = self.len.load(Ordering::Acquire);
        // A handful of namespaces: comparing names beats hashing one.
        if len <= 16 {
            return self.all().find(|ns| ns.name == name);
        }
        let i = *self
            .by_name
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)?;
        self.slots.get(i)?.get()
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
    flights: Flights,
    tokens: AtomicU64,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// How a write treats L1 and the other processes.
#[derive(Debug, Clone, Copy)]
enum WriteMode {
    /// A caller's write: other processes drop their copies; L1 per `write_through`.
    Set,
    /// A background refresh: other processes drop their copies; L1 gets the new value.
    Refresh,
    /// A miss filled from the source: nobody else holds the key; L1 only if no write or
    /// invalidation raced the load.
    Fill { epoch: u64 },
}

/// How a lookup counts itself.
#[derive(Debug, Clone, Copy)]
struct Look {
    /// Count misses (a loader's second look does not).
    count_misses: bool,
    /// Time the L1 lookup (sampled: two clock reads cost as much as a third of a hit).
    timed: bool,
}

/// One L1 lookup in this many is timed for the latency statistic.
const LATENCY_SAMPLE: u64 = 16;

impl Look {
    const AGAIN: Look = Look {
        count_misses: false,
        timed: false,
    };

    /// A caller's read: counted, and timed one time in [`LATENCY_SAMPLE`].
    fn first(ns: &Namespace) -> Look {
        let n = ns.counters.requests.fetch_add(1, Ordering::Relaxed);
        Look {
            count_misses: true,
            timed: n.is_multiple_of(LATENCY_SAMPLE),
        }
    }
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

    /// Looks a key up in L1, then L2 (filling L1 on the way back). The source is not asked.
    pub async fn get(&self, namespace: &str, key: &str) -> Result<Option<Hit>, CacheError> {
        let ns = self.inner.namespace(namespace)?;
        let look = Look::first(ns);
        if let Some(hit) = self.inner.lookup_l1(ns, key, look).await {
            return Ok(Some(hit));
        }
        // Only checked keys ever enter L1, so a hit needs no check; anything further does.
        key::validate_key(key)?;
        Ok(self.inner.lookup_l2_boxed(ns, key, look).await)
    }

    /// Looks a key up in L1, then L2, then loads it from the namespace's loader (once, however
    /// many callers in however many processes ask at the same time) and fills the tiers.
    ///
    /// Without a loader this is [`Cache::get`].
    pub async fn get_or_load(&self, namespace: &str, key: &str) -> Result<Option<Hit>, CacheError> {
        let ns = self.inner.namespace(namespace)?;
        let look = Look::first(ns);
        if let Some(hit) = self.inner.lookup_l1(ns, key, look).await {
            return Ok(Some(hit));
        }
        key::validate_key(key)?;
        if let Some(hit) = self.inner.lookup_l2_boxed(ns, key, look).await {
            return Ok(Some(hit));
        }
        let Some(loader) = ns.loader() else {
            return Ok(None);
        };
        let inner = &self.inner;
        inner
            .flights
            .run(ns.id, key, || inner.load_leader(ns, key, loader))
            .await
    }

    /// Writes a value to the tiers and drops other processes' L1 copies; the TTL applied.
    pub async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        options: SetOptions<'_>,
    ) -> Result<Stored, CacheError> {
        key::validate_key(key)?;
        let ns = self.inner.namespace(namespace)?;
        self.inner.check_size(value.len())?;
        let ttl = self.inner.ttl_for(ns, key, &options);
        Ok(self.inner.write(ns, key, value, ttl, WriteMode::Set).await)
    }

    /// Deletes a key from every tier (and other processes' L1); whether it existed here.
    pub async fn delete(&self, namespace: &str, key: &str) -> Result<bool, CacheError> {
        let dropped = self.invalidate_key(namespace, key).await?;
        Ok(dropped.total() > 0)
    }

    /// Drops one key from every tier and every process's L1.
    pub async fn invalidate_key(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Invalidated, CacheError> {
        key::validate_key(key)?;
        let ns = self.inner.namespace(namespace)?;
        Ok(self.inner.invalidate(ns, Target::Key(key.to_owned())).await)
    }

    /// Drops the keys matching a glob (`*`, `?`, `[...]`, as Redis) from every tier and every
    /// process's L1; Redis is walked with `SCAN`, never `KEYS`.
    pub async fn invalidate_pattern(
        &self,
        namespace: &str,
        pattern: &str,
    ) -> Result<Invalidated, CacheError> {
        key::validate_pattern(pattern)?;
        let ns = self.inner.namespace(namespace)?;
        Ok(self
            .inner
            .invalidate(ns, Target::Pattern(pattern.to_owned()))
            .await)
    }

    /// Drops a whole namespace from every tier and every process's L1.
    pub async fn invalidate_namespace(&self, namespace: &str) -> Result<Invalidated, CacheError> {
        let ns = self.inner.namespace(namespace)?;
        Ok(self.inner.invalidate(ns, Target::Namespace).await)
    }

    /// Loads `keys` (empty: the loader's warm set) through the cache, reporting
    /// `progress(done, total)` after each key.
    pub async fn warm(
        &self,
        namespace: &str,
        keys: Vec<String>,
        mut progress: impl FnMut(u64, u64) + Send,
    ) -> Result<WarmReport, CacheError> {
        let ns = self.inner.namespace(namespace)?;
        let loader = ns
            .loader()
            .ok_or_else(|| CacheError::NoLoader(namespace.to_owned()))?;
        let keys = if keys.is_empty() {
            loader.warm_keys().await.map_err(|err| CacheError::Load {
                namespace: namespace.to_owned(),
                key: "(warm set)".to_owned(),
                source: Arc::from(err),
            })?
        } else {
            keys
        };
        for key in &keys {
            key::validate_key(key)?;
        }
        let mut report = WarmReport {
            total: keys.len() as u64,
            ..WarmReport::default()
        };
        progress(0, report.total);
        let mut results = futures_util::stream::iter(keys)
            .map(|key| async move { self.get_or_load(namespace, &key).await })
            .buffer_unordered(WARM_CONCURRENCY);
        let mut done = 0;
        while let Some(result) = results.next().await {
            match result {
                Ok(Some(_)) => report.loaded += 1,
                Ok(None) => report.missing += 1,
                Err(err) => {
                    debug!(namespace, error = %err, "warming a key failed");
                    report.failed += 1;
                }
            }
            done += 1;
            progress(done, report.total);
        }
        Ok(report)
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

    /// Applies a changed configuration to the operations that start from now on: namespace
    /// policies (TTL, TTI, write-through, refresh-ahead, adaptive TTL; entries already cached
    /// keep the TTL they were written with), the adaptive TTL rules, the Redis timeout, the
    /// value size limit and the lock TTL. New namespaces of the configuration are added; a
    /// namespace that left it falls back to the default policy.
    ///
    /// Settings that shape what was built at start (the caching strategy, L1's size, the
    /// circuit breaker, the volatility window, a namespace's eviction policy) keep their
    /// running value; they are logged as needing a restart and listed in the answer. An
    /// invalid configuration changes nothing.
    pub fn apply_config(
        &self,
        config: &PerformanceOptimizationConfig,
    ) -> Result<Reconfigured, CacheError> {
        self.inner.apply(config)
    }

    /// Applies every configuration a `tickmesh_mesh::ConfigHandle` publishes from now on
    /// (file reload, `UpdateConfig`), until [`Cache::shutdown`] or the handle goes away.
    pub fn follow_config(&self, mut updates: watch::Receiver<ConfigSnapshot>) {
        let cache = Arc::downgrade(&self.inner);
        let mut shutdown = self.inner.shutdown.subscribe();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = updates.changed() => if changed.is_err() { return },
                    _ = shutdown.changed() => return,
                }
                let snapshot = updates.borrow_and_update().clone();
                let Some(inner) = cache.upgrade() else { return };
                match inner.apply(&snapshot.config) {
                    Ok(_) => debug!(
                        version = snapshot.version,
                        "cache follows the configuration"
                    ),
                    Err(err) => warn!(
                        version = snapshot.version,
                        error = %err,
                        "configuration change not applied to the cache"
                    ),
                }
            }
        });
        self.inner.tasks().push(task);
    }

    /// Records signal evaluations of the computation service under `namespace`: `skipped`
    /// kept the standing signal because the price moved less than the skip threshold,
    /// `computed` produced a new one. Counted in the process and, when L2 is in use, added to
    /// the cluster-wide counts in Redis (`HINCRBY`), which [`Cache::skip_stats`] reads; counts
    /// Redis did not take (it was down) are added with the next call that reaches it.
    pub async fn record_skips(
        &self,
        namespace: &str,
        skipped: u64,
        computed: u64,
    ) -> Result<(), CacheError> {
        let ns = self.inner.namespace(namespace)?;
        ns.counters.skips.add(skipped, computed);
        let Some(l2) = &self.inner.l2 else {
            return Ok(());
        };
        ns.counters.skips_unflushed.add(skipped, computed);
        let pending = ns.counters.skips_unflushed.take();
        if pending.skipped == 0 && pending.computed == 0 {
            return Ok(());
        }
        if let Err(err) = l2
            .add_skips(&key::skips_key(&ns.name), pending.skipped, pending.computed)
            .await
        {
            debug!(error = %err, "skip counts kept for the next call");
            ns.counters
                .skips_unflushed
                .add(pending.skipped, pending.computed);
        }
        Ok(())
    }

    /// Signal evaluations recorded with [`Cache::record_skips`], of one namespace or (`None`)
    /// of all: cluster-wide (Redis, plus what this process could not add yet) when L2 is in
    /// use and answers, else this process's own.
    pub async fn skip_stats(&self, namespace: Option<&str>) -> Result<SkipStats, CacheError> {
        let namespaces: Vec<&Arc<Namespace>> = match namespace {
            Some(name) => vec![self.inner.namespace(name)?],
            None => self.inner.namespaces.all().collect(),
        };
        let local = |counters: fn(&NsCounters) -> &SkipCounters| {
            namespaces.iter().fold(SkipStats::default(), |sum, ns| {
                sum.plus(counters(&ns.counters).snapshot())
            })
        };
        if let Some(l2) = &self.inner.l2 {
            let keys: Vec<String> = namespaces
                .iter()
                .map(|ns| key::skips_key(&ns.name))
                .collect();
            match l2.read_skips(&keys).await {
                Ok(counts) => {
                    let shared = counts.into_iter().fold(
                        SkipStats {
                            cluster_wide: true,
                            ..SkipStats::default()
                        },
                        |sum, (skipped, computed)| {
                            sum.plus(SkipStats {
                                skipped,
                                computed,
                                cluster_wide: true,
                            })
                        },
                    );
                    return Ok(shared.plus(local(|c| &c.skips_unflushed)));
                }
                Err(err) => debug!(error = %err, "cluster-wide skip counts unavailable"),
            }
        }
        Ok(local(|c| &c.skips))
    }

    /// The policy a namespace follows now.
    pub fn policy(&self, namespace: &str) -> Result<Policy, CacheError> {
        Ok(self.inner.namespace(namespace)?.policy())
    }

    /// The timeout of each Redis wait (connection, reply) now; `None` without L2.
    pub fn redis_timeout(&self) -> Option<Duration> {
        self.inner.l2.as_ref().map(|l2| l2.timeout().get())
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
    fn apply(&self, config: &PerformanceOptimizationConfig) -> Result<Reconfigured, CacheError> {
        let next = Settings::from_config(config, self.has_redis)?;
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let needs_restart = self.needs_restart(&next);
        let before = self.needs_restart(&applied);
        for setting in needs_restart.iter().filter(|s| !before.contains(s)) {
            warn!(
                setting = setting.as_str(),
                "cache setting changed; it needs a restart to apply, the running value stays"
            );
        }
        {
            let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
            *live = Live {
                max_value_bytes: next.max_value_bytes,
                lock_ttl: next.lock_ttl,
                default_policy: self.runnable(next.default_policy),
                adaptive: next.adaptive.clone(),
            };
        }
        if let Some(l2) = &self.l2 {
            l2.timeout().set(next.redis_timeout);
        }
        for (name, policy) in &next.namespaces {
            self.add_namespace(name, self.runnable(*policy), None)?;
        }
        for ns in self.namespaces.all() {
            let mut policy = self.runnable(next.policy_of(&ns.name));
            // The segment an existing namespace lives in is fixed.
            policy.eviction = ns.policy().eviction;
            ns.set_policy(policy);
        }
        info!(
            namespaces = next.namespaces.len(),
            redis_timeout_ms = next.redis_timeout.as_millis() as u64,
            needs_restart = needs_restart.len(),
            "cache configuration applied"
        );
        *applied = next;
        Ok(Reconfigured { needs_restart })
    }

    /// `policy` with an eviction L1 can give it (a new eviction policy needs a segment, made
    /// only at start).
    fn runnable(&self, mut policy: Policy) -> Policy {
        if let Some(l1) = &self.l1
            && !l1.has_segment(policy.eviction)
        {
            policy.eviction = self.started.default_policy.eviction;
        }
        policy
    }

    /// The settings of `next` that differ from what runs and cannot change without a restart.
    fn needs_restart(&self, next: &Settings) -> Vec<String> {
        let started = &self.started;
        let mut out = Vec::new();
        let mut differs = |changed: bool, name: &str| {
            if changed {
                out.push(name.to_owned());
            }
        };
        differs(next.tiers != started.tiers, "caching_strategy");
        differs(
            next.l1_max_entries != started.l1_max_entries,
            "cache.l1_max_entries",
        );
        differs(
            next.l1_max_bytes != started.l1_max_bytes,
            "cache.l1_max_bytes",
        );
        differs(next.breaker != started.breaker, "circuit_breaker");
        differs(
            next.adaptive.window_bars() != started.adaptive.window_bars(),
            "adaptive_ttl.volatility_window_bars",
        );
        // A namespace's eviction policy is the L1 segment it lives in.
        for ns in self.namespaces.all() {
            let wanted = next.policy_of(&ns.name);
            if wanted.eviction != ns.policy().eviction {
                out.push(format!("cache.namespaces.{}.eviction", ns.name));
            }
        }
        for (name, policy) in &next.namespaces {
            if self.find_namespace(name).is_none()
                && self.runnable(*policy).eviction != policy.eviction
            {
                out.push(format!("cache.namespaces.{name}.eviction"));
            }
        }
        if self.runnable(next.default_policy).eviction != next.default_policy.eviction {
            out.push("cache.default_policy.eviction".to_owned());
        }
        out
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The namespace of that name, created with `policy` if it does not exist yet.
    fn add_namespace(
        &self,
        name: &str,
        policy: Policy,
        loader: Option<SharedLoader>,
    ) -> Result<&Arc<Namespace>, CacheError> {
        let namespaces = &self.namespaces;
        let _adding = namespaces.adding.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ns) = namespaces.find(name) {
            return Ok(ns);
        }
        let id = namespaces.len.load(Ordering::Acquire);
        let slot = namespaces
            .slots
            .get(id)
            .ok_or(CacheError::TooManyNamespaces(MAX_NAMESPACES))?;
        let ns = Arc::new(Namespace {
            id: id as u64,
            name: name.to_owned(),
            policy: RwLock::new(policy),
            segment: self
                .l1
                .as_ref()
                .map_or(0, |l1| l1.segment_of(policy.eviction)),
            loader: RwLock::new(loader),
            counters: Arc::default(),
            epoch: AtomicU64::new(0),
            refreshing: Mutex::new(HashSet::new()),
        });
        let _ = slot.set(ns);
        namespaces
            .by_name
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), id);
        namespaces.len.store(id + 1, Ordering::Release);
        slot.get()
            .ok_or(CacheError::TooManyNamespaces(MAX_NAMESPACES))
    }

    fn find_namespace(&self, name: &str) -> Option<&Arc<Namespace>> {
        self.namespaces.find(name)
    }

    fn namespace(&self, name: &str) -> Result<&Arc<Namespace>, CacheError> {
        self.find_namespace(name)
            .ok_or_else(|| CacheError::UnknownNamespace(name.to_owned()))
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

    /// L1, then L2 (filling L1).
    async fn lookup(self: &Arc<Self>, ns: &Arc<Namespace>, key: &str, look: Look) -> Option<Hit> {
        if let Some(hit) = self.lookup_l1(ns, key, look).await {
            return Some(hit);
        }
        self.lookup_l2_boxed(ns, key, look).await
    }

    /// The L1 part of a lookup: the hot path, kept small.
    async fn lookup_l1(
        self: &Arc<Self>,
        ns: &Arc<Namespace>,
        key: &str,
        look: Look,
    ) -> Option<Hit> {
        let l1 = self.l1.as_ref()?;
        let start = look.timed.then(Instant::now);
        // moka returns only live entries (their expiry is never past `expires_at`).
        let found = l1.get(ns.segment, ns.key_ref(key)).await;
        let took = start.map(|start| start.elapsed());
        match found {
            Some(entry) => {
                // L1 hits are not counted: they are the reads that did not miss.
                if let Some(took) = took {
                    ns.counters.l1.time(took);
                }
                if entry.refresh_due() {
                    self.start_refresh(ns, key);
                }
                let expires_at = entry.expires_at();
                Some(Hit {
                    value: entry.value,
                    tier: Tier::L1,
                    expires_at,
                })
            }
            None => {
                if look.count_misses {
                    ns.counters.l1.miss(took);
                }
                None
            }
        }
    }

    /// L2, boxed: its future is large, and keeping it out of line keeps the L1 hit path from
    /// moving it around on every call.
    async fn lookup_l2_boxed(
        self: &Arc<Self>,
        ns: &Arc<Namespace>,
        key: &str,
        look: Look,
    ) -> Option<Hit> {
        self.l2.as_ref()?;
        Box::pin(self.lookup_l2(ns, key, look)).await
    }

    async fn lookup_l2(
        self: &Arc<Self>,
        ns: &Arc<Namespace>,
        key: &str,
        look: Look,
    ) -> Option<Hit> {
        let l2 = self.l2.as_ref()?;
        let epoch = ns.epoch.load(Ordering::Acquire);
        let start = Instant::now();
        let result = l2.get(&key::data_key(&ns.name, key)).await;
        let took = start.elapsed();
        match result {
            Ok(Some(found)) => {
                ns.counters.l2.hit(Some(took));
                let expires_at = Instant::now() + found.remaining;
                self.fill_l1(ns, key, found.value.clone(), expires_at, found.ttl, epoch)
                    .await;
                self.maybe_refresh(ns, key, found.remaining, found.ttl);
                Some(Hit {
                    value: found.value,
                    tier: Tier::L2,
                    expires_at,
                })
            }
            Ok(None) => {
                if look.count_misses {
                    ns.counters.l2.miss(Some(took));
                }
                None
            }
            // The circuit is open: L2 is skipped, not missed.
            Err(L2Error::Open) => None,
            Err(_) => {
                ns.counters.l2.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Puts a value that was read (from L2 or the source) into L1, unless a write or an
    /// invalidation of the namespace happened since `epoch` was taken: the value may be older
    /// than what that write stored. One that lands during the insert undoes it.
    async fn fill_l1(
        &self,
        ns: &Namespace,
        key: &str,
        value: Bytes,
        expires_at: Instant,
        ttl: Duration,
        epoch: u64,
    ) -> bool {
        let Some(l1) = &self.l1 else { return false };
        if ns.epoch.load(Ordering::Acquire) != epoch {
            return false;
        }
        let inserted = l1.insert(ns.slot(key), value, expires_at, ttl).await;
        if inserted && ns.epoch.load(Ordering::Acquire) != epoch {
            l1.remove(ns.segment, ns.key_ref(key)).await;
            return false;
        }
        inserted
    }

    /// The one load of a key in this process: a second look at the tiers, then the cross-process
    /// lock in Redis, then the source.
    async fn load_leader(
        self: &Arc<Self>,
        ns: &Arc<Namespace>,
        key: &str,
        loader: SharedLoader,
    ) -> Outcome {
        if let Some(hit) = self.lookup(ns, key, Look::AGAIN).await {
            return Ok(Some(hit));
        }
        if let Some(l2) = &self.l2 {
            let lock = key::lock_key(&ns.name, key);
            let token = self.token();
            let lock_ttl = self.lock_ttl();
            let deadline = Instant::now() + lock_ttl;
            let mut pause = LOCK_POLL_MIN;
            loop {
                match l2.try_lock(&lock, &token, lock_ttl).await {
                    Ok(true) => {
                        // Another process may have loaded and unlocked between our look and
                        // our lock.
                        let outcome = match self.lookup_l2(ns, key, Look::AGAIN).await {
                            Some(hit) => Ok(Some(hit)),
                            None => self.load_and_fill(ns, key, &loader).await,
                        };
                        if let Err(err) = l2.unlock(&lock, &token).await {
                            debug!(error = %err, "releasing the load lock failed; it expires by itself");
                        }
                        return outcome;
                    }
                    Ok(false) => {
                        if Instant::now() >= deadline {
                            debug!(
                                namespace = ns.name,
                                "load lock held too long; loading without it"
                            );
                            break;
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(LOCK_POLL_MAX);
                        if let Some(hit) = self.lookup_l2(ns, key, Look::AGAIN).await {
                            return Ok(Some(hit));
                        }
                    }
                    // Redis is unavailable: every process loads for itself.
                    Err(_) => break,
                }
            }
        }
        self.load_and_fill(ns, key, &loader).await
    }

    async fn load(
        &self,
        ns: &Namespace,
        key: &str,
        loader: &SharedLoader,
    ) -> Result<Option<Bytes>, CacheError> {
        let start = Instant::now();
        let result = loader.load(key).await;
        ns.counters.load(start.elapsed(), result.is_ok());
        result.map_err(|err| CacheError::Load {
            namespace: ns.name.clone(),
            key: key.to_owned(),
            source: Arc::from(err),
        })
    }

    async fn load_and_fill(
        self: &Arc<Self>,
        ns: &Arc<Namespace>,
        key: &str,
        loader: &SharedLoader,
    ) -> Outcome {
        let epoch = ns.epoch.load(Ordering::Acquire);
        let Some(value) = self.load(ns, key, loader).await? else {
            return Ok(None);
        };
        let ttl = self.ttl_for(ns, key, &SetOptions::default());
        let expires_at = Instant::now() + ttl;
        if self.check_size(value.len()).is_err() {
            warn!(
                namespace = ns.name,
                bytes = value.len(),
                "loaded value is over cache.max_value_bytes; not cached"
            );
        } else {
            self.write(ns, key, value.clone(), ttl, WriteMode::Fill { epoch })
                .await;
        }
        Ok(Some(Hit {
            value,
            tier: Tier::Source,
            expires_at,
        }))
    }

    /// Writes to L2 (publishing an invalidation when other processes may hold the key in L1),
    /// then to L1.
    async fn write(
        &self,
        ns: &Namespace,
        key: &str,
        value: Bytes,
        ttl: Duration,
        mode: WriteMode,
    ) -> Stored {
        if matches!(mode, WriteMode::Set | WriteMode::Refresh) {
            ns.epoch.fetch_add(1, Ordering::AcqRel);
        }
        let mut stored = Stored {
            ttl,
            l1: false,
            l2: false,
        };
        if let Some(l2) = &self.l2 {
            let message;
            let publish = match (mode, &self.l1) {
                (WriteMode::Set | WriteMode::Refresh, Some(_)) => {
                    message = pubsub::encode(&self.origin, &ns.name, &Target::Key(key.to_owned()));
                    Some((pubsub::CHANNEL, message.as_str()))
                }
                _ => None,
            };
            match l2
                .set(&key::data_key(&ns.name, key), &value, ttl, publish)
                .await
            {
                Ok(()) => stored.l2 = true,
                Err(err) => debug!(error = %err, "L2 write skipped"),
            }
        }
        if let Some(l1) = &self.l1 {
            let expires_at = Instant::now() + ttl;
            stored.l1 = match mode {
                WriteMode::Fill { epoch } => {
                    self.fill_l1(ns, key, value, expires_at, ttl, epoch).await
                }
                WriteMode::Set if !ns.policy().write_through && self.l2.is_some() => {
                    l1.remove(ns.segment, ns.key_ref(key)).await;
                    false
                }
                WriteMode::Set | WriteMode::Refresh => {
                    l1.insert(ns.slot(key), value, expires_at, ttl).await
                }
            };
        }
        stored
    }

    async fn invalidate(&self, ns: &Namespace, target: Target) -> Invalidated {
        ns.epoch.fetch_add(1, Ordering::AcqRel);
        let mut dropped = Invalidated::default();
        if let Some(l1) = &self.l1 {
            dropped.l1 = self.drop_l1(l1, ns, &target).await;
        }
        if let Some(l2) = &self.l2 {
            let message = pubsub::encode(&self.origin, &ns.name, &target);
            let publish = self
                .l1
                .is_some()
                .then_some((pubsub::CHANNEL, message.as_str()));
            let result = match &target {
                Target::Key(key) => l2
                    .delete(&key::data_key(&ns.name, key), publish)
                    .await
                    .map(u64::from),
                Target::Pattern(pattern) => {
                    self.delete_and_publish(l2, &key::data_pattern(&ns.name, pattern), publish)
                        .await
                }
                Target::Namespace => {
                    self.delete_and_publish(l2, &key::data_pattern(&ns.name, "*"), publish)
                        .await
                }
            };
            match result {
                Ok(n) => dropped.l2 = n,
                Err(err) => debug!(error = %err, "L2 invalidation skipped"),
            }
        }
        dropped
    }

    async fn delete_and_publish(
        &self,
        l2: &L2,
        pattern: &str,
        publish: Option<(&str, &str)>,
    ) -> Result<u64, L2Error> {
        let deleted = l2.delete_matching(pattern).await?;
        if let Some((channel, message)) = publish {
            l2.publish(channel, message).await?;
        }
        Ok(deleted)
    }

    async fn drop_l1(&self, l1: &L1, ns: &Namespace, target: &Target) -> u64 {
        let id = ns.id;
        match target {
            Target::Key(key) => u64::from(l1.remove(ns.segment, ns.key_ref(key)).await),
            Target::Pattern(pattern) => {
                l1.remove_where(ns.segment, |k| {
                    k.ns() == id && key::glob_match(pattern, k.key())
                })
                .await
            }
            Target::Namespace => l1.remove_where(ns.segment, |k| k.ns() == id).await,
        }
    }

    /// Starts one background reload when a read finds less than the refresh-ahead fraction of
    /// the TTL left.
    fn maybe_refresh(
        self: &Arc<Self>,
        ns: &Arc<Namespace>,
        key: &str,
        remaining: Duration,
        ttl: Duration,
    ) {
        let fraction = ns.policy().refresh_ahead_fraction;
        if fraction > 0.0 && remaining.as_secs_f64() < ttl.as_secs_f64() * fraction {
            self.start_refresh(ns, key);
        }
    }

    /// Spawns the reload unless one of the key is running or there is no loader.
    #[cold]
    fn start_refresh(self: &Arc<Self>, ns: &Arc<Namespace>, key: &str) {
        let Some(loader) = ns.loader() else {
            return;
        };
        if !ns.refreshing().insert(key.to_owned()) {
            return;
        }
        let inner = Arc::clone(self);
        let ns = Arc::clone(ns);
        let key = key.to_owned();
        tokio::spawn(async move {
            inner.refresh(&ns, &key, &loader).await;
            ns.refreshing().remove(&key);
        });
    }

    async fn refresh(self: &Arc<Self>, ns: &Arc<Namespace>, key: &str, loader: &SharedLoader) {
        // A refresh that finished a moment ago already did the work.
        if let Some(l1) = &self.l1
            && let Some(entry) = l1.get(ns.segment, ns.key_ref(key)).await
            && entry.refresh_at().is_none_or(|at| Instant::now() < at)
        {
            return;
        }
        // Across processes one refresh is enough: whoever holds the lock does it.
        let mut held = None;
        if let Some(l2) = &self.l2 {
            let lock = key::lock_key(&ns.name, key);
            let token = self.token();
            match l2.try_lock(&lock, &token, self.lock_ttl()).await {
                Ok(true) => held = Some((lock, token)),
                Ok(false) => return,
                Err(_) => {}
            }
        }
        ns.counters.refreshes.fetch_add(1, Ordering::Relaxed);
        match self.load(ns, key, loader).await {
            Ok(Some(value)) if self.check_size(value.len()).is_ok() => {
                let ttl = self.ttl_for(ns, key, &SetOptions::default());
                self.write(ns, key, value, ttl, WriteMode::Refresh).await;
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                // The source no longer has it.
                self.invalidate(ns, Target::Key(key.to_owned())).await;
            }
            Err(err) => warn!(namespace = ns.name, key, error = %err, "refresh-ahead load failed"),
        }
        if let (Some(l2), Some((lock, token))) = (&self.l2, held) {
            let _ = l2.unlock(&lock, &token).await;
        }
    }

    /// An invalidation from another process: drop the L1 copies.
    async fn on_invalidation(&self, payload: &[u8]) {
        let Some(message) = pubsub::decode(payload) else {
            debug!("ignoring a malformed invalidation message");
            return;
        };
        if message.origin == self.origin {
            return;
        }
        let (Some(l1), Some(ns)) = (&self.l1, self.find_namespace(&message.namespace)) else {
            return;
        };
        ns.epoch.fetch_add(1, Ordering::AcqRel);
        self.drop_l1(l1, ns, &message.target).await;
    }

    /// Drops every L1 entry: invalidations may have been missed while unsubscribed.
    fn forget_l1(&self) {
        if let Some(l1) = &self.l1 {
            for ns in self.namespaces.all() {
                ns.epoch.fetch_add(1, Ordering::AcqRel);
            }
            l1.clear();
        }
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
/// when it is back even while every read is an L1 hit and nothing else touches Redis.
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
        }
    }
}

/// Listens on the invalidation channel on a connection of its own, reconnecting with backoff;
/// after a reconnection L1 is dropped, since messages may have been missed meanwhile.
async fn subscriber_loop(
    inner: Weak<Inner>,
    client: Client,
    mut shutdown: watch::Receiver<bool>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut first_attempt = true;
    let mut pause = RECONNECT_MIN;
    loop {
        let connect = tokio::time::timeout(SUBSCRIBER_PING, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(pubsub::CHANNEL).await?;
            Ok::<_, RedisError>(pubsub.split())
        });
        let connected = tokio::select! {
            result = connect => result,
            _ = shutdown.changed() => return,
        };
        match connected {
            Ok(Ok((mut sink, mut messages))) => {
                pause = RECONNECT_MIN;
                if !first_attempt {
                    let Some(inner) = inner.upgrade() else { return };
                    inner.forget_l1();
                }
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                info!(
                    channel = pubsub::CHANNEL,
                    "subscribed to cache invalidations"
                );
                let mut ping = tokio::time::interval(SUBSCRIBER_PING);
                ping.tick().await;
                loop {
                    tokio::select! {
                        message = messages.next() => {
                            let Some(message) = message else { break };
                            let Some(inner) = inner.upgrade() else { return };
                            inner.on_invalidation(message.get_payload_bytes()).await;
                        }
                        _ = ping.tick() => {
                            let alive = tokio::time::timeout(SUBSCRIBER_PING, sink.ping::<Value>()).await;
                            if !matches!(alive, Ok(Ok(_))) {
                                break;
                            }
                        }
                        _ = shutdown.changed() => return,
                    }
                }
                warn!("lost the cache invalidation subscription; reconnecting");
            }
            Ok(Err(err)) => debug!(error = %err, "subscribing to cache invalidations failed"),
            Err(_) => debug!("subscribing to cache invalidations timed out"),
        }
        first_attempt = false;
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
        pause = (pause * 2).min(RECONNECT_MAX);
    }
}
