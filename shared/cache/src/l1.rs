//! L1: moka caches in the process, one per eviction policy in use, sharing the memory budget.
//!
//! Every entry carries its own TTL (moka's `Expiry`), so values with adaptive TTLs sit side by
//! side. An entry weighs its bytes, but never less than `l1_max_bytes / l1_max_entries`, so one
//! weight budget bounds both the bytes and the number of entries.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Equivalent;
use moka::future::Cache as Moka;
use moka::notification::RemovalCause;
use moka::policy::{EvictionPolicy, Expiry};

use crate::settings::Eviction;
use crate::stats::NsCounters;

/// Bookkeeping bytes counted per entry on top of key and value (moka's node, our key and entry).
const ENTRY_OVERHEAD: usize = 160;

/// The key of an L1 entry: namespace id and key; the counters ride along for the listener.
#[derive(Debug)]
pub(crate) struct L1Key {
    ns: u32,
    key: Box<str>,
    counters: Arc<NsCounters>,
}

impl L1Key {
    pub fn ns(&self) -> u32 {
        self.ns
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Hash for L1Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.ns.hash(state);
        self.key.hash(state);
    }
}

impl PartialEq for L1Key {
    fn eq(&self, other: &Self) -> bool {
        self.ns == other.ns && self.key == other.key
    }
}

impl Eq for L1Key {}

/// Where an entry goes and how it behaves: its namespace's segment, id, counters and policy.
#[derive(Clone, Copy)]
pub(crate) struct Slot<'a> {
    pub segment: usize,
    pub ns: u32,
    pub key: &'a str,
    pub counters: &'a Arc<NsCounters>,
    pub tti: Option<Duration>,
    pub refresh_fraction: f64,
}

/// A borrowed key for lookups without allocating; hashes like [`L1Key`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyRef<'a> {
    pub ns: u32,
    pub key: &'a str,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.ns.hash(state);
        self.key.hash(state);
    }
}

impl Equivalent<L1Key> for KeyRef<'_> {
    fn equivalent(&self, key: &L1Key) -> bool {
        self.ns == key.ns && self.key == &*key.key
    }
}

/// An L1 value and when it expires.
#[derive(Debug, Clone)]
pub(crate) struct L1Entry {
    pub value: Bytes,
    /// The end of the TTL (the same instant as in L2 when it came from there).
    pub expires_at: Instant,
    /// The whole TTL it was written with.
    pub ttl: Duration,
    /// When a read should start a refresh-ahead reload (`None`: never).
    pub refresh_at: Option<Instant>,
    tti: Option<Duration>,
    bytes: u32,
    weight: u32,
}

impl L1Entry {
    fn expiry(&self, at: Instant) -> Duration {
        let ttl = self.expires_at.saturating_duration_since(at);
        match self.tti {
            Some(tti) => ttl.min(tti),
            None => ttl,
        }
    }
}

struct PerEntryExpiry;

impl Expiry<L1Key, L1Entry> for PerEntryExpiry {
    fn expire_after_create(&self, _: &L1Key, value: &L1Entry, at: Instant) -> Option<Duration> {
        Some(value.expiry(at))
    }

    fn expire_after_update(
        &self,
        _: &L1Key,
        value: &L1Entry,
        at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expiry(at))
    }

    fn expire_after_read(
        &self,
        _: &L1Key,
        value: &L1Entry,
        at: Instant,
        left: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        // Returning what is left unchanged keeps moka from rescheduling the timer.
        match value.tti {
            Some(_) => Some(value.expiry(at)),
            None => left,
        }
    }
}

/// One moka cache and its share of the budget.
pub(crate) struct Segment {
    cache: Moka<L1Key, L1Entry>,
    capacity: u64,
    refuse_when_full: bool,
}

/// The in-process tier.
pub(crate) struct L1 {
    segments: Vec<(Eviction, Segment)>,
    min_weight: u64,
}

