//! L1: moka caches in the process, one per eviction policy in use, sharing the memory budget.
//!
//! Every entry carries its own TTL (moka's `Expiry`), so values with adaptive TTLs sit side by
//! side. An entry weighs its bytes, but never less than `l1_max_bytes / l1_max_entries`, so one
//! weight budget bounds both the bytes and the number of entries.

use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, LazyLock};
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
    ns: u64,
    key: Box<str>,
    counters: Arc<NsCounters>,
}

impl L1Key {
    pub fn ns(&self) -> u64 {
        self.ns
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Hash for L1Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(self.ns, &self.key, state);
    }
}

/// Namespace id, then the key's bytes: the one variable-length part comes last, so the input is
/// unambiguous without `str`'s terminator byte (one hasher call less per lookup).
fn hash_key<H: Hasher>(ns: u64, key: &str, state: &mut H) {
    state.write_u64(ns);
    state.write(key.as_bytes());
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
    pub ns: u64,
    pub key: &'a str,
    pub counters: &'a Arc<NsCounters>,
    pub tti: Option<Duration>,
    pub refresh_fraction: f64,
}

/// A borrowed key for lookups without allocating; hashes like [`L1Key`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyRef<'a> {
    pub ns: u64,
    pub key: &'a str,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(self.ns, self.key, state);
    }
}

impl Equivalent<L1Key> for KeyRef<'_> {
    fn equivalent(&self, key: &L1Key) -> bool {
        self.ns == key.ns && self.key == &*key.key
    }
}

/// The instant L1's times are counted from (nanoseconds in a `u64` reach 584 years), so an
/// entry holds three `u64`s instead of three 16-byte `Instant`/`Duration` options: moka clones
/// the entry on every hit, and the hit path copies it a few times more.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

fn to_nanos(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*ORIGIN).as_nanos()).unwrap_or(u64::MAX)
}

fn from_nanos(nanos: u64) -> Instant {
    *ORIGIN + Duration::from_nanos(nanos)
}

/// An L1 value and when it expires.
///
/// moka never hands out an entry past its expiry (which is at most `expires_at`), and it reads
/// the clock on every lookup anyway: the refresh-ahead check rides on that reading (in
/// [`Expiry::expire_after_read`]), so an L1 hit reads no clock of its own.
#[derive(Debug)]
pub(crate) struct L1Entry {
    pub value: Bytes,
    /// The end of the TTL (the same instant as in L2 when it came from there), in nanoseconds
    /// since [`ORIGIN`].
    expires_at: u64,
    /// When a read should start a refresh-ahead reload (`u64::MAX`: never).
    refresh_at: u64,
    /// Time to idle in nanoseconds (0: none).
    tti: u64,
    bytes: u32,
    weight: u32,
    /// Set by the first read at or after `refresh_at`; moka calls `expire_after_read` before
    /// it clones the value for the reader, so that reader sees it. (Were the order ever the
    /// other way round, the next read would: one read late, never wrong.)
    refresh_due: AtomicBool,
}

impl Clone for L1Entry {
    fn clone(&self) -> Self {
        Self {
            value: self.value.clone(),
            expires_at: self.expires_at,
            refresh_at: self.refresh_at,
            tti: self.tti,
            bytes: self.bytes,
            weight: self.weight,
            refresh_due: AtomicBool::new(self.refresh_due.load(Relaxed)),
        }
    }
}

impl L1Entry {
    /// The end of its TTL.
    pub fn expires_at(&self) -> Instant {
        from_nanos(self.expires_at)
    }

    /// When a read starts a refresh-ahead reload, if ever.
    pub fn refresh_at(&self) -> Option<Instant> {
        (self.refresh_at != u64::MAX).then(|| from_nanos(self.refresh_at))
    }

    /// Whether a read found less than the refresh-ahead fraction of the TTL left.
    pub fn refresh_due(&self) -> bool {
        self.refresh_due.load(Relaxed)
    }

    /// Notes a read at `at` (moka's clock reading of the lookup).
    fn read_at(&self, at: Instant) {
        if self.refresh_at != u64::MAX
            && !self.refresh_due.load(Relaxed)
            && to_nanos(at) >= self.refresh_at
        {
            self.refresh_due.store(true, Relaxed);
        }
    }

    fn tti(&self) -> Option<Duration> {
        (self.tti != 0).then(|| Duration::from_nanos(self.tti))
    }

    fn expiry(&self, at: Instant) -> Duration {
        let ttl = self.expires_at().saturating_duration_since(at);
        match self.tti() {
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
        value.read_at(at);
        // Returning what is left unchanged keeps moka from rescheduling the timer.
        match value.tti {
            0 => left,
            _ => Some(value.expiry(at)),
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
        LazyLock::force(&ORIGIN);
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

    /// The eviction policies L1 has a segment for (fixed when it was built).
    pub fn has_segment(&self, eviction: Eviction) -> bool {
        self.segments.iter().any(|(e, _)| *e == eviction)
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
            .flatten()
            .map_or(u64::MAX, to_nanos);
        let entry = L1Entry {
            value,
            expires_at: to_nanos(expires_at),
            refresh_at,
            tti: at.tti.map_or(0, |d| {
                u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
            }),
            bytes,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
            refresh_due: AtomicBool::new(false),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn slot<'a>(key: &'a str, counters: &'a Arc<NsCounters>, refresh_fraction: f64) -> Slot<'a> {
        Slot {
            segment: 0,
            ns: 0,
            key,
            counters,
            tti: None,
            refresh_fraction,
        }
    }

    /// Pins what the L1 hit path relies on: moka runs `expire_after_read` before it clones the
    /// value for the reader, so the read that crosses the refresh point sees it.
    #[tokio::test]
    async fn the_read_past_the_refresh_point_sees_it_due() {
        let l1 = L1::new(1000, 1 << 20, &[(Eviction::TinyLfu, 1)]);
        let counters = Arc::new(NsCounters::default());
        let ttl = Duration::from_secs(10);
        let expires_at = Instant::now() + ttl;
        // Refresh point 10 µs after the write, and one 10 s away.
        assert!(
            l1.insert(
                slot("soon", &counters, 0.999_999),
                Bytes::new(),
                expires_at,
                ttl
            )
            .await
        );
        assert!(
            l1.insert(
                slot("late", &counters, 0.0001),
                Bytes::new(),
                expires_at,
                ttl
            )
            .await
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
        let soon = l1.get(0, KeyRef { ns: 0, key: "soon" }).await.unwrap();
        assert!(soon.refresh_due(), "the first read past the point");
        let late = l1.get(0, KeyRef { ns: 0, key: "late" }).await.unwrap();
        assert!(!late.refresh_due());
    }

    #[tokio::test]
    async fn an_entry_without_refresh_ahead_is_never_due() {
        let l1 = L1::new(1000, 1 << 20, &[(Eviction::Lru, 1)]);
        let counters = Arc::new(NsCounters::default());
        let ttl = Duration::from_millis(1);
        let expires_at = Instant::now() + Duration::from_secs(10);
        assert!(
            l1.insert(slot("k", &counters, 0.0), Bytes::new(), expires_at, ttl)
                .await
        );
        let entry = l1.get(0, KeyRef { ns: 0, key: "k" }).await.unwrap();
        assert!(!entry.refresh_due());
    }
}
