//! The read path: L1 (the hot path, kept small), then L2 filling L1.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tickmesh_proto::v1::CacheTier;

use crate::error::CacheError;
use crate::key;
use crate::l2::L2Error;

use super::namespace::Namespace;
use super::{Cache, Inner};

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

/// How a lookup counts itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct Look {
    /// Count misses (a loader's second look does not).
    count_misses: bool,
    /// Time the L1 lookup (sampled: two clock reads cost as much as a third of a hit).
    timed: bool,
}

/// One L1 lookup in this many is timed for the latency statistic.
const LATENCY_SAMPLE: u64 = 16;

impl Look {
    pub(super) const AGAIN: Look = Look {
        count_misses: false,
        timed: false,
    };

    /// A caller's read: counted, and timed one time in [`LATENCY_SAMPLE`].
    #[inline]
    fn first(ns: &Namespace) -> Look {
        let n = ns.counters.requests.fetch_add(1, Ordering::Relaxed);
        Look {
            count_misses: true,
            timed: n.is_multiple_of(LATENCY_SAMPLE),
        }
    }
}

impl Cache {
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
            .run((ns.id, Box::from(key)), || {
                inner.load_leader(ns, key, loader)
            })
            .await
    }
}

impl Inner {
    /// L1, then L2 (filling L1).
    pub(super) async fn lookup(
        self: &Arc<Self>,
        ns: &Arc<Namespace>,
        key: &str,
        look: Look,
    ) -> Option<Hit> {
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

    pub(super) async fn lookup_l2(
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
    pub(super) async fn fill_l1(
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
}
