//! The tickmesh event bus: ingestion publishes `MarketEvent`s (protobuf bytes, opaque here)
//! once their rows are committed; computation and query consume them.
//!
//! Two backends with the same semantics, as far as a consumer can tell:
//!
//! - Redis Streams (the Kubernetes mode): one stream, bounded with `XADD MAXLEN ~`, read
//!   through consumer groups.
//! - In-process (`tickmesh up`): a bounded log in memory with the same consumer groups.
//!
//! Semantics: every group sees every event published after the group was created, in publish
//! order; consumers of one group split the events between them. Delivery is at least once: an
//! event stays pending until acked, and a pending event idle for longer than the subscription's
//! `claim_idle` is handed to the next consumer of the group that asks (the one that held it may
//! have died; a slow one simply gets it a second time), so consumers must be idempotent.
//! On Redis, a consumer of the group with nothing pending that has not asked for anything for
//! longer than the subscription's `consumer_idle_limit` (the consumer of a process that is gone)
//! is removed from the group by the next subscription that reads (`XGROUP DELCONSUMER`); the
//! in-process log keeps no consumers, only the group's pending entries.
//!
//! Where the two differ: the Redis stream is trimmed to about `max_len` entries whatever the
//! groups have read, while the in-process log never drops an entry a group has not acked;
//! instead `publish` waits (back-pressure) while the log is full.

mod error;
mod in_process;
mod redis_streams;
pub mod relay;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::error::BusError;
pub use crate::in_process::InProcessBus;
use crate::in_process::InProcessSubscription;
pub use crate::redis_streams::RedisBus;
use crate::redis_streams::RedisSubscription;
pub use crate::relay::Relay;

/// How long a delivery may stay un-acked before another consumer of the group may claim it
/// (`bus.claim_idle`'s default).
pub const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(3);

/// How long a consumer with nothing pending may go without reading before it is removed from
/// its group (`bus.consumer_idle_limit`'s default).
pub const DEFAULT_CONSUMER_IDLE_LIMIT: Duration = Duration::from_secs(600);

/// The event bus; cheap to clone, clones publish to and subscribe on the same bus.
#[derive(Debug, Clone)]
pub enum Bus {
    /// A bounded log in this process.
    InProcess(InProcessBus),
    /// A Redis stream, reached through a bb8-redis pool.
    Redis(RedisBus),
}

impl Bus {
    /// An in-process bus holding at most `capacity` (at least 1) events not yet acked by every group.
    pub fn in_process(capacity: usize) -> Bus {
        Bus::InProcess(InProcessBus::new(capacity))
    }

    /// A bus on the Redis stream `stream_key`, trimmed to about `max_len` (at least 1) entries.
    ///
    /// Checks that Redis answers; if it does not, the error is [`BusError::Unavailable`].
    pub async fn redis(url: &str, stream_key: &str, max_len: usize) -> Result<Bus, BusError> {
        Ok(Bus::Redis(
            RedisBus::connect(url, stream_key, max_len).await?,
        ))
    }

    /// Publishes `events` in order; `Ok` once all of them are on the bus.
    ///
    /// On Redis this is one pipelined round trip of `XADD key MAXLEN ~ max_len * body <bytes>`
    /// (after bb8's PING of the pooled connection). An error may come after some of the events
    /// were added, so a retry can publish those twice; consumers are idempotent. In process,
    /// this waits while the log is full; dropping the future may leave a prefix published.
    pub async fn publish(&self, events: Vec<Vec<u8>>) -> Result<(), BusError> {
        match self {
            Bus::InProcess(bus) => {
                bus.publish(events).await;
                Ok(())
            }
            Bus::Redis(bus) => bus.publish(&events).await,
        }
    }

    /// Subscribes as `consumer` of `group`, creating the group at the end of the stream (it sees
    /// only events published from now on) if it does not exist yet.
    ///
    /// The subscription claims idle deliveries after [`DEFAULT_CLAIM_IDLE`] and removes
    /// departed consumers after [`DEFAULT_CONSUMER_IDLE_LIMIT`]; see
    /// [`Subscription::with_claim_idle`] and [`Subscription::with_consumer_idle_limit`]. On
    /// Redis it holds a connection of its own.
    pub async fn subscribe(&self, group: &str, consumer: &str) -> Result<Subscription, BusError> {
        let inner = match self {
            Bus::InProcess(bus) => Inner::InProcess(bus.subscribe(group, consumer)),
            Bus::Redis(bus) => Inner::Redis(Box::new(bus.subscribe(group, consumer).await?)),
        };
        Ok(Subscription {
            inner,
            redeliveries: self.stats().counter(group),
            claim_idle: DEFAULT_CLAIM_IDLE,
            consumer_idle_limit: DEFAULT_CONSUMER_IDLE_LIMIT,
        })
    }
}

/// Counters of a bus in this process, per consumer group, shared by its clones and
/// subscriptions (for metrics).
#[derive(Debug, Default)]
pub struct BusStats {
    redeliveries: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

impl BusStats {
    /// The counter of `group`'s redeliveries.
    fn counter(&self, group: &str) -> Arc<AtomicU64> {
        self.redeliveries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(group.to_owned())
            .or_default()
            .clone()
    }

