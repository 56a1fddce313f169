//! Live reconfiguration: what a configuration change applies while running, and what needs a
//! restart.

use std::sync::Arc;

use tickmesh_config::ConfigSnapshot;
use tickmesh_proto::v1::PerformanceOptimizationConfig;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::error::CacheError;
use crate::settings::{Policy, Settings};

use super::{Cache, Inner, Live};

/// What a configuration change did to the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Changed settings that keep their running value until a restart (field paths, e.g.
    /// `cache.l1_max_entries`).
    pub needs_restart: Vec<String>,
}

impl Cache {
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

    /// Applies every configuration a `tickmesh_config::ConfigHandle` publishes from now on
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
}

impl Inner {
    pub(super) fn apply(
        &self,
        config: &PerformanceOptimizationConfig,
    ) -> Result<Reconfigured, CacheError> {
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
}
