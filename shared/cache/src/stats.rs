//! Counters per namespace and tier, and the snapshots `Cache::stats` returns.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tickmesh_proto::v1 as pb;

/// Counters of one tier of one namespace.
#[derive(Debug, Default)]
pub(crate) struct TierCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub errors: AtomicU64,
    pub evictions: AtomicU64,
    pub expirations: AtomicU64,
    latency_ns: AtomicU64,
    timed: AtomicU64,
}

impl TierCounters {
    /// A hit; `latency` when this lookup was timed.
    pub fn hit(&self, latency: Option<Duration>) {
        self.hits.fetch_add(1, Relaxed);
        self.time_opt(latency);
    }

    /// A miss; `latency` when this lookup was timed.
    pub fn miss(&self, latency: Option<Duration>) {
        self.misses.fetch_add(1, Relaxed);
        self.time_opt(latency);
    }

    fn time_opt(&self, latency: Option<Duration>) {
        if let Some(latency) = latency {
            self.time(latency);
        }
    }

    /// Adds a timed lookup to the mean latency.
    pub fn time(&self, latency: Duration) {
        self.latency_ns.fetch_add(
            u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
        self.timed.fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> TierStats {
        let timed = self.timed.load(Relaxed);
        TierStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            errors: self.errors.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            expirations: self.expirations.load(Relaxed),
            average_latency_us: mean_us(self.latency_ns.load(Relaxed), timed),
        }
    }
}

/// Counters of one namespace.
#[derive(Debug, Default)]
pub(crate) struct NsCounters {
    pub requests: AtomicU64,
    pub l1: TierCounters,
    pub l2: TierCounters,
    pub loads: AtomicU64,
    pub load_errors: AtomicU64,
    load_ns: AtomicU64,
    pub refreshes: AtomicU64,
    pub l1_bytes: AtomicU64,
    pub l1_entries: AtomicU64,
    pub l1_refused: AtomicU64,
}

impl NsCounters {
    pub fn load(&self, took: Duration, ok: bool) {
        self.loads.fetch_add(1, Relaxed);
        if !ok {
            self.load_errors.fetch_add(1, Relaxed);
        }
        self.load_ns
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    pub fn l1_added(&self, bytes: u32) {
        self.l1_bytes.fetch_add(u64::from(bytes), Relaxed);
        self.l1_entries.fetch_add(1, Relaxed);
    }

    pub fn l1_removed(&self, bytes: u32) {
        self.l1_bytes.fetch_sub(u64::from(bytes), Relaxed);
        self.l1_entries.fetch_sub(1, Relaxed);
    }

    /// With L1 in use, every read looks at L1 first, so its hits are the reads that did not
    /// miss there (not counted one by one on the hot path).
    pub fn snapshot(&self, namespace: &str, l1_in_use: bool) -> NamespaceStats {
        let requests = self.requests.load(Relaxed);
        let mut l1 = self.l1.snapshot();
        if l1_in_use {
            l1.hits = requests.saturating_sub(l1.misses);
        }
        let l2 = self.l2.snapshot();
        let loads = self.loads.load(Relaxed);
        NamespaceStats {
            namespace: namespace.to_owned(),
            requests,
            hit_rate: ratio(l1.hits + l2.hits, requests),
            l1,
            l2,
            loads,
            load_errors: self.load_errors.load(Relaxed),
            average_load_time_us: mean_us(self.load_ns.load(Relaxed), loads),
            refreshes: self.refreshes.load(Relaxed),
            l1_memory_bytes: self.l1_bytes.load(Relaxed),
            l1_entries: self.l1_entries.load(Relaxed),
            l1_refused: self.l1_refused.load(Relaxed),
        }
    }
}

fn mean_us(total_ns: u64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        total_ns as f64 / count as f64 / 1000.0
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Counters of one tier (the proto `TierStats` plus errors and expirations).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierStats {
    /// Lookups this tier answered.
    pub hits: u64,
    /// Lookups this tier did not have.
    pub misses: u64,
    /// Lookups that failed (L2: Redis errors and timeouts, counted as misses to the caller too).
    pub errors: u64,
    /// Entries dropped to make room (L1 only: Redis does not say which namespace it evicts from).
    pub evictions: u64,
    /// Entries dropped because their TTL or TTI ran out (L1 only).
    pub expirations: u64,
    /// Mean time of a lookup in this tier, microseconds (L1: one lookup in 16 is timed).
    pub average_latency_us: f64,
}

impl From<&TierStats> for pb::TierStats {
    fn from(s: &TierStats) -> Self {
        Self {
            hits: s.hits,
            misses: s.misses,
            evictions: s.evictions,
            average_latency_us: s.average_latency_us,
        }
    }
}

/// Counters of one namespace (the proto `NamespaceStats` plus a few more).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamespaceStats {
    /// The namespace.
    pub namespace: String,
    /// Reads (`get` and `get_or_load`).
    pub requests: u64,
    /// L1 counters.
    pub l1: TierStats,
    /// L2 counters.
    pub l2: TierStats,
    /// Loads from the source (misses and background refreshes).
    pub loads: u64,
    /// Loads that failed.
    pub load_errors: u64,
    /// Mean time of a load, microseconds.
    pub average_load_time_us: f64,
    /// Reads answered by L1 or L2, over all reads.
    pub hit_rate: f64,
    /// Background refresh-ahead reloads.
    pub refreshes: u64,
    /// Bytes of keys and values in L1 (with a fixed per-entry overhead).
    pub l1_memory_bytes: u64,
    /// Entries in L1.
    pub l1_entries: u64,
    /// Writes an L1 with the TTL eviction policy refused because it was full.
    pub l1_refused: u64,
}

impl From<&NamespaceStats> for pb::NamespaceStats {
    fn from(s: &NamespaceStats) -> Self {
        Self {
            namespace: s.namespace.clone(),
            l1: Some((&s.l1).into()),
            l2: Some((&s.l2).into()),
            loads: s.loads,
            average_load_time_us: s.average_load_time_us,
            hit_rate: s.hit_rate,
        }
    }
}

/// A snapshot of the whole cache.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheStats {
    /// Per namespace, sorted by name.
    pub namespaces: Vec<NamespaceStats>,
    /// Hits over reads, all namespaces and tiers.
    pub hit_rate: f64,
    /// Mean load time over all namespaces, microseconds.
    pub average_load_time_us: f64,
    /// False while Redis is unreachable (the circuit is not closed) or not configured; the
    /// cache then answers from L1 and the source.
    pub l2_available: bool,
    /// Bytes in L1, all namespaces.
    pub l1_memory_bytes: u64,
    /// Entries in L1, all namespaces.
    pub l1_entries: u64,
}

impl CacheStats {
    pub(crate) fn from_namespaces(namespaces: Vec<NamespaceStats>, l2_available: bool) -> Self {
        let requests: u64 = namespaces.iter().map(|n| n.requests).sum();
        let hits: u64 = namespaces.iter().map(|n| n.l1.hits + n.l2.hits).sum();
        let loads: u64 = namespaces.iter().map(|n| n.loads).sum();
        let load_us: f64 = namespaces
            .iter()
            .map(|n| n.average_load_time_us * n.loads as f64)
            .sum();
        Self {
            hit_rate: ratio(hits, requests),
            average_load_time_us: if loads == 0 {
                0.0
            } else {
                load_us / loads as f64
            },
            l2_available,
            l1_memory_bytes: namespaces.iter().map(|n| n.l1_memory_bytes).sum(),
            l1_entries: namespaces.iter().map(|n| n.l1_entries).sum(),
            namespaces,
        }
    }

    /// The `GetStats` answer.
    pub fn to_proto(&self) -> pb::GetStatsResponse {
        pb::GetStatsResponse {
            namespaces: self.namespaces.iter().map(Into::into).collect(),
            hit_rate: self.hit_rate,
            average_load_time_us: self.average_load_time_us,
            l2_available: self.l2_available,
            l1_memory_bytes: self.l1_memory_bytes,
            l1_entries: self.l1_entries,
            // The skip rate moved to ComputationService.GetSignalStats.
            ..Default::default()
        }
    }
}
