//! Refresh-ahead: a read that finds little of the TTL left reloads the key in the background,
//! once per key in the process and once across processes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::key;
use crate::loader::SharedLoader;
use crate::pubsub::Target;

use super::Inner;
use super::namespace::Namespace;
use super::write::{SetOptions, WriteMode};

impl Inner {
    /// Starts one background reload when a read finds less than the refresh-ahead fraction of
    /// the TTL left.
    pub(super) fn maybe_refresh(
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
    pub(super) fn start_refresh(self: &Arc<Self>, ns: &Arc<Namespace>, key: &str) {
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
}
