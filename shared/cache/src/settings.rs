//! The parts of `PerformanceOptimizationConfig` the cache reads, checked and in std types.

use std::time::Duration;

use tickmesh_config::{MAX_REDIS_TIMEOUT, std_duration};
use tickmesh_proto::v1::{
    CachePolicy, CachingStrategy, CircuitBreakerConfig, EvictionPolicy,
    PerformanceOptimizationConfig,
};

use crate::adaptive::AdaptiveTtl;
use crate::error::CacheError;
use crate::key;

/// The L2 timeout when `cache.redis_timeout` is unset (what the built-in defaults say too).
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// How L1 makes room when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Eviction {
    /// Least recently used.
    Lru,
    /// Frequency-based admission and eviction (moka's TinyLFU).
    TinyLfu,
    /// Entries leave only when they expire; new entries are refused while full.
    Ttl,
}

impl Eviction {
    fn from_proto(value: i32) -> Self {
        match EvictionPolicy::try_from(value) {
            Ok(EvictionPolicy::Lru) => Self::Lru,
            Ok(EvictionPolicy::Ttl) => Self::Ttl,
            // Unset means the default of the schema.
            Ok(EvictionPolicy::TinyLfu | EvictionPolicy::Unspecified) | Err(_) => Self::TinyLfu,
        }
    }
}

/// The policy of one namespace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// How L1 evicts.
    pub eviction: Eviction,
    /// Time to live after a write (unless adaptive).
    pub ttl: Duration,
    /// Time to idle in L1; `None` never.
    pub tti: Option<Duration>,
    /// Writes go to L1 too (otherwise they go to L2 and drop L1 copies).
    pub write_through: bool,
    /// Reads with less than this fraction of the TTL left reload in the background (0: never).
    pub refresh_ahead_fraction: f64,
    /// The TTL follows market hours and volatility.
    pub adaptive_ttl: bool,
}

impl Policy {
    fn from_proto(field: &str, p: &CachePolicy) -> Result<Self, CacheError> {
        let ttl = std_duration(p.ttl.as_ref());
        if ttl.is_zero() && !p.adaptive_ttl {
            return Err(CacheError::config(
                format!("{field}.ttl"),
                "must be above 0 unless adaptive_ttl is set",
            ));
        }
        let fraction = p.refresh_ahead_fraction;
        if !(fraction.is_finite() && (0.0..1.0).contains(&fraction)) {
            return Err(CacheError::config(
                format!("{field}.refresh_ahead_fraction"),
                format!("must be at least 0 and below 1 (got {fraction})"),
            ));
        }
        let tti = std_duration(p.tti.as_ref());
        Ok(Self {
            eviction: Eviction::from_proto(p.eviction),
            ttl,
            tti: (!tti.is_zero()).then_some(tti),
            write_through: p.write_through,
            refresh_ahead_fraction: fraction,
            adaptive_ttl: p.adaptive_ttl,
        })
    }
}

/// Which tiers are in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiers {
    /// The in-process cache.
    pub l1: bool,
    /// Redis.
    pub l2: bool,
}

/// Everything the cache reads from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub tiers: Tiers,
    pub l1_max_entries: u64,
    pub l1_max_bytes: u64,
    pub max_value_bytes: u64,
    pub lock_ttl: Duration,
    pub redis_timeout: Duration,
    pub default_policy: Policy,
    pub namespaces: Vec<(String, Policy)>,
    pub adaptive: AdaptiveTtl,
    pub breaker: CircuitBreakerConfig,
}

impl Settings {
    pub fn from_config(
        config: &PerformanceOptimizationConfig,
        has_redis: bool,
    ) -> Result<Self, CacheError> {
        let tiers = match CachingStrategy::try_from(config.caching_strategy) {
            Ok(CachingStrategy::InMemory) => Tiers {
                l1: true,
                l2: false,
            },
            Ok(CachingStrategy::Distributed) => Tiers {
                l1: false,
                l2: true,
            },
            Ok(CachingStrategy::MultiLayer) => Tiers { l1: true, l2: true },
            Ok(CachingStrategy::Unspecified) | Err(_) => Tiers {
                l1: true,
                l2: has_redis,
            },
        };
        if tiers.l2 && !has_redis {
            return Err(CacheError::config(
                "caching_strategy",
                "DISTRIBUTED and MULTI_LAYER need a redis url",
            ));
        }
        let cache = config.cache.clone().unwrap_or_default();
        if cache.l1_max_entries == 0 {
            return Err(CacheError::config(
                "cache.l1_max_entries",
                "must be above 0",
            ));
        }
        if cache.l1_max_bytes == 0 {
            return Err(CacheError::config("cache.l1_max_bytes", "must be above 0"));
        }
        if cache.max_value_bytes == 0 {
            return Err(CacheError::config(
                "cache.max_value_bytes",
                "must be above 0",
            ));
        }
        let lock_ttl = std_duration(cache.lock_ttl.as_ref());
        let redis_timeout = match cache.redis_timeout.as_ref() {
            // Configurations written before the field keep the old built-in value.
            None => DEFAULT_REDIS_TIMEOUT,
            Some(d) if d.seconds < 0 || d.nanos < 0 => {
                return Err(CacheError::config(
                    "cache.redis_timeout",
                    "must not be negative",
                ));
            }
            Some(d) => {
                let d = std_duration(Some(d));
                if d.is_zero() || d > MAX_REDIS_TIMEOUT {
                    return Err(CacheError::config(
                        "cache.redis_timeout",
                        format!("must be above 0 and at most {MAX_REDIS_TIMEOUT:?}"),
                    ));
                }
                d
            }
        };
        let default_policy = Policy::from_proto(
            "cache.default_policy",
            &cache.default_policy.unwrap_or_default(),
        )?;
        let mut namespaces = Vec::with_capacity(cache.namespaces.len());
        for (name, policy) in &cache.namespaces {
            key::validate_namespace(name).map_err(|err| {
                CacheError::config(format!("cache.namespaces.{name}"), err.to_string())
            })?;
            namespaces.push((
                name.clone(),
                Policy::from_proto(&format!("cache.namespaces.{name}"), policy)?,
            ));
        }
        // A stable order, so namespace ids do not depend on the map's iteration order.
        namespaces.sort_by(|a, b| a.0.cmp(&b.0));
        let adaptive = AdaptiveTtl::from_config(&config.adaptive_ttl.clone().unwrap_or_default())?;
        Ok(Self {
            tiers,
            l1_max_entries: cache.l1_max_entries,
            l1_max_bytes: cache.l1_max_bytes,
            max_value_bytes: cache.max_value_bytes,
            lock_ttl: if lock_ttl.is_zero() {
                Duration::from_secs(2)
            } else {
                lock_ttl
            },
            redis_timeout,
            default_policy,
            namespaces,
            adaptive,
            breaker: config.circuit_breaker.unwrap_or(CircuitBreakerConfig {
                failure_threshold: 5,
                success_threshold: 2,
                open_duration: Some(prost_types_duration(Duration::from_secs(60))),
                probe_interval: Some(prost_types_duration(Duration::from_millis(500))),
            }),
        })
    }
}

impl Settings {
    /// The policy of a namespace: its own, else the default.
    pub fn policy_of(&self, namespace: &str) -> Policy {
        self.namespaces
            .iter()
            .find(|(name, _)| name == namespace)
            .map_or(self.default_policy, |(_, p)| *p)
    }
}

fn prost_types_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