impl L1 {
    /// One segment per eviction policy in `shares` (policy, number of namespaces using it),
    /// each with its share of the byte budget.
    pub fn new(max_entries: u64, max_bytes: u64, shares: &[(Eviction, u64)]) -> Self {
        let total: u64 = shares.iter().map(|(_, n)| n).sum::<u64>().max(1);
        let min_weight = max_bytes.div_ceil(max_entries.max(1)).max(1);
        let segments = shares
            .iter()
            .map(|&(eviction, n)| {
                let capacity = (u128::from(max_bytes) * u128::from(n) / u128::from(total)) as u64;
                let policy = match eviction {
                    Eviction::TinyLfu => EvictionPolicy::tiny_lfu(),
                    Eviction::Lru | Eviction::Ttl => EvictionPolicy::lru(),
                };
                let cache = Moka::builder()
                    .max_capacity(capacity)
                    .eviction_policy(policy)
                    .weigher(|_: &L1Key, v: &L1Entry| v.weight)
                    .expire_after(PerEntryExpiry)
                    .eviction_listener(|key: Arc<L1Key>, value: L1Entry, cause| {
                        key.counters.l1_removed(value.bytes);
                        match cause {
                            RemovalCause::Size => {
                                key.counters.l1.evictions.fetch_add(1, Relaxed);
                            }
                            RemovalCause::Expired => {
                                key.counters.l1.expirations.fetch_add(1, Relaxed);
                            }
                            RemovalCause::Explicit | RemovalCause::Replaced => {}
                        }
                    })
                    .build();
                (
                    eviction,
                    Segment {
                        cache,
                        capacity,
                        refuse_when_full: eviction == Eviction::Ttl,
                    },
                )
            })
            .collect();
        Self {
            segments,
            min_weight,
        }
    }

    /// The segment index of a policy (the first one if the policy has none, which cannot
    /// happen for namespaces created from the same shares).
    pub fn segment_of(&self, eviction: Eviction) -> usize {
        self.segments
            .iter()
            .position(|(e, _)| *e == eviction)
            .unwrap_or(0)
    }

    fn segment(&self, index: usize) -> Option<&Segment> {
        self.segments.get(index).map(|(_, s)| s)
    }

    pub async fn get(&self, segment: usize, key: KeyRef<'_>) -> Option<L1Entry> {
        self.segment(segment)?.cache.get(&key).await
    }

    /// Inserts a value; false if a TTL-policy segment is full and refused it.
    pub async fn insert(
        &self,
        at: Slot<'_>,
        value: Bytes,
        expires_at: Instant,
        ttl: Duration,
    ) -> bool {
        let Some(seg) = self.segment(at.segment) else {
            return false;
        };
        let bytes = at.key.len() + value.len() + ENTRY_OVERHEAD;
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        let weight = u64::from(bytes).max(self.min_weight);
        if seg.refuse_when_full
            && seg.cache.weighted_size() + weight > seg.capacity
            && !seg.cache.contains_key(&KeyRef {
                ns: at.ns,
                key: at.key,
            })
        {
            at.counters.l1_refused.fetch_add(1, Relaxed);
            return false;
        }
        at.counters.l1_added(bytes);
        let refresh_at = (at.refresh_fraction > 0.0)
            .then(|| expires_at.checked_sub(ttl.mul_f64(at.refresh_fraction)))
            .flatten();
        let entry = L1Entry {
            value,
            expires_at,
            ttl,
            refresh_at,
            tti: at.tti,
            bytes,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        };
        let key = L1Key {
            ns: at.ns,
            key: at.key.into(),
            counters: Arc::clone(at.counters),
        };
        seg.cache.insert(key, entry).await;
        true
    }

    /// Drops one key; whether it was there.
    pub async fn remove(&self, segment: usize, key: KeyRef<'_>) -> bool {
        match self.segment(segment) {
            Some(seg) => seg.cache.remove(&key).await.is_some(),
            None => false,
        }
    }

    /// Drops the keys `select` picks; how many.
    pub async fn remove_where(&self, segment: usize, select: impl Fn(&L1Key) -> bool) -> u64 {
        let Some(seg) = self.segment(segment) else {
            return 0;
        };
        let doomed: Vec<Arc<L1Key>> = seg
            .cache
            .iter()
            .filter(|(k, _)| select(k))
            .map(|(k, _)| k)
            .collect();
        let mut removed = 0;
        for key in doomed {
            if seg.cache.remove(&*key).await.is_some() {
                removed += 1;
            }
        }
        removed
    }

    /// Drops everything (after missed invalidations, e.g. a lost pub/sub connection).
    pub fn clear(&self) {
        for (_, seg) in &self.segments {
            seg.cache.invalidate_all();
        }
    }

    /// Runs moka's pending maintenance (evictions, listener calls); for tests and stats.
    pub async fn run_pending_tasks(&self) {
        for (_, seg) in &self.segments {
            seg.cache.run_pending_tasks().await;
        }
    }
}