    /// Deliveries handed out again per group (claimed after `claim_idle` by a consumer of
    /// this process), since start.
    pub fn redeliveries(&self) -> Vec<(String, u64)> {
        self.redeliveries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(group, n)| (group.clone(), n.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Bus {
    /// This process's counters of the bus.
    pub fn stats(&self) -> Arc<BusStats> {
        match self {
            Bus::InProcess(bus) => bus.stats(),
            Bus::Redis(bus) => bus.stats(),
        }
    }

    /// How many entries each consumer group has not read yet (Redis' `XINFO GROUPS` lag; a
    /// group whose lag Redis cannot tell, after a trim past its position, is left out).
    pub async fn group_lags(&self) -> Result<Vec<(String, u64)>, BusError> {
        match self {
            Bus::InProcess(bus) => Ok(bus.group_lags()),
            Bus::Redis(bus) => bus.group_lags().await,
        }
    }
}

/// One event handed to a consumer; ack its `id` once processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The stream id (`<ms>-<seq>`), the same in every group.
    pub id: String,
    /// The event's bytes, as published.
    pub body: Vec<u8>,
}

/// One consumer of one group: reads batches of deliveries and acks them.
pub struct Subscription {
    inner: Inner,
    /// Counts the deliveries this consumer claimed from the group's idle pending entries.
    redeliveries: Arc<AtomicU64>,
    claim_idle: Duration,
    consumer_idle_limit: Duration,
}

enum Inner {
    InProcess(InProcessSubscription),
    Redis(Box<RedisSubscription>),
}

impl Subscription {
    /// Sets how long a delivery may stay un-acked before this consumer claims it from another.
    pub fn with_claim_idle(mut self, claim_idle: Duration) -> Self {
        self.claim_idle = claim_idle;
        self
    }

    /// How long a delivery may stay un-acked before this consumer claims it from another.
    pub fn claim_idle(&self) -> Duration {
        self.claim_idle
    }

    /// Changes [`Subscription::claim_idle`] from the next read on (a configuration reload).
    pub fn set_claim_idle(&mut self, claim_idle: Duration) {
        self.claim_idle = claim_idle;
    }

    /// Sets how long another consumer of the group with nothing pending may go without reading
    /// before this subscription removes it from the group (Redis only).
    pub fn with_consumer_idle_limit(mut self, limit: Duration) -> Self {
        self.consumer_idle_limit = limit;
        self
    }

    /// How long another consumer with nothing pending may stay idle before it is removed.
    pub fn consumer_idle_limit(&self) -> Duration {
        self.consumer_idle_limit
    }

    /// Changes [`Subscription::consumer_idle_limit`] from the next sweep on.
    pub fn set_consumer_idle_limit(&mut self, limit: Duration) {
        self.consumer_idle_limit = limit;
    }

    /// The consumer group this subscription reads in.
    pub fn group(&self) -> &str {
        match &self.inner {
            Inner::InProcess(sub) => sub.group(),
            Inner::Redis(sub) => sub.group(),
        }
    }

    /// This consumer's name within its group.
    pub fn consumer(&self) -> &str {
        match &self.inner {
            Inner::InProcess(sub) => sub.consumer(),
            Inner::Redis(sub) => sub.consumer(),
        }
    }

    /// Up to `max` (at least 1) deliveries, waiting up to `wait` for some; empty on timeout.
    ///
    /// Deliveries idle for longer than `claim_idle` in the group (`XAUTOCLAIM`) come first;
    /// only when there are none does it read new events (`XREADGROUP ... BLOCK wait ... >`).
    /// Dropping the future loses nothing: what was read stays pending and is claimed later.
    ///
    /// On Redis, every half `consumer_idle_limit` (at most once a minute) this also removes
    /// the group's other consumers that have nothing pending and were idle past the limit; a
    /// failure to do so is logged, not returned.
    pub async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BusError> {
        let (batch, claimed) = match &mut self.inner {
            Inner::InProcess(sub) => sub.next_batch(max, wait, self.claim_idle).await,
            Inner::Redis(sub) => {
                sub.sweep_departed(self.consumer_idle_limit).await;
                sub.next_batch(max, wait, self.claim_idle).await?
            }
        };
        if claimed {
            self.redeliveries
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        Ok(batch)
    }

    /// Ends this subscription and removes its whole group (`XGROUP DESTROY`), for a group of
    /// one process's own that nobody will read again; its pending entries are dropped.
    pub async fn leave(self) -> Result<(), BusError> {
        match self.inner {
            Inner::InProcess(sub) => {
                sub.leave();
                Ok(())
            }
            Inner::Redis(mut sub) => sub.destroy_group().await,
        }
    }

    /// Acks deliveries of this group by id (`XACK`), whichever consumer holds them; unknown ids
    /// are ignored, ids that are not stream ids are an error.
    pub async fn ack(&mut self, ids: &[String]) -> Result<(), BusError> {
        match &mut self.inner {
            Inner::InProcess(sub) => sub.ack(ids),
            Inner::Redis(sub) => sub.ack(ids).await,
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.inner {
            Inner::InProcess(_) => "in-process",
            Inner::Redis(_) => "redis",
        };
        f.debug_struct("Subscription")
            .field("backend", &backend)
            .field("group", &self.group())
            .field("consumer", &self.consumer())
            .field("claim_idle", &self.claim_idle)
            .field("consumer_idle_limit", &self.consumer_idle_limit)
            .finish()
    }
}
