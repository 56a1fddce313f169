//! Writes: through L2 (telling other processes to drop their L1 copies), then L1.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::debug;

use crate::error::CacheError;
use crate::key;
use crate::pubsub::{self, Target};

use super::namespace::Namespace;
use super::{Cache, Inner};

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

/// How a write treats L1 and the other processes.
#[derive(Debug, Clone, Copy)]
pub(super) enum WriteMode {
    /// A caller's write: other processes drop their copies; L1 per `write_through`.
    Set,
    /// A background refresh: other processes drop their copies; L1 gets the new value.
    Refresh,
    /// A miss filled from the source: nobody else holds the key; L1 only if no write or
    /// invalidation raced the load.
    Fill { epoch: u64 },
}

impl Cache {
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
}

impl Inner {
    /// Writes to L2 (publishing an invalidation when other processes may hold the key in L1),
    /// then to L1.
    pub(super) async fn write(
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
                Err(err) => {
                    debug!(error = %err, "L2 write skipped");
                    // Redis may keep the old value and other processes their copies of it.
                    if matches!(mode, WriteMode::Set | WriteMode::Refresh) {
                        self.missed.record(&ns.name, Target::Key(key.to_owned()));
                    }
                }
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
}
