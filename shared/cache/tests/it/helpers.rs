//! Shared set-up: configuration, Redis, counting loaders.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tickmesh_cache::{Cache, SharedLoader, loader_fn};
use tickmesh_proto::v1::{
    CachePolicy, CachingStrategy, CircuitBreakerConfig, EvictionPolicy,
    PerformanceOptimizationConfig,
};
use tickmesh_testkit::Redis;

pub fn secs_f(s: f64) -> Option<prost_types::Duration> {
    let d = Duration::from_secs_f64(s);
    Some(prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

/// The built-in defaults with the given strategy, a fast circuit breaker and a `test`
/// namespace (TinyLFU, 60 s TTL, no refresh-ahead).
pub fn config(strategy: CachingStrategy) -> PerformanceOptimizationConfig {
    let mut config = tickmesh_config::defaults();
    config.caching_strategy = strategy as i32;
    config.circuit_breaker = Some(CircuitBreakerConfig {
        failure_threshold: 3,
        success_threshold: 2,
        open_duration: secs_f(0.5),
        probe_interval: None,
    });
    with_namespace(
        &mut config,
        "test",
        policy(EvictionPolicy::TinyLfu, 60.0, 0.0),
    );
    config
}

pub fn policy(eviction: EvictionPolicy, ttl: f64, refresh: f64) -> CachePolicy {
    CachePolicy {
        eviction: eviction as i32,
        ttl: secs_f(ttl),
        tti: None,
        write_through: true,
        refresh_ahead_fraction: refresh,
        adaptive_ttl: false,
    }
}

pub fn with_namespace(config: &mut PerformanceOptimizationConfig, name: &str, policy: CachePolicy) {
    config
        .cache
        .get_or_insert_with(Default::default)
        .namespaces
        .insert(name.to_owned(), policy);
}

pub async fn redis() -> Redis {
    tokio::task::spawn_blocking(Redis::start)
        .await
        .unwrap()
        .expect("redis-server starts (install it with `apt-get install redis-server`)")
}

pub async fn multi_layer(redis: &Redis) -> Cache {
    Cache::new(&config(CachingStrategy::MultiLayer), Some(&redis.url()))
        .await
        .unwrap()
}

/// A loader that counts its calls and answers `value-{key}` after `delay`.
#[derive(Clone)]
pub struct Counting {
    pub calls: Arc<AtomicUsize>,
    delay: Duration,
}

impl Counting {
    pub fn new(delay: Duration) -> Self {
        Self {
            calls: Arc::default(),
            delay,
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn loader(&self) -> SharedLoader {
        let calls = Arc::clone(&self.calls);
        let delay = self.delay;
        Arc::new(loader_fn(move |key: String| {
            let calls = Arc::clone(&calls);
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(delay).await;
                Ok(Some(Bytes::from(format!("value-{key}-{n}"))))
            }
        }))
    }
}

/// Waits until `done()` holds, failing after `limit`; how long it took.
pub async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// p50 and max of a sample.
pub fn p50_max(mut sample: Vec<Duration>) -> (Duration, Duration) {
    sample.sort();
    (sample[sample.len() / 2], sample[sample.len() - 1])
}
