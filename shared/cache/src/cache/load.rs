//! Single-flight loading: one load per key in the process (the flight), one across processes
//! (a short Redis lock), then the source, filling the tiers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use crate::error::CacheError;
use crate::key;
use crate::loader::SharedLoader;

use super::Inner;
use super::namespace::Namespace;
use super::read::{Hit, Look, Tier};
use super::write::{SetOptions, WriteMode};

/// What a load shares with the callers that waited for it.
pub(super) type Outcome = Result<Option<Hit>, CacheError>;

/// First and longest pause between polls of L2 while another process holds the load lock.
const LOCK_POLL_MIN: Duration = Duration::from_millis(2);
const LOCK_POLL_MAX: Duration = Duration::from_millis(25);

impl Inner {
    /// The one load of a key in this process: a second look at the tiers, then the cross-process
    /// lock in Redis, then the source.
    pub(super) async fn load_leader(
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

    pub(super) async fn load(
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
}
