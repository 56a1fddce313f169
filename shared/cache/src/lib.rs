//! The multi-tier cache of tickmesh: L1 in the process (moka), L2 in Redis (bb8 pool), the
//! source behind them as a loader per namespace.
//!
//! - Reads go L1 → L2 → source and fill the tiers on the way back; `caching_strategy` picks
//!   the tiers (IN_MEMORY: L1, DISTRIBUTED: L2, MULTI_LAYER: both).
//! - Policies per namespace from `cache.namespaces` (else `cache.default_policy`): LRU,
//!   TinyLFU or TTL eviction in L1, a TTL per entry, time to idle, write-through,
//!   refresh-ahead, and the adaptive TTL of [`adaptive`] (market hours, volatility).
//! - A miss is loaded once however many callers ask: single-flight in the process, a short
//!   Redis lock (`SET NX PX`, released by compare-and-delete) across processes.
//! - Writes and invalidations (key, glob pattern, namespace) drop the L1 copies of every other
//!   process through Redis pub/sub ([`pubsub::CHANNEL`]).
//! - When Redis is down nobody sees an error: a circuit breaker stops waiting on it, answers
//!   come from L1 and the source, [`Cache::l2_available`] says so, and it recovers by itself
//!   (the open circuit probes after `circuit_breaker.probe_interval`, doubling per failed probe
//!   up to `open_duration`). Writes and invalidations that did not reach Redis meanwhile are
//!   sent again (L2 delete and pub/sub message) once it answers, and a process whose
//!   subscription dropped forgets its L1 when it is back, so no stale copy outlives an outage.
//! - Configuration changes apply while running ([`Cache::apply_config`],
//!   [`Cache::follow_config`]): policies, adaptive TTL rules, `cache.redis_timeout`; what was
//!   built at start (strategy, L1 size, breaker) is logged as needing a restart.
//! - [`codec`] encodes the cached value types as protobuf, MessagePack or a custom binary.

pub mod adaptive;
mod cache;
pub mod codec;
mod error;
mod flight;
pub mod key;
mod l1;
mod l2;
mod loader;
pub mod pubsub;
mod settings;
mod stats;

pub use cache::{
    Cache, Hit, Invalidated, MAX_NAMESPACES, Reconfigured, SetOptions, Stored, Tier, WarmReport,
    symbol_of,
};
pub use error::{BoxError, CacheError, CodecError, ErrorClass};
pub use l2::{RedisConn, RedisManager, RedisPool};
pub use loader::{FnLoader, Loader, SharedLoader, loader_fn};
pub use settings::{DEFAULT_REDIS_TIMEOUT, Eviction, Policy, Tiers};
pub use stats::{CacheStats, NamespaceStats, TierStats};
pub use tickmesh_resilience::BreakerState;
